"""``talkface fit`` end to end on the synthetic subject: files, resumption, bad input."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from recon.pipeline import FitPipelineConfig, run_fit
from recon.stages import read_meta

SECONDS = 5.0
QUIET = dict(progress=False, log=lambda *_: None)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from recon.synthetic.subject import SynthSubjectConfig, make_synthetic_subject

    out = tmp_path_factory.mktemp("fitsynth") / "synth"
    return make_synthetic_subject(SynthSubjectConfig(out=out, seconds=SECONDS, seed=4), progress=False)


@pytest.fixture(scope="module")
def subject(synth, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fitsubject") / "subject"
    return run_fit(FitPipelineConfig(video=synth / "video.mp4", out=out), **QUIET)


def _ffmpeg(*args):
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True)


def test_subject_folder_is_complete(subject):
    n = int(SECONDS * 25)
    meta = read_meta(subject)
    assert meta["complete"] and meta["has_audio"] and meta["frame_count"] == n
    assert set(meta["stages"]) == {"frames", "audio", "fit", "transforms", "preview"}
    for name in ("audio.wav", "background.png", "face_model.npz", "track.npz", "landmarks_raw.npz",
                 "transforms_train.json", "transforms_val.json", "preview.mp4", "tracks.png", "config.json"):
        assert (subject / name).is_file(), name
    assert len(list((subject / "frames").glob("*.jpg"))) == n
    assert len(list((subject / "masks").glob("*.png"))) == n
    assert not list(subject.glob("*partial*"))
    with np.load(subject / "track.npz") as z:
        assert z["rotation"].shape == (n, 3) and z["expression"].shape[0] == n
        assert z["valid"].all()
        assert np.mean(z["reprojection_error"]) <= 1.5


def test_transforms_are_the_inverse_head_pose(subject):
    train = json.loads((subject / "transforms_train.json").read_text())
    val = json.loads((subject / "transforms_val.json").read_text())
    n = int(SECONDS * 25)
    ids_train = [f["img_id"] for f in train["frames"]]
    ids_val = [f["img_id"] for f in val["frames"]]
    assert ids_train == list(range(n - round(0.1 * n))) and ids_val == list(range(n - round(0.1 * n), n))
    with np.load(subject / "track.npz") as z:
        R, t, K = z["rotation_matrix"], z["translation"], z["intrinsics"]
    assert train["focal_len"] == pytest.approx(K[0, 0]) and train["cx"] == pytest.approx(K[0, 2])
    for f in train["frames"][::10]:
        c2w = np.array(f["transform_matrix"]) @ np.diag([1.0, -1, -1, 1])  # back to OpenCV axes
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = R[f["img_id"]], t[f["img_id"]]
        np.testing.assert_allclose(c2w @ w2c, np.eye(4), atol=1e-6)


def test_rerun_skips_everything_and_option_change_reruns_only_what_depends_on_it(subject, synth):
    before = (subject / "track.npz").read_bytes()
    logs = []
    run_fit(FitPipelineConfig(video=synth / "video.mp4", out=subject), progress=False, log=logs.append)
    assert all("skipped" in line for line in logs) and len(logs) == 5
    assert (subject / "track.npz").read_bytes() == before
    logs.clear()
    run_fit(FitPipelineConfig(video=synth / "video.mp4", out=subject, val_fraction=0.2), progress=False, log=logs.append)
    skipped = {line.split("]")[0][1:] for line in logs}
    assert skipped == {"frames", "audio", "fit", "preview"}
    val = json.loads((subject / "transforms_val.json").read_text())
    assert len(val["frames"]) == round(0.2 * SECONDS * 25)


def test_interrupted_fit_leaves_nothing_trusted_and_resumes(synth, tmp_path, monkeypatch):
    out = tmp_path / "subject"

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("recon.fitting.fit_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_fit(FitPipelineConfig(video=synth / "video.mp4", out=out, preview=False), **QUIET)
    meta = read_meta(out)
    assert meta["complete"] is False and "fit" not in meta["stages"] and "frames" in meta["stages"]
    assert not (out / "track.npz").exists() and not list(out.glob("*partial*"))
    monkeypatch.undo()
    logs = []
    run_fit(FitPipelineConfig(video=synth / "video.mp4", out=out, preview=False), progress=False, log=logs.append)
    assert any(line.startswith("[frames] up to date") for line in logs)
    assert read_meta(out)["complete"] is True


def test_video_without_audio_fits_and_is_marked(synth, tmp_path):
    silent = tmp_path / "silent.mp4"
    _ffmpeg("-i", synth / "video.mp4", "-t", "2", "-an", "-c:v", "copy", silent)
    out = run_fit(FitPipelineConfig(video=silent, out=tmp_path / "s", preview=False), **QUIET)
    meta = read_meta(out)
    assert meta["complete"] and meta["has_audio"] is False and not (out / "audio.wav").exists()
    # later stages open it; those driven by speech refuse it with a clear message
    from recon.subject import SubjectError, open_subject

    assert open_subject(out).has_audio is False
    with pytest.raises(SubjectError, match=r"no audio \(.*silent\.mp4 had no sound track\)"):
        open_subject(out, need_audio=True)


def test_no_face_anywhere_is_a_clear_error(tmp_path):
    from recon.landmarks import NoFaceError

    video = tmp_path / "noface.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=256x256:rate=25:d=2", "-c:v", "libx264", "-pix_fmt", "yuv420p", video)
    with pytest.raises(NoFaceError, match=str(video)):
        run_fit(FitPipelineConfig(video=video, out=tmp_path / "s"), **QUIET)
    assert read_meta(tmp_path / "s").get("complete") is False


def test_corrupted_file_creates_no_subject(tmp_path):
    from render.errors import MediaError

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x01garbage" * 1000)
    with pytest.raises(MediaError, match="bad.mp4"):
        run_fit(FitPipelineConfig(video=bad, out=tmp_path / "s"), **QUIET)
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------------------
# later stages open the subject folder through recon.subject.open_subject


def test_open_subject_reads_a_complete_folder(subject):
    from recon.subject import open_subject

    s = open_subject(subject, need_audio=True)
    assert s.has_audio and s.audio_path == subject / "audio.wav"
    assert s.frame_count == int(SECONDS * 25) and s.fps == 25.0 and s.frame_size == (512, 512)
    assert s.frame_path(0).is_file() and s.frame_path(s.frame_count - 1).is_file()


def test_open_subject_refuses_missing_incomplete_and_partial_folders(subject, tmp_path):
    import shutil

    from recon.subject import SubjectError, open_subject

    with pytest.raises(SubjectError, match="no such subject folder"):
        open_subject(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SubjectError, match="no readable meta.json"):
        open_subject(tmp_path / "empty")
    # a copy without the fit's outputs: named in the message
    partial = tmp_path / "partial"
    shutil.copytree(subject, partial, ignore=shutil.ignore_patterns("track.npz", "masks"))
    with pytest.raises(SubjectError, match=r"missing track\.npz, masks/"):
        open_subject(partial)
    # a fit that did not complete
    meta = json.loads((partial / "meta.json").read_text())
    (partial / "meta.json").write_text(json.dumps({**meta, "complete": False}))
    with pytest.raises(SubjectError, match="did not complete"):
        open_subject(partial)

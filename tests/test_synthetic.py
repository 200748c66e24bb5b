"""The built-in synthetic subject: files, ground truth, what mediapipe sees, determinism."""

import json
from pathlib import Path

import numpy as np
import pytest

from recon import topology as T
from recon.synthetic.subject import SynthSubjectConfig, make_synthetic_subject

SECONDS = 6.0


@pytest.fixture(scope="module")
def subject(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "subject"
    return make_synthetic_subject(SynthSubjectConfig(out=out, seconds=SECONDS, seed=3), progress=False)


@pytest.fixture(scope="module")
def gt(subject):
    return dict(np.load(subject / "ground_truth.npz"))


@pytest.fixture(scope="module")
def mediapipe_tracks(subject):
    """mediapipe's landmarks ([T, 478, 3] pixels, NaN where no face was detected) on the written video."""
    from recon.tracking import track_landmarks

    track = track_landmarks(subject / "video.mp4", progress=False)
    return np.where(track.detected[:, None, None], track.landmarks, np.nan)


def test_files_and_shapes(subject, gt):
    from render.media.audio import load_audio
    from render.media.probe import probe

    n = int(round(SECONDS * 25))
    info = probe(subject / "video.mp4")
    assert (info.width, info.height) == (512, 512) and info.has_audio and info.video_codec == "h264"
    assert abs(info.fps - 25) < 1e-6
    audio = load_audio(subject / "audio.wav")
    assert abs(len(audio) / 16000 - SECONDS) <= 1 / 25
    meta = json.loads((subject / "meta.json").read_text())
    assert meta["frame_count"] == n and meta["fps"] == 25
    assert json.loads((subject / "config.json").read_text())["seed"] == 3
    assert gt["rig_weights"].shape == (n, 11) and list(gt["rig_names"])[0] == "jawOpen"
    assert gt["landmarks_3d"].shape == (n, 478, 3) and gt["landmarks_2d"].shape == (n, 478, 2)
    assert gt["head_rotation"].shape == (n, 3) and gt["head_translation"].shape == (n, 3)
    assert gt["blink_flags"].shape == (n, 2) and gt["blink_flags"].dtype == bool
    assert len(gt["phoneme_symbols"]) == len(gt["phoneme_intervals"]) > 10


def test_ground_truth_is_self_consistent(gt):
    from render.rotations import axis_angle_to_matrix, euler_to_matrix

    # Projection of the 3D landmarks with the intrinsics gives the 2D landmarks.
    proj = gt["landmarks_3d"].astype(np.float64) @ gt["intrinsics"].T
    np.testing.assert_allclose(proj[..., :2] / proj[..., 2:], gt["landmarks_2d"], atol=1e-2)
    R = gt["head_rotation_matrix"]
    np.testing.assert_allclose(axis_angle_to_matrix(gt["head_rotation"]), R, atol=1e-9)
    e = gt["head_euler"]
    np.testing.assert_allclose(euler_to_matrix(e[:, 0], e[:, 1], e[:, 2]), R, atol=1e-12)
    # The 3D landmarks are the rig's neutral shape, deformed by the frame's rig weights and moved
    # by the frame's head pose: p = R (neutral + rig(w)) + t in head-model coordinates.
    from recon.synthetic.face import build_synthetic_face

    face = build_synthetic_face()
    L = T.NUM_LANDMARKS
    np.testing.assert_allclose(face.verts[:L] - face.pivot, gt["neutral_landmarks_3d"], atol=1e-6)
    model = gt["neutral_landmarks_3d"].astype(np.float64) + np.einsum("tr,rlc->tlc", gt["rig_weights"].astype(np.float64), face.rig[:, :L])
    expect = np.einsum("tij,tlj->tli", R, model) + gt["head_translation"][:, None]
    np.testing.assert_allclose(gt["landmarks_3d"], expect, atol=2e-6)  # float32 storage of metres
    # Head motion within the advertised range, and actually moving.
    yaw, pitch, roll = np.rad2deg(e).T
    assert np.abs(yaw).max() <= 10.0 + 1e-6 and np.abs(yaw).max() > 3.0
    assert np.abs(pitch).max() <= 5.0 + 1e-6 and np.abs(roll).max() <= 5.0 + 1e-6
    # Blinks of 150-300 ms, flagged on the frames they cover.
    durations = np.diff(gt["blink_intervals"], axis=1)[:, 0]
    assert len(durations) >= 1 and np.all((durations >= 0.15) & (durations <= 0.30))
    assert gt["blink_flags"].any()
    intervals = gt["phoneme_intervals"]
    assert np.all(np.diff(intervals[:, 0]) >= 0) and np.all(intervals[:, 1] >= intervals[:, 0])


def test_mediapipe_sees_the_face_and_the_mouth_follows_jaw_open(gt, mediapipe_tracks):
    found = ~np.isnan(mediapipe_tracks[:, 0, 0])
    assert found.mean() >= 0.99, f"face found in {found.mean():.1%} of frames"
    lm = mediapipe_tracks[found]
    iod = np.linalg.norm(lm[:, T.LEFT_EYE_CORNERS[0], :2] - lm[:, T.RIGHT_EYE_CORNERS[0], :2], axis=1)
    opening = np.linalg.norm(lm[:, T.LIP_MID_INNER[0], :2] - lm[:, T.LIP_MID_INNER[1], :2], axis=1) / iod
    jaw = gt["rig_weights"][found, 0]
    r = np.corrcoef(opening, jaw)[0, 1]
    assert r >= 0.8, f"Pearson r between mediapipe's inner-lip opening and jawOpen = {r:.3f}"
    # mediapipe's landmarks land where the ground truth says (a few pixels at 512x512).
    err = np.linalg.norm(lm[:, : T.NUM_MESH_VERTICES, :2] - gt["landmarks_2d"][found, : T.NUM_MESH_VERTICES], axis=-1)
    assert np.median(err) < 4.0, f"median landmark distance {np.median(err):.2f} px"


def _short(tmp_path, name, **kw):
    return make_synthetic_subject(SynthSubjectConfig(out=tmp_path / name, seconds=2.0, **kw), progress=False)


def test_same_seed_same_files_and_texts_differ(tmp_path):
    a = _short(tmp_path, "a", seed=5, text="Peter picked a peck of pickled peppers.")
    b = _short(tmp_path, "b", seed=5, text="Peter picked a peck of pickled peppers.")
    c = _short(tmp_path, "c", seed=5, text="How are you today, my old friend?")
    for name in ("video.mp4", "audio.wav", "ground_truth.npz", "meta.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ga, gc = np.load(a / "ground_truth.npz"), np.load(c / "ground_truth.npz")
    assert (a / "audio.wav").read_bytes() != (c / "audio.wav").read_bytes()
    mouth = slice(0, 8)
    assert np.abs(ga["rig_weights"][:, mouth] - gc["rig_weights"][:, mouth]).mean() > 0.02
    assert list(ga["phoneme_symbols"]) != list(gc["phoneme_symbols"])
    # Same text and seed: blinks and head motion identical; the mouth follows the text only.
    np.testing.assert_array_equal(ga["head_euler"], gc["head_euler"])


def test_failed_run_leaves_previous_output_untouched(tmp_path, monkeypatch):
    from render.errors import TalkfaceError

    good = _short(tmp_path, "s", seed=1)
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    def boom(*a, **k):
        raise TalkfaceError("simulated failure while rendering")

    monkeypatch.setattr("recon.synthetic.subject.FrameRenderer.__call__", boom)
    with pytest.raises(TalkfaceError):
        _short(tmp_path, "s", seed=2)
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary folder left

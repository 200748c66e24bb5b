"""The automatic working resolution of ``talkface fit`` (recon/working_size.py): the head fits a
512x512 crop, videos are never upscaled, no face falls back to the 1024 rule, meta.json records it.

Ground truth: the synthetic subject (512x512) upscaled 3x to 1536x1536, so its face box there is
3x the box mediapipe measures on the original video (and 3x the box of the true projected mesh).
"""

from pathlib import Path

import numpy as np
import pytest

from recon.pipeline import FitPipelineConfig, run_fit
from recon.stages import read_meta
from recon.working_size import (
    FALLBACK_MAX_SIZE, WorkingSizeConfig, choose_working_size, probe_times, working_scale,
)

UP = 3  # upscale factor of the large test video
QUIET = dict(progress=False, log=lambda *_: None)


def _box_side(points: np.ndarray) -> np.ndarray:
    """Longer side of the bounding box of ``points: [..., N, 2]`` -> ``[...]``."""
    return (points.max(axis=-2) - points.min(axis=-2)).max(axis=-1)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    from recon.synthetic.subject import SynthSubjectConfig, make_synthetic_subject

    out = tmp_path_factory.mktemp("wssynth") / "synth"
    return make_synthetic_subject(SynthSubjectConfig(out=out, seconds=2.0, seed=4), progress=False)


@pytest.fixture(scope="module")
def boxes_512(synth) -> dict:
    """Face box (longer side, pixels) on the original 512x512 video: median over all frames of
    mediapipe's tracked mesh, and of the true projected mesh."""
    from recon.topology import NUM_MESH_VERTICES
    from recon.tracking import track_landmarks

    track = track_landmarks(synth / "video.mp4", progress=False)
    assert track.detected.all() and track.frame_size == (512, 512)
    with np.load(synth / "ground_truth.npz") as z:
        true_2d = z["landmarks_2d"][:, :NUM_MESH_VERTICES]
    return {"mediapipe": float(np.median(_box_side(track.landmarks[track.detected, :NUM_MESH_VERTICES, :2]))),
            "true": float(np.median(_box_side(true_2d)))}


@pytest.fixture(scope="module")
def big(synth, tmp_path_factory) -> Path:
    """The synthetic video upscaled 3x (1536x1536), no audio."""
    import cv2

    from render.media.video import VideoReader, VideoWriter

    path = tmp_path_factory.mktemp("wsbig") / "big.mp4"
    with VideoReader(synth / "video.mp4") as reader, VideoWriter(path, reader.fps, crf=23) as writer:
        for frame in reader:
            writer.write(cv2.resize(frame.image, (512 * UP, 512 * UP), interpolation=cv2.INTER_CUBIC))
    return path


def test_rule_scales_the_head_crop_to_the_crop_size():
    # Head crop 2 x 300 = 600 px inside a 1920x1080 frame: scaled by 512/600, rounded down to the
    # even frame size the reader produces (1638x922).
    assert working_scale(300.0, 1920, 1080) == (1638, 1638 / 1920)
    assert 2.0 * 300.0 * (1638 / 1920) <= 512
    # Never upscaled: a small face in a small frame keeps the source size.
    assert working_scale(100.0, 640, 480) == (640, 1.0)
    # A head crop larger than the frame: the frame as a whole is what has to fit (512x512 talking
    # heads whose 2x face box exceeds the frame are not scaled down).
    assert working_scale(300.0, 512, 512) == (512, 1.0)
    assert working_scale(1000.0, 1920, 1080) == (512, 512 / 1920)
    # Other crop sizes and margins.
    assert working_scale(300.0, 1920, 1080, WorkingSizeConfig(crop=256, margin=1.5)) == (1092, 1092 / 1920)
    with pytest.raises(ValueError, match="face_box_px"):
        working_scale(0.0, 640, 480)


def test_config_rejects_bad_values():
    for kwargs, name in ((dict(crop=0), "crop"), (dict(margin=0.5), "margin"), (dict(samples=0), "samples"),
                         (dict(probe_size=10), "probe_size")):
        with pytest.raises(ValueError, match=f"working.{name}"):
            WorkingSizeConfig(**kwargs)


def test_probe_times_are_evenly_spread():
    assert probe_times(8.0, 4) == [1.0, 3.0, 5.0, 7.0]
    assert probe_times(None, 8) == [0.0]


def test_read_frames_at_exact_and_keyframe_seeks(synth):
    from render.media.video import read_frames_at, read_video

    frames, _ = read_video(synth / "video.mp4")  # [50, 512, 512, 3], 25 fps
    picks = [0, 7, 26, 49]
    exact = read_frames_at(synth / "video.mp4", [k / 25 for k in picks] + [2.5])
    for k, image in zip(picks, exact):
        np.testing.assert_array_equal(image, frames[k])
    assert exact[-1] is None  # past the last frame
    # Keyframe seeks: a 2 s video from VideoWriter has one keyframe, frame 0.
    for image in read_frames_at(synth / "video.mp4", [0.5, 1.5], max_size=256, exact=False):
        assert image.shape == (256, 256, 3)
        ref = frames[0].reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
        assert np.abs(image.astype(float) - ref).mean() < 2.0


def test_large_video_is_scaled_so_the_head_fits_512(big, boxes_512):
    cfg = WorkingSizeConfig()
    ws = choose_working_size(big, cfg)
    assert ws.rule == "face" and ws.faces_found >= 1
    # The face box, in source pixels, against the ground truth at 1536 px.
    for truth in boxes_512.values():
        assert ws.face_box_px == pytest.approx(UP * truth, rel=0.05)
    # The head crop at the working resolution: at most 512 by construction, and within a few
    # percent of 512 measured with the ground-truth box.
    assert cfg.margin * ws.face_box_px * ws.scale <= cfg.crop
    assert cfg.margin * ws.face_box_px * ws.scale > cfg.crop - 2 * cfg.margin * ws.face_box_px / (UP * 512)
    assert cfg.margin * UP * boxes_512["mediapipe"] * ws.scale == pytest.approx(cfg.crop, rel=0.05)
    expected = UP * 512 * cfg.crop / (cfg.margin * UP * boxes_512["mediapipe"])  # about 700 px
    assert ws.max_size == pytest.approx(expected, rel=0.05) and ws.max_size % 2 == 0
    assert ws.scale == ws.max_size / (UP * 512)


def test_512_video_with_a_normal_face_is_not_upscaled(synth, boxes_512):
    ws = choose_working_size(synth / "video.mp4")
    assert 2.0 * boxes_512["mediapipe"] < 512  # the rule alone would upscale it
    assert (ws.max_size, ws.scale, ws.rule) == (512, 1.0, "face")
    assert ws.face_box_px == pytest.approx(boxes_512["mediapipe"], rel=0.05)


def test_real_512_talking_head_is_kept_at_512(shared_data):
    # may_5s: a 512x512 news close-up whose head crop (2 x face box, about 560 px) overflows the
    # frame: the frame as a whole fits a 512 crop and is kept.
    ws = choose_working_size(shared_data / "video" / "may_5s.mp4")
    assert ws.rule == "face" and 256 < ws.face_box_px < 512
    assert (ws.max_size, ws.scale) == (512, 1.0)


def test_no_face_falls_back_to_1024(tmp_path):
    import cv2

    from render.media.video import write_video

    rng = np.random.default_rng(0)
    noise = [cv2.resize(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (1600, 1200), interpolation=cv2.INTER_NEAREST)
             for _ in range(25)]
    path = write_video(tmp_path / "noise.mp4", noise, fps=25)
    ws = choose_working_size(path)
    assert ws.face_box_px is None and ws.rule == "fallback" and ws.faces_found == 0 and ws.frames_probed >= 1
    assert (ws.max_size, ws.scale) == (FALLBACK_MAX_SIZE, FALLBACK_MAX_SIZE / 1600)
    small = write_video(tmp_path / "small.mp4", [n[:480, :640] for n in noise[:5]], fps=25)
    assert choose_working_size(small).scale == 1.0  # the fallback never upscales either


def test_pipeline_records_the_working_size_and_resumes(big, tmp_path):
    import cv2

    from recon.topology import NUM_MESH_VERTICES
    from recon.tracking import LandmarkTrack

    ws = choose_working_size(big)
    out = run_fit(FitPipelineConfig(video=big, out=tmp_path / "s", preview=False), **QUIET)
    info = read_meta(out)["frames_info"]
    assert info["working_rule"] == "face"
    assert info["face_box_px"] == pytest.approx(ws.face_box_px, abs=0.01)
    assert info["scale"] == pytest.approx(ws.scale)
    assert info["frame_size"] == [ws.max_size, ws.max_size] and info["source_size"] == [UP * 512, UP * 512]
    assert info["frames_timing_s"]["working_size"] > 0
    assert cv2.imread(str(out / "frames" / "000000.jpg")).shape == (ws.max_size, ws.max_size, 3)
    # The tracker's own face boxes at the working resolution: 2x them is about the 512 crop.
    track = LandmarkTrack.load(out / "landmarks_raw.npz")
    assert track.scale == pytest.approx(ws.scale)
    side = np.median(_box_side(track.landmarks[track.detected, :NUM_MESH_VERTICES, :2]))
    assert 2.0 * side == pytest.approx(512, rel=0.05)
    # A rerun skips every stage; a working-size option change reruns the frames stage.
    logs = []
    run_fit(FitPipelineConfig(video=big, out=out, preview=False), progress=False, log=logs.append)
    assert len(logs) == 4 and all("skipped" in line for line in logs)
    before = read_meta(out)["stages"]["frames"]["fingerprint"]
    run_fit(FitPipelineConfig(video=big, out=out, preview=False, working=WorkingSizeConfig(crop=256)), **QUIET)
    meta = read_meta(out)
    assert meta["stages"]["frames"]["fingerprint"] != before and meta["complete"]
    info = meta["frames_info"]
    assert info["frame_size"][0] == pytest.approx(ws.max_size / 2, abs=2)
    assert 250 < 2.0 * info["face_box_px"] * info["scale"] <= 256 + 0.01


def test_fixed_max_size_is_recorded_as_such():
    from recon.pipeline import _working_size

    cfg = FitPipelineConfig(video=Path("unused.mp4"), out=Path("unused"), max_size=1024)  # nothing is read
    assert _working_size(cfg) == (1024, {"working_rule": "fixed", "face_box_px": None})

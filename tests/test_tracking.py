"""Face landmark tracking (recon.tracking) and, end to end, the blink signal (recon.eyes).

Test videos are made on the fly in temp folders from the built-in synthetic subject (ground truth
known) or ffmpeg's test pattern; nothing here needs media outside the installed packages except
the last test, which uses ../shared/data when present.
"""

import subprocess
import sys

import cv2
import numpy as np
import pytest

from recon.landmarks import NoFaceError
from recon.tracking import FaceTracker, LandmarkTrack, TrackingConfig, check_usable, fill_gaps, track_landmarks
from render.media.video import read_video, write_video

SECONDS, SEED = 8.0, 1  # seed 1: three blinks in 8 s
FPS = 25.0
CLIP = 60  # frames of the short clips built for bad-input tests
FACE_WIDTH_PX = 156  # the synthetic face's box width in its 512x512 frames (about)


@pytest.fixture(scope="module")
def subject(tmp_path_factory):
    from recon.synthetic.subject import SynthSubjectConfig, make_synthetic_subject

    out = tmp_path_factory.mktemp("synth") / "subject"
    return make_synthetic_subject(SynthSubjectConfig(out=out, seconds=SECONDS, seed=SEED), progress=False)


@pytest.fixture(scope="module")
def gt(subject):
    return dict(np.load(subject / "ground_truth.npz"))


@pytest.fixture(scope="module")
def track(subject) -> LandmarkTrack:
    return track_landmarks(subject / "video.mp4", progress=False)


@pytest.fixture(scope="module")
def clip(subject) -> np.ndarray:
    """The subject's first CLIP frames, ``uint8 [CLIP, 512, 512, 3]``."""
    frames, _ = read_video(subject / "video.mp4")
    return frames[:CLIP].copy()


# --- fill_gaps ---------------------------------------------------------------------------------


def test_fill_gaps_is_exact_on_linear_motion():
    T = 20
    t = np.arange(T, dtype=np.float64)
    lm = np.stack([np.stack([2.0 * t + 1, -0.5 * t + 3, 0.1 * t], -1)] * 4, axis=1)  # [T, 4, 3]
    detected = np.ones(T, dtype=bool)
    detected[[3, 4, 5, 10]] = False  # gaps of 3 and 1 frames
    corrupted = lm.copy()
    corrupted[~detected] = 1e6  # values of undetected frames are ignored
    filled, usable = fill_gaps(corrupted, detected, max_gap=5)
    assert usable.all()
    np.testing.assert_allclose(filled, lm, atol=1e-12)


def test_fill_gaps_leaves_long_leading_and_trailing_gaps_unusable():
    T = 30
    lm = np.random.default_rng(0).normal(size=(T, 478, 3)).astype(np.float32)
    detected = np.ones(T, dtype=bool)
    detected[:2] = False  # leading
    detected[8:14] = False  # 6 > max_gap
    detected[18:23] = False  # 5 == max_gap: filled
    detected[-3:] = False  # trailing
    lm[~detected] = np.nan
    filled, usable = fill_gaps(lm, detected, max_gap=5)
    assert filled.dtype == np.float32 and filled.shape == lm.shape
    expect = detected.copy()
    expect[18:23] = True
    np.testing.assert_array_equal(usable, expect)
    assert np.isnan(filled[~usable]).all() and np.isfinite(filled[usable]).all()
    np.testing.assert_array_equal(filled[detected], lm[detected])
    w = (20 - 17) / (23 - 17)
    np.testing.assert_allclose(filled[20], (1 - w) * lm[17] + w * lm[23], rtol=1e-5, atol=1e-5)
    # max_gap=0 fills nothing; a NaN in a "detected" frame makes it undetected.
    _, usable0 = fill_gaps(lm, detected, max_gap=0)
    np.testing.assert_array_equal(usable0, detected)
    lm2 = lm.copy()
    lm2[5, 7, 1] = np.nan
    _, usable2 = fill_gaps(lm2, detected, max_gap=0)
    assert not usable2[5]
    with pytest.raises(ValueError):
        fill_gaps(lm, detected[:-1], max_gap=5)


# --- the tracker's choice among faces (no video needed) -----------------------------------------


def test_choice_keeps_the_face_it_follows_and_starts_with_the_largest():
    with FaceTracker(TrackingConfig(reacquire_after=3)) as tracker:
        small, large = np.array([10.0, 10, 60, 70]), np.array([200.0, 50, 400, 300])
        assert tracker.choose([]) is None
        assert tracker.choose([small, large]) == 1  # nothing chosen yet: the largest
        tracker._last_box = small  # following the small face
        moved = small + 4
        assert tracker.choose([large, moved]) == 1  # continuity beats size
        assert tracker.choose([large]) is None  # the followed face is gone: take no other one
        tracker._missing = 4  # gone for longer than reacquire_after
        assert tracker.choose([small + 300, large]) == 1


# --- the synthetic subject -----------------------------------------------------------------------


def test_tracks_the_synthetic_subject(track, gt, tmp_path):
    T = len(gt["landmarks_2d"])
    assert track.num_frames == T and track.landmarks.shape == (T, 478, 3) and track.landmarks.dtype == np.float32
    assert track.frame_size == (512, 512) and track.source_size == (512, 512) and track.scale == 1.0
    assert track.fps == FPS
    assert track.detected.mean() >= 0.99
    err = np.linalg.norm(track.landmarks[..., :2] - gt["landmarks_2d"], axis=-1)[track.detected]
    assert np.median(err) < 3.0, np.median(err)
    check_usable(track, "synthetic")  # no error
    # save / load round trip (no pickles)
    path = track.save(tmp_path / "landmarks.npz")
    back = LandmarkTrack.load(path)
    np.testing.assert_array_equal(back.landmarks, track.landmarks)
    for name in ("detected", "usable", "interpolated", "num_faces"):
        np.testing.assert_array_equal(getattr(back, name), getattr(track, name))
    assert (back.frame_size, back.source_size, back.scale, back.fps) == (track.frame_size, track.source_size, 1.0, FPS)
    assert [p.name for p in tmp_path.iterdir()] == ["landmarks.npz"]  # no temp file left


def test_synthetic_blinks_found_with_f1_at_least_0_9(track, gt):
    from recon.eyes import blink_events, blink_signal, event_f1, events_from_intervals

    blink = blink_signal(track.landmarks, track.usable)
    assert blink.shape == (track.num_frames, 2) and np.nanmin(blink) >= 0 and np.nanmax(blink) <= 1
    true = events_from_intervals(gt["blink_intervals"], FPS)
    assert len(true) >= 2
    for eye in range(2):
        pred = blink_events(blink[:, eye])
        assert event_f1(pred, true, tolerance_frames=2) >= 0.9, (eye, pred, true)
    # the continuous signal follows the ground-truth closure
    corr = np.corrcoef(blink.mean(axis=1), gt["blink"].mean(axis=1))[0, 1]
    assert corr > 0.8, corr


def test_downscaled_working_resolution_is_recorded(subject, gt):
    tr = track_landmarks(subject / "video.mp4", TrackingConfig(max_size=256), progress=False, max_frames=20)
    assert tr.num_frames == 20 and tr.frame_size == (256, 256) and tr.source_size == (512, 512)
    assert tr.scale == 0.5
    err = np.linalg.norm(tr.landmarks_in_source()[..., :2] - gt["landmarks_2d"][:20], axis=-1)
    assert np.nanmedian(err) < 4.0


# --- bad input -------------------------------------------------------------------------------------


def test_video_without_a_face_raises_naming_the_file(tmp_path):
    from render.media.probe import ffmpeg_exe

    path = tmp_path / "pattern.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
         "testsrc=size=320x240:rate=25:duration=1", "-pix_fmt", "yuv420p", str(path)],
        check=True, timeout=60,
    )
    tr = track_landmarks(path, progress=False)
    assert tr.num_frames == 25 and not tr.detected.any() and not tr.usable.any()
    with pytest.raises(NoFaceError, match="no face found in any frame") as e:
        check_usable(tr, str(path))
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_too_few_faces_raises_with_the_percentage():
    T = 40
    detected = np.zeros(T, dtype=bool)
    detected[:12] = True
    lm = np.where(detected[:, None, None], 1.0, np.nan) * np.ones((T, 478, 3), np.float32)
    tr = LandmarkTrack(lm, detected, detected, np.zeros(T, bool), (64, 64), (64, 64), 1.0, 25.0)
    with pytest.raises(NoFaceError, match=r"clip\.mp4: a face was found in only 30\.0% of the 40 frames"):
        check_usable(tr, "clip.mp4")
    check_usable(tr, "clip.mp4", min_usable_fraction=0.3)  # enough at a lower bar


def test_face_leaving_the_frame_short_gap_filled_long_gap_excluded(clip, tmp_path):
    frames = clip.copy()
    frames[20:23] = 128  # 3 frames without a face: interpolated
    frames[35:50] = 128  # 15 frames: excluded
    path = write_video(tmp_path / "leaves.mp4", frames, FPS)
    tr = track_landmarks(path, progress=False)
    assert tr.num_frames == CLIP
    assert not tr.detected[20:23].any() and not tr.detected[35:50].any()
    assert tr.interpolated[20:23].all() and tr.usable[20:23].all()
    assert not tr.usable[35:50].any() and np.isnan(tr.landmarks[35:50]).all()
    others = np.ones(CLIP, dtype=bool)
    others[20:23] = others[35:50] = False
    assert tr.detected[others].mean() >= 0.95  # the face is found again when it comes back
    check_usable(tr, str(path))  # 75% usable: accepted


def _tiny_face_frames(clip, face_px):
    s = face_px / FACE_WIDTH_PX
    n = int(round(512 * s))
    out = np.full((len(clip), 512, 512, 3), 128, np.uint8)
    for i, f in enumerate(clip):
        out[i, 512 - n:, :n] = cv2.resize(f, (n, n), interpolation=cv2.INTER_AREA)
    return out, s, np.array([0.0, 512 - n])


def test_tiny_face_64px_is_tracked_and_32px_is_a_clear_error(clip, gt, tmp_path):
    # Decision: a face down to ~60 px wide is tracked (mediapipe's short-range detector finds it);
    # below that nothing is detected and check_usable says so, with the size hint.
    frames, s, offset = _tiny_face_frames(clip[:30], 64)
    tr = track_landmarks(write_video(tmp_path / "tiny64.mp4", frames, FPS), progress=False)
    assert tr.detected.mean() >= 0.95
    expect = gt["landmarks_2d"][:30] * s + offset
    err = np.linalg.norm(tr.landmarks[..., :2] - expect, axis=-1)[tr.detected]
    assert np.median(err) < 2.0
    check_usable(tr, "tiny64.mp4")

    frames, _, _ = _tiny_face_frames(clip[:15], 32)
    path = write_video(tmp_path / "tiny32.mp4", frames, FPS)
    tr = track_landmarks(path, progress=False)
    with pytest.raises(NoFaceError, match="no face found in any frame.*60 pixels") as e:
        check_usable(tr, str(path))
    assert str(path) in str(e.value)


def test_two_faces_the_larger_is_followed_consistently(clip, gt, tmp_path):
    n = 40
    frames = np.full((n, 512, 768, 3), 128, np.uint8)
    frames[:, :, :512] = clip[:n]  # the larger face, left
    for i in range(n):  # a half-size copy, right
        frames[i, 128:384, 512:] = cv2.resize(clip[i], (256, 256), interpolation=cv2.INTER_AREA)
    tr = track_landmarks(write_video(tmp_path / "two.mp4", frames, FPS), progress=False)
    assert tr.detected.all()
    assert (tr.num_faces == 2).mean() >= 0.5  # mediapipe did see both
    err = np.linalg.norm(tr.landmarks[..., :2] - gt["landmarks_2d"][:n], axis=-1)
    assert np.median(err, axis=1).max() < 4.0  # every frame: the larger face


# --- imports and real media ------------------------------------------------------------------------


def test_importing_tracking_and_eyes_does_not_load_mediapipe():
    code = "import sys, recon.tracking, recon.eyes\nprint('mediapipe' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"


REAL_VIDEOS = ("cnn2_25fps.mp4", "may_5s.mp4", "aoc_8s_mp4v.mp4", "face1_22fps_700px.mp4", "face4_30fps_700px.mp4")


def test_real_videos_track_without_error(shared_data):
    for name in REAL_VIDEOS:
        path = shared_data / "video" / name
        tr = track_landmarks(path, TrackingConfig(max_size=512), progress=False, max_frames=40)
        assert tr.num_frames == 40, name
        assert tr.detected.mean() >= 0.9, name
        assert max(tr.frame_size) == 512 and tr.scale == pytest.approx(512 / max(tr.source_size)), name
        check_usable(tr, str(path))

"""Eye openness, blink signal and events, event F1 and gaze (recon.eyes), on landmark tracks made by
moving the lids and irises of a real face's landmarks (mediapipe's on the bundled astronaut photo).

The end-to-end check on video (blink events of the tracked synthetic subject against its ground
truth, F1 >= 0.9) is in tests/test_tracking.py, which already builds and tracks that subject.
"""

import numpy as np
import pytest

from recon import topology as T
from recon.eyes import (
    blink_events,
    blink_signal,
    event_f1,
    events_from_intervals,
    eye_openness,
    gaze,
    gaze_angles,
)

LEFT, RIGHT = 0, 1


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    from recon.landmarks import reference_landmarks

    return reference_landmarks().copy()  # [478, 3] pixels


def close_lids(lm: np.ndarray, closure: float, eyes=(LEFT, RIGHT)) -> np.ndarray:
    """Move each upper-lid point ``closure`` of the way to its lower-lid partner (1 = shut)."""
    out = lm.copy()
    contours = {LEFT: (T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER), RIGHT: (T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER)}
    for e in eyes:
        up, lo = (np.array(c[1:-1]) for c in contours[e])
        out[up] = lm[up] + closure * (lm[lo] - lm[up])
    return out


def similarity(lm: np.ndarray, scale: float, angle: float, shift) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    R = np.array([[c, -s], [s, c]])
    out = lm.copy()
    out[:, :2] = scale * lm[:, :2] @ R.T + np.asarray(shift)
    return out


def test_openness_is_similarity_invariant_and_per_eye(face):
    o = eye_openness(face)
    assert o.shape == (2,) and np.all((o > 0.2) & (o < 0.5)), o
    for scale, angle, shift in [(0.3, 0.0, (5, 7)), (2.5, 0.35, (-100, 40)), (1.0, -0.5, (0, 0))]:
        np.testing.assert_allclose(eye_openness(similarity(face, scale, angle, shift)), o, rtol=1e-9)
    # [T, 478, 2] works as well as [T, 478, 3]; the left eye is the subject's left
    track = np.stack([face, close_lids(face, 1.0, eyes=(LEFT,))])[..., :2]
    ot = eye_openness(track)
    assert ot.shape == (2, 2)
    assert abs(ot[1, LEFT]) < 1e-9 and ot[1, RIGHT] == pytest.approx(o[RIGHT])
    # the subject's left eye is on the image's right in a frontal photo
    assert face[T.LEFT_EYE_CORNERS[0], 0] > face[T.RIGHT_EYE_CORNERS[0], 0]
    with pytest.raises(ValueError):
        eye_openness(face[:100])


def blink_track(face, n=120, blinks=((20, 26), (60, 64), (95, 102)), seed=0):
    """A track of ``n`` frames: small jitter, head drift, and full blinks (raised-cosine closure)
    over the given frame ranges (end exclusive). Returns landmarks [n, 478, 3] and the closure [n]."""
    rng = np.random.default_rng(seed)
    closure = np.zeros(n)
    for s, e in blinks:
        k = np.arange(s, e)
        closure[k] = np.sin(np.pi * (k - s + 0.5) / (e - s)) ** 2
    frames = []
    for i in range(n):
        lm = close_lids(face, closure[i])
        lm = similarity(lm, 1.0 + 0.1 * np.sin(i / 15), 0.1 * np.sin(i / 23), (3 * np.sin(i / 9), 0.0))
        lm[:, :2] += rng.normal(scale=0.3, size=(478, 2))
        frames.append(lm)
    return np.stack(frames), closure


def test_blink_signal_normalises_per_subject_and_finds_the_blinks(face):
    blinks = ((20, 26), (60, 64), (95, 102))
    lm, closure = blink_track(face, blinks=blinks)
    b = blink_signal(lm)
    assert b.shape == (len(lm), 2) and np.nanmin(b) >= 0 and np.nanmax(b) <= 1
    open_frames = closure == 0
    assert np.median(b[open_frames]) < 0.1  # the open eye is 0
    assert b[closure > 0.95].min() > 0.95  # a shut eye is 1
    for eye in (LEFT, RIGHT):
        pred = blink_events(b[:, eye])
        assert event_f1(pred, list(blinks), tolerance_frames=1) == 1.0
    # the normalisation is per subject: the same blinks on a face with wider-open eyes give the same signal
    wide = lm.copy()
    for up in (T.LEFT_EYE_UPPER[1:-1], T.RIGHT_EYE_UPPER[1:-1]):
        eye_height = lm[:, list(up), 1] - lm[:, [T.LEFT_EYE_CORNERS[0]], 1]
        wide[:, list(up), 1] += 0.3 * eye_height  # upper lid 30% further from the corner line
    bw = blink_signal(wide)
    assert np.corrcoef(bw[:, 0], b[:, 0])[0, 1] > 0.95
    assert abs(np.median(bw[open_frames]) - np.median(b[open_frames])) < 0.1


def test_blink_signal_ignores_unusable_frames_and_handles_nan(face):
    lm, _ = blink_track(face, n=60, blinks=((30, 36),))
    usable = np.ones(60, dtype=bool)
    usable[:10] = False
    lm[5:8] = np.nan
    squint = close_lids(face, 0.9)
    lm[:5] = squint  # unusable frames must not move the open-eye reference
    b = blink_signal(lm, usable)
    assert np.isnan(b[:10]).all() and np.isfinite(b[10:]).all()
    assert np.median(b[10:30]) < 0.1
    assert np.isnan(blink_signal(lm, np.zeros(60, dtype=bool))).all()  # nothing usable: all NaN
    with pytest.raises(ValueError):
        blink_signal(lm, usable[:-1])


def test_blink_events_runs_end_exclusive():
    b = np.array([0, 0.6, 0.9, 0.2, np.nan, 0.7, 0.51, 0.8, 0, 0.9])
    assert blink_events(b) == [(1, 3), (5, 8), (9, 10)]
    assert blink_events(b, min_frames=2) == [(1, 3), (5, 8)]
    assert blink_events(b, threshold=0.75) == [(2, 3), (7, 8), (9, 10)]
    assert blink_events(np.zeros(5)) == [] and blink_events(np.full(4, np.nan)) == []
    with pytest.raises(ValueError):
        blink_events(np.zeros((5, 2)))


def test_event_f1_matches_one_to_one_with_tolerance():
    true = [(10, 15), (40, 44), (80, 86)]
    assert event_f1(true, true) == 1.0
    assert event_f1([(16, 18), (45, 46), (79, 80)], true, tolerance_frames=2) == 1.0  # near misses
    assert event_f1([(20, 22)], [(10, 15)], tolerance_frames=2) == 0.0  # too far
    f1, p, r, m = event_f1([(10, 86)], true, return_counts=True)  # one long event claims one true event
    assert (m, p, r) == (1, 1.0, 1 / 3) and f1 == pytest.approx(0.5)
    f1, p, r, m = event_f1(true + [(60, 62)], true, return_counts=True)  # one false alarm
    assert (m, p, r) == (3, 0.75, 1.0) and f1 == pytest.approx(6 / 7)
    assert event_f1([], []) == 1.0 and event_f1([], true) == 0.0 and event_f1(true, []) == 0.0
    # optimal pairing: greedy would give the middle prediction to the first true event
    assert event_f1([(0, 3), (4, 9)], [(2, 5), (8, 12)], tolerance_frames=0) == 1.0


def test_events_from_intervals_covers_the_frames_inside():
    assert events_from_intervals(np.array([[1.0, 1.2], [3.01, 3.03]]), 25.0) == [(25, 31), (75, 76)]
    assert events_from_intervals(np.zeros((0, 2)), 25.0) == []


IRISES = {LEFT: list(T.LEFT_IRIS), RIGHT: list(T.RIGHT_IRIS)}
CORNERS = {LEFT: (T.LEFT_EYE_CORNERS[1], T.LEFT_EYE_CORNERS[0]), RIGHT: T.RIGHT_EYE_CORNERS}  # image left, right


def eye_axes(lm, eye):
    """The eye's axis ``u`` (image-left corner to image-right corner), normal ``n`` (towards
    image-down) and corner distance: each eye is tilted a little (canthal tilt), so gaze is
    measured along these, not along image x and y."""
    a, b = lm[CORNERS[eye][0], :2], lm[CORNERS[eye][1], :2]
    width = np.linalg.norm(b - a)
    u = (b - a) / width
    return u, np.array([-u[1], u[0]]), width


def move_irises(lm, dx, dy, eyes=(LEFT, RIGHT)):
    """Shift the irises by ``dx`` eye widths along the eye axis and ``dy`` along its normal."""
    out = lm.copy()
    for e in eyes:
        u, n, w = eye_axes(lm, e)
        out[IRISES[e], :2] += (dx * u + dy * n) * w
    return out


def test_gaze_follows_the_iris_and_is_similarity_invariant(face):
    g0 = gaze(face)
    assert g0.shape == (2, 2) and np.all(np.abs(g0) < 0.5)
    frames = []
    for dx, dy in [(0.1, 0.0), (0.0, 0.08), (-0.15, -0.05)]:
        lm = move_irises(face, dx, dy)
        frames.append(lm)
        g = gaze(lm)
        # x along the eye towards image-right, y towards image-down, in half eye widths
        np.testing.assert_allclose(g - g0, np.array([[2 * dx, 2 * dy]] * 2), atol=1e-9)
        np.testing.assert_allclose(gaze(similarity(lm, 1.7, 0.4, (30, -20))), g, atol=1e-9)
    assert gaze(np.stack(frames)).shape == (3, 2, 2)
    # an iris moved towards image-right moves towards image-right in gaze (upright face)
    lm = face.copy()
    lm[IRISES[LEFT], 0] += 5.0
    d = gaze(lm) - g0
    assert d[LEFT, 0] > 0 and abs(d[LEFT, 1]) < 0.2 * d[LEFT, 0] and np.allclose(d[RIGHT], 0)


def test_gaze_angles_small_angle_model(face):
    shifts = [0.0, 0.0, 0.0, 0.1, -0.1]  # iris shift in eye widths along the eye axis
    track = np.stack([move_irises(face, s, 0.0) for s in shifts])
    a = gaze_angles(track)  # calibrated: the median frame (no shift) is straight ahead
    assert a.shape == (5, 2, 2)
    np.testing.assert_allclose(a[:3], 0, atol=1e-9)
    # iris 0.1 eye widths to the right on an eyeball of radius 0.42 eye widths
    np.testing.assert_allclose(a[3, :, 0], np.arcsin(0.1 / 0.42), atol=1e-9)
    np.testing.assert_allclose(a[4, :, 0], -np.arcsin(0.1 / 0.42), atol=1e-9)
    np.testing.assert_allclose(a[3:, :, 1], 0, atol=1e-9)
    down = gaze_angles(np.stack([face, face, move_irises(face, 0.0, 0.05)]))
    np.testing.assert_allclose(down[2, :, 1], np.arcsin(0.05 / 0.42), atol=1e-9)
    raw = gaze_angles(track, calibrate=False)
    assert np.all(np.abs(raw[0]) < 0.6) and np.all(raw[3, :, 0] > raw[0, :, 0])
    nan_track = track.copy()
    nan_track[0] = np.nan
    assert np.isnan(gaze_angles(nan_track)[0]).all() and np.isfinite(gaze_angles(nan_track)[1:]).all()

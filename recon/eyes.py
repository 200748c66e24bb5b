"""Eyes from face landmarks: openness, a per-subject blink signal (an AU45 analogue), blink
events and their F1 score, and iris gaze.

Inputs are landmark tracks ``landmarks: [T, 478, >=2]`` in pixels (x right, y down; only x and y
are used), mediapipe's topology (:mod:`recon.topology`); NaN frames give NaN outputs. Every
per-eye output is ordered (left, right): the subject's own sides, as in :mod:`recon.topology`
(the subject's left eye appears on the right half of a frontal image).

Eye frame. Each eye gets a 2D frame from its two corners: the axis ``u`` runs from the corner
on the image's left to the one on the image's right (so +u is image-right for an upright face)
and ``n`` is ``u`` turned 90 degrees towards image-down. Measuring along ``u`` and ``n`` instead
of image x and y keeps the quantities unchanged under in-plane head roll, and dividing by the
corner distance (the eye width) makes them independent of the face's size in pixels.
"""

from __future__ import annotations

import warnings

import numpy as np

from recon import topology as T

__all__ = [
    "EYES",
    "eye_openness",
    "blink_signal",
    "blink_events",
    "events_from_intervals",
    "event_f1",
    "gaze",
    "gaze_angles",
]

# Per eye: (corner on the image's left, corner on the image's right), the lid point pairs
# (upper, lower) whose distance is averaged, and the iris centre. For the right eye the outer
# corner (33) is on the image's left; for the left eye the inner corner (362) is.
_RIGHT_PAIRS = tuple(zip(T.RIGHT_EYE_UPPER[3:6], T.RIGHT_EYE_LOWER[3:6]))  # (160,144) (159,145) (158,153)
_LEFT_PAIRS = tuple(zip(T.LEFT_EYE_UPPER[3:6], T.LEFT_EYE_LOWER[3:6]))  # (387,373) (386,374) (385,380)

EYES = (
    # name, (image-left corner, image-right corner), lid pairs, iris centre
    ("left", (T.LEFT_EYE_CORNERS[1], T.LEFT_EYE_CORNERS[0]), _LEFT_PAIRS, T.LEFT_IRIS_CENTER),
    ("right", (T.RIGHT_EYE_CORNERS[0], T.RIGHT_EYE_CORNERS[1]), _RIGHT_PAIRS, T.RIGHT_IRIS_CENTER),
)
"""The eyes in output order (left, right): name, corners, lid pairs (upper, lower), iris centre."""

OPEN_PERCENTILE = 90.0
"""Percentile of a subject's eye openness over usable frames taken as its open eye (blink 0)."""

CLOSED_FRACTION = 0.25
"""Openness of a closed eye as a fraction of the subject's open-eye openness (blink 1)."""

EYE_RADIUS_PER_WIDTH = 0.42
"""Eyeball radius over the eye's corner-to-corner width: about 12 mm over 28-30 mm in adults."""


def _as_track(landmarks: np.ndarray) -> tuple[np.ndarray, bool]:
    lm = np.asarray(landmarks, dtype=np.float64)
    single = lm.ndim == 2
    if single:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1] < T.NUM_LANDMARKS or lm.shape[2] < 2:
        raise ValueError(f"expected landmarks [T, 478, >=2] (or [478, >=2]), got shape {np.shape(landmarks)}")
    return lm[..., :2], single


def _eye_frame(lm: np.ndarray, corners: tuple[int, int]):
    """Centre ``[T, 2]``, unit axis ``u [T, 2]``, normal ``n [T, 2]`` and width ``[T]`` of one eye."""
    a, b = lm[:, corners[0]], lm[:, corners[1]]
    axis = b - a
    width = np.linalg.norm(axis, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = axis / width[:, None]
    n = np.stack([-u[:, 1], u[:, 0]], axis=-1)  # u turned towards image-down: (1, 0) -> (0, 1)
    return 0.5 * (a + b), u, n, width


def eye_openness(landmarks: np.ndarray) -> np.ndarray:
    """Eye opening over eye width, ``[T, 2]`` (left, right); ``[2]`` for a single ``[478, >=2]``.

    For each eye: the mean over three upper/lower lid point pairs around the lid middle of the
    lower point's offset from the upper one along the eye's normal ``n`` (so lids that cross give
    a small negative value rather than a positive distance), divided by the corner-to-corner
    width. Scale-, translation- and roll-invariant. Typical values in mediapipe's landmarks:
    0.28-0.43 for an open eye, under 0.1 for a closed one.
    """
    lm, single = _as_track(landmarks)
    out = np.empty(lm.shape[:1] + (2,))
    for k, (_, corners, pairs, _) in enumerate(EYES):
        _, _, n, width = _eye_frame(lm, corners)
        up = lm[:, [p[0] for p in pairs]]
        lo = lm[:, [p[1] for p in pairs]]
        gap = np.einsum("tpc,tc->tp", lo - up, n).mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, k] = np.where(width > 0, gap / width, np.nan)
    return out[0] if single else out


def blink_signal(
    landmarks: np.ndarray,
    usable: np.ndarray | None = None,
    open_percentile: float = OPEN_PERCENTILE,
    closed_fraction: float = CLOSED_FRACTION,
) -> np.ndarray:
    """Per-eye eye closure ``[T, 2]`` (left, right) in [0, 1], normalised per subject: an AU45
    analogue. NaN in frames that are not usable (``usable: [T]`` bool; all frames when None) or
    whose landmarks are NaN.

    ``blink = (open - o) / (open - closed)`` clipped to [0, 1], where ``o`` is the frame's
    :func:`eye_openness`, ``open`` the ``open_percentile`` of ``o`` over the usable frames (the
    subject's open eye: blinks take under 10% of a talking person's frames, so the 90th
    percentile lies among open-eye frames while ignoring rare wide-eyed outliers) and ``closed =
    closed_fraction * open``.

    The closed level is a fixed fraction of the open one rather than a low percentile of the
    data: a low percentile is only a closed eye if the clip contains full blinks, and in a short
    clip without any it would turn ordinary noise into "blinks". The fraction (0.25) was read
    off mediapipe's landmarks: at the bottom of a blink the openness is about 0-0.1 of the open
    value on the five real videos of ../shared/data and 0.2-0.3 on the built-in synthetic
    subject (whose rendered lids stay thick), so both reach a blink of 0.95-1; the 0.5 event
    threshold then lies at 62% of the open eye, below ordinary talking-eye variation (the
    median frame sits at 86-96% of the 90th percentile on those videos).
    """
    o = eye_openness(landmarks)
    if o.ndim == 1:
        o = o[None]
    Tn = len(o)
    ok = np.ones(Tn, dtype=bool) if usable is None else np.asarray(usable, dtype=bool)
    if ok.shape != (Tn,):
        raise ValueError(f"usable must be [T] = [{Tn}], got {ok.shape}")
    if not (0.0 <= closed_fraction < 1.0):
        raise ValueError(f"closed_fraction must be in [0, 1), got {closed_fraction}")
    out = np.full((Tn, 2), np.nan)
    for k in range(2):
        valid = ok & np.isfinite(o[:, k])
        if not valid.any():
            continue
        open_ = np.percentile(o[valid, k], open_percentile)
        if not open_ > 0:
            continue
        closed = closed_fraction * open_
        out[valid, k] = np.clip((open_ - o[valid, k]) / (open_ - closed), 0.0, 1.0)
    return out


def blink_events(blink: np.ndarray, threshold: float = 0.5, min_frames: int = 1) -> list[tuple[int, int]]:
    """Runs of frames with ``blink > threshold`` as ``[(start_frame, end_frame), ...]``, end
    exclusive (the blink covers frames ``start .. end - 1``). ``blink: [T]`` (one eye; use e.g.
    ``blink.mean(axis=1)`` for both); NaN counts as open. Runs shorter than ``min_frames`` are
    dropped."""
    b = np.asarray(blink, dtype=np.float64)
    if b.ndim != 1:
        raise ValueError(f"blink must be [T] (one eye), got shape {b.shape}")
    on = np.zeros(len(b) + 2, dtype=np.int8)
    with np.errstate(invalid="ignore"):
        on[1:-1] = b > threshold
    d = np.diff(on)
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1)
    return [(int(s), int(e)) for s, e in zip(starts, ends) if e - s >= min_frames]


def events_from_intervals(intervals_s: np.ndarray, fps: float) -> list[tuple[int, int]]:
    """Time intervals ``[N, 2]`` (start, end seconds) -> frame events ``(start, end)`` (end
    exclusive) covering the frames whose time ``i / fps`` lies in ``[start, end]``; at least one
    frame each (the nearest)."""
    out = []
    for s, e in np.asarray(intervals_s, dtype=np.float64).reshape(-1, 2):
        a, b = int(np.ceil(s * fps - 1e-9)), int(np.floor(e * fps + 1e-9)) + 1
        if b <= a:
            a = int(round(0.5 * (s + e) * fps))
            b = a + 1
        out.append((a, b))
    return out


def event_f1(
    pred_events, true_events, tolerance_frames: int = 2, return_counts: bool = False,
):
    """F1 score of predicted events against true ones, each ``(start, end)`` frames, end exclusive.

    A predicted and a true event match when they overlap after each is widened by
    ``tolerance_frames`` on both sides; events are paired one-to-one (a maximum matching, so one
    long prediction cannot claim two true events). ``precision = matched / predicted``,
    ``recall = matched / true``; F1 is 1.0 when both lists are empty. With ``return_counts``
    returns ``(f1, precision, recall, matched)``.
    """
    from scipy.optimize import linear_sum_assignment

    pred = [tuple(map(int, e)) for e in pred_events]
    true = [tuple(map(int, e)) for e in true_events]
    tol = int(tolerance_frames)
    if not pred and not true:
        f1, p, r, m = 1.0, 1.0, 1.0, 0
    else:
        m = 0
        if pred and true:
            ps = np.array(pred, dtype=np.float64).reshape(-1, 2)
            ts = np.array(true, dtype=np.float64).reshape(-1, 2)
            lo = np.maximum(ps[:, None, 0] - tol, ts[None, :, 0] - tol)
            hi = np.minimum(ps[:, None, 1] + tol, ts[None, :, 1] + tol)
            overlap = hi - lo
            ok = overlap > 0
            # Maximise the number of pairs first, then the total overlap.
            cost = np.where(ok, -(1e6 + overlap), 0.0)
            rows, cols = linear_sum_assignment(cost)
            m = int(ok[rows, cols].sum())
        p = m / len(pred) if pred else 0.0
        r = m / len(true) if true else 0.0
        f1 = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return (f1, p, r, m) if return_counts else f1


def gaze(landmarks: np.ndarray) -> np.ndarray:
    """Iris position in each eye, ``[T, 2, 2]``: eyes (left, right) x (x, y); ``[2, 2]`` for one frame.

    The iris centre's offset from the midpoint of the eye's corners, along the eye axis ``u``
    (x, towards image-right) and its normal ``n`` (y, towards image-down), both divided by half
    the corner-to-corner width: x = +-1 puts the iris centre on a corner. Both axes use the
    width because the corners are fixed to the skull while the lids move with blinks and with
    vertical gaze; the y of a camera-facing gaze is therefore not 0 but a per-subject offset
    (the iris centre sits a little above the corner line), which :func:`gaze_angles` removes.
    """
    lm, single = _as_track(landmarks)
    out = np.empty(lm.shape[:1] + (2, 2))
    for k, (_, corners, _, iris) in enumerate(EYES):
        centre, u, n, width = _eye_frame(lm, corners)
        d = lm[:, iris] - centre
        with np.errstate(invalid="ignore", divide="ignore"):
            half = np.where(width > 0, 0.5 * width, np.nan)
            out[:, k, 0] = np.einsum("tc,tc->t", d, u) / half
            out[:, k, 1] = np.einsum("tc,tc->t", d, n) / half
    return out[0] if single else out


def gaze_angles(landmarks: np.ndarray, usable: np.ndarray | None = None, calibrate: bool = True) -> np.ndarray:
    """Approximate eye-in-head gaze angles, ``[T, 2, 2]`` radians: eyes (left, right) x (yaw, pitch).

    Yaw is positive towards image-right, pitch positive towards image-down (the same axes as
    :func:`gaze`). A simple model, not a calibrated eye tracker: the iris centre is taken to move
    on a sphere whose radius is ``EYE_RADIUS_PER_WIDTH`` (0.42) eye widths, seen head-on, so
    ``angle = arcsin(offset * 0.5 / 0.42)`` for each :func:`gaze` offset. With ``calibrate`` the
    median offset over the usable frames (``usable: [T]`` bool; all when None) is subtracted
    first: it assumes the subject looks at the camera on average, as in talking-head footage,
    and removes the iris's rest position relative to the corners. Head rotation is not
    compensated (foreshortening of the eye under head yaw/pitch shrinks the offsets by the
    cosine of the head angle), so add the head pose for gaze in camera space.
    """
    g = gaze(landmarks)
    single = g.ndim == 2
    if single:
        g = g[None]
    if calibrate:
        ok = np.ones(len(g), dtype=bool) if usable is None else np.asarray(usable, dtype=bool)
        if ok.shape != (len(g),):
            raise ValueError(f"usable must be [T] = [{len(g)}], got {ok.shape}")
        sel = g[ok]
        with warnings.catch_warnings():  # an eye without any finite frame stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            centre = np.nanmedian(sel, axis=0, keepdims=True) if len(sel) else np.full((1, 2, 2), np.nan)
        g = g - centre
    s = np.clip(g * (0.5 / EYE_RADIUS_PER_WIDTH), -1.0, 1.0)
    out = np.arcsin(s)
    return out[0] if single else out

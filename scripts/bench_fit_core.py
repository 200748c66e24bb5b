"""Benchmark :func:`recon.fitting.fit_video` (camera, pose, subject model and expression fit) alone.

Landmarks (``[T, 478, 3]`` pixels, mediapipe's convention), one of:
- default: analytic landmarks of ``--frames`` frames: mediapipe's mesh of the bundled portrait as
  a face, smooth head motion (yaw up to 20 degrees), speech-like jaw and lip motion, projected
  through a 512x512 pinhole camera (f = 1200 px), plus mediapipe-like noise (per-frame shifts of
  the whole face and per-point noise). Ground truth known, so rotation errors are reported.
- ``--landmarks FILE.npy``: a saved ``[T, 478, 3]`` array (NaN rows where no face), e.g.
  mediapipe's landmarks of a real video; ``--size H W`` gives its frame size.
- ``--video FILE``: runs mediapipe's face mesh (tracking mode) over the video first (not timed;
  ``--save`` keeps the landmarks for later runs).

Reports the machine, the median wall time of ``--runs`` fits after one warm-up (with the stages:
focal search, model building, Gauss-Newton), frames per second of the fit, the focal found, the
mean reprojection error and the jitter figure of ``talkface``'s benchmark: the mean
frame-to-frame acceleration of the fitted 2D landmarks next to that of the input landmarks.

Usage: ``python -m scripts.bench_fit_core [--frames 1779] [--runs 3] [--device auto]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def analytic_landmarks(frames: int, size: int = 512, focal: float = 1200.0, fps: float = 25.0, seed: int = 0,
                       noise_px: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks ``[T, 478, 3]`` of a moving, talking face with mediapipe-like noise, and the true
    head rotations ``[T, 3, 3]`` (see the module docstring)."""
    from recon import topology as T
    from recon.fitting import STABLE_POINTS, intrinsics
    from recon.landmarks import lift_to_metric, reference_landmarks
    from render.rotations import euler_to_matrix

    rng = np.random.default_rng(seed)
    K = intrinsics(focal, (size, size))
    face = lift_to_metric(reference_landmarks(), K)
    face -= face[[168, 6, 197]].mean(0)
    lip, chin = face[T.LIP_MID_INNER[0], 1], face[T.CHIN, 1]
    below = np.clip((face[:, 1] - lip) / (chin - lip), 0, 1.2)
    jaw = np.stack([np.zeros_like(below), 0.012 * below, 0.004 * below], 1)
    still = np.clip(np.linalg.norm(face[:, None] - face[list(STABLE_POINTS)][None], axis=-1).min(1) / 0.01, 0, 1)
    lips = np.exp(-((np.linalg.norm(face - face[17], axis=1) / 0.02) ** 2)) * still
    pucker = lips[:, None] * np.array([0.0, 0.0, -0.004])
    t = np.arange(frames) / fps

    def wave(hz, amp):
        return amp * np.sin(2 * np.pi * hz * t + rng.uniform(0, 2 * np.pi))

    euler = np.deg2rad(np.stack([wave(0.2, 14.0) + wave(0.5, 6.0), wave(0.3, 6.0), wave(0.25, 4.0)], 1))
    R = euler_to_matrix(euler[:, 0], euler[:, 1], euler[:, 2])
    depth = focal * T.OUTER_EYE_CORNER_DISTANCE_M / 100.0  # outer eye corners about 100 px apart
    trans = np.stack([wave(0.1, 0.01), wave(0.15, 0.01), depth + wave(0.1, 0.02)], 1)
    syllables = np.clip(np.sin(2 * np.pi * 4.0 * t + 0.8 * np.sin(2 * np.pi * 0.7 * t)), 0, None)
    syllables = syllables * (0.5 + 0.5 * np.abs(wave(0.3, 1.0)))
    shapes = face + syllables[:, None, None] * jaw + wave(1.3, 1.0)[:, None, None] * pucker
    cam = np.einsum("tij,tlj->tli", R, shapes) + trans[:, None]
    uv = cam[..., :2] / cam[..., 2:] * focal + K[:2, 2]
    zmean = cam[..., 2].mean(1, keepdims=True)
    z = (cam[..., 2] - zmean) * focal / zmean
    uv = uv + rng.normal(0, noise_px, (frames, 1, 2)) + rng.normal(0, noise_px, uv.shape)
    return np.concatenate([uv, z[..., None]], -1), R


def video_landmarks(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """mediapipe's landmarks ``[T, 478, 3]`` of every frame (NaN rows where no face), frame size."""
    from recon.landmarks import FaceMeshDetector
    from render.media.video import VideoReader

    out = []
    with VideoReader(path) as video, FaceMeshDetector(static=False) as detect:
        for frame in video:
            pts = detect(frame.image)
            out.append(np.full((478, 3), np.nan) if pts is None else pts)
            size = frame.image.shape[:2]
    return np.stack(out), size


def acceleration(x: np.ndarray, usable: np.ndarray) -> float:
    """Mean frame-to-frame acceleration (pixels) of landmarks ``[T, L, 2]`` over usable triples."""
    ok = usable[:-2] & usable[1:-1] & usable[2:]
    return float(np.linalg.norm(x[:-2] - 2 * x[1:-1] + x[2:], axis=-1)[ok].mean())


def main(argv: list[str] | None = None) -> None:
    from recon.fitting import FitConfig, fit_video
    from render.cpu_tuning import cpu_name, tune_glibc_malloc

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1779, help="frames of the analytic landmarks")
    parser.add_argument("--landmarks", type=Path, help="a saved [T, 478, 3] .npy of landmarks in pixels")
    parser.add_argument("--video", type=Path, help="a video: run mediapipe over it first (not timed)")
    parser.add_argument("--save", type=Path, help="with --video: save its landmarks to this .npy")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"), help="frame size of --landmarks")
    parser.add_argument("--runs", type=int, default=3, help="timed fits (median reported) after one warm-up")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--focal", type=float, help="fix the focal (px) instead of searching it")
    parser.add_argument("--no-tune-malloc", action="store_true", help="keep glibc's default malloc thresholds")
    args = parser.parse_args(argv)
    if not args.no_tune_malloc:
        tune_glibc_malloc()  # as the talkface CLI does

    truth = None
    if args.video is not None:
        lm, size = video_landmarks(args.video)
        source = f"mediapipe landmarks of {args.video}"
        if args.save:
            np.save(args.save, lm)
    elif args.landmarks is not None:
        lm, size = np.load(args.landmarks), tuple(args.size)
        source = f"landmarks {args.landmarks}"
    else:
        lm, truth = analytic_landmarks(args.frames)
        size = (512, 512)
        source = f"analytic landmarks ({args.frames} frames, f = 1200 px, mediapipe-like noise)"
    usable = np.isfinite(lm).all(axis=(1, 2))
    cfg = FitConfig(device=args.device, focal=args.focal)

    print(f"CPU: {cpu_name()}  torch threads: {torch.get_num_threads()}  torch {torch.__version__}")
    if torch.cuda.is_available():
        print(f"CUDA: {torch.cuda.get_device_name(0)}")
    print(f"input: {source}; {len(lm)} frames ({usable.mean():.1%} with a face), {size[1]}x{size[0]}")

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    res = fit_video(lm, usable, size, cfg)  # warm-up
    times, stages = [], []
    for _ in range(args.runs):
        sync()
        t0 = time.perf_counter()
        res = fit_video(lm, usable, size, cfg)
        sync()
        times.append(time.perf_counter() - t0)
        stages.append(res.info["timings_s"])
    med = statistics.median(times)
    stage_med = {k: statistics.median(s[k] for s in stages) for k in ("focal_s", "model_s", "solve_s")}
    print(f"device {res.info['device']}: fit_video median {med:.2f} s over {args.runs} runs "
          f"({len(lm) / med:.0f} frames/s); stages: " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in stage_med.items()))
    print(f"focal {res.K[0, 0]:.1f} px; {res.model.num_exp} expression components "
          f"({res.model.meta['explained_variance']:.1%} of the variance)")
    print(f"reprojection error: mean {np.nanmean(res.reprojection_error):.3f} px, "
          f"95th percentile {np.nanpercentile(res.reprojection_error, 95):.3f} px")
    raw, fitted = acceleration(lm[..., :2], usable), acceleration(res.landmarks_2d, usable)
    print(f"jitter (mean landmark acceleration): input {raw:.3f} px, fitted {fitted:.3f} px (ratio {fitted / raw:.2f})")
    if truth is not None:
        M = np.einsum("tji,tjk->ik", truth, res.rotation_matrices)
        U, _, Vt = np.linalg.svd(M)
        Qt = U @ np.diag([1.0, 1.0, np.linalg.det(U @ Vt)]) @ Vt
        D = np.einsum("tji,tjk->tik", truth, res.rotation_matrices) @ Qt.T
        err = np.degrees(np.arccos(np.clip((np.trace(D, axis1=1, axis2=2) - 1) / 2, -1, 1)))
        print(f"head rotation error (up to one constant rotation): median {np.median(err):.3f} deg, max {err.max():.3f}")


if __name__ == "__main__":
    main()

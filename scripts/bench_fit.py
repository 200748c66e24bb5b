"""Benchmark ``talkface fit`` on a video: speed per stage, reprojection error, jitter.

Usage: ``python scripts/bench_fit.py VIDEO [--out DIR] [--runs 1]``

Prints, for the whole fit (every stage from scratch) on this machine: frames per second overall
and per stage, mean landmark reprojection error (px, fitted model vs mediapipe's landmarks) and
the jitter figure: the mean frame-to-frame acceleration ``|x[k+1] - 2 x[k] + x[k-1]|`` (px per
frame^2) of the fitted 2D landmarks next to that of mediapipe's raw landmarks on the same frames.
With ``--runs N > 1`` the fit is repeated from scratch and medians are reported.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from render.cpu_tuning import cpu_name


def acceleration(points: np.ndarray, valid: np.ndarray) -> float:
    """Mean ``|p[k+1] - 2 p[k] + p[k-1]|`` over landmarks and frames whose three frames are valid.
    ``points: [T, L, 2]``, ``valid: [T]``."""
    ok = valid[2:] & valid[1:-1] & valid[:-2]
    acc = points[2:] - 2 * points[1:-1] + points[:-2]
    return float(np.linalg.norm(acc[ok], axis=-1).mean())


def run_once(video: Path, out: Path) -> dict:
    import json

    from recon.pipeline import FitPipelineConfig, run_fit

    t0 = time.perf_counter()
    folder = run_fit(FitPipelineConfig(video=video, out=out), progress=False, log=lambda *_: None)
    wall = time.perf_counter() - t0
    meta = json.loads((folder / "meta.json").read_text())
    with np.load(folder / "track.npz") as z:
        valid, raw, fitted, err = z["valid"], z["landmarks_2d"], z["fitted_landmarks_2d"], z["reprojection_error"]
        detected = z["detected"]
    n = len(valid)
    return {
        "frames": n,
        "wall_s": wall,
        "stages_s": meta["timings_s"],
        "frames_detail_s": meta.get("frames_info", {}).get("frames_timing_s", {}),
        "reproj_px": float(np.mean(err[valid])),
        "jitter_raw": acceleration(raw, detected),
        "jitter_fit": acceleration(fitted, detected),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("video", type=Path)
    p.add_argument("--out", type=Path, default=None, help="subject folder (default: a temporary one)")
    p.add_argument("--runs", type=int, default=1, help="fits from scratch; medians reported")
    args = p.parse_args(argv)
    import shutil

    import torch

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "subject"
        for _ in range(args.runs):
            shutil.rmtree(out, ignore_errors=True)
            results.append(run_once(args.video, out))
    med = lambda key: statistics.median(r[key] for r in results)  # noqa: E731
    n = results[0]["frames"]
    print(f"machine: {cpu_name()}, {torch.get_num_threads()} torch threads, CUDA: {torch.cuda.is_available()}")
    print(f"video: {args.video} ({n} frames at the working fps), {args.runs} run(s), medians\n")
    print(f"{'stage':<22}{'seconds':>10}{'frames/s':>12}")
    stage_names = results[0]["stages_s"].keys()
    for name in stage_names:
        s = statistics.median(r["stages_s"][name] for r in results)
        print(f"{name:<22}{s:>10.2f}{n / s if s else float('inf'):>12.1f}")
    for name in results[0]["frames_detail_s"]:
        s = statistics.median(r["frames_detail_s"][name] for r in results)
        print(f"{'  frames: ' + name:<22}{s:>10.2f}{n / s if s else float('inf'):>12.1f}")
    wall = med("wall_s")
    print(f"{'whole fit':<22}{wall:>10.2f}{n / wall:>12.1f}\n")
    print(f"mean reprojection error: {med('reproj_px'):.3f} px")
    jr, jf = med("jitter_raw"), med("jitter_fit")
    print(f"jitter (mean landmark acceleration, px/frame^2): raw mediapipe {jr:.3f}, fitted {jf:.3f}, ratio {jf / jr:.3f}")


if __name__ == "__main__":
    main()

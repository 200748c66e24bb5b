"""Benchmark the pure-PyTorch rasterizer on a face-sized mesh and a full-frame mesh at 512x512.

Meshes:
- ``face``: mediapipe's face mesh (468 vertices, 852 triangles) as mediapipe finds it on the
  bundled astronaut photo, scaled to a ~250 x 300 px face in the middle of the frame; when
  mediapipe is unavailable a synthetic stand-in: an 18 x 26 vertex grid (468 vertices, 850 triangles) mapped onto an elliptical
  ellipsoid cap 0.15 m wide and 0.18 m tall, 0.5 m in front of a pinhole camera with
  f = 833 px, i.e. a ~250 x 300 px face in the middle of the frame.
- ``full``: a 26 x 31 vertex grid (1500 triangles) covering the whole 512 x 512 frame in screen
  space, warped by smooth sinusoids (+-8 px) with varying depth, like the synthetic subject's
  warped photo mesh.

For each available device (CPU, and CUDA when present, with ``synchronize``) it reports the median
over ``--runs`` timed runs after warm-up of: ``rasterize``, ``interpolate`` (3 channels),
``antialias``, their sum, and one forward + backward pass of an L1 image loss through all three.

Usage: ``python -m scripts.bench_raster [--runs 25] [--size 512]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from render.cpu_tuning import cpu_name, tune_glibc_malloc

SIZE = 512


def synthetic_face_mesh(size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Screen-space ``verts: [468, 3]`` and ``faces: [850, 3]`` of a face-sized ellipsoid cap."""
    from render.cameras import PinholeCamera

    nx, ny = 18, 26
    s = torch.linspace(-1, 1, nx, dtype=torch.float64)
    t = torch.linspace(-1, 1, ny, dtype=torch.float64)
    T, S = torch.meshgrid(t, s, indexing="ij")
    X = S * torch.sqrt(1 - T**2 / 2)  # square -> disc
    Y = T * torch.sqrt(1 - S**2 / 2)
    bulge = torch.sqrt((1 - X**2 - Y**2).clamp(min=0))
    pts = torch.stack([0.075 * X, 0.09 * Y, 0.5 - 0.06 * bulge], -1).reshape(-1, 3)
    cam = PinholeCamera(fx=833.0, fy=833.0, cx=(size - 1) / 2, cy=(size - 1) / 2)
    verts = cam.project(pts).float()
    faces = _grid_faces(nx, ny)
    return verts, faces, "synthetic 18x26 ellipsoid-cap grid (468 v, 850 t)"


def _grid_faces(nx: int, ny: int) -> torch.Tensor:
    """Two triangles per grid cell, front-facing (negative signed area in y-down pixels)."""
    i, j = torch.meshgrid(torch.arange(ny - 1), torch.arange(nx - 1), indexing="ij")
    a = (i * nx + j).reshape(-1)
    b, c, d = a + 1, a + nx, a + nx + 1
    # a b / c d with x right, y down: (a, c, b) runs counter-clockwise on screen
    return torch.cat([torch.stack([a, c, b], 1), torch.stack([b, c, d], 1)]).long()


def mediapipe_face_mesh(size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The real face mesh: mediapipe's landmarks of the bundled astronaut photo, scaled to a
    250 x 300 px box in the frame centre (raises when mediapipe is unavailable)."""
    import numpy as np

    from recon.landmarks import reference_landmarks
    from recon.topology import NUM_MESH_VERTICES, face_triangles

    v = torch.as_tensor(np.asarray(reference_landmarks()), dtype=torch.float64)[:NUM_MESH_VERTICES]
    faces = torch.as_tensor(np.asarray(face_triangles()), dtype=torch.long)
    lo, hi = v[:, :2].amin(0), v[:, :2].amax(0)
    scale = torch.minimum(250 / (hi[0] - lo[0]), 300 / (hi[1] - lo[1]))
    xy = (v[:, :2] - (lo + hi) / 2) * scale + (size - 1) / 2
    z = (v[:, 2] - v[:, 2].min()) * scale / 1000 + 1.0  # pixels -> depth around 1
    return torch.cat([xy, z[:, None]], 1).float(), faces, "mediapipe face mesh of the astronaut photo (recon)"


def face_mesh(size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor, str]:
    try:
        return mediapipe_face_mesh(size)
    except Exception as exc:  # noqa: BLE001 - any failure means: use the stand-in
        verts, faces, name = synthetic_face_mesh(size)
        return verts, faces, f"{name}; recon.topology mesh unavailable ({type(exc).__name__}: {exc})"


def full_frame_mesh(size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Screen-space ``verts: [806, 3]``, ``faces: [1500, 3]`` covering the whole frame."""
    nx, ny = 26, 31
    xs = torch.linspace(-2, size + 1, nx, dtype=torch.float64)
    ys = torch.linspace(-2, size + 1, ny, dtype=torch.float64)
    Y, X = torch.meshgrid(ys, xs, indexing="ij")
    wx = X + 8 * torch.sin(Y / 40) * torch.sin(X / 90)
    wy = Y + 8 * torch.sin(X / 50) * torch.cos(Y / 70)
    z = 1.0 + 0.1 * torch.sin(X / 100) * torch.cos(Y / 80)
    verts = torch.stack([wx, wy, z], -1).reshape(-1, 3).float()
    return verts, _grid_faces(nx, ny), "full-frame warped 26x31 grid (806 v, 1500 t)"


def _median_ms(fn, runs: int, warmup: int, sync) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_mesh(verts, faces, device: str, size: int, runs: int, warmup: int = 5) -> dict[str, float]:
    from render.rasterizer import antialias, interpolate, rasterize, rasterize_reference

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    verts, faces = verts.to(device), faces.to(device)
    colors = torch.rand(verts.shape[0], 3, generator=torch.Generator().manual_seed(0)).to(device)
    hw = (size, size)
    frags = rasterize(verts, faces, hw)
    img = interpolate(colors, frags, faces)
    res = {
        "rasterize": _median_ms(lambda: rasterize(verts, faces, hw), runs, warmup, sync),
        "interpolate": _median_ms(lambda: interpolate(colors, frags, faces), runs, warmup, sync),
        "antialias": _median_ms(lambda: antialias(img, frags, verts, faces), runs, warmup, sync),
    }
    res["total"] = res["rasterize"] + res["interpolate"] + res["antialias"]
    # The readable per-triangle reference, timed in the same run so the ratio survives a noisy machine.
    res["reference"] = _median_ms(lambda: rasterize_reference(verts, faces, hw), max(3, runs // 8), 1, sync)
    res["speedup"] = res["reference"] / res["rasterize"]
    v = verts.clone().requires_grad_(True)
    target = torch.zeros(1, size, size, 3, device=device)

    def fwd_bwd():
        fr = rasterize(v, faces, hw)
        out = antialias(interpolate(colors, fr, faces), fr, v, faces)
        (out - target).abs().mean().backward()

    res["fwd+bwd"] = _median_ms(fwd_bwd, max(runs // 2, 5), 2, sync)
    res["coverage"] = float((frags.tri_id >= 0).float().mean())
    return res


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=25, help="timed runs per measurement (median reported)")
    parser.add_argument("--size", type=int, default=SIZE, help="square image size in pixels")
    parser.add_argument(
        "--tune-malloc", action="store_true", help="raise glibc's mmap/trim thresholds first (see tune_glibc_malloc)"
    )
    args = parser.parse_args(argv)
    if args.tune_malloc:
        print(f"glibc malloc thresholds raised: {tune_glibc_malloc()}")

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    meshes = [face_mesh(args.size), full_frame_mesh(args.size)]
    print(f"CPU: {cpu_name()}  torch threads: {torch.get_num_threads()}  torch {torch.__version__}")
    if torch.cuda.is_available():
        print(f"CUDA: {torch.cuda.get_device_name(0)}")
    for i, (v, f, name) in enumerate(meshes):
        print(f"mesh {i}: {name}; {v.shape[0]} verts, {f.shape[0]} triangles")
    print(f"image {args.size}x{args.size}, median ms per frame over {args.runs} runs after warm-up;")
    print("reference = rasterize_reference (per-triangle loop), speedup = reference / rasterize\n")
    cols = ["rasterize", "interpolate", "antialias", "total", "fwd+bwd", "reference", "speedup"]
    print(f"{'device':<7}{'mesh':<6}{'cover':>7}" + "".join(f"{c:>13}" for c in cols))
    for device in devices:
        for i, (v, f, _) in enumerate(meshes):
            r = bench_mesh(v, f, device, args.size, args.runs)
            label = "face" if i == 0 else "full"
            print(f"{device:<7}{label:<6}{r['coverage']:>7.2f}" + "".join(f"{r[c]:>13.2f}" for c in cols))


if __name__ == "__main__":
    main()

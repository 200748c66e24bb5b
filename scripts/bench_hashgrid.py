"""Benchmark the hash-grid encoding backends against each other and against the bytes-moved floor.

Configuration (the issue's): 3D points, 16 levels x 2 features, 2^19 table, base resolution 16,
finest 2048, float32 and float16 tables. For each available backend (``torch`` eager, ``compile``
= ``torch.compile`` of the reference, ``triton`` fused kernels, ``tcnn`` when tinycudann imports;
on a CPU the Triton *interpreter* is timed once at a tiny size, for information only) and each
point count it prints the median over ``--runs`` timed runs after warm-up of

- ``fwd``: the forward pass without autograd (inference),
- ``bwd``: the backward pass alone (table gradient) on a recorded graph,
- ``fwd+bwd``: a training step's encoding work,

as milliseconds, points per second, the bytes-moved floor over the time (GB/s), the time over
the floor time at the bandwidth of a large device copy measured in the same run, and the speed-up
over the eager reference at the same size. The floor (``docs/hashgrid.md``): forward reads the
points and the distinct table rows they touch and writes the features; backward reads points and
``dL/dy`` and writes the whole table gradient once.

Usage: ``python scripts/bench_hashgrid.py [--device cuda] [--log2-points 18 20 22] [--runs 10]``;
``--json FILE`` also writes every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

# Triton's interpreter (for the CPU information row) must be chosen before triton is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from nerf.hashgrid import HashGridEncoding  # noqa: E402
from nerf.hashgrid_layout import GridLayout, HashGridConfig  # noqa: E402
from nerf.hashgrid_torch import corner_rows  # noqa: E402
from render.cpu_tuning import cpu_name  # noqa: E402


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}"
    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, runs: int, warmup: int) -> float:
    """Median milliseconds of ``fn()`` over ``runs`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def copy_bandwidth(device: torch.device, runs: int) -> float:
    """Bytes per second of a large device-to-device copy (read + write counted)."""
    n = (1 << 28) if device.type == "cuda" else (1 << 25)  # 1 GiB / 128 MiB of float32
    src = torch.rand(n, device=device)
    dst = torch.empty_like(src)
    ms = timed(lambda: dst.copy_(src), device, runs=max(runs, 5), warmup=2)
    return 2 * src.numel() * 4 / (ms * 1e-3)


def touched_rows(x: torch.Tensor, layout: GridLayout) -> int:
    """Distinct table rows that the points read (every level, every corner)."""
    seen = torch.zeros(layout.num_entries, dtype=torch.bool, device=x.device)
    for scale, resolution, offset, size, hashed in layout.levels:
        for chunk in x.split(1 << 20):
            cell = torch.floor(chunk.clamp(0, 1) * scale + 0.5).long()
            seen[offset + corner_rows(cell, resolution, size, hashed).reshape(-1)] = True
    return int(seen.sum())


def floor_bytes(n: int, layout: GridLayout, touched: int, table_bytes: int) -> dict[str, float]:
    """The fewest bytes each pass must move (see docs/hashgrid.md)."""
    D, L, F = layout.input_dim, layout.num_levels, layout.features
    points, feats = 4 * n * D, 4 * n * L * F
    fwd = points + feats + touched * F * table_bytes
    bwd = points + feats + layout.num_entries * F * table_bytes
    return {"fwd": fwd, "bwd": bwd, "fwd+bwd": fwd + bwd}


def run_case(enc: HashGridEncoding, call, xs: list[torch.Tensor], device: torch.device, runs: int,
             warmup: int) -> dict[str, float]:
    """Median ms of the three passes of ``call(x)`` (the encoder or its compiled version)."""
    table = enc.table
    g = torch.randn(xs[0].shape[0], enc.output_dim, device=device)
    turn = [0]

    def next_x():
        turn[0] += 1
        return xs[turn[0] % len(xs)]  # rotate inputs so repeated runs do not measure a warm cache

    def fwd():
        with torch.no_grad():
            call(next_x())

    y = call(xs[0])

    def bwd():
        torch.autograd.grad(y, table, g, retain_graph=True)

    def step():
        (gt,) = torch.autograd.grad(call(next_x()), table, g)

    out = {"fwd": timed(fwd, device, runs, warmup), "bwd": timed(bwd, device, runs, warmup),
           "fwd+bwd": timed(step, device, runs, warmup)}
    sync(device)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--log2-points", type=int, nargs="+", default=None,
                    help="point counts as powers of two (default 18 20 22 on CUDA, 18 20 on a CPU)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float16"], choices=["float32", "float16"])
    ap.add_argument("--backends", nargs="+", default=None,
                    help="subset of torch compile triton tcnn (default: every available one)")
    ap.add_argument("--compile-log2-points", type=int, nargs="+", default=None,
                    help="sizes at which torch.compile is timed (default: every size on a CPU, 20 on CUDA: "
                         "each size and grad mode is a fresh compilation)")
    ap.add_argument("--runs", type=int, default=None, help="timed runs (default 20 on CUDA, 3 on a CPU)")
    ap.add_argument("--interpreter-points", type=int, default=4096,
                    help="points for the CPU-only Triton interpreter row (0 to skip)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    sizes = args.log2_points or ([18, 20, 22] if cuda else [18, 20])
    runs = args.runs or (20 if cuda else 3)
    warmup = 5 if cuda else 1
    compile_sizes = args.compile_log2_points or ([20] if cuda else sizes)
    backends = args.backends or (["torch", "compile", "triton"] + (["tcnn"] if _has_tcnn() else []) if cuda
                                 else ["torch", "compile"])
    print(f"machine: {machine(device)}; {platform.python_implementation()} {platform.python_version()}", flush=True)
    bandwidth = copy_bandwidth(device, runs)
    print(f"device copy bandwidth (read + write): {bandwidth / 1e9:.1f} GB/s", flush=True)

    rows = []
    for dtype in args.dtypes:
        base = HashGridConfig(table_dtype=dtype, backend="torch")
        ref = HashGridEncoding(base).to(device)
        with torch.no_grad():
            ref.table.uniform_(-1, 1)
        table_bytes = 2 if dtype == "float16" else 4
        for log2n in sizes:
            n = 1 << log2n
            gen = torch.Generator(device=device).manual_seed(log2n)
            xs = [torch.rand(n, 3, device=device, generator=gen) for _ in range(3)]
            floors = floor_bytes(n, ref.layout, touched_rows(xs[0], ref.layout), table_bytes)
            ref_ms = None
            for backend in backends:
                if backend == "compile" and log2n not in compile_sizes:
                    continue
                enc, call = _encoder(backend, base, ref, device)
                if enc is None:
                    continue
                print(f"  {dtype} 2^{log2n} {backend} ...", flush=True)
                ms = run_case(enc, call, xs, device, runs, warmup)
                if backend == "torch":
                    ref_ms = ms
                for pass_, t in ms.items():
                    rows.append(_row(backend, dtype, n, pass_, t, floors[pass_], bandwidth,
                                     ref_ms[pass_] if ref_ms else None))
                del enc, call
                if cuda:
                    torch.cuda.empty_cache()
    if not cuda and args.interpreter_points:
        rows += _interpreter_rows(args.interpreter_points, args.dtypes[0], device, bandwidth)

    _print_table(rows, machine(device), bandwidth)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(device), "copy_bandwidth_Bps": bandwidth, "rows": rows},
                                        indent=1))
    return 0


def _has_tcnn() -> bool:
    import importlib.util

    return importlib.util.find_spec("tinycudann") is not None


def _encoder(backend: str, base: HashGridConfig, ref: HashGridEncoding, device: torch.device):
    """An encoder for ``backend`` sharing ``ref``'s table values, and the callable to time."""
    if backend == "torch":
        return ref, ref
    if backend == "compile":
        return ref, torch.compile(ref, dynamic=False)
    from dataclasses import replace

    enc = HashGridEncoding(replace(base, backend=backend)).to(device)
    with torch.no_grad():
        enc.table.copy_(ref.table)
    try:
        enc(torch.rand(256, 3, device=device))
    except Exception as e:  # a backend that cannot run here is reported, not fatal
        print(f"  skipping {backend}: {e}", flush=True)
        return None, None
    return enc, enc


def _interpreter_rows(n: int, dtype: str, device: torch.device, bandwidth: float) -> list[dict]:
    """The Triton kernels in the interpreter on a CPU at a tiny size (information only)."""
    try:
        from nerf.hashgrid_triton import interpreting
    except ImportError:
        return []
    if not interpreting():
        return []
    base = HashGridConfig(table_dtype=dtype, backend="triton")
    enc = HashGridEncoding(base)
    ref = HashGridEncoding(HashGridConfig(table_dtype=dtype, backend="torch"))
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
        ref.table.copy_(enc.table)
    xs = [torch.rand(n, 3) for _ in range(2)]
    floors = floor_bytes(n, enc.layout, touched_rows(xs[0], enc.layout), 2 if dtype == "float16" else 4)
    print(f"  {dtype} {n} triton-interpreter ...", flush=True)
    ref_ms = run_case(ref, ref, xs, device, 1, 1)
    ms = run_case(enc, enc, xs, device, 1, 1)
    rows = [_row("torch", dtype, n, p, t, floors[p], bandwidth, ref_ms[p]) for p, t in ref_ms.items()]
    return rows + [_row("triton-interp", dtype, n, p, t, floors[p], bandwidth, ref_ms[p]) for p, t in ms.items()]


def _row(backend, dtype, n, pass_, ms, floor, bandwidth, ref_ms) -> dict:
    floor_ms = 1e3 * floor / bandwidth
    return {"backend": backend, "table": dtype, "points": n, "pass": pass_, "ms": ms,
            "points_per_s": n / (ms * 1e-3), "floor_MB": floor / 1e6, "GBps": floor / (ms * 1e-3) / 1e9,
            "x_floor": ms / floor_ms, "speedup_vs_torch": (ref_ms / ms) if ref_ms else None}


def _print_table(rows: list[dict], machine_desc: str, bandwidth: float) -> None:
    print(f"\nhash grid 3D, 16 levels x 2 features, 2^19 table; {machine_desc}; "
          f"copy bandwidth {bandwidth / 1e9:.1f} GB/s; median ms")
    head = f"{'backend':<14}{'table':<8}{'points':>9} {'pass':<8}{'ms':>10}{'Mpts/s':>9}{'floor MB':>9}" \
           f"{'GB/s':>8}{'x floor':>9}{'vs torch':>9}"
    print(head)
    print("-" * len(head))
    for r in rows:
        n = r["points"]
        pts = f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)
        sp = f"{r['speedup_vs_torch']:.1f}x" if r["speedup_vs_torch"] else "-"
        print(f"{r['backend']:<14}{r['table']:<8}{pts:>9} {r['pass']:<8}{r['ms']:>10.2f}"
              f"{r['points_per_s'] / 1e6:>9.2f}{r['floor_MB']:>9.1f}{r['GBps']:>8.1f}{r['x_floor']:>9.1f}{sp:>9}")


if __name__ == "__main__":
    raise SystemExit(main())

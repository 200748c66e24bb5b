"""Fused hash-grid encoding in Triton: every level in one launch, forward and backward.

One program owns ``BLOCK`` points and walks all ``L`` levels, so each point's coordinates are read
once and its input gradient (for deformation fields) is summed over levels in registers. Per level
and corner it gathers ``F`` features (float32 or float16, accumulated in float32); the backward
pass scatters ``weight * dL/dy`` into a float32 gradient table with atomics and, when asked,
recomputes the corner values for ``dL/dx``. The function is the one in :mod:`nerf.hashgrid_torch`
(tests compare the two); the formulas are in ``docs/hashgrid.md``.

CUDA tensors run the compiled kernels. CPU tensors run the same kernels in Triton's interpreter
(numpy, slow): that is how CI, which has no GPU, tests them. This module imports triton, so it is
imported only when the triton backend is used.
"""

from __future__ import annotations

import logging

import torch
import triton
import triton.language as tl

from nerf.hashgrid_layout import GridLayout

log = logging.getLogger(__name__)


@triton.jit
def _clamped(x_ptr, rows, live, axis: tl.constexpr, D: tl.constexpr):
    """Coordinate ``axis`` of the points ``rows``, raw and clamped to [0, 1]."""
    raw = tl.load(x_ptr + rows * D + axis, mask=live, other=0.0)
    return raw, tl.minimum(tl.maximum(raw, 0.0), 1.0)


@triton.jit
def _level(offsets_ptr, sizes_ptr, scales_ptr, res_ptr, hashed_ptr, level):
    """Level ``level``'s first row (int64), size and resolution (uint32), scale, hashed flag."""
    offset = tl.load(offsets_ptr + level)
    size = tl.load(sizes_ptr + level).to(tl.uint32)
    scale = tl.load(scales_ptr + level)
    res = tl.load(res_ptr + level).to(tl.uint32)
    hashed = tl.load(hashed_ptr + level) != 0
    return offset, size, scale, res, hashed


@triton.jit
def _axis(x, scale, SMOOTH: tl.constexpr):
    """One axis at one level: the cell (uint32), the upper corner's weight ``t`` and the slope
    ``dt/dp`` of that weight against the grid position (1 for linear interpolation)."""
    p = x * scale + 0.5
    c = tl.floor(p)
    t = p - c
    slope = t * 0.0 + 1.0
    if SMOOTH:
        slope = 6.0 * t * (1.0 - t)
        t = t * t * (3.0 - 2.0 * t)
    return c.to(tl.int32).to(tl.uint32), t, slope


@triton.jit
def _side(cell, t, UPPER: tl.constexpr):
    """A corner on one axis: its vertex, its weight factor, and the sign of the factor's slope."""
    if UPPER:
        return cell + 1, t, 1.0
    else:
        return cell, 1.0 - t, -1.0


@triton.jit
def _row(v0, v1, v2, res, size, hashed, D: tl.constexpr):
    """The vertex's row within its level (uint32): dense or hashed index, modulo the level size."""
    hsh = v0 ^ (v1 * 2654435761)
    dense = v0 + v1 * res
    if D == 3:
        hsh = hsh ^ (v2 * 805459861)
        dense = dense + v2 * res * res
    return tl.where(hashed, hsh, dense) % size


@triton.jit
def _fwd(x_ptr, table_ptr, out_ptr, offsets_ptr, sizes_ptr, scales_ptr, res_ptr, hashed_ptr,
         N, L,
         D: tl.constexpr, F: tl.constexpr, SMOOTH: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = rows < N
    feats = tl.arange(0, F)
    x0 = _clamped(x_ptr, rows, live, 0, D)[1]
    x1 = _clamped(x_ptr, rows, live, 1, D)[1]
    x2 = x0  # unused when D == 2
    if D == 3:
        x2 = _clamped(x_ptr, rows, live, 2, D)[1]
    for level in range(L):
        offset, size, scale, res, hashed = _level(offsets_ptr, sizes_ptr, scales_ptr, res_ptr, hashed_ptr, level)
        g0, t0, _slope0 = _axis(x0, scale, SMOOTH)
        g1, t1, _slope1 = _axis(x1, scale, SMOOTH)
        g2, t2, _slope2 = _axis(x2, scale, SMOOTH)
        acc = tl.zeros((BLOCK, F), dtype=tl.float32)
        for corner in tl.static_range(2**D):
            v0, a0, _sign0 = _side(g0, t0, corner & 1)
            v1, a1, _sign1 = _side(g1, t1, corner & 2)
            v2, a2, _sign2 = _side(g2, t2, corner & 4)
            w = a0 * a1
            if D == 3:
                w = w * a2
            row = (offset + _row(v0, v1, v2, res, size, hashed, D).to(tl.int64)) * F
            values = tl.load(table_ptr + row[:, None] + feats[None, :], mask=live[:, None], other=0.0)
            acc += w[:, None] * values.to(tl.float32)
        col = rows * (L * F) + level * F
        tl.store(out_ptr + col[:, None] + feats[None, :], acc, mask=live[:, None])


@triton.jit
def _bwd(x_ptr, table_ptr, gout_ptr, gtable_ptr, gx_ptr, offsets_ptr, sizes_ptr, scales_ptr, res_ptr,
         hashed_ptr, N, L,
         D: tl.constexpr, F: tl.constexpr, SMOOTH: tl.constexpr, NEED_TABLE: tl.constexpr,
         NEED_X: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    rows = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = rows < N
    feats = tl.arange(0, F)
    r0, x0 = _clamped(x_ptr, rows, live, 0, D)
    r1, x1 = _clamped(x_ptr, rows, live, 1, D)
    r2, x2 = r0, x0  # unused when D == 2
    if D == 3:
        r2, x2 = _clamped(x_ptr, rows, live, 2, D)
    dx0 = tl.zeros((BLOCK,), dtype=tl.float32)
    dx1 = tl.zeros((BLOCK,), dtype=tl.float32)
    dx2 = tl.zeros((BLOCK,), dtype=tl.float32)
    for level in range(L):
        offset, size, scale, res, hashed = _level(offsets_ptr, sizes_ptr, scales_ptr, res_ptr, hashed_ptr, level)
        col = rows * (L * F) + level * F
        grad = tl.load(gout_ptr + col[:, None] + feats[None, :], mask=live[:, None], other=0.0).to(tl.float32)
        g0, t0, s0 = _axis(x0, scale, SMOOTH)
        g1, t1, s1 = _axis(x1, scale, SMOOTH)
        g2, t2, s2 = _axis(x2, scale, SMOOTH)
        for corner in tl.static_range(2**D):
            v0, a0, sign0 = _side(g0, t0, corner & 1)
            v1, a1, sign1 = _side(g1, t1, corner & 2)
            v2, a2, sign2 = _side(g2, t2, corner & 4)
            if D == 3:
                w = a0 * a1 * a2
            else:
                w = a0 * a1
                a2 = 1.0
            row = (offset + _row(v0, v1, v2, res, size, hashed, D).to(tl.int64)) * F
            if NEED_TABLE:
                # relaxed: nothing reads the sums until the kernel ends (a fire-and-forget reduction)
                tl.atomic_add(gtable_ptr + row[:, None] + feats[None, :], w[:, None] * grad, mask=live[:, None],
                              sem="relaxed")
            if NEED_X:  # d w / d x_d = scale * slope_d * sign_d * (the other axes' factors)
                values = tl.load(table_ptr + row[:, None] + feats[None, :], mask=live[:, None], other=0.0)
                dot = tl.sum(values.to(tl.float32) * grad, axis=1)  # [BLOCK]
                dx0 += scale * sign0 * s0 * a1 * a2 * dot
                dx1 += scale * sign1 * s1 * a0 * a2 * dot
                if D == 3:
                    dx2 += scale * sign2 * s2 * a0 * a1 * dot
    if NEED_X:  # clamping passes the gradient inside [0, 1] (ends included), blocks it outside
        tl.store(gx_ptr + rows * D, tl.where((r0 >= 0.0) & (r0 <= 1.0), dx0, 0.0), mask=live)
        tl.store(gx_ptr + rows * D + 1, tl.where((r1 >= 0.0) & (r1 <= 1.0), dx1, 0.0), mask=live)
        if D == 3:
            tl.store(gx_ptr + rows * D + 2, tl.where((r2 >= 0.0) & (r2 <= 1.0), dx2, 0.0), mask=live)


_warned_interpreter = False


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (``TRITON_INTERPRET=1`` when triton was imported)."""
    return bool(triton.knobs.runtime.interpret)


def _check_device(device: torch.device) -> None:
    global _warned_interpreter
    if device.type == "cuda":
        return
    if device.type == "cpu" and interpreting():
        if not _warned_interpreter:
            log.info("hash grid: triton kernels on CPU tensors run in Triton's interpreter (slow; for tests)")
            _warned_interpreter = True
        return
    raise RuntimeError(
        f"the triton hash-grid backend needs CUDA tensors, got {device} tensors; on a CPU it runs only in "
        "Triton's interpreter, which must be switched on with TRITON_INTERPRET=1 before triton is imported "
        "(use backend='torch' on a CPU)")


class LevelTensors:
    """The layout's per-level arrays as small tensors on one device (cached by the caller)."""

    def __init__(self, layout: GridLayout, device: torch.device):
        def put(a, dtype):
            return torch.as_tensor(a).to(device=device, dtype=dtype).contiguous()

        self.offsets = put(layout.offsets, torch.int64)
        self.sizes = put(layout.sizes, torch.int32)
        self.scales = put(layout.scales, torch.float32)
        self.resolutions = put(layout.resolutions, torch.int32)
        self.hashed = put(layout.hashed, torch.int32)
        self.num_levels = layout.num_levels
        self.features = layout.features
        self.input_dim = layout.input_dim


def _block(device: torch.device) -> int:
    # The interpreter's cost is per program, so it gets wide blocks.
    return 128 if device.type == "cuda" else 1024


def encode_forward(x: torch.Tensor, table: torch.Tensor, lv: LevelTensors, smooth: bool,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """``x [N, D]`` float32, ``table [E, F]`` -> ``[N, L*F]`` float32 (written into ``out`` if given)."""
    N = x.shape[0]
    if out is None:
        out = torch.empty((N, lv.num_levels * lv.features), device=x.device, dtype=torch.float32)
    if N == 0:
        return out
    block = _block(x.device)
    _check_device(x.device)
    _fwd[(triton.cdiv(N, block),)](
        x, table, out, lv.offsets, lv.sizes, lv.scales, lv.resolutions, lv.hashed, N, lv.num_levels,
        D=lv.input_dim, F=lv.features, SMOOTH=smooth, BLOCK=block)
    return out


def encode_backward(x: torch.Tensor, table: torch.Tensor, grad_out: torch.Tensor, lv: LevelTensors,
                    smooth: bool, need_table: bool, need_x: bool,
                    grad_x: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of a loss with ``dL/dy = grad_out [N, L*F]``: ``(dL/dtable [E, F] in the table's
    dtype, accumulated in float32; dL/dx [N, D] float32)``, each None unless asked for."""
    N = x.shape[0]
    gtable = torch.zeros(table.shape, device=x.device, dtype=torch.float32) if need_table else None
    if need_x and grad_x is None:
        grad_x = torch.empty_like(x, dtype=torch.float32)
    if N and (need_table or need_x):
        block = _block(x.device)
        _check_device(x.device)
        _bwd[(triton.cdiv(N, block),)](
            x, table, grad_out, gtable if need_table else table, grad_x if need_x else x,
            lv.offsets, lv.sizes, lv.scales, lv.resolutions, lv.hashed, N, lv.num_levels,
            D=lv.input_dim, F=lv.features, SMOOTH=smooth, NEED_TABLE=need_table, NEED_X=need_x, BLOCK=block)
    elif need_x:
        grad_x.zero_()
    if gtable is not None and gtable.dtype != table.dtype:
        gtable = gtable.to(table.dtype)
    return gtable, (grad_x if need_x else None)


class TritonHashEncode(torch.autograd.Function):
    """Autograd wrapper: ``apply(x [N, D], table [E, F], level_tensors, smooth) -> [N, L*F]``."""

    @staticmethod
    def forward(ctx, x, table, lv, smooth):
        x = x.contiguous().to(torch.float32)
        table_c = table.contiguous()
        ctx.save_for_backward(x, table_c)
        ctx.lv, ctx.smooth = lv, smooth
        return encode_forward(x, table_c, lv, smooth)

    @staticmethod
    def backward(ctx, grad_out):
        x, table = ctx.saved_tensors
        need_x, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gtable, gx = encode_backward(x, table, grad_out.contiguous().to(torch.float32), ctx.lv, ctx.smooth,
                                     need_table, need_x)
        return gx, gtable, None, None

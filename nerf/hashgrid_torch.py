"""The readable hash-grid encoding in plain PyTorch: the reference every fast backend is tested
against. Vectorised over points, one loop over levels; static shapes, so ``torch.compile`` traces
it without graph breaks. Autograd gives the table gradient and, when asked, the input gradient.
"""

from __future__ import annotations

import torch

from nerf.hashgrid_layout import PRIMES, GridLayout

_UINT32 = 0xFFFFFFFF


def smoothstep(t: torch.Tensor) -> torch.Tensor:
    """``t^2 (3 - 2t)``: 0 and 1 at the ends with zero slope."""
    return t * t * (3.0 - 2.0 * t)


def _corners(parts: list[torch.Tensor], op) -> torch.Tensor:
    """Combine per-axis pairs ``parts[d]: [N, 2]`` (lower, upper side on axis ``d``) into the
    ``[N, 2^D]`` values of the cell's corners with ``op``; corner ``c`` takes the upper side on
    axis ``d`` when bit ``d`` of ``c`` is set."""
    out = parts[0]
    for part in parts[1:]:
        out = op(part[:, :, None], out[:, None, :]).reshape(out.shape[0], -1)  # axis d = the higher bit
    return out


def corner_rows(cell: torch.Tensor, resolution: int, size: int, hashed: bool) -> torch.Tensor:
    """Rows within a level of the ``2^D`` corners of each cell: ``cell [N, D]`` int64 (lower
    vertex) -> ``[N, 2^D]`` int64 in ``[0, size)``, corner ``c`` upper on axis ``d`` when bit ``d``
    is set. Dense: ``v0 + v1 res + v2 res^2``; hashed: ``v0 * 1 xor v1 * p1 xor v2 * p2``; both in
    uint32 arithmetic, modulo ``size``."""
    D = cell.shape[1]
    side = cell[:, :, None] + torch.tensor([0, 1], dtype=torch.int64, device=cell.device)  # [N, D, 2]
    if hashed:
        rows = _corners([(side[:, d] * PRIMES[d]) & _UINT32 for d in range(D)], torch.bitwise_xor)
    else:
        rows = _corners([side[:, d] * resolution**d for d in range(D)], torch.add) & _UINT32
    if size & (size - 1) == 0:  # a power of two (every hashed level): the same as % size, cheaper
        return rows & (size - 1)
    return rows % size


def hash_encode_torch(x: torch.Tensor, table: torch.Tensor, layout: GridLayout,
                      interpolation: str = "linear") -> torch.Tensor:
    """Encode points.

    Args:
        x: ``[N, D]`` points; coordinates are clamped to ``[0, 1]`` (zero input gradient outside).
        table: ``[E, F]`` float32, float16 or float64 entries, levels stacked as ``layout`` says.
        layout: from :func:`nerf.hashgrid_layout.grid_layout`.
        interpolation: ``"linear"`` or ``"smoothstep"``.

    Returns:
        ``[N, L * F]`` features, level-major (level ``l`` in columns ``l*F : (l+1)*F``), float32
        (float64 when ``x`` and ``table`` are float64).
    """
    N, D = x.shape
    if D != layout.input_dim:
        raise ValueError(f"points have {D} coordinates, the encoding expects {layout.input_dim}")
    compute = torch.float64 if (x.dtype == torch.float64 and table.dtype == torch.float64) else torch.float32
    x = x.to(compute).clamp(0.0, 1.0)
    out = []
    for scale, resolution, offset, size, hashed in layout.levels:
        pos = x * scale + 0.5  # [N, D]
        cell = torch.floor(pos)
        t = pos - cell
        if interpolation == "smoothstep":
            t = smoothstep(t)
        rows = corner_rows(cell.to(torch.int64), resolution, size, hashed)  # [N, C]
        weight = _corners([torch.stack([1.0 - t[:, d], t[:, d]], -1) for d in range(D)], torch.mul)  # [N, C]
        values = table[offset:offset + size][rows].to(compute)  # [N, C, F]
        out.append((weight[..., None] * values).sum(1))
    return torch.cat(out, dim=-1)


def all_corner_rows(x: torch.Tensor, layout: GridLayout) -> torch.Tensor:
    """``[N, L, 2^D]`` int64 table rows each point reads (for tests and byte counts)."""
    x = x.to(torch.float32).clamp(0.0, 1.0)
    return torch.stack([offset + corner_rows(torch.floor(x * scale + 0.5).to(torch.int64), resolution, size, hashed)
                        for scale, resolution, offset, size, hashed in layout.levels], 1)


__all__ = ["hash_encode_torch", "smoothstep", "corner_rows", "all_corner_rows"]

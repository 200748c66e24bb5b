"""Configuration and memory layout of a multiresolution hash-grid encoding (Instant-NGP).

One table of ``E`` entries with ``F`` features each holds every level, level after level. Level
``l`` owns entries ``[offset_l, offset_l + size_l)``. The layout is the one tiny-cuda-nn uses for its
``HashGrid`` encoding, so one parameter tensor serves every backend and a checkpoint trained with
one loads with another:

- ``scale_l = 2 ** (l * log2(per_level_scale)) * base_resolution - 1`` (float32 arithmetic),
  ``resolution_l = ceil(scale_l) + 1`` vertices per axis;
- ``size_l = min(next_multiple(resolution_l ** D, 8), 2 ** log2_table_size)``;
- a level is *dense* when ``resolution_l ** D <= size_l`` (vertex ``(i, j, k)`` at
  ``i + j * res + k * res**2``) and *hashed* otherwise (``i * 1 ^ j * 2654435761 ^ k * 805459861``
  in uint32 arithmetic), the index taken modulo ``size_l`` in both cases;
- a point ``x`` in ``[0, 1]^D`` (clamped there) sits at grid position ``x * scale_l + 0.5``; the
  half-cell offset staggers the levels (Instant-NGP, appendix A).

The whole function is written out once, readably, in :mod:`nerf.hashgrid_torch`; the document
``docs/hashgrid.md`` gives the formulas and the byte counts behind the benchmark.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

PRIMES = (1, 2654435761, 805459861)
"""Per-axis multipliers of the spatial hash (the first is 1 to keep neighbouring x coherent)."""


@dataclass
class HashGridConfig:
    """A multiresolution hash-grid encoding of points in ``[0, 1]^D``."""

    input_dim: int = 3
    """``D``: 3 for positions, 2 for planes (tri-plane) and 2D latents (RAD-NeRF's audio grid)."""
    num_levels: int = 16
    """``L``: resolution levels, coarse to fine."""
    features_per_level: int = 2
    """``F``: features stored per grid vertex (1, 2, 4 or 8)."""
    log2_table_size: int = 19
    """Entries per level at most: ``2 ** log2_table_size``."""
    base_resolution: int = 16
    """Grid resolution of the coarsest level."""
    finest_resolution: int | None = 2048
    """Resolution of the finest level; sets ``per_level_scale`` when that is not given."""
    per_level_scale: float | None = None
    """Growth factor between levels; overrides ``finest_resolution`` when given."""
    table_dtype: Literal["float32", "float16"] = "float32"
    """Storage of the table; interpolation always accumulates in float32."""
    interpolation: Literal["linear", "smoothstep"] = "linear"
    """Weights per axis: ``t`` or ``t * t * (3 - 2 t)`` (C1-continuous across cells)."""
    backend: Literal["auto", "torch", "triton", "tcnn"] = "auto"
    """Implementation; all share the parameter layout. ``auto``: fastest on the input's device."""
    init_range: float = 1e-4
    """Entries start uniform in ``[-init_range, init_range]`` (Instant-NGP's initialisation)."""

    def __post_init__(self) -> None:
        if self.input_dim not in (2, 3):
            raise ValueError(f"input_dim must be 2 or 3, got {self.input_dim}")
        if self.features_per_level not in (1, 2, 4, 8):
            raise ValueError(f"features_per_level must be 1, 2, 4 or 8, got {self.features_per_level}")
        if not 1 <= self.num_levels <= 32:
            raise ValueError(f"num_levels must be in 1..32, got {self.num_levels}")
        if not 4 <= self.log2_table_size <= 30:
            raise ValueError(f"log2_table_size must be in 4..30, got {self.log2_table_size}")
        if self.base_resolution < 2:
            raise ValueError(f"base_resolution must be >= 2, got {self.base_resolution}")
        if self.per_level_scale is None and self.finest_resolution is None:
            raise ValueError("give finest_resolution or per_level_scale")
        if self.table_dtype not in ("float32", "float16"):
            raise ValueError(f"table_dtype must be float32 or float16, got {self.table_dtype!r}")
        if self.interpolation not in ("linear", "smoothstep"):
            raise ValueError(f"interpolation must be linear or smoothstep, got {self.interpolation!r}")
        if self.backend not in ("auto", "torch", "triton", "tcnn"):
            raise ValueError(f"backend must be auto, torch, triton or tcnn, got {self.backend!r}")

    @property
    def level_scale(self) -> float:
        """The growth factor between levels (1 for a single level)."""
        if self.per_level_scale is not None:
            return float(self.per_level_scale)
        if self.num_levels == 1:
            return 1.0
        return math.exp(math.log(self.finest_resolution / self.base_resolution) / (self.num_levels - 1))

    @property
    def output_dim(self) -> int:
        """``L * F``."""
        return self.num_levels * self.features_per_level


class Level(NamedTuple):
    """One level's geometry as plain Python numbers (constants to ``torch.compile``)."""

    scale: float
    resolution: int
    offset: int
    size: int
    hashed: bool


@dataclass(frozen=True)
class GridLayout:
    """Per-level geometry of one configuration; arrays are ``[L]``."""

    input_dim: int
    features: int
    scales: np.ndarray
    """float32 ``scale_l``: a point ``x`` is at grid position ``x * scale_l + 0.5``."""
    resolutions: np.ndarray
    """int64 vertices per axis, ``ceil(scale_l) + 1``."""
    offsets: np.ndarray
    """int64 first table entry of each level."""
    sizes: np.ndarray
    """int64 entries of each level."""
    hashed: np.ndarray
    """bool: the level is hashed (else dense)."""
    levels: tuple[Level, ...]
    """The same per level as Python numbers (what the torch reference reads)."""

    @property
    def num_levels(self) -> int:
        return len(self.sizes)

    @property
    def num_entries(self) -> int:
        """``E``: rows of the table."""
        return int(self.offsets[-1] + self.sizes[-1])


def grid_layout(cfg: HashGridConfig) -> GridLayout:
    """Compute the layout exactly as tiny-cuda-nn does (float32 scale, sizes padded to 8)."""
    D, L = cfg.input_dim, cfg.num_levels
    log2_pls = np.float32(np.log2(np.float32(cfg.level_scale)))
    scales = np.empty(L, np.float32)
    resolutions, sizes, hashed = (np.empty(L, np.int64) for _ in range(3))
    for level in range(L):
        scale = np.float32(np.exp2(np.float32(level) * log2_pls) * np.float32(cfg.base_resolution)) - np.float32(1.0)
        res = int(np.ceil(scale)) + 1
        dense = res**D
        size = min(-(-dense // 8) * 8, 1 << cfg.log2_table_size)
        scales[level], resolutions[level], sizes[level] = scale, res, size
        hashed[level] = dense > size
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    hashed = hashed.astype(bool)
    levels = tuple(Level(float(scales[i]), int(resolutions[i]), int(offsets[i]), int(sizes[i]), bool(hashed[i]))
                   for i in range(L))
    return GridLayout(D, cfg.features_per_level, scales, resolutions, offsets, sizes, hashed, levels)

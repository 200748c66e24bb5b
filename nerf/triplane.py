"""ER-NeRF's tri-plane hash encoding: a 3D point seen through three 2D hash grids.

The point ``(x, y, z)`` is projected onto the planes XY, YZ and XZ; each plane has its own 2D
multiresolution hash grid (:class:`nerf.hashgrid.HashGridEncoding` with ``input_dim=2``). Three
2D tables resolve fine detail with far fewer collisions than one 3D table of the same size, which
is why ER-NeRF uses it for the head. The plane features are concatenated (ER-NeRF), summed or
multiplied (as in K-planes).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import nn

from nerf.hashgrid import HashGridEncoding
from nerf.hashgrid_layout import HashGridConfig

PLANES = {"xy": (0, 1), "yz": (1, 2), "xz": (0, 2)}
"""Plane name -> the two coordinates of the point it sees, in that order."""


@dataclass
class TriPlaneConfig:
    """Three 2D hash grids over the XY, YZ and XZ planes of ``[0, 1]^3``."""

    grid: HashGridConfig = field(default_factory=lambda: HashGridConfig(input_dim=2))
    """The configuration of each plane (``input_dim`` is forced to 2)."""
    combine: Literal["concat", "sum", "product"] = "concat"
    """How the three planes' features meet: ``concat`` ``[N, 3*L*F]``, else ``[N, L*F]``."""

    def __post_init__(self) -> None:
        if self.combine not in ("concat", "sum", "product"):
            raise ValueError(f"combine must be concat, sum or product, got {self.combine!r}")


class TriPlaneEncoding(nn.Module):
    """``x [..., 3]`` in ``[0, 1]^3`` -> ``[..., output_dim]`` float32."""

    def __init__(self, cfg: TriPlaneConfig | None = None):
        super().__init__()
        self.cfg = cfg or TriPlaneConfig()
        plane_cfg = replace(self.cfg.grid, input_dim=2)
        self.planes = nn.ModuleDict({name: HashGridEncoding(plane_cfg) for name in PLANES})

    @property
    def output_dim(self) -> int:
        per_plane = self.planes["xy"].output_dim
        return 3 * per_plane if self.cfg.combine == "concat" else per_plane

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 3:
            raise ValueError(f"tri-plane encoding takes 3D points, got {x.shape[-1]} coordinates")
        feats = [self.planes[name](x[..., list(axes)]) for name, axes in PLANES.items()]
        if self.cfg.combine == "concat":
            return torch.cat(feats, dim=-1)
        if self.cfg.combine == "sum":
            return feats[0] + feats[1] + feats[2]
        return feats[0] * feats[1] * feats[2]

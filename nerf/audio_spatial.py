"""RAD-NeRF's decomposed audio-spatial encoding.

Instead of one grid over position and audio together (far too many dimensions to hash well),
RAD-NeRF encodes the 3D position with a spatial hash grid and a low-dimensional audio latent
(2D here, as in the paper) with a separate 2D hash grid, and concatenates the two feature vectors
for the field's MLP. The audio latent comes from the caller (an audio network squashes its features
into ``[0, 1]^2``); this module only encodes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from nerf.hashgrid import HashGridEncoding
from nerf.hashgrid_layout import HashGridConfig


@dataclass
class AudioSpatialConfig:
    """A 3D spatial hash grid and a 2D audio hash grid."""

    spatial: HashGridConfig = field(default_factory=lambda: HashGridConfig(input_dim=3))
    """Grid over positions in ``[0, 1]^3`` (``input_dim`` forced to 3)."""
    audio: HashGridConfig = field(default_factory=lambda: HashGridConfig(
        input_dim=2, num_levels=16, features_per_level=1, log2_table_size=17, base_resolution=16,
        finest_resolution=256))
    """Grid over the audio latent in ``[0, 1]^2`` (``input_dim`` forced to 2)."""


class AudioSpatialEncoding(nn.Module):
    """``(x [..., 3], audio [..., 2] or [2]) -> [..., spatial_dim + audio_dim]`` float32; an audio
    latent of shape ``[2]`` is shared by every point (one frame)."""

    def __init__(self, cfg: AudioSpatialConfig | None = None):
        super().__init__()
        self.cfg = cfg or AudioSpatialConfig()
        self.spatial = HashGridEncoding(replace(self.cfg.spatial, input_dim=3))
        self.audio = HashGridEncoding(replace(self.cfg.audio, input_dim=2))

    @property
    def output_dim(self) -> int:
        return self.spatial.output_dim + self.audio.output_dim

    def forward(self, x: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        fx = self.spatial(x)
        if audio.dim() == 1:
            fa = self.audio(audio[None]).expand(*fx.shape[:-1], self.audio.output_dim)
        else:
            if audio.shape[:-1] != x.shape[:-1]:
                raise ValueError(f"audio latents {tuple(audio.shape)} do not match points {tuple(x.shape)}")
            fa = self.audio(audio)
        return torch.cat([fx, fa], dim=-1)

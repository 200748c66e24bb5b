"""Mesh helpers (torch): normals and simple shading."""

from __future__ import annotations

import torch


def face_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unnormalised face normals ``[B, F, 3]`` (length = 2 x area) of ``verts: [B, V, 3]``, ``faces: [F, 3]``."""
    v = verts[:, faces]  # [B, F, 3, 3]
    return torch.cross(v[:, :, 1] - v[:, :, 0], v[:, :, 2] - v[:, :, 0], dim=-1)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Area-weighted unit vertex normals ``[B, V, 3]`` of ``verts: [B, V, 3]``, ``faces: [F, 3]``."""
    fn = face_normals(verts, faces)
    out = torch.zeros_like(verts)
    for k in range(3):
        out.index_add_(1, faces[:, k], fn)
    return out / out.norm(dim=-1, keepdim=True).clamp_min(eps)


def lambert(normals: torch.Tensor, light_dir=(0.3, -0.4, -1.0), ambient: float = 0.25) -> torch.Tensor:
    """Lambertian intensity ``[..., 1]`` of unit ``normals: [..., 3]`` lit from ``light_dir``
    (direction the light shines from, camera axes; the default is above-left of the camera)."""
    d = torch.as_tensor(light_dir, dtype=normals.dtype, device=normals.device)
    d = d / d.norm()
    return ambient + (1 - ambient) * (normals * d).sum(-1, keepdim=True).clamp_min(0)

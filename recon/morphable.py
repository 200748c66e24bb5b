"""The one morphable-model interface every stage uses, and its file ``face_model.npz``.

A linear 3D morphable face model::

    verts = mean + sum_k id_coeffs[k] * id_basis[k] + sum_j exp_coeffs[j] * exp_basis[j]

in model coordinates: metres, OpenCV-style axes (x towards the subject's left as seen in a
frontal image, i.e. image right; y down; z away from a camera the face looks at), origin roughly at
the head's centre. Rotations and translations (``p_camera = R @ p_model + t``) are applied by the
fitting, never stored in the model.

Models: the built-in one (mediapipe topology, per-subject neutral, expression basis learned from
the subject's own video; ``V = 478``, correspondence to mediapipe = identity) and loaders for
user-supplied BFM and FLAME files (:mod:`recon.face_models`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class MorphableModel:
    """Shapes: ``V`` vertices, ``F`` triangles, ``Ki`` identity and ``Ke`` expression components,
    ``L`` landmark correspondences with mediapipe's 478 points."""

    name: str
    """Which model: ``"mediapipe-subject"`` (built-in), ``"bfm"``, ``"flame"``."""
    mean: np.ndarray
    """``[V, 3]`` float32 mean (or per-subject neutral) shape, metres."""
    id_basis: np.ndarray
    """``[Ki, V, 3]`` float32 identity basis (``Ki`` may be 0), metres per unit coefficient."""
    exp_basis: np.ndarray
    """``[Ke, V, 3]`` float32 expression basis, metres per unit coefficient."""
    faces: np.ndarray
    """``[F, 3]`` int64 triangles, normals pointing out of the face."""
    landmark_vertices: np.ndarray
    """``[L]`` int64: the model vertex of each correspondence."""
    landmark_mediapipe: np.ndarray
    """``[L]`` int64: the mediapipe landmark (0-477) each ``landmark_vertices`` entry matches."""
    exp_names: tuple[str, ...] | None = None
    """Optional names of the expression components (e.g. ARKit names)."""
    uv: np.ndarray | None = None
    """Optional ``[V, 2]`` texture coordinates."""
    meta: dict = field(default_factory=dict)
    """Free-form provenance (source file, explained variance, ...), JSON-serialisable."""

    def __post_init__(self):
        V = self.mean.shape[0]
        if self.mean.shape != (V, 3):
            raise ValueError(f"mean must be [V, 3], got {self.mean.shape}")
        for name in ("id_basis", "exp_basis"):
            b = getattr(self, name)
            if b.ndim != 3 or b.shape[1:] != (V, 3):
                raise ValueError(f"{name} must be [K, {V}, 3], got {b.shape}")
        if self.landmark_vertices.shape != self.landmark_mediapipe.shape:
            raise ValueError("landmark_vertices and landmark_mediapipe must have the same length")
        if self.exp_names is not None and len(self.exp_names) != self.num_exp:
            raise ValueError(f"{len(self.exp_names)} expression names for {self.num_exp} components")

    @property
    def num_vertices(self) -> int:
        return self.mean.shape[0]

    @property
    def num_id(self) -> int:
        return self.id_basis.shape[0]

    @property
    def num_exp(self) -> int:
        return self.exp_basis.shape[0]

    def vertices(self, id_coeffs: np.ndarray | None = None, exp_coeffs: np.ndarray | None = None) -> np.ndarray:
        """Model-space vertices: ``id_coeffs: [Ki]``, ``exp_coeffs: [..., Ke]`` -> ``[..., V, 3]``."""
        return self.vertices_at(slice(None), id_coeffs, exp_coeffs)

    def landmarks(self, id_coeffs=None, exp_coeffs=None) -> np.ndarray:
        """The correspondence points ``[..., L, 3]`` (ordered like ``landmark_mediapipe``), computed
        on those vertices only (a BFM mesh for every frame of a video would take gigabytes)."""
        return self.vertices_at(self.landmark_vertices, id_coeffs, exp_coeffs)

    def vertices_at(self, which, id_coeffs=None, exp_coeffs=None) -> np.ndarray:
        """Only the vertices ``which`` (an index array or a slice): float64 ``[..., n, 3]``."""
        v = self.mean[which].astype(np.float64)
        if id_coeffs is not None and self.num_id:
            v = v + np.tensordot(np.asarray(id_coeffs, dtype=np.float64), self.id_basis[:, which], axes=([-1], [0]))
        if exp_coeffs is not None and self.num_exp:
            v = v + np.tensordot(np.asarray(exp_coeffs, dtype=np.float64), self.exp_basis[:, which], axes=([-1], [0]))
        return v

    def save(self, path: str | Path) -> Path:
        """Write ``face_model.npz`` (format in docs/formats.md), reproducibly."""
        import json

        from render.npz import save_npz

        arrays = dict(
            name=np.array(self.name),
            mean=self.mean.astype(np.float32),
            id_basis=self.id_basis.astype(np.float32),
            exp_basis=self.exp_basis.astype(np.float32),
            faces=self.faces.astype(np.int64),
            landmark_vertices=self.landmark_vertices.astype(np.int64),
            landmark_mediapipe=self.landmark_mediapipe.astype(np.int64),
            meta_json=np.array(json.dumps(self.meta, sort_keys=True)),
        )
        if self.exp_names is not None:
            arrays["exp_names"] = np.array(self.exp_names)
        if self.uv is not None:
            arrays["uv"] = self.uv.astype(np.float32)
        return save_npz(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "MorphableModel":
        """Read a ``face_model.npz`` written by :meth:`save` (no pickles)."""
        import json

        with np.load(path, allow_pickle=False) as z:
            return cls(
                name=str(z["name"]),
                mean=z["mean"],
                id_basis=z["id_basis"],
                exp_basis=z["exp_basis"],
                faces=z["faces"],
                landmark_vertices=z["landmark_vertices"],
                landmark_mediapipe=z["landmark_mediapipe"],
                exp_names=tuple(str(s) for s in z["exp_names"]) if "exp_names" in z else None,
                uv=z["uv"] if "uv" in z else None,
                meta=json.loads(str(z["meta_json"])),
            )


def project_posed(points: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Model-space ``points [T, n, 3]`` posed by ``R [T, 3, 3]``, ``t [T, 3]``
    (``p_camera = R p + t``) and projected with the pinhole ``K [3, 3]``: ``[T, n, 2]`` pixels."""
    cam = np.einsum("tij,tlj->tli", R, points) + t[:, None]
    proj = cam @ np.asarray(K, dtype=np.float64).T
    return proj[..., :2] / proj[..., 2:3]

"""Cameras: pinhole (OpenCV) and orthographic projections to pixel coordinates.

Axes and units
--------------
Camera coordinates follow OpenCV: ``x`` right, ``y`` down, ``z`` forward (away from the camera,
into the scene), in metres. ``project`` maps camera-space points to *screen space*
``(u, v, z)``: ``u`` pixels to the right, ``v`` pixels down, and the camera-space depth ``z``
(metres) kept as the third coordinate. That screen-space layout is exactly what
:func:`render.rasterizer.rasterize` takes as ``verts``.

Pixel-centre convention
-----------------------
Pixel centres sit at integer coordinates (OpenCV): the pixel in row ``i``, column ``j`` samples
the image point ``(u=j, v=i)`` and covers ``[j - 0.5, j + 0.5] x [i - 0.5, i + 0.5]``. An image of
``W x H`` pixels therefore spans ``u in [-0.5, W - 0.5]``, ``v in [-0.5, H - 0.5]``, and a camera
whose optical axis passes through the image centre has ``cx = (W - 1) / 2``, ``cy = (H - 1) / 2``.
(OpenGL/NeRF code that puts centres at ``j + 0.5`` must subtract 0.5 from its ``cx, cy``.)

Intrinsics may be Python floats or 0-d tensors (e.g. learnable focal lengths); every method is
differentiable in whichever of points, depths and intrinsics are tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

Scalar = float | torch.Tensor


def _check_last_dim(name: str, x: torch.Tensor, n: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] != n:
        raise ValueError(f"{name} must have shape [..., {n}], got {list(x.shape)}")


@dataclass
class PinholeCamera:
    """An OpenCV pinhole camera without skew or distortion.

    ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``; see the module docstring for axes and the
    pixel-centre convention.
    """

    fx: Scalar
    """Focal length along ``u``, pixels."""
    fy: Scalar
    """Focal length along ``v``, pixels."""
    cx: Scalar
    """Principal point ``u``, pixels (image-centred camera: ``(W - 1) / 2``)."""
    cy: Scalar
    """Principal point ``v``, pixels (image-centred camera: ``(H - 1) / 2``)."""

    @property
    def K(self) -> torch.Tensor:
        """``[3, 3]`` intrinsic matrix (float32 unless the intrinsics are tensors of another dtype)."""
        return self.matrix()

    def matrix(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        """``[3, 3]`` intrinsic matrix in the given dtype/device (differentiable in tensor intrinsics)."""
        vals = [self.fx, self.fy, self.cx, self.cy]
        ref = next((v for v in vals if isinstance(v, torch.Tensor)), None)
        if dtype is None:
            dtype = ref.dtype if ref is not None else torch.float32
        if device is None and ref is not None:
            device = ref.device
        fx, fy, cx, cy = (torch.as_tensor(v, dtype=dtype, device=device) for v in vals)
        zero = torch.zeros((), dtype=dtype, device=device)
        one = torch.ones((), dtype=dtype, device=device)
        return torch.stack([fx, zero, cx, zero, fy, cy, zero, zero, one]).reshape(3, 3)

    @classmethod
    def from_K(cls, K: torch.Tensor) -> PinholeCamera:
        """Camera from a ``[3, 3]`` intrinsic matrix; see :func:`from_K`."""
        return from_K(K)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Camera-space ``points: [..., 3]`` (metres, z > 0 in front) -> screen ``[..., 3]``.

        Returns ``(u, v, z) = (fx x / z + cx, fy y / z + cy, z)``. Points with ``z <= 0`` get
        meaningless ``u, v`` (no clamping); the rasterizer drops triangles touching them.
        """
        _check_last_dim("points", points, 3)
        x, y, z = points.unbind(-1)
        return torch.stack([self.fx * x / z + self.cx, self.fy * y / z + self.cy, z], dim=-1)

    def backproject(self, uv: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Pixel coordinates ``uv: [..., 2]`` and ``depth: [...]`` (camera z, metres) -> ``[..., 3]``.

        The inverse of :meth:`project`: ``x = (u - cx) z / fx``, ``y = (v - cy) z / fy``.
        """
        _check_last_dim("uv", uv, 2)
        if not isinstance(depth, torch.Tensor) or depth.shape != uv.shape[:-1]:
            shape = list(depth.shape) if isinstance(depth, torch.Tensor) else type(depth).__name__
            raise ValueError(f"depth must have shape {list(uv.shape[:-1])} (uv's without the last dim), got {shape}")
        u, v = uv.unbind(-1)
        return torch.stack([(u - self.cx) * depth / self.fx, (v - self.cy) * depth / self.fy, depth], dim=-1)


@dataclass
class OrthographicCamera:
    """A scaled orthographic camera: ``(u, v, z) = (scale x + cx, scale y + cy, z)``.

    Axes and pixel centres as in the module docstring. Rasterize its output with
    ``perspective_correct=False`` (depth is affine in screen space under this camera).
    """

    scale: Scalar
    """Pixels per metre."""
    cx: Scalar
    """``u`` of the camera axis, pixels."""
    cy: Scalar
    """``v`` of the camera axis, pixels."""

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Camera-space ``points: [..., 3]`` (metres) -> screen ``[..., 3]`` ``(u, v, z)``."""
        _check_last_dim("points", points, 3)
        x, y, z = points.unbind(-1)
        return torch.stack([self.scale * x + self.cx, self.scale * y + self.cy, z], dim=-1)

    def backproject(self, uv: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """``uv: [..., 2]`` pixels and ``depth: [...]`` metres -> camera-space ``[..., 3]``."""
        _check_last_dim("uv", uv, 2)
        if not isinstance(depth, torch.Tensor) or depth.shape != uv.shape[:-1]:
            shape = list(depth.shape) if isinstance(depth, torch.Tensor) else type(depth).__name__
            raise ValueError(f"depth must have shape {list(uv.shape[:-1])} (uv's without the last dim), got {shape}")
        u, v = uv.unbind(-1)
        return torch.stack([(u - self.cx) / self.scale, (v - self.cy) / self.scale, depth], dim=-1)


def from_K(K: torch.Tensor, atol: float = 1e-6) -> PinholeCamera:
    """:class:`PinholeCamera` from an intrinsic matrix ``K: [3, 3]`` (tensor or array-like).

    Raises ``ValueError`` unless ``K`` has the form ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (no skew,
    within ``atol``). Intrinsics come back as Python floats, or as 0-d tensors when ``K`` requires
    grad (so gradients reach ``K``).
    """
    K = torch.as_tensor(K)
    if K.shape != (3, 3):
        raise ValueError(f"K must have shape [3, 3], got {list(K.shape)}")
    Kd = K.detach().double().cpu()
    expected_zero = torch.stack([Kd[0, 1], Kd[1, 0], Kd[2, 0], Kd[2, 1], Kd[2, 2] - 1.0])
    if bool((expected_zero.abs() > atol).any()):
        raise ValueError(f"K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (no skew), got {Kd.tolist()}")
    if K.requires_grad:
        return PinholeCamera(fx=K[0, 0], fy=K[1, 1], cx=K[0, 2], cy=K[1, 2])
    return PinholeCamera(fx=float(Kd[0, 0]), fy=float(Kd[1, 1]), cx=float(Kd[0, 2]), cy=float(Kd[1, 2]))

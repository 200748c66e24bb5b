"""``transforms_train.json`` / ``transforms_val.json`` in the convention AD-NeRF and RAD-NeRF use.

The head is the NeRF's fixed object and the camera moves around it: for a frame with head pose
``p_camera = R @ p_model + t`` (OpenCV axes), the camera-to-world matrix in head-model coordinates
is ``[R^T | -R^T t]``; NeRF code expects OpenGL/Blender camera axes (x right, y up, z backwards),
so its columns 1 and 2 are negated. Units are metres.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OPENCV_TO_OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])


def camera_to_world(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Head poses ``R: [T, 3, 3]``, ``t: [T, 3]`` -> camera-to-head ``[T, 4, 4]`` in OpenGL axes."""
    T = len(R)
    c2w = np.zeros((T, 4, 4))
    Rt = np.transpose(R, (0, 2, 1))
    c2w[:, :3, :3] = Rt
    c2w[:, :3, 3] = -np.einsum("tij,tj->ti", Rt, t)
    c2w[:, 3, 3] = 1.0
    return c2w @ OPENCV_TO_OPENGL


def split_frames(usable: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation frame indices: the last ``val_fraction`` of the video is validation
    (as RAD-NeRF and ER-NeRF do); frames without a usable face are in neither."""
    n = len(usable)
    cut = n - int(round(n * val_fraction))
    idx = np.arange(n)
    return idx[(idx < cut) & usable], idx[(idx >= cut) & usable]


def write_transforms(path: Path, K: np.ndarray, R: np.ndarray, t: np.ndarray, frames: np.ndarray,
                     image_size: tuple[int, int]) -> Path:
    """Write ``path`` (e.g. transforms_train.json) for frame indices ``frames``.

    Keys: ``focal_len``, ``cx``, ``cy``, ``w``, ``h``, ``near``, ``far`` (metres, from the head's
    distance to the camera), ``camera_convention`` ("opengl"), ``frames``: one entry per frame
    with ``img_id`` and ``aud_id`` (both the frame index; audio features are per frame at the video
    fps) and ``transform_matrix`` (camera-to-world 4x4, see the module docstring).
    """
    c2w = camera_to_world(R[frames], t[frames])
    depth = t[:, 2] if len(frames) == 0 else t[frames, 2]
    data = {
        "focal_len": float(K[0, 0]),
        "fl_x": float(K[0, 0]),
        "fl_y": float(K[1, 1]),
        "cx": float(K[0, 2]),
        "cy": float(K[1, 2]),
        "w": int(image_size[1]),
        "h": int(image_size[0]),
        "near": float(max(depth.min() - 0.3, 0.05)) if len(depth) else 0.05,
        "far": float(depth.max() + 0.3) if len(depth) else 1.0,
        "camera_convention": "opengl",
        "frames": [
            {"img_id": int(i), "aud_id": int(i), "transform_matrix": np.round(m, 8).tolist()}
            for i, m in zip(frames, c2w)
        ],
    }
    Path(path).write_text(json.dumps(data, indent=1) + "\n")
    return Path(path)

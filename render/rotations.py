"""Rotation conventions and conversions (numpy).

Rotations act on column vectors in OpenCV camera axes (x right, y down, z forward):
``p_camera = R @ p + t``. Files store either axis-angle vectors (radians, direction = axis,
norm = angle) or 3x3 matrices, and say which.
"""

from __future__ import annotations

import numpy as np


def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    """Axis-angle ``[..., 3]`` (radians) -> rotation matrices ``[..., 3, 3]`` (Rodrigues)."""
    aa = np.asarray(aa, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = aa / np.where(angle > 1e-12, angle, 1.0)
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)
    s, c = np.sin(angle)[..., None], np.cos(angle)[..., None]
    eye = np.broadcast_to(np.eye(3), k.shape)
    return eye + s * k + (1 - c) * (k @ k)


def euler_to_matrix(yaw: np.ndarray, pitch: np.ndarray, roll: np.ndarray) -> np.ndarray:
    """Head rotation matrices ``[T, 3, 3]`` in OpenCV camera axes from angles in radians.

    ``R = R_y(yaw) @ R_x(pitch) @ R_z(roll)``: yaw turns about the camera's vertical (y) axis,
    pitch about the horizontal (x) axis, roll about the viewing (z) axis.
    """
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    one, zero = np.ones_like(yaw), np.zeros_like(yaw)
    Ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1), np.stack([-sy, zero, cy], -1)], -2)
    Rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1), np.stack([zero, sp, cp], -1)], -2)
    Rz = np.stack([np.stack([cr, -sr, zero], -1), np.stack([sr, cr, zero], -1), np.stack([zero, zero, one], -1)], -2)
    return Ry @ Rx @ Rz


def matrix_to_axis_angle(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` -> axis-angle vectors ``[..., 3]`` (radians; angles < pi)."""
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    angle = np.arccos(cos)
    axis = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = np.sin(angle)
    scale = np.where(sin > 1e-8, angle / (2 * np.where(sin > 1e-8, sin, 1.0)), 0.5)
    return axis * scale[..., None]


def matrix_to_euler(R: np.ndarray) -> np.ndarray:
    """Inverse of :func:`euler_to_matrix`: ``[..., 3, 3]`` -> ``(yaw, pitch, roll)`` ``[..., 3]`` radians
    (pitch in [-pi/2, pi/2])."""
    pitch = -np.arcsin(np.clip(R[..., 1, 2], -1.0, 1.0))
    yaw = np.arctan2(R[..., 0, 2], R[..., 2, 2])
    roll = np.arctan2(R[..., 1, 0], R[..., 1, 1])
    return np.stack([yaw, pitch, roll], axis=-1)

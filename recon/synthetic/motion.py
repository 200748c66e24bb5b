"""Non-speech motion of the synthetic subject: head pose, blinks, brow raises, smile drift.

All tracks are sampled at frame times ``t = k / fps`` and are deterministic for a given
``numpy.random.Generator`` state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from render.rotations import euler_to_matrix


@dataclass
class MotionConfig:
    """Amplitudes and rates of the synthetic subject's non-speech motion."""

    yaw_deg: float = 10.0
    """Peak head yaw (turning left/right), degrees."""
    pitch_deg: float = 5.0
    """Peak head pitch (nodding), degrees."""
    roll_deg: float = 5.0
    """Peak head roll (tilting), degrees."""
    translation_m: float = 0.006
    """Peak head translation per axis, metres."""
    head_max_hz: float = 0.35
    """Highest frequency of the head's sinusoidal components, Hz (slow, natural sway)."""
    blink_interval_s: tuple[float, float] = (1.8, 5.5)
    """Range of the time between blink onsets, seconds (drawn uniformly)."""
    blink_duration_s: tuple[float, float] = (0.15, 0.30)
    """Range of a blink's duration, seconds (the issue asks for 150-300 ms)."""
    brow_raise_every_s: float = 4.0
    """Mean time between inner-brow raises, seconds."""
    smile_drift: float = 0.2
    """Peak of the slow smile variation added to both mouth corners."""


def smooth_noise(rng: np.random.Generator, n: int, fps: float, max_hz: float, components: int = 4) -> np.ndarray:
    """A smooth random signal ``[n]`` in [-1, 1]: a sum of sinusoids with random frequencies
    (up to ``max_hz``), phases and amplitudes, normalised to a peak of 1."""
    t = np.arange(n) / fps
    freqs = rng.uniform(0.15 * max_hz, max_hz, components)
    phases = rng.uniform(0, 2 * np.pi, components)
    amps = rng.uniform(0.5, 1.0, components)
    x = (amps[:, None] * np.sin(2 * np.pi * freqs[:, None] * t + phases[:, None])).sum(0)
    return x / max(np.abs(x).max(), 1e-9) if n > 1 else np.zeros(n)


def head_pose_track(rng: np.random.Generator, n: int, fps: float, cfg: MotionConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slow random head motion: ``(angles [T, 3] radians (yaw, pitch, roll), R [T, 3, 3], t [T, 3] metres)``."""
    angles = np.stack([
        np.deg2rad(cfg.yaw_deg) * smooth_noise(rng, n, fps, cfg.head_max_hz),
        np.deg2rad(cfg.pitch_deg) * smooth_noise(rng, n, fps, cfg.head_max_hz),
        np.deg2rad(cfg.roll_deg) * smooth_noise(rng, n, fps, cfg.head_max_hz),
    ], axis=1)
    trans = cfg.translation_m * np.stack([smooth_noise(rng, n, fps, cfg.head_max_hz) for _ in range(3)], axis=1)
    return angles, euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2]), trans


def blink_track(rng: np.random.Generator, n: int, fps: float, cfg: MotionConfig) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Blink weight ``[T]`` in [0, 1] and the blink intervals ``[(start_s, end_s), ...]``.

    Each blink closes in 35% of its duration, stays closed for 25% and opens in the rest
    (raised-cosine ramps), as real blinks close faster than they open.
    """
    t = np.arange(n) / fps
    duration = n / fps
    w = np.zeros(n)
    events = []
    onset = rng.uniform(0.3, cfg.blink_interval_s[0])
    while onset < duration:
        d = rng.uniform(*cfg.blink_duration_s)
        close_end, open_start = onset + 0.35 * d, onset + 0.60 * d
        u = np.clip((t - onset) / (close_end - onset), 0, 1)
        v = np.clip((t - open_start) / (onset + d - open_start), 0, 1)
        shape = np.where(t < open_start, 0.5 - 0.5 * np.cos(np.pi * u), 0.5 + 0.5 * np.cos(np.pi * v))
        shape[(t < onset) | (t > onset + d)] = 0.0
        w = np.maximum(w, shape)
        events.append((onset, onset + d))
        onset += d + rng.uniform(*cfg.blink_interval_s)
    return w, events


def brow_track(rng: np.random.Generator, n: int, fps: float, cfg: MotionConfig) -> np.ndarray:
    """Occasional inner-brow raises ``[T]``: bumps of 0.4-1.0 s and weight 0.3-0.7."""
    t = np.arange(n) / fps
    w = np.zeros(n)
    at = rng.exponential(cfg.brow_raise_every_s)
    while at < n / fps:
        d, peak = rng.uniform(0.4, 1.0), rng.uniform(0.3, 0.7)
        x = np.clip((t - at) / d, 0, 1)
        w = np.maximum(w, peak * np.sin(np.pi * x) ** 2)
        at += d + rng.exponential(cfg.brow_raise_every_s)
    return w


def smile_track(rng: np.random.Generator, n: int, fps: float, cfg: MotionConfig) -> np.ndarray:
    """Slow smile drift ``[T]`` in [0, ``smile_drift``]."""
    return cfg.smile_drift * 0.5 * (1 + smooth_noise(rng, n, fps, 0.15, components=3))

"""The working resolution of ``talkface fit``: scale a video down until the head fits a crop.

Rule (:func:`choose_working_size`): probe a few frames spread over the video, measure the face
box (the longer side of the bounding box of mediapipe's 468 face-mesh points) in each and take
the median ``b`` (source pixels). The head crop is a square of side ``margin * b`` around the
face (hair, chin and some neck included); the part of it inside a ``W x H`` frame is at most
``min(margin * b, max(W, H))`` pixels on its longer side. The video is scaled by

    scale = min(1, crop / min(margin * b, max(W, H)))

so that this visible head crop fits the ``crop x crop`` crops later stages cut around the head
(:func:`working_scale`). Videos are never upscaled, and a frame that already fits a crop as a
whole (a 512x512 talking-head video whose head crop would overflow the frame) is kept as it is.
When no face is found in the probe frames the former fixed rule applies (longer side at most
:data:`FALLBACK_MAX_SIZE`) and the tracking stage reports the missing face as usual.

Probe frames are the keyframes at or before ``samples`` evenly spread times (one decoded frame
each, whatever the resolution or keyframe interval; a short video with one keyframe gives one
distinct frame). mediapipe's face detector looks at the whole frame resized to 128x128, so
whether it finds a face depends on the face's size relative to the frame, not on
``probe_size``: a 640-pixel probe finds what the full frame would. mediapipe is imported only
inside :func:`measure_face_boxes`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

__all__ = [
    "WorkingSizeConfig", "WorkingSize", "FALLBACK_MAX_SIZE", "probe_times", "measure_face_boxes", "working_scale",
    "choose_working_size",
]

FALLBACK_MAX_SIZE = 1024
"""Longer side of the working frames when no face is found in the probe (the former fixed rule)."""


@dataclass
class WorkingSizeConfig:
    """Automatic working resolution: the largest that keeps the head within a ``crop`` square."""

    crop: int = 512
    """Side of the square crop (pixels at the working resolution) the head must fit."""
    margin: float = 2.0
    """Head crop side = margin x the longer side of the face-mesh landmarks' bounding box (the
    mesh stops at the brows and the chin; the margin covers hair, chin and some neck)."""
    samples: int = 8
    """Times probed, spread evenly over the video's duration; the keyframe at or before each is
    decoded (times sharing a keyframe give one frame)."""
    probe_size: int = 640
    """Longer side the probe frames are decoded at (smaller sources are decoded as they are)."""

    def __post_init__(self):
        if not (isinstance(self.crop, int) and self.crop >= 16):
            raise ValueError(f"working.crop must be an integer >= 16 pixels, got {self.crop!r}")
        if not (isinstance(self.margin, (int, float)) and math.isfinite(self.margin) and self.margin >= 1.0):
            raise ValueError(f"working.margin must be a number >= 1, got {self.margin!r}")
        if not (isinstance(self.samples, int) and self.samples >= 1):
            raise ValueError(f"working.samples must be an integer >= 1, got {self.samples!r}")
        if not (isinstance(self.probe_size, int) and self.probe_size >= 64):
            raise ValueError(f"working.probe_size must be an integer >= 64 pixels, got {self.probe_size!r}")


@dataclass(frozen=True)
class WorkingSize:
    """The working resolution chosen for a video."""

    max_size: int
    """Longer side of the working frames, pixels (pass to ``VideoReader(max_size=...)``)."""
    scale: float
    """Working size over source size (longer sides; 1.0 when not downscaled)."""
    face_box_px: float | None
    """Median face box (longer side of the face-mesh bounding box) in source pixels, or ``None``
    when no probe frame showed a face."""
    rule: str
    """``"face"`` (the head fits the crop) or ``"fallback"`` (no face: longer side <= 1024)."""
    faces_found: int
    """Probe frames in which a face was found."""
    frames_probed: int
    """Distinct probe frames decoded (times that share a keyframe count once)."""


def probe_times(duration_s: float | None, samples: int) -> list[float]:
    """``samples`` times (seconds) at the centres of equal slices of ``[0, duration_s)``;
    ``[0.0]`` when the duration is unknown."""
    if not duration_s or duration_s <= 0:
        return [0.0]
    return [(i + 0.5) * duration_s / samples for i in range(samples)]


def measure_face_boxes(images: list[np.ndarray], max_faces: int = 3, min_detection_confidence: float = 0.5) -> list[float | None]:
    """Face box size per image: the longer side (pixels) of the bounding box of the 468 mesh
    points of the largest face mediapipe finds (face mesh with iris refinement as in
    :class:`recon.tracking.FaceTracker`, but in static-image mode: each image on its own), or
    ``None`` for an image without a face. ``images``: each ``uint8 [H, W, 3]`` RGB.

    The largest face is the one :class:`recon.tracking.FaceTracker` starts following.
    """
    from mediapipe.python.solutions import face_mesh  # heavy: import only here

    from recon.landmarks import landmarks_to_pixels
    from recon.topology import NUM_MESH_VERTICES

    sizes: list[float | None] = []
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=int(max_faces), refine_landmarks=True,
                            min_detection_confidence=float(min_detection_confidence)) as mesh:
        for image in images:
            h, w = image.shape[:2]
            faces = mesh.process(np.ascontiguousarray(image)).multi_face_landmarks or []
            best = None
            for face in faces:
                pts = landmarks_to_pixels(face, w, h)[:NUM_MESH_VERTICES, :2]  # [468, 2] px
                side = float((pts.max(axis=0) - pts.min(axis=0)).max())
                best = side if best is None else max(best, side)
            sizes.append(best)
    return sizes


def working_scale(face_box_px: float, width: int, height: int, cfg: WorkingSizeConfig | None = None) -> tuple[int, float]:
    """``(max_size, scale)`` for a ``width x height`` source whose face box is ``face_box_px``
    source pixels: ``scale = min(1, crop / min(margin * face_box_px, max(width, height)))``
    (module docstring), then rounded down to the even frame size ``VideoReader`` produces;
    ``max_size`` is the working frames' longer side and ``scale`` = that over the source's."""
    from render.media.video import fit_size

    cfg = cfg if cfg is not None else WorkingSizeConfig()
    if not (face_box_px > 0):
        raise ValueError(f"face_box_px must be positive, got {face_box_px!r}")
    src_long = max(width, height)
    scale = min(1.0, cfg.crop / min(cfg.margin * face_box_px, src_long))
    w, h = fit_size(width, height, max(2, math.floor(scale * src_long)))
    return max(w, h), max(w, h) / src_long


def choose_working_size(video_path: str | os.PathLike, cfg: WorkingSizeConfig | None = None,
                        max_faces: int = 3, min_detection_confidence: float = 0.5) -> WorkingSize:
    """The working resolution of ``video_path`` under the rule in the module docstring.

    Decodes ``cfg.samples`` keyframes spread over the video at ``cfg.probe_size``
    (:func:`render.media.video.read_frames_at`), measures the face box in each distinct one
    (:func:`measure_face_boxes`; ``max_faces`` and ``min_detection_confidence`` as in
    :class:`recon.tracking.TrackingConfig`) and applies :func:`working_scale` to the median.
    Raises :class:`render.errors.MediaError` when the video cannot be read.
    """
    from render.media.probe import probe
    from render.media.video import fit_size, read_frames_at

    cfg = cfg if cfg is not None else WorkingSizeConfig()
    info = probe(video_path)
    times = probe_times(info.duration_s, cfg.samples)
    frames = read_frames_at(video_path, times, cfg.probe_size, exact=False)
    if all(f is None for f in frames):  # a container duration longer than the video stream
        frames = read_frames_at(video_path, [0.0], cfg.probe_size, exact=False)
    distinct = list({f.tobytes(): f for f in frames if f is not None}.values())  # times sharing a keyframe
    src_long = max(info.width, info.height)
    boxes = []
    if distinct:
        probe_scale = max(distinct[0].shape[:2]) / src_long  # probe pixels per source pixel
        found = measure_face_boxes(distinct, max_faces, min_detection_confidence)
        boxes = [b / probe_scale for b in found if b is not None]
    if not boxes:
        w, h = fit_size(info.width, info.height, FALLBACK_MAX_SIZE)
        return WorkingSize(max(w, h), max(w, h) / src_long, None, "fallback", 0, len(distinct))
    box = float(np.median(boxes))
    max_size, scale = working_scale(box, info.width, info.height, cfg)
    return WorkingSize(max_size, scale, box, "face", len(boxes), len(distinct))

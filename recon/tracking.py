"""Face landmark tracking over a video: one face, 478 points per frame, gaps filled or marked.

:class:`FaceTracker` runs mediapipe's face mesh (468 points + 10 iris points) in tracking mode on
consecutive frames, one call per frame, so it can live inside a decoding loop that other stages
share. When several faces are visible it keeps following the same one (see
:meth:`FaceTracker.choose`). :func:`fill_gaps` interpolates short runs of missed frames and marks
longer ones unusable; :class:`LandmarkTrack` holds the result with the working-resolution
transform, and :func:`track_landmarks` does all of it for a video file.

Landmarks are in pixels at the working resolution, mediapipe's convention as in
:mod:`recon.landmarks`: ``[478, 3]`` x right, y down, z relative depth in the same pixel scale.
A point at working pixel ``p`` is at source pixel ``p / scale``.

mediapipe is imported only inside :class:`FaceTracker`'s constructor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recon.landmarks import NoFaceError, landmarks_to_pixels
from recon.topology import NUM_LANDMARKS, NUM_MESH_VERTICES

__all__ = [
    "TrackingConfig",
    "FaceTracker",
    "fill_gaps",
    "LandmarkTrack",
    "track_landmarks",
    "check_usable",
    "face_box",
]


@dataclass
class TrackingConfig:
    """Face landmark tracking (mediapipe face mesh with iris, tracking mode)."""

    fps: float = 25.0
    """Frame rate the video is resampled to before tracking (frames per second)."""
    max_size: int | None = 1024
    """Working resolution: frames whose longer side exceeds it are downscaled to it (aspect kept);
    the scale is recorded in :class:`LandmarkTrack`. ``None`` keeps the source size."""
    min_detection_confidence: float = 0.5
    """mediapipe's face detector score needed to (re)acquire a face, in [0, 1]."""
    min_tracking_confidence: float = 0.5
    """mediapipe's face-presence score needed to keep tracking a face from the previous frame
    instead of running detection again, in [0, 1]."""
    max_faces: int = 3
    """Most faces mediapipe looks for per frame; one of them is chosen (:meth:`FaceTracker.choose`).
    With 1 mediapipe skips detection while it tracks a face (about 25% faster) but can neither see
    nor avoid a second face."""
    max_gap: int = 5
    """Longest run of frames without a face (between two frames with one) that is filled by linear
    interpolation; longer runs stay unusable."""
    min_usable_fraction: float = 0.5
    """Least fraction of frames with a usable face for the video to be accepted (:func:`check_usable`)."""
    reacquire_after: int = 25
    """Frames the chosen face may be missing while another face is visible before the tracker
    gives up on it and chooses the largest visible face instead. Until then a face elsewhere in
    the picture is not taken (a person briefly occluded is not swapped for a face in the
    background)."""

    def __post_init__(self):
        if not (isinstance(self.max_faces, int) and self.max_faces >= 1):
            raise ValueError(f"max_faces must be an integer >= 1, got {self.max_faces!r}")
        if not (isinstance(self.max_gap, int) and self.max_gap >= 0):
            raise ValueError(f"max_gap must be an integer >= 0, got {self.max_gap!r}")
        if not (isinstance(self.reacquire_after, int) and self.reacquire_after >= 0):
            raise ValueError(f"reacquire_after must be an integer >= 0, got {self.reacquire_after!r}")
        for name in ("min_detection_confidence", "min_tracking_confidence", "min_usable_fraction"):
            v = getattr(self, name)
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if not (self.fps > 0):
            raise ValueError(f"fps must be positive, got {self.fps!r}")


def face_box(landmarks: np.ndarray) -> np.ndarray:
    """Bounding box ``[4]`` (x0, y0, x1, y1) pixels of the 468 mesh points of ``landmarks: [478, >=2]``."""
    pts = np.asarray(landmarks)[:NUM_MESH_VERTICES, :2]
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def _box_iou(a: np.ndarray, b: np.ndarray) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _box_area(b: np.ndarray) -> float:
    return float(max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0))


class FaceTracker:
    """Landmarks of one face per video frame, for frames given in order: ``tracker(image)``.

    ``image: uint8 [H, W, 3]`` RGB -> ``[478, 3]`` float64 pixels (see the module docstring), or
    ``None`` when the chosen face is not found in this frame. The tracker is stateful (mediapipe
    reuses the previous frame's face region; the choice among faces follows the previous one), so
    call it once per frame of one video, in order; use a new tracker for another video.

    After each call, :attr:`num_faces` is the number of faces mediapipe saw and :attr:`box` the
    chosen face's box (or ``None``). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, cfg: TrackingConfig | None = None):
        from mediapipe.python.solutions import face_mesh  # heavy: import only here

        self.cfg = cfg if cfg is not None else TrackingConfig()
        self._mesh = face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=int(self.cfg.max_faces),
            refine_landmarks=True,
            min_detection_confidence=float(self.cfg.min_detection_confidence),
            min_tracking_confidence=float(self.cfg.min_tracking_confidence),
        )
        self._last_box: np.ndarray | None = None  # box of the chosen face when last seen
        self._missing = 0  # frames since it was last seen
        self.num_faces = 0
        """Faces mediapipe returned for the last frame."""
        self.box: np.ndarray | None = None
        """Box ``[4]`` (x0, y0, x1, y1) of the face chosen in the last frame, or None."""
        self.frames = 0
        """Frames processed so far."""

    def choose(self, boxes: list[np.ndarray]) -> int | None:
        """Index of the face to take among ``boxes`` (each ``[4]`` x0, y0, x1, y1), or None.

        With a face chosen before and missing for at most ``reacquire_after`` frames: the box
        that continues it (largest overlap, else nearest centre within half the face size), or
        None when no box does. Otherwise (first face of the video, or the chosen one has been
        gone too long): the largest box.
        """
        if not boxes:
            return None
        prev = self._last_box
        if prev is not None and self._missing <= self.cfg.reacquire_after:
            size = np.sqrt(max(_box_area(prev), 1.0))
            centre = 0.5 * (prev[:2] + prev[2:])
            best, best_key = None, None
            for i, b in enumerate(boxes):
                iou = _box_iou(prev, b)
                dist = float(np.linalg.norm(0.5 * (b[:2] + b[2:]) - centre)) / size
                if iou < 0.1 and dist > 0.5:
                    continue
                key = (iou, -dist)
                if best_key is None or key > best_key:
                    best, best_key = i, key
            return best
        return int(np.argmax([_box_area(b) for b in boxes]))

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {got}")
        if self._mesh is None:
            raise ValueError("FaceTracker is closed")
        h, w = image.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(image))
        faces = result.multi_face_landmarks or []
        self.num_faces = len(faces)
        self.frames += 1
        if len(faces) == 1:  # the common case: skip the per-face conversion of the others
            cands = [landmarks_to_pixels(faces[0], w, h)]
        else:
            cands = [landmarks_to_pixels(f, w, h) for f in faces]
        k = self.choose([face_box(c) for c in cands])
        if k is None:
            self.box = None
            self._missing += 1
            return None
        pts = cands[k]
        if pts.shape != (NUM_LANDMARKS, 3):  # mediapipe without iris refinement
            raise RuntimeError(f"mediapipe returned {pts.shape[0]} landmarks, expected {NUM_LANDMARKS}")
        self.box = self._last_box = face_box(pts)
        self._missing = 0
        return pts

    def close(self) -> None:
        if self._mesh is not None:
            self._mesh.close()
            self._mesh = None

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def fill_gaps(landmarks: np.ndarray, detected: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate short runs of frames without a face.

    ``landmarks: [T, ...]`` (e.g. ``[T, 478, 3]``; values of undetected frames are ignored),
    ``detected: [T]`` bool. A run of at most ``max_gap`` undetected frames with a detected frame
    on both sides is filled by linear interpolation in time between those two frames; longer runs
    and runs at the start or end of the video stay unusable. A "detected" frame with a non-finite
    value counts as undetected.

    Returns ``filled`` (same shape, floating; NaN where unusable) and ``usable: [T]`` bool
    (detected or interpolated).
    """
    lm = np.asarray(landmarks)
    det = np.asarray(detected, dtype=bool)
    if det.ndim != 1 or lm.shape[:1] != det.shape:
        raise ValueError(f"landmarks [T, ...] and detected [T] must agree: got {lm.shape} and {det.shape}")
    if int(max_gap) != max_gap or max_gap < 0:
        raise ValueError(f"max_gap must be an integer >= 0, got {max_gap!r}")
    dtype = lm.dtype if np.issubdtype(lm.dtype, np.floating) else np.float64
    det = det & np.isfinite(lm.reshape(len(lm), -1)).all(axis=1)
    filled = np.full(lm.shape, np.nan, dtype=dtype)
    filled[det] = lm[det]
    usable = det.copy()
    idx = np.flatnonzero(det)
    if len(idx) >= 2:
        gaps = np.diff(idx) - 1
        for k in np.flatnonzero((gaps > 0) & (gaps <= max_gap)):
            a, b = idx[k], idx[k + 1]
            w = ((np.arange(a + 1, b) - a) / (b - a)).reshape((-1,) + (1,) * (lm.ndim - 1))
            filled[a + 1:b] = (1.0 - w) * lm[a].astype(np.float64) + w * lm[b].astype(np.float64)
            usable[a + 1:b] = True
    return filled, usable


_TRACK_FIELDS = ("landmarks", "detected", "usable", "interpolated", "frame_size", "source_size", "scale", "fps", "num_faces")


@dataclass
class LandmarkTrack:
    """Per-frame face landmarks of one video at the working resolution (``T`` frames at ``fps``)."""

    landmarks: np.ndarray
    """``[T, 478, 3]`` float32 pixels at the working resolution (x right, y down, z relative
    depth in the same scale); NaN where not usable."""
    detected: np.ndarray
    """``[T]`` bool: mediapipe found the face in this frame."""
    usable: np.ndarray
    """``[T]`` bool: detected or interpolated; the frames later stages may use."""
    interpolated: np.ndarray
    """``[T]`` bool: filled by :func:`fill_gaps` (``usable & ~detected``)."""
    frame_size: tuple[int, int]
    """``(H, W)`` of the working frames, pixels."""
    source_size: tuple[int, int]
    """``(H, W)`` of the source video's frames (after its rotation metadata), pixels."""
    scale: float
    """Working size over source size (1.0 when not downscaled): source pixel = working / scale."""
    fps: float
    """Frame rate of the track; frame ``i`` is at ``i / fps`` seconds."""
    num_faces: np.ndarray | None = field(default=None)
    """``[T]`` int16: faces mediapipe saw in each frame (up to ``max_faces``), or None if unknown."""

    def __post_init__(self):
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32)
        T = len(self.landmarks)
        for name in ("detected", "usable", "interpolated"):
            arr = np.asarray(getattr(self, name), dtype=bool)
            if arr.shape != (T,):
                raise ValueError(f"LandmarkTrack.{name} must be [T] = [{T}], got {arr.shape}")
            setattr(self, name, arr)
        if self.num_faces is not None:
            self.num_faces = np.asarray(self.num_faces, dtype=np.int16).reshape(T)
        self.frame_size = tuple(int(v) for v in self.frame_size)
        self.source_size = tuple(int(v) for v in self.source_size)
        self.scale = float(self.scale)
        self.fps = float(self.fps)

    @property
    def num_frames(self) -> int:
        return len(self.landmarks)

    @property
    def usable_fraction(self) -> float:
        """Fraction of frames with a usable face (0 for an empty track)."""
        return float(self.usable.mean()) if len(self.usable) else 0.0

    def landmarks_in_source(self) -> np.ndarray:
        """``[T, 478, 3]`` landmarks in source-video pixels (x, y and z divided by ``scale``)."""
        return self.landmarks / np.float32(self.scale)

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` (no pickles; arrays named as the fields). Atomic: written to a temp
        sibling and renamed onto ``path``."""
        from render.npz import save_npz

        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        arrays = dict(
            landmarks=self.landmarks,
            detected=self.detected,
            usable=self.usable,
            interpolated=self.interpolated,
            frame_size=np.array(self.frame_size, dtype=np.int64),
            source_size=np.array(self.source_size, dtype=np.int64),
            scale=np.float64(self.scale),
            fps=np.float64(self.fps),
        )
        if self.num_faces is not None:
            arrays["num_faces"] = self.num_faces
        try:
            save_npz(tmp, **arrays)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LandmarkTrack":
        """Read a file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _TRACK_FIELDS[:-1] if k not in z.files]
            if missing:
                raise ValueError(f"{path}: not a landmark track (missing {', '.join(missing)})")
            return cls(
                landmarks=z["landmarks"],
                detected=z["detected"],
                usable=z["usable"],
                interpolated=z["interpolated"],
                frame_size=tuple(z["frame_size"].tolist()),
                source_size=tuple(z["source_size"].tolist()),
                scale=float(z["scale"]),
                fps=float(z["fps"]),
                num_faces=z["num_faces"] if "num_faces" in z.files else None,
            )


def track_landmarks(
    video_path: str | os.PathLike, cfg: TrackingConfig | None = None, progress: bool = True,
    max_frames: int | None = None,
) -> LandmarkTrack:
    """Decode ``video_path`` at ``cfg.fps`` and working resolution, track the face in every frame
    and fill short gaps (:func:`fill_gaps`). ``max_frames`` stops after that many frames.

    Does not judge the result: call :func:`check_usable` to refuse videos with too few faces.
    Raises :class:`render.errors.MediaError` when the video cannot be read.
    """
    from tqdm import tqdm

    from render.media.video import VideoReader

    cfg = cfg if cfg is not None else TrackingConfig()
    raw, faces = [], []
    with VideoReader(video_path, fps=cfg.fps, max_size=cfg.max_size) as video, FaceTracker(cfg) as tracker:
        total = video.num_frames_estimate
        if max_frames is not None and total is not None:
            total = min(total, max_frames)
        for frame in tqdm(video, total=total, desc="landmarks", unit="frame", disable=not progress):
            pts = tracker(frame.image)
            raw.append(np.full((NUM_LANDMARKS, 3), np.nan, dtype=np.float32) if pts is None else pts.astype(np.float32))
            faces.append(tracker.num_faces)
            if max_frames is not None and len(raw) >= max_frames:
                break
        W, H = video.size
        src_w, src_h = video.info.width, video.info.height
    landmarks = np.stack(raw) if raw else np.zeros((0, NUM_LANDMARKS, 3), np.float32)
    detected = np.isfinite(landmarks[:, 0, 0])
    filled, usable = fill_gaps(landmarks, detected, cfg.max_gap)
    return LandmarkTrack(
        landmarks=filled,
        detected=detected,
        usable=usable,
        interpolated=usable & ~detected,
        frame_size=(H, W),
        source_size=(src_h, src_w),
        scale=max(W, H) / max(src_w, src_h),
        fps=video.fps,
        num_faces=np.array(faces, dtype=np.int16),
    )


def check_usable(track: LandmarkTrack, what: str, min_usable_fraction: float = 0.5) -> None:
    """Raise :class:`recon.landmarks.NoFaceError` (one line naming ``what``, e.g. the video) when
    no frame has a face, or fewer than ``min_usable_fraction`` of the frames have a usable one."""
    n = track.num_frames
    if n == 0:
        raise NoFaceError(f"{what}: no frames to look for a face in")
    if not track.detected.any():
        raise NoFaceError(
            f"{what}: no face found in any frame (checked {n} frames at {track.frame_size[1]}x"
            f"{track.frame_size[0]}; faces under about 60 pixels wide are not detected)"
        )
    frac = track.usable_fraction
    if frac < min_usable_fraction:
        raise NoFaceError(
            f"{what}: a face was found in only {100 * frac:.1f}% of the {n} frames "
            f"(at least {100 * min_usable_fraction:.0f}% needed); is the face large and visible enough?"
        )

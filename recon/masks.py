"""Per-frame masks (person, head, torso) and the static background plate.

Per frame, three cheap steps (a few ms together at 512x512 on a small CPU):

1. :class:`PersonSegmenter`: mediapipe selfie segmentation, the probability that each pixel shows
   the person ``[H, W] float32``.
2. :func:`split_head_torso`: the label map ``[H, W] uint8``: :data:`LABEL_BACKGROUND` (0),
   :data:`LABEL_TORSO` (1: neck, shoulders, clothes) and :data:`LABEL_HEAD` (2: face and hair
   above the neck). The head is the face oval of the landmarks plus every person pixel above a
   *neck line* (through the jaw angles, tilted with the head's roll) within a band around the
   face; the neck under the jaw therefore goes to the torso.
3. :class:`BackgroundAccumulator`: keeps a bounded, evenly spread subset of frames with their
   background masks and, at the end, the per-pixel median of the background samples, with pixels
   that were never uncovered filled by inpainting.

Label maps are stored as single-channel 8-bit PNGs holding the label values 0/1/2
(:func:`write_labels_png`, :func:`read_labels_png`; written atomically).

Conventions: images are RGB ``uint8 [H, W, 3]``; landmarks are mediapipe's ``[478, 3]`` in pixels
(x right, y down; only x, y are used). mediapipe is imported only inside :class:`PersonSegmenter`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from recon.topology import CHIN, FACE_OVAL, FOREHEAD, LEFT_EYE_CORNERS, NUM_MESH_VERTICES, RIGHT_EYE_CORNERS
from render.errors import MediaError
from render.media.outputs import remove_quietly, reserve_temp_file

__all__ = [
    "LABEL_BACKGROUND",
    "LABEL_TORSO",
    "LABEL_HEAD",
    "JAW_ANGLES",
    "MaskConfig",
    "PersonSegmenter",
    "split_head_torso",
    "head_zone_polygons",
    "masked_median",
    "BackgroundAccumulator",
    "overlay_labels",
    "write_labels_png",
    "read_labels_png",
]

LABEL_BACKGROUND = 0
"""Label of background pixels."""
LABEL_TORSO = 1
"""Label of person pixels that are not head: neck, shoulders, clothes (and hair below the neck line)."""
LABEL_HEAD = 2
"""Label of the face and the hair (and ears) above the neck line."""

JAW_ANGLES = (172, 397)
"""Face-oval landmarks at the angles of the jaw (subject's right, left): the neck line's anchor."""

_EYE_OUTER = (RIGHT_EYE_CORNERS[0], LEFT_EYE_CORNERS[0])  # 33 (image left in a frontal view), 263


@dataclass
class MaskConfig:
    """Person segmentation, head/torso split and background plate (see :mod:`recon.masks`)."""

    model_selection: int = 1
    """mediapipe selfie-segmentation model: 1 = "landscape" (144x256 input, made for video-call
    framing, i.e. head and shoulders: the talking-head case; about twice as fast as 0),
    0 = "general" (256x256 input)."""
    person_threshold: float = 0.5
    """A pixel is person when its segmentation probability is at least this."""
    min_component_fraction: float = 0.0
    """Drop connected person blobs smaller than this fraction of the image (stray specks in the
    backdrop); 0 disables the check (it costs about 0.5 ms per 512x512 frame)."""
    face_in_person: bool = True
    """Count the (enlarged) face oval of the landmarks as person even where the segmentation
    missed it, so the head label always covers the face."""
    face_margin: float = 0.04
    """The face-oval polygon is enlarged about its centroid by this fraction before it is drawn
    (mediapipe's oval runs slightly inside the jaw and cheek outline)."""
    neck_line_height: float = 1.0
    """Where the neck line runs, measured along the face's up axis from the chin: 0 = through
    the chin tip, 1 = through the jaw angles (:data:`JAW_ANGLES`), negative = below the chin, in
    units of the chin-to-jaw-angle height. Person pixels above the line (within the band of
    ``head_half_width``) are head; below it only the face oval is head."""
    head_half_width: float = 1.0
    """Half-width of the head band, along the eye line from the face-oval centre, in units of
    the face height (forehead landmark to chin). Person pixels above the neck line but outside
    the band (a raised shoulder under strong roll, an arm) stay torso."""
    bg_margin_px: int = 6
    """Background samples exclude the person mask dilated by this many pixels (square kernel),
    so the soft, blended halo around the person does not leak into the plate."""
    bg_stride: int = 5
    """The background accumulator keeps every ``bg_stride``-th frame at first; the stride doubles
    (dropping every other kept sample) whenever ``bg_max_samples`` is reached."""
    bg_max_samples: int = 96
    """Most frames the background accumulator holds (so it keeps between half this and this
    many, spread evenly over the video; memory ``4 * H * W`` bytes each). The plate's median
    costs about 4 ms per sample at 512x512, once at the end (plus 0.1-0.3 s of inpainting)."""
    bg_min_island_fraction: float = 0.002
    """Uncovered regions smaller than this fraction of the image and not connected to the rest
    of the uncovered background (typically a patch of clothing at the image edge that the
    segmentation misses in every frame) are not trusted: they are treated as never seen and
    inpainted, so they do not bleed into the inpainted area. 0 disables."""
    inpaint_radius: int = 3
    """Radius, pixels, of OpenCV's Telea inpainting of never-uncovered background pixels."""

    def __post_init__(self) -> None:
        if self.model_selection not in (0, 1):
            raise ValueError(f"model_selection must be 0 or 1, got {self.model_selection}")
        if not 0.0 < self.person_threshold <= 1.0:
            raise ValueError(f"person_threshold must be in (0, 1], got {self.person_threshold}")
        if self.bg_stride < 1 or self.bg_max_samples < 2:
            raise ValueError(f"need bg_stride >= 1 and bg_max_samples >= 2, got {self.bg_stride}, {self.bg_max_samples}")
        if self.bg_margin_px < 0 or self.inpaint_radius < 1 or self.head_half_width <= 0:
            raise ValueError("need bg_margin_px >= 0, inpaint_radius >= 1 and head_half_width > 0")
        if not (0.0 <= self.min_component_fraction < 1.0 and 0.0 <= self.bg_min_island_fraction < 1.0):
            raise ValueError("min_component_fraction and bg_min_island_fraction must be in [0, 1)")


# --------------------------------------------------------------------------- person segmentation


class PersonSegmenter:
    """mediapipe selfie segmentation on RGB frames: ``segment(frame) -> [H, W] float32`` in [0, 1].

    About 4 ms per 512x512 frame with the landscape model on a 2-core CPU (8 ms with the general
    one). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, cfg: MaskConfig | None = None):
        from mediapipe.python.solutions import selfie_segmentation  # heavy: import only here

        self.cfg = cfg or MaskConfig()
        self._seg = selfie_segmentation.SelfieSegmentation(model_selection=self.cfg.model_selection)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """``frame: [H, W, 3]`` uint8 RGB -> person probability ``[H, W]`` float32 in [0, 1]."""
        if self._seg is None:
            raise RuntimeError("PersonSegmenter is closed")
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {frame.dtype} {frame.shape}")
        mask = self._seg.process(np.ascontiguousarray(frame)).segmentation_mask
        # Own the memory (mediapipe's array may view a packet buffer) and clip interpolation ringing.
        return np.clip(mask, 0.0, 1.0).astype(np.float32, copy=False)

    def close(self) -> None:
        if self._seg is not None:
            self._seg.close()
            self._seg = None

    def __enter__(self) -> "PersonSegmenter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- head / torso split


def _person_mask(person: np.ndarray, cfg: MaskConfig) -> np.ndarray:
    """bool or probability ``[H, W]`` -> uint8 ``[H, W]`` in {0, 1}."""
    if person.ndim != 2:
        raise ValueError(f"person mask must be [H, W], got shape {person.shape}")
    if person.dtype == bool:
        mask = person.view(np.uint8).copy()
    elif np.issubdtype(person.dtype, np.floating):
        mask = (person >= cfg.person_threshold).view(np.uint8)
    else:
        raise ValueError(f"person mask must be bool or float probabilities, got {person.dtype}")
    if cfg.min_component_fraction > 0:
        n, comp, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        small = stats[:, cv2.CC_STAT_AREA] < cfg.min_component_fraction * mask.size
        small[0] = False  # component 0 is the background
        if small[1:].any():
            mask[small[comp]] = 0
    return mask


def head_zone_polygons(landmarks: np.ndarray, cfg: MaskConfig, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The two polygons whose union is the head region, in pixels (float64).

    Returns ``oval [36, 2]``: the face oval enlarged by ``cfg.face_margin`` about its centroid,
    and ``zone [4, 2]``: a rectangle whose lower edge is the neck line (perpendicular to the
    face's up axis, i.e. following the head's roll), ``2 * head_half_width`` face heights wide,
    reaching past the top of the image. ``image_size`` is ``(H, W)``.

    The up axis is perpendicular to the line through the outer eye corners; the face height is
    the forehead-to-chin distance along it (robust to yaw).
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim != 2 or lm.shape[0] < NUM_MESH_VERTICES or lm.shape[1] < 2:
        raise ValueError(f"landmarks must be [478, 3] (or [468, 2+]) pixels, got shape {lm.shape}")
    pts = lm[:, :2]
    oval = pts[list(FACE_OVAL)]
    if not np.isfinite(oval).all() or not np.isfinite(pts[list(_EYE_OUTER) + list(JAW_ANGLES)]).all():
        raise ValueError("landmarks contain non-finite values; pass None for a frame without a face")
    centre = oval.mean(axis=0)
    eye = pts[_EYE_OUTER[1]] - pts[_EYE_OUTER[0]]  # points to image right in an upright face
    norm = np.hypot(*eye)
    e = eye / norm if norm > 1e-6 else np.array([1.0, 0.0])
    up = np.array([e[1], -e[0]])  # image y points down: up is e rotated by -90 degrees
    height = max(float((pts[FOREHEAD] - pts[CHIN]) @ up), 1.0)
    chin_level = float((pts[CHIN] - centre) @ up)
    jaw_level = float(((pts[list(JAW_ANGLES)] - centre) @ up).mean())
    level = chin_level + cfg.neck_line_height * (jaw_level - chin_level)
    half = cfg.head_half_width * height
    top = level + 2.0 * (image_size[0] + image_size[1]) + height  # past any image edge
    zone = np.stack([
        centre + e * -half + up * level,
        centre + e * half + up * level,
        centre + e * half + up * top,
        centre + e * -half + up * top,
    ])
    oval = centre + (oval - centre) * (1.0 + cfg.face_margin)
    return oval, zone


_SHIFT = 4  # fixed-point bits for sub-pixel polygon vertices in cv2.fill*Poly


def _fill(canvas: np.ndarray, poly: np.ndarray, convex: bool) -> None:
    # Clamp far-away vertices so the fixed-point coordinates stay well inside int32.
    lim = 4.0 * max(canvas.shape)
    p = np.round(np.clip(poly, -lim, lim) * (1 << _SHIFT)).astype(np.int32)
    if convex:
        cv2.fillConvexPoly(canvas, p, 1, lineType=cv2.LINE_8, shift=_SHIFT)
    else:
        cv2.fillPoly(canvas, [p], 1, lineType=cv2.LINE_8, shift=_SHIFT)


def split_head_torso(person: np.ndarray, landmarks: np.ndarray | None, cfg: MaskConfig | None = None) -> np.ndarray:
    """Label map ``[H, W] uint8``: 0 background, 1 torso, 2 head.

    ``person``: ``[H, W]`` bool mask or float probability (thresholded at
    ``cfg.person_threshold``). ``landmarks``: ``[478, 3]`` pixels of this frame's face, or None.

    Head = person pixels inside the enlarged face oval or above the neck line within the head
    band (:func:`head_zone_polygons`): face, hair, ears; torso = the remaining person pixels
    (neck under the jaw, shoulders, clothes; hair hanging below the jaw angles too). With
    ``cfg.face_in_person`` the face oval counts as person even where the segmentation missed it.
    The labels partition the person mask: ``labels > 0`` is the person.

    Without landmarks (no face in the frame) there is no head to place: every person pixel is
    torso. Such frames are invalid for the head anyway; their person mask still serves the
    background plate and the torso.
    """
    cfg = cfg or MaskConfig()
    mask = _person_mask(person, cfg)
    if landmarks is None:
        return mask  # 0/1: background / torso
    oval, zone = head_zone_polygons(landmarks, cfg, mask.shape)
    region = np.zeros_like(mask)
    _fill(region, zone, convex=True)
    if cfg.face_in_person:
        face = np.zeros_like(mask)
        _fill(face, oval, convex=False)
        np.bitwise_or(mask, face, out=mask)
        np.bitwise_or(region, face, out=region)
    else:
        _fill(region, oval, convex=False)
    np.bitwise_and(region, mask, out=region)
    mask += region  # person (1) + head (1) = 2
    return mask


def overlay_labels(frame: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """For people: ``frame [H, W, 3]`` RGB with head tinted red, torso blue, background darkened."""
    out = frame.astype(np.float32)
    tint = np.array([[0, 0, 0], [40, 90, 255], [255, 60, 40]], dtype=np.float32)[np.minimum(labels, 2)]
    person = (labels > 0)[..., None]
    out = np.where(person, (1 - alpha) * out + alpha * tint, 0.55 * out)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- background plate


def masked_median(samples, valid, zeroed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel median over the samples where ``valid``; the plate's method, usable on its own.

    ``samples``: N arrays ``[H, W, C]`` uint8 (or one ``[N, H, W, C]`` array); ``valid``: N bool
    arrays ``[H, W]``. ``zeroed=True`` promises that invalid samples are already 0 (the
    accumulator stores them so). Returns ``median [H, W, C]`` uint8 (0 where no sample is valid)
    and ``count [H, W]`` int64 (valid samples per pixel).

    Method: invalid samples are set to 0, so after a per-pixel sort (a radix sort for uint8) the
    ``m = N - count`` padding zeros come first and the valid values follow in order; the median
    is the element at ``m + (count - 1) // 2``: exact for an odd count, the lower of the two
    middle values for an even one. Pixels without a valid sample are skipped. Processed in row
    blocks of about 32 MB.
    """
    n = len(samples)
    if n == 0 or len(valid) != n:
        raise ValueError(f"need as many masks as samples (>= 1), got {n} and {len(valid)}")
    h, w, c = samples[0].shape
    median = np.zeros((h, w, c), dtype=np.uint8)
    count = np.zeros((h, w), dtype=np.int64)
    for m in valid:
        count += m
    flat = median.reshape(h, w * c)
    rows = max(1, (32 << 20) // max(1, n * w * c))
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        cnt = np.repeat(count[r0:r1].reshape(-1), c)  # [P]: per pixel and channel
        seen = cnt > 0
        if not seen.any():
            continue
        if zeroed:
            st = np.stack([a[r0:r1] for a in samples])
        else:
            st = np.stack([a[r0:r1] * m[r0:r1, :, None] for a, m in zip(samples, valid)])
        # [N, P] -> [P, N] (cv2's transpose is several times faster than numpy's copy), keep only
        # pixels with a valid sample, sort each row (radix sort for uint8), pick the median.
        s = cv2.transpose(st.reshape(n, -1))[seen]
        s.sort(axis=1, kind="stable")
        cnt = cnt[seen]
        k = (n - cnt) + (cnt - 1) // 2
        flat[r0:r1].reshape(-1)[seen] = s[np.arange(len(k)), k]
    median[count == 0] = 0
    return median, count


class BackgroundAccumulator:
    """Recover the static background from the frames, one frame at a time.

    ``add(frame, labels)`` per frame (``labels > 0`` is the person); ``result()`` at the end gives
    ``background [H, W, 3]`` uint8 RGB and ``never_seen [H, W]`` bool.

    Method: the person mask is dilated by ``bg_margin_px`` (square kernel); pixels it does not
    cover are *uncovered*: background samples. Every ``bg_stride``-th frame is kept (its
    uncovered pixels and the mask); when ``bg_max_samples`` are held, every other one is dropped
    and the stride doubles, so memory is bounded and the kept frames stay spread evenly over the
    whole video. The plate is the per-pixel median of the kept samples where uncovered
    (:func:`masked_median`): robust to the person passing, to noise and to brief occluders.
    Every frame, kept or not, also updates the "ever uncovered" mask and the last uncovered
    value of each pixel, which fills pixels uncovered only in frames that were not kept.
    ``never_seen`` is the pixels never uncovered in any frame, plus uncovered islands smaller than
    ``bg_min_island_fraction`` of the image (not trusted, see :class:`MaskConfig`); they are
    filled by OpenCV's Telea inpainting (radius ``inpaint_radius``) from the plate around them.
    If no pixel was ever uncovered the plate is uniform mid-grey.

    Per-frame cost at 512x512: one dilation and a few masked copies, well under 1 ms.
    """

    def __init__(self, cfg: MaskConfig | None = None):
        self.cfg = cfg or MaskConfig()
        r = self.cfg.bg_margin_px
        self._kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8) if r > 0 else None
        self.frames_added = 0
        """Frames passed to :meth:`add`."""
        self.stride = self.cfg.bg_stride
        """Current sampling stride (doubles as samples are thinned)."""
        self._frames: list[np.ndarray] = []  # uint8 [H, W, 3], 0 where not uncovered
        self._valid: list[np.ndarray] = []  # bool [H, W]: uncovered
        self._shape: tuple[int, int] | None = None
        self._ever: np.ndarray | None = None  # uint8 [H, W]: 1 where uncovered in some frame
        self._last: np.ndarray | None = None  # uint8 [H, W, 3]: last uncovered value

    @property
    def num_samples(self) -> int:
        """Frames currently held for the median."""
        return len(self._frames)

    def add(self, frame: np.ndarray, labels: np.ndarray) -> None:
        """Account one frame: ``frame [H, W, 3]`` uint8 RGB, ``labels [H, W]`` (> 0 = person)."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {frame.dtype} {frame.shape}")
        if labels.shape != frame.shape[:2]:
            raise ValueError(f"labels {labels.shape} do not match the frame {frame.shape[:2]}")
        if self._shape is None:
            self._shape = frame.shape[:2]
            self._ever = np.zeros(self._shape, np.uint8)
            self._last = np.zeros(frame.shape, np.uint8)
        elif frame.shape[:2] != self._shape:
            raise ValueError(f"frame size {frame.shape[:2]} differs from the first frame's {self._shape}")
        covered = (labels > 0).view(np.uint8)
        if self._kernel is not None:
            covered = cv2.dilate(covered, self._kernel)
        bg = np.equal(covered, 0).view(np.uint8)  # fresh array: safe to keep
        np.bitwise_or(self._ever, bg, out=self._ever)
        cv2.copyTo(frame, bg, self._last)  # in place, only where bg != 0
        if self.frames_added % self.stride == 0:
            self._frames.append(cv2.copyTo(frame, bg, np.zeros_like(frame)))
            self._valid.append(bg.view(bool))
            if len(self._frames) >= self.cfg.bg_max_samples:
                self._frames = self._frames[::2]
                self._valid = self._valid[::2]
                self.stride *= 2
        self.frames_added += 1

    def _untrusted_islands(self, seen: np.ndarray) -> np.ndarray:
        """bool ``[H, W]``: uncovered components smaller than ``bg_min_island_fraction``."""
        frac = self.cfg.bg_min_island_fraction
        if frac <= 0:
            return np.zeros(seen.shape, bool)
        _, comp, stats, _ = cv2.connectedComponentsWithStats(seen, connectivity=8)
        small = stats[:, cv2.CC_STAT_AREA] < frac * seen.size
        small[0] = False  # component 0: the never-uncovered pixels
        return small[comp]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(background [H, W, 3] uint8 RGB, never_seen [H, W] bool)``; see the class docstring."""
        if self.frames_added == 0:
            raise ValueError("BackgroundAccumulator.result(): no frames were added")
        median, count = masked_median(self._frames, self._valid, zeroed=True)
        ever = self._ever.view(bool)
        fallback = (count == 0) & ever
        median[fallback] = self._last[fallback]
        never_seen = ~ever | self._untrusted_islands(self._ever)
        if never_seen.all():
            return np.full_like(median, 128), never_seen
        if never_seen.any():
            median = cv2.inpaint(median, never_seen.view(np.uint8), self.cfg.inpaint_radius, cv2.INPAINT_TELEA)
        return median, never_seen


# --------------------------------------------------------------------------- label-map files


def write_labels_png(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write a label map ``[H, W]`` uint8 (or bool) as a single-channel 8-bit PNG, atomically.

    The PNG is written to a hidden temp file next to ``path`` and renamed onto it only when
    complete; on any failure the temp file is removed and an existing ``path`` is left untouched.
    Raises :class:`render.errors.OutputError` when ``path`` cannot be written.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype not in (np.uint8, np.bool_):
        raise ValueError(f"labels must be [H, W] uint8 or bool, got {labels.dtype} {labels.shape}")
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(labels.view(np.uint8)))
    if not ok:  # pragma: no cover - encoding a valid uint8 image does not fail
        raise ValueError(f"cannot encode label map {labels.shape} as PNG")
    path = Path(path)
    tmp = reserve_temp_file(path)
    try:
        with open(tmp, "wb") as f:
            f.write(buf.tobytes())
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    return path


def read_labels_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label map written by :func:`write_labels_png`: ``[H, W]`` uint8.

    Raises :class:`render.errors.MediaError` when the file is missing, not a readable PNG, or not
    a single-channel 8-bit image.
    """
    p = Path(path)
    if not p.is_file():
        raise MediaError(f"cannot read label map {path}: no such file")
    data = np.fromfile(p, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise MediaError(f"cannot read label map {path}: not a readable PNG image")
    if img.ndim != 2 or img.dtype != np.uint8:
        raise MediaError(f"cannot read label map {path}: expected a single-channel 8-bit image, got {img.dtype} {img.shape}")
    return img

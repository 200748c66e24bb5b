"""mediapipe face landmarks, and their lift to a metric 3D face mesh.

Landmark arrays are ``[478, 3]`` (or ``[T, 478, 3]``) in pixel units: x right and y down in pixels,
z in the same pixel scale pointing away from the camera, relative to the face's centre (that is
mediapipe's convention, multiplied by the image width). mediapipe is imported only inside the
functions that run it.
"""

from __future__ import annotations

import functools

import numpy as np

from recon.topology import NUM_LANDMARKS
from render.errors import TalkfaceError


class NoFaceError(TalkfaceError):
    """No face was found where one was required."""


def landmarks_to_pixels(landmarks, width: int, height: int) -> np.ndarray:
    """mediapipe NormalizedLandmarkList -> ``[478, 3]`` float64 pixels (z scaled by the width)."""
    pts = np.array([(p.x, p.y, p.z) for p in landmarks.landmark], dtype=np.float64)
    return pts * np.array([width, height, width], dtype=np.float64)


class FaceMeshDetector:
    """mediapipe FaceMesh (478 points with iris) on RGB frames.

    ``static=True`` treats every image independently (detection on each); ``static=False`` tracks
    across consecutive video frames and re-detects when the track is lost. Use as a context manager
    or call :meth:`close`.
    """

    def __init__(self, static: bool = False, min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5):
        from mediapipe.python.solutions import face_mesh  # heavy: import only here

        self._mesh = face_mesh.FaceMesh(
            static_image_mode=static,
            max_num_faces=1,
            refine_landmarks=True,
            min_detection_confidence=min_detection_confidence,
            min_tracking_confidence=min_tracking_confidence,
        )

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        """``image: [H, W, 3]`` uint8 RGB -> landmarks ``[478, 3]`` in pixels, or None if no face."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image [H, W, 3], got {image.dtype} {image.shape}")
        result = self._mesh.process(np.ascontiguousarray(image))
        if not result.multi_face_landmarks:
            return None
        pts = landmarks_to_pixels(result.multi_face_landmarks[0], image.shape[1], image.shape[0])
        assert pts.shape == (NUM_LANDMARKS, 3)
        return pts

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "FaceMeshDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def detect_image_landmarks(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Landmarks ``[478, 3]`` (pixels) of the face in one RGB image; NoFaceError naming ``what``."""
    with FaceMeshDetector(static=True) as detect:
        pts = detect(image)
    if pts is None:
        raise NoFaceError(f"{what}: no face found")
    return pts


def reference_photo() -> np.ndarray:
    """The bundled reference portrait: scikit-image's astronaut photo, ``[512, 512, 3]`` uint8 RGB."""
    from skimage import data  # ships the photo in the wheel: no download

    return data.astronaut()


@functools.lru_cache(maxsize=1)
def reference_landmarks() -> np.ndarray:
    """mediapipe's landmarks of :func:`reference_photo`, ``[478, 3]`` pixels (cached)."""
    return detect_image_landmarks(reference_photo(), "skimage.data.astronaut()")


def lift_to_metric(landmarks_px: np.ndarray, K: np.ndarray, inter_ocular_m: float | None = None) -> np.ndarray:
    """Lift mediapipe landmarks ``[N, 3]`` (pixels) to a metric 3D face ``[N, 3]`` in camera space.

    The face is placed at the depth where its outer-eye-corner distance is ``inter_ocular_m``
    (default :data:`recon.topology.OUTER_EYE_CORNER_DISTANCE_M`)
    under the pinhole intrinsics ``K: [3, 3]``; each point is back-projected through its pixel at
    depth ``Z0 + z * Z0 / f`` (mediapipe's relative depth, in pixels, converted with the same
    scale as x and y). The result projects exactly onto the input pixels.
    """
    from recon.topology import LEFT_EYE_CORNERS, OUTER_EYE_CORNER_DISTANCE_M, RIGHT_EYE_CORNERS

    if inter_ocular_m is None:
        inter_ocular_m = OUTER_EYE_CORNER_DISTANCE_M
    landmarks_px = np.asarray(landmarks_px, dtype=np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    f = 0.5 * (fx + fy)
    iod_px = np.linalg.norm(landmarks_px[RIGHT_EYE_CORNERS[0], :2] - landmarks_px[LEFT_EYE_CORNERS[0], :2])
    z0 = f * inter_ocular_m / iod_px
    z = z0 + (landmarks_px[:, 2] - landmarks_px[:NUM_LANDMARKS, 2].mean() if len(landmarks_px) else 0) * z0 / f
    x = (landmarks_px[:, 0] - cx) * z / fx
    y = (landmarks_px[:, 1] - cy) * z / fy
    return np.stack([x, y, z], axis=1)

"""Names of the synthetic subject's expression rig (a subset of Apple ARKit's blendshapes)."""

RIG_NAMES: tuple[str, ...] = (
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "eyeBlinkLeft",
    "eyeBlinkRight",
    "browInnerUp",
)
"""Rig channel order used in every array of rig weights (``weights: [T, R]``, ``R = len(RIG_NAMES)``).

"Left" and "Right" are the subject's own sides (ARKit convention): the subject's left appears on
the right half of the image when they face the camera.
"""

RIG_INDEX: dict[str, int] = {name: i for i, name in enumerate(RIG_NAMES)}

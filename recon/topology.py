"""mediapipe face-mesh topology: triangles, iris points and named landmark groups.

mediapipe's face landmarker returns 478 points: the 468 vertices of its canonical face mesh
followed by 10 iris points (468-472 the subject's right iris, 473-477 the left iris; the first of
each five is the iris centre). "Left" and "Right" are the subject's own sides, as in mediapipe:
the subject's left eye appears on the right half of a frontal image.

The triangles are read from ``FACEMESH_TESSELATION`` in mediapipe's source file: the edges listed
in source order come in threes ``(a, b), (b, c), (c, a)``, one triangle each (852 triangles). The
frozenset mediapipe builds loses that order, so we parse the literal with :mod:`ast` instead of
importing the set. Triangles are then re-wound consistently (by propagation over shared edges) and
oriented outward, i.e. towards a camera in front of the face.

The index groups below are facts of mediapipe's topology written as named constants (checked
against mediapipe's own connection sets in ``tests/test_topology.py``). Each contour is ordered.
mediapipe itself is imported only inside the functions that read its source.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import numpy as np

NUM_MESH_VERTICES = 468
"""Vertices of the face mesh (without iris points)."""
NUM_LANDMARKS = 478
"""Points mediapipe returns with ``refine_landmarks=True``: mesh vertices + 10 iris points."""
NUM_TRIANGLES = 852

# Lips: each contour runs from the subject's right mouth corner to the left one.
LIPS_OUTER_UPPER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LIPS_OUTER_LOWER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
MOUTH_CORNERS_OUTER = (61, 291)
"""Subject's right, left outer mouth corner."""
MOUTH_CORNERS_INNER = (78, 308)
LIP_MID_INNER = (13, 14)
"""Upper, lower inner-lip midpoints: their distance is the mouth opening."""

# Eyes: upper and lower lid contours from the outer (lateral) corner to the inner one.
RIGHT_EYE_UPPER = (33, 246, 161, 160, 159, 158, 157, 173, 133)
RIGHT_EYE_LOWER = (33, 7, 163, 144, 145, 153, 154, 155, 133)
LEFT_EYE_UPPER = (263, 466, 388, 387, 386, 385, 384, 398, 362)
LEFT_EYE_LOWER = (263, 249, 390, 373, 374, 380, 381, 382, 362)
RIGHT_EYE_CORNERS = (33, 133)
LEFT_EYE_CORNERS = (263, 362)
OUTER_EYE_CORNER_DISTANCE_M = 0.090
"""Typical adult distance between the outer eye corners (landmarks 33 and 263; the biocular width,
exocanthion to exocanthion, is about 87-91 mm in adult anthropometric surveys). It sets the metric
scale of faces lifted from images: a face is placed at the depth where its outer corners are this
far apart. (The 63 mm often quoted is the distance between the pupils.)"""
RIGHT_EYE_LID_MID = (159, 145)
"""Upper, lower lid midpoints of the right eye."""
LEFT_EYE_LID_MID = (386, 374)

RIGHT_IRIS = (468, 469, 470, 471, 472)
"""Centre first, then four points on the iris circle."""
LEFT_IRIS = (473, 474, 475, 476, 477)
RIGHT_IRIS_CENTER = 468
LEFT_IRIS_CENTER = 473

# Brows: lower and upper contours from the outer end to the inner end.
RIGHT_BROW_LOWER = (46, 53, 52, 65, 55)
RIGHT_BROW_UPPER = (70, 63, 105, 66, 107)
LEFT_BROW_LOWER = (276, 283, 282, 295, 285)
LEFT_BROW_UPPER = (300, 293, 334, 296, 336)
BROW_INNER = (55, 107, 285, 336)
"""Inner ends of both brows (lower and upper contour)."""

NOSE_BRIDGE = (168, 6, 197, 195, 5, 4)
"""From between the eyes down to the tip."""
NOSE_TIP = 1
NOSE_BOTTOM = (98, 97, 2, 326, 327)

FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
"""Closed contour of the face outline, starting at the forehead top, going over the subject's left."""
CHIN = 152
FOREHEAD = 10


def _mediapipe_connections_source() -> str:
    from mediapipe.python.solutions import face_mesh_connections  # heavy: import only here

    return Path(face_mesh_connections.__file__).read_text()


def _edges_in_source_order(source: str, name: str) -> list[tuple[int, int]]:
    module = ast.parse(source)
    for node in module.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            call = node.value  # frozenset([...])
            if not (isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.List)):
                break
            return [tuple(ast.literal_eval(e)) for e in call.args[0].elts]
    raise RuntimeError(f"mediapipe's face_mesh_connections.py has no literal list {name}; unsupported mediapipe version")


def connection_edges(name: str) -> list[tuple[int, int]]:
    """Edges of one of mediapipe's ``FACEMESH_*`` connection sets, in source order."""
    return _edges_in_source_order(_mediapipe_connections_source(), name)


def triangles_from_edges(edges: list[tuple[int, int]]) -> np.ndarray:
    """Group tessellation edges ``(a, b), (b, c), (c, a)`` into triangles ``[F, 3]``.

    Raises ValueError if the edges do not come in closed threes.
    """
    if len(edges) % 3:
        raise ValueError(f"{len(edges)} edges is not a multiple of 3")
    tris = []
    for k in range(0, len(edges), 3):
        (a, b), (b2, c), (c2, a2) = edges[k : k + 3]
        if not (b == b2 and c == c2 and a == a2):
            raise ValueError(f"edges {edges[k:k+3]} at position {k} do not form a closed triangle")
        tris.append((a, b, c))
    return np.asarray(tris, dtype=np.int64)


def make_winding_consistent(faces: np.ndarray) -> np.ndarray:
    """Flip triangles so that every interior edge is traversed in opposite directions by its two
    triangles (a consistently oriented manifold surface). ``faces: [F, 3]`` -> ``[F, 3]``.

    Breadth-first propagation from triangle 0 of each connected component.
    """
    faces = np.array(faces, dtype=np.int64, copy=True)
    edge_to_faces: dict[tuple[int, int], list[int]] = {}
    for f, (a, b, c) in enumerate(faces):
        for u, v in ((a, b), (b, c), (c, a)):
            edge_to_faces.setdefault((min(u, v), max(u, v)), []).append(f)
    done = np.zeros(len(faces), dtype=bool)
    for seed in range(len(faces)):
        if done[seed]:
            continue
        done[seed] = True
        queue = [seed]
        while queue:
            f = queue.pop()
            a, b, c = faces[f]
            for u, v in ((a, b), (b, c), (c, a)):
                for g in edge_to_faces[(min(u, v), max(u, v))]:
                    if done[g]:
                        continue
                    ga, gb, gc = faces[g]
                    directed = {(ga, gb), (gb, gc), (gc, ga)}
                    if (u, v) in directed:  # same direction: g must be flipped
                        faces[g] = (ga, gc, gb)
                    done[g] = True
                    queue.append(g)
    return faces


def orient_towards_camera(faces: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Flip all triangles if their area-weighted normals point away from a camera looking down +z.

    ``verts: [V, 3]`` in OpenCV camera axes (z forward), face in front of the camera. An outward
    normal of a face seen from the front points towards the camera, i.e. has negative z.
    """
    v = verts[faces]
    normal = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]).sum(0)
    return faces[:, [0, 2, 1]] if normal[2] > 0 else faces


@functools.lru_cache(maxsize=1)
def _raw_triangles() -> np.ndarray:
    return make_winding_consistent(triangles_from_edges(connection_edges("FACEMESH_TESSELATION")))


def face_triangles(reference_verts: np.ndarray | None = None) -> np.ndarray:
    """The 852 triangles of mediapipe's face mesh, consistently wound and outward-facing.

    ``reference_verts: [>=468, 3]`` any frontal face-mesh geometry in OpenCV camera axes (x right,
    y down, z away from the viewer; mediapipe's own pixel-space output qualifies), used to choose
    the outward orientation. By default mediapipe's landmarks of the bundled reference photo
    (:func:`recon.landmarks.reference_landmarks`). Returns ``faces: [852, 3]`` int64 whose normals
    ``(v1 - v0) x (v2 - v0)`` point towards the camera (negative z) on a frontal face, i.e. negative
    signed area in pixel coordinates (y down).
    """
    if reference_verts is None:
        from recon.landmarks import reference_landmarks

        reference_verts = reference_landmarks()
    return orient_towards_camera(_raw_triangles(), np.asarray(reference_verts)[:NUM_MESH_VERTICES]).copy()


def boundary_loops(faces: np.ndarray) -> list[list[int]]:
    """Closed loops of boundary edges (edges used by one triangle), each as an ordered vertex list."""
    count: dict[tuple[int, int], int] = {}
    directed: dict[int, int] = {}
    for a, b, c in faces:
        for u, v in ((a, b), (b, c), (c, a)):
            key = (min(u, v), max(u, v))
            count[key] = count.get(key, 0) + 1
    for a, b, c in faces:
        for u, v in ((a, b), (b, c), (c, a)):
            if count[(min(u, v), max(u, v))] == 1:
                directed[int(u)] = int(v)
    loops, seen = [], set()
    for start in directed:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = directed[v]
        loops.append(loop)
    return loops

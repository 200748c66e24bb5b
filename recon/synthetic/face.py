"""The synthetic subject's geometry: the astronaut photo lifted to a textured, rigged 3D mesh.

Built once per subject from what the installed packages ship:

1. scikit-image's astronaut photo, cropped to the head and shoulders and resized to the video size;
2. mediapipe's 478 landmarks of it, lifted to a metric 3D face under a pinhole camera
   (:func:`recon.landmarks.lift_to_metric`);
3. mediapipe's face-mesh triangles, plus fills for the eye holes (lids and iris points), a
   "teeth plate" (the photo's own mouth opening, recessed behind the lips, fixed to the upper
   head) and a dark mouth cavity behind it that shows when the jaw opens;
4. a "sheet": a Delaunay triangulation of the face outline and a grid over the rest of the photo,
   so that the whole image is one mesh and hair and shoulders follow the head without tearing;
5. an expression rig (:data:`recon.synthetic.arkit.RIG_NAMES`), each channel a displacement field
   on the face vertices authored from the landmark geometry (jaw rotation about a hinge, lid
   closing, corner pulls, ...).

Vertex layout of :class:`SyntheticFace` (``V`` vertices in all): the 478 landmark vertices first
(so ``verts[:478]`` are the 3D landmarks), then the sheet grid, then the mouth's extra vertices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import Delaunay

from recon import topology as T
from recon.synthetic.arkit import RIG_INDEX, RIG_NAMES

CROP_BOX = (0, 300, 75, 375)
"""Rows and columns of the astronaut photo kept (y0, y1, x0, x1): the head, hair and shoulders."""


@dataclass
class SyntheticFace:
    """A textured, rigged mesh whose rest-pose rendering is the photo.

    Shapes: ``V`` vertices, ``F`` triangles, ``R = len(RIG_NAMES)`` rig channels, ``L = 478``.
    """

    photo: np.ndarray
    """``[H, W, 3]`` uint8 RGB: the texture, also the rest-pose image."""
    K: np.ndarray
    """``[3, 3]`` pinhole intrinsics (OpenCV; pixel centres at integer coordinates)."""
    verts: np.ndarray
    """``[V, 3]`` rest-pose vertices in camera space, metres (OpenCV axes)."""
    faces: np.ndarray
    """``[F, 3]`` int64 triangles."""
    uv: np.ndarray
    """``[V, 2]`` texture coordinates into ``photo`` for :func:`render.rasterizer.texture`
    (0 and 1 are the image's outer edges): ``(pixel position + 0.5) / (W, H)``."""
    color: np.ndarray
    """``[V, 3]`` flat colour in [0, 1], used where ``color_mix`` is 1 (the mouth cavity)."""
    color_mix: np.ndarray
    """``[V]`` 0 = photo texture, 1 = flat colour."""
    head_weight: np.ndarray
    """``[V]`` in [0, 1]: how much a vertex follows the head's rigid motion (1 face and hair, 0 body
    and background)."""
    rig: np.ndarray
    """``[R, V, 3]`` displacement of each rig channel at weight 1, metres, camera axes."""
    pivot: np.ndarray
    """``[3]`` centre of head rotation (upper neck), metres."""
    landmarks_px: np.ndarray
    """``[478, 3]`` mediapipe's landmarks of ``photo`` (pixels)."""

    @property
    def num_landmarks(self) -> int:
        return T.NUM_LANDMARKS

    def deform(self, weights: np.ndarray) -> np.ndarray:
        """Rest vertices with rig weights applied: ``weights: [R]`` or ``[B, R]`` -> ``[V, 3]`` or ``[B, V, 3]``."""
        w = np.asarray(weights, dtype=np.float64)
        return self.verts + np.tensordot(w, self.rig, axes=([-1], [0]))


def reference_portrait(size: int = 512) -> np.ndarray:
    """The astronaut photo cropped to :data:`CROP_BOX` and resized to ``[size, size, 3]`` uint8."""
    from skimage.transform import resize

    from recon.landmarks import reference_photo

    y0, y1, x0, x1 = CROP_BOX
    crop = reference_photo()[y0:y1, x0:x1]
    out = resize(crop, (size, size), order=3, anti_aliasing=True, preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test of ``points: [N, 2]`` against a closed ``polygon: [M, 2]`` -> ``[N]`` bool."""
    from matplotlib.path import Path as MplPath

    return MplPath(polygon).contains_points(points)


def _fill_polygon(loop: list[int], extra: list[int], xy: np.ndarray) -> np.ndarray:
    """Triangles ``[K, 3]`` covering the polygon ``loop`` (vertex ids), with optional interior
    vertices ``extra``: a Delaunay triangulation of their 2D positions ``xy`` clipped to the polygon."""
    ids = np.asarray(list(loop) + list(extra))
    tri = Delaunay(xy[ids]).simplices
    centroids = xy[ids][tri].mean(axis=1)
    keep = _inside_polygon(centroids, xy[np.asarray(loop)])
    return ids[tri[keep]]


def _face_frame(lm: np.ndarray) -> np.ndarray:
    """Rotation ``[3, 3]`` whose columns are the face's x (towards the subject's left), y (down)
    and z (into the face) axes in camera space, from the 3D landmarks ``lm: [478, 3]``."""
    x = lm[T.LEFT_EYE_CORNERS[0]] - lm[T.RIGHT_EYE_CORNERS[0]]
    x /= np.linalg.norm(x)
    y = lm[T.CHIN] - lm[T.FOREHEAD]
    y -= x * (x @ y)
    y /= np.linalg.norm(y)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def _interp_curve(qx: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Interpolate ``curve: [M, D]`` (first column x, sorted or not) at ``qx`` -> ``[N, D-1]``, clamped."""
    order = np.argsort(curve[:, 0])
    c = curve[order]
    return np.stack([np.interp(qx, c[:, 0], c[:, k]) for k in range(1, c.shape[1])], axis=1)


def _smooth_on_mesh(values: np.ndarray, faces: np.ndarray, fixed: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Laplacian smoothing of per-vertex ``values: [V]`` over the mesh edges, ``fixed: [V]`` bool kept."""
    v = values.astype(np.float64).copy()
    n = len(v)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.concatenate([e, e[:, ::-1]])
    deg = np.bincount(e[:, 0], minlength=n).astype(np.float64)
    has = deg > 0
    for _ in range(iterations):
        acc = np.bincount(e[:, 0], weights=v[e[:, 1]], minlength=n)
        new = v.copy()
        new[has] = 0.5 * v[has] + 0.5 * acc[has] / deg[has]
        new[fixed] = values[fixed]
        v = new
    return v


RIG_AUTHORED_EYE_WIDTH_M = 0.063
"""Outer-eye-corner distance of the synthetic face (metres; smaller than the adult 90 mm of
:data:`recon.topology.OUTER_EYE_CORNER_DISTANCE_M`, so the photo's face sits closer to the camera
and shows more perspective) and of the face the rig's displacements were authored on; the rig
scales them to the face it is given."""


def _author_rig(lm: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Displacement fields ``[R, 478, 3]`` of the rig on the 3D landmarks ``lm: [478, 3]``."""
    frame = _face_frame(lm)
    mouth_c = 0.5 * (lm[T.LIP_MID_INNER[0]] + lm[T.LIP_MID_INNER[1]])
    q = (lm - mouth_c) @ frame  # face-local coordinates: x to subject's left, y down, z into face
    iod = np.linalg.norm(lm[T.LEFT_EYE_CORNERS[0]] - lm[T.RIGHT_EYE_CORNERS[0]])
    s = iod / RIG_AUTHORED_EYE_WIDTH_M  # the displacements below are in metres for s = 1
    mouth_w = np.linalg.norm(lm[T.MOUTH_CORNERS_OUTER[1]] - lm[T.MOUTH_CORNERS_OUTER[0]])
    n = len(lm)
    rig = np.zeros((len(RIG_NAMES), n, 3))

    # The mouth line: midway between the inner lips, as a function of local x.
    upper = q[list(T.LIPS_INNER_UPPER)]
    lower = q[list(T.LIPS_INNER_LOWER)]
    mid_line = np.concatenate([0.5 * (upper[:, :1] + lower[:, :1]), 0.5 * (upper[:, 1:2] + lower[:, 1:2])], axis=1)
    line_y = _interp_curve(q[:, 0], mid_line)[:, 0]
    below = q[:, 1] - line_y  # > 0 under the mouth line

    # jawOpen: rotate the lower face about a hinge near the ears.
    w = _smoothstep(-0.002 * s, 0.008 * s, below)
    fixed = np.zeros(n, dtype=bool)
    lips_upper = set(T.LIPS_INNER_UPPER + T.LIPS_OUTER_UPPER) - set(T.MOUTH_CORNERS_INNER + T.MOUTH_CORNERS_OUTER)
    lips_lower = set(T.LIPS_INNER_LOWER + T.LIPS_OUTER_LOWER) - set(T.MOUTH_CORNERS_INNER + T.MOUTH_CORNERS_OUTER)
    w[list(lips_upper)] = 0.0
    w[list(lips_lower)] = 1.0
    w[list(T.MOUTH_CORNERS_INNER + T.MOUTH_CORNERS_OUTER)] = 0.35
    fixed[list(lips_upper | lips_lower | set(T.MOUTH_CORNERS_INNER + T.MOUTH_CORNERS_OUTER))] = True
    w[T.NUM_MESH_VERTICES:] = 0.0
    fixed[T.NUM_MESH_VERTICES:] = True
    w = _smooth_on_mesh(w, faces, fixed)
    hinge = np.array([0.0, -0.035 * s, 0.080 * s])
    theta = 0.40  # radians at jawOpen = 1 (about 45 mm of mouth opening; speech uses 0.1-0.6)
    r = q - hinge
    c, si = np.cos(theta), np.sin(theta)
    rotated = np.stack([r[:, 0], c * r[:, 1] - si * r[:, 2], si * r[:, 1] + c * r[:, 2]], axis=1)
    rig[RIG_INDEX["jawOpen"]] = w[:, None] * (rotated - r)

    # Gaussians around the lips, split into upper and lower halves.
    lip_x = _smoothstep(0.65 * mouth_w, 0.45 * mouth_w, np.abs(q[:, 0]))
    near_lips = np.exp(-0.5 * (below / (0.007 * s)) ** 2) * lip_x
    up_half = (below <= 0).astype(float)
    gap_rest = float(np.linalg.norm(lm[T.LIP_MID_INNER[1]] - lm[T.LIP_MID_INNER[0]]))
    # mouthClose: bring the inner lips together over the rest gap plus 2 mm (a slightly open jaw);
    # scaled so the lip midpoints meet exactly.
    close = (gap_rest + 0.002 * s) / near_lips[list(T.LIP_MID_INNER)].mean()
    rig[RIG_INDEX["mouthClose"], :, 1] = near_lips * (up_half * 0.35 * close - (1 - up_half) * 0.65 * close)

    mouth_region = np.exp(-0.5 * ((q[:, 0] / (0.55 * mouth_w)) ** 2 + (q[:, 1] / (0.012 * s)) ** 2))
    # mouthFunnel: corners in, lips forward and slightly apart (an "oo"/"sh" funnel).
    rig[RIG_INDEX["mouthFunnel"], :, 0] = -0.25 * q[:, 0] * mouth_region
    rig[RIG_INDEX["mouthFunnel"], :, 1] = np.sign(below) * 0.0025 * s * near_lips
    rig[RIG_INDEX["mouthFunnel"], :, 2] = -0.006 * s * mouth_region
    # mouthPucker: corners further in, lips forward and pressed.
    rig[RIG_INDEX["mouthPucker"], :, 0] = -0.40 * q[:, 0] * mouth_region
    rig[RIG_INDEX["mouthPucker"], :, 1] = -np.sign(below) * 0.0015 * s * near_lips
    rig[RIG_INDEX["mouthPucker"], :, 2] = -0.008 * s * mouth_region

    # Corner pulls: smile (out, up, back) and stretch (out, down), per side.
    for side, corner in (("Left", T.MOUTH_CORNERS_OUTER[1]), ("Right", T.MOUTH_CORNERS_OUTER[0])):
        sign = 1.0 if side == "Left" else -1.0
        d = np.linalg.norm(q - q[corner], axis=1)
        g = np.exp(-0.5 * (d / (0.35 * mouth_w)) ** 2)
        rig[RIG_INDEX[f"mouthSmile{side}"]] = g[:, None] * np.array([sign * 0.004, -0.005, 0.002]) * s
        rig[RIG_INDEX[f"mouthStretch{side}"]] = g[:, None] * np.array([sign * 0.005, 0.003, 0.0]) * s

    # Blinks: the eye between the lids is squashed onto a closing line near the lower lid; the
    # skin above the upper lid follows with a falloff.
    for side, (up_ids, low_ids, iris) in {
        "Left": (T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER, T.LEFT_IRIS),
        "Right": (T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER, T.RIGHT_IRIS),
    }.items():
        up = _interp_curve(q[:, 0], q[list(up_ids)][:, :2])[:, 0]
        lo = _interp_curve(q[:, 0], q[list(low_ids)][:, :2])[:, 0]
        gap = np.maximum(lo - up, 1e-4)
        closed = lo - 0.15 * gap
        xs = q[list(up_ids), 0]
        eye_w = xs.max() - xs.min()
        across = _smoothstep(0.5 * eye_w + 0.004 * s, 0.5 * eye_w - 0.001 * s, np.abs(q[:, 0] - 0.5 * (xs.max() + xs.min())))
        t = np.clip((q[:, 1] - up) / gap, 0.0, 1.0)
        dy_inside = (1 - t) * (closed - up) + t * (closed - lo)
        above = np.exp(-0.5 * (np.minimum(q[:, 1] - up, 0) / (0.004 * s)) ** 2)
        beneath = np.exp(-0.5 * (np.maximum(q[:, 1] - lo, 0) / (0.002 * s)) ** 2)
        dy = np.where(q[:, 1] < up, (closed - up) * above, np.where(q[:, 1] > lo, (closed - lo) * beneath, dy_inside))
        rig[RIG_INDEX[f"eyeBlink{side}"], :, 1] = dy * across
        # Lid vertices and iris points get the exact closing; nothing else of the face moves.
        region = np.zeros(n, dtype=bool)
        region[: T.NUM_MESH_VERTICES] = True
        region[list(iris)] = True
        rig[RIG_INDEX[f"eyeBlink{side}"], ~region] = 0.0

    # browInnerUp: raise the inner brow ends, falling off over the forehead.
    brow = q[list(T.BROW_INNER)].mean(axis=0)
    d = np.linalg.norm((q - brow)[:, :2] * np.array([0.6, 1.0]), axis=1)
    rig[RIG_INDEX["browInnerUp"], :, 1] = -0.006 * s * np.exp(-0.5 * (d / (0.014 * s)) ** 2)

    return rig @ frame.T  # local -> camera axes


def build_synthetic_face(size: int = 512, focal: float = 1200.0, grid_step: int = 24) -> SyntheticFace:
    """Lift the reference portrait to a rigged mesh (runs mediapipe once, about a second).

    ``size``: output image side in pixels; ``focal``: pinhole focal length in pixels;
    ``grid_step``: spacing in pixels of the sheet grid outside the face.
    """
    from recon.landmarks import detect_image_landmarks, lift_to_metric

    photo = reference_portrait(size)
    h, w = photo.shape[:2]
    K = np.array([[focal, 0, (w - 1) / 2], [0, focal, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)
    lm_px = detect_image_landmarks(photo, "the synthetic subject's portrait")
    lm = lift_to_metric(lm_px, K, inter_ocular_m=RIG_AUTHORED_EYE_WIDTH_M)  # a small face, 0.7 m away
    xy = lm_px[:, :2]

    face_tris = T.face_triangles(lm_px)
    tris = [face_tris]
    # Eye holes: lids + iris points.
    for upper, lower, iris in ((T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER, T.LEFT_IRIS), (T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER, T.RIGHT_IRIS)):
        loop = list(upper) + list(lower[::-1][1:-1])
        tris.append(_fill_polygon(loop, [i for i in iris if _inside_polygon(xy[[i]], xy[loop])[0]], xy))

    # Sheet: the face outline plus a grid over the photo, away from the face.
    oval = xy[list(T.FACE_OVAL)]
    gy, gx = np.meshgrid(np.arange(0, h + grid_step - 1, grid_step, dtype=float), np.arange(0, w + grid_step - 1, grid_step, dtype=float), indexing="ij")
    grid = np.stack([np.minimum(gx, w - 1).ravel(), np.minimum(gy, h - 1).ravel()], axis=1)
    grid = np.unique(grid, axis=0)
    centre = oval.mean(axis=0)
    grown = centre + (oval - centre) * 1.12  # keep grid points off the face outline
    grid = grid[~_inside_polygon(grid, grown)]
    n_lm = len(lm)
    sheet_ids = np.concatenate([np.asarray(T.FACE_OVAL), n_lm + np.arange(len(grid))])
    sheet_xy = np.concatenate([oval, grid])
    sheet_tris = Delaunay(sheet_xy).simplices
    keep = ~_inside_polygon(sheet_xy[sheet_tris].mean(axis=1), oval)
    tris.append(sheet_ids[sheet_tris[keep]])

    # Grid depth: behind the face outline (hair, neck, background are further than the face).
    oval_depth = lm[list(T.FACE_OVAL), 2]
    z_back = oval_depth.max() + 0.02
    grid_xyz = np.stack([(grid[:, 0] - K[0, 2]) * z_back / focal, (grid[:, 1] - K[1, 2]) * z_back / focal, np.full(len(grid), z_back)], axis=1)

    # Mouth: the photo's opening as a recessed plate fixed to the upper head, a dark cavity behind.
    inner_loop = list(T.LIPS_INNER_UPPER) + list(T.LIPS_INNER_LOWER[::-1][1:-1])
    n_base = n_lm + len(grid)
    plate_xyz = lm[inner_loop] + np.array([0, 0, 0.005])
    plate_ids = n_base + np.arange(len(inner_loop))
    plate_local = _fill_polygon(list(range(len(inner_loop))), [], xy[inner_loop])
    tris.append(plate_ids[plate_local])
    # The cavity is a curved grid deep behind the lips (3-5 cm), wider than the mouth at the top
    # and reaching most of the way to the chin, so that whatever the jaw and the head do it fills
    # the opening.
    frame = _face_frame(lm)
    mouth_c = 0.5 * (lm[T.LIP_MID_INNER[0]] + lm[T.LIP_MID_INNER[1]])
    mouth_w = np.linalg.norm(lm[T.MOUTH_CORNERS_OUTER[1]] - lm[T.MOUTH_CORNERS_OUTER[0]])
    chin_drop = np.linalg.norm(lm[T.CHIN] - mouth_c)
    xs = np.linspace(-1.0, 1.0, 9)
    ys = np.linspace(-0.3, 0.9, 5) * chin_drop
    gy_, gx_ = np.meshgrid(ys, xs, indexing="ij")
    depth = 0.03 + 0.02 * gx_**2
    # A trapezoid: as wide as the open lips at the top, narrower towards the chin, so that it
    # never reaches past the jaw line when the jaw rotates down.
    gx_ = gx_ * mouth_w * np.interp(gy_, [ys[0], 0.0, ys[-1]], [0.75, 0.7, 0.45])
    cav = mouth_c + gx_[..., None] * frame[:, 0] + gy_[..., None] * frame[:, 1] + depth[..., None] * frame[:, 2]
    n_rows, n_cols = cav.shape[:2]
    cav_ids = n_base + len(inner_loop) + np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
    a, b = cav_ids[:-1, :-1].ravel(), cav_ids[:-1, 1:].ravel()
    c, d = cav_ids[1:, 1:].ravel(), cav_ids[1:, :-1].ravel()
    tris.append(np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]))
    verts = np.concatenate([lm, grid_xyz, plate_xyz, cav.reshape(-1, 3)])
    faces = np.concatenate(tris).astype(np.int64)
    faces = _orient_all_towards_camera(faces, verts)

    V = len(verts)
    px = verts @ K.T
    px = px[:, :2] / px[:, 2:]
    uv = np.zeros((V, 2))
    to_uv = lambda p: (p + 0.5) / np.array([w, h])  # noqa: E731
    uv[:n_base] = to_uv(np.concatenate([xy, grid]))
    uv[plate_ids] = to_uv(xy[inner_loop])
    uv[n_base + len(inner_loop) :] = to_uv(px[n_base + len(inner_loop) :])
    color = np.zeros((V, 3))
    color_mix = np.zeros(V)
    shade = 1.0 - 0.6 * np.abs(np.linspace(-1.0, 1.0, n_cols))[None, :].repeat(n_rows, 0).ravel()
    color[n_base + len(inner_loop) :] = np.array([0.25, 0.07, 0.07]) * shade[:, None]
    color_mix[n_base + len(inner_loop) :] = 1.0

    # Head weight: 1 on the face and mouth, hair around it; falling to 0 over the neck and background.
    a = 0.5 * (oval[:, 0].max() - oval[:, 0].min())
    b = 0.5 * (oval[:, 1].max() - oval[:, 1].min())
    cx, cy = centre
    chin_y = xy[T.CHIN, 1]
    pts = np.concatenate([xy, grid])
    ell = np.sqrt(((pts[:, 0] - cx) / (2.0 * a)) ** 2 + ((pts[:, 1] - (cy - 0.35 * b)) / (1.65 * b)) ** 2)
    head = 1.0 - _smoothstep(0.85, 1.25, ell)
    neck = 1.0 - _smoothstep(chin_y, chin_y + 0.8 * b, pts[:, 1])
    head_weight = np.ones(V)
    head_weight[:n_base] = head * neck
    head_weight[:n_lm] = 1.0

    rig = np.zeros((len(RIG_NAMES), V, 3))
    rig[:, :n_lm] = _author_rig(lm, face_tris)

    nose = lm[T.NOSE_TIP]
    pivot = nose + frame @ np.array([0.0, 0.03, 0.10])
    return SyntheticFace(photo=photo, K=K, verts=verts, faces=faces, uv=uv, color=color, color_mix=color_mix,
                         head_weight=head_weight, rig=rig, pivot=pivot, landmarks_px=lm_px)


def _orient_all_towards_camera(faces: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Flip each triangle whose normal points away from the camera in the rest pose (all of this
    mesh faces the camera at rest)."""
    v = verts[faces]
    nz = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])[:, 2]
    out = faces.copy()
    out[nz > 0] = out[nz > 0][:, [0, 2, 1]]
    return out

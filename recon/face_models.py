"""User-supplied research face models (BFM, FLAME) as :class:`~recon.morphable.MorphableModel`.

These files cannot be shipped with the toolkit (their licences require each user to register and
download them), so this module only reads them:

- :func:`load_bfm`: the Basel Face Model 2009 as cropped and re-packaged by Deep3DFaceRecon
  (``BFM_model_front.mat``: 35709 vertices, 80 identity and 64 expression components).
- :func:`load_flame`: FLAME 2020 (``generic_model.pkl``: 5023 vertices, 300 shape and 100
  expression components), read with a restricted unpickler, plus an optional landmark embedding.

Both are converted at this boundary to the toolkit's conventions (metres; OpenCV-like axes: x
image right, y down, z away from a camera the face looks at) and to the 68-point iBUG scheme's
correspondence with mediapipe's landmarks (:data:`IBUG68_TO_MEDIAPIPE`). The file formats, units and
conversions are described in ``docs/face_models.md``.

:func:`fit_model_coefficients` solves for identity and expression coefficients from 3D landmarks
already aligned in model space (regularised linear least squares), and
:func:`require_correspondence` is the check every fitting step runs first.
:func:`transfer_fit` is the second stage of ``talkface fit --face-model bfm|flame``: it carries a
finished fit of the built-in model (camera, poses, expressions) over to a research model.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recon.morphable import MorphableModel, project_posed
from render.errors import TalkfaceError

# ---------------------------------------------------------------------------------------------
# The 68-point iBUG / Multi-PIE scheme on mediapipe's face mesh
# ---------------------------------------------------------------------------------------------

IBUG68_TO_MEDIAPIPE: tuple[int, ...] = (
    # 0-16 jaw line, subject's right ear (image left) -> chin (8) -> left ear: FACE_OVAL vertices
    234, 93, 132, 58, 136, 150, 149, 148, 152, 377, 378, 379, 365, 288, 361, 323, 454,
    # 17-21 subject's right brow, outer -> inner (RIGHT_BROW_UPPER)
    70, 63, 105, 66, 107,
    # 22-26 left brow, inner -> outer (LEFT_BROW_UPPER reversed)
    336, 296, 334, 293, 300,
    # 27-30 nose bridge, nasion -> tip (NOSE_BRIDGE, NOSE_TIP)
    168, 197, 5, 1,
    # 31-35 nose bottom, subject's right ala -> subnasale -> left ala (NOSE_BOTTOM)
    98, 97, 2, 326, 327,
    # 36-41 right eye: outer corner, upper lid x2, inner corner, lower lid x2 (inner -> outer)
    33, 160, 158, 133, 153, 144,
    # 42-47 left eye: inner corner, upper lid x2, outer corner, lower lid x2 (outer -> inner)
    362, 385, 387, 263, 373, 380,
    # 48-54 outer upper lip, right corner -> left corner (LIPS_OUTER_UPPER)
    61, 39, 37, 0, 267, 269, 291,
    # 55-59 outer lower lip, left -> right (LIPS_OUTER_LOWER reversed, corners excluded)
    405, 314, 17, 84, 181,
    # 60-64 inner upper lip, right corner -> left corner (LIPS_INNER_UPPER)
    78, 81, 13, 311, 308,
    # 65-67 inner lower lip, left -> right (LIPS_INNER_LOWER reversed, corners excluded)
    402, 14, 178,
)
"""mediapipe landmark index (0-477) of each of the 68 iBUG points, in iBUG order (0-based).

How it was built: each iBUG group lies on one of mediapipe's ordered contours in
:mod:`recon.topology`, and each iBUG point is the contour vertex at the corresponding position:

- corners and ends are the contour ends: eye corners 36/39/42/45 = ``RIGHT/LEFT_EYE_CORNERS``,
  mouth corners 48/54 = ``MOUTH_CORNERS_OUTER``, 60/64 = ``MOUTH_CORNERS_INNER``, chin 8 = ``CHIN``,
  the brows are the five vertices of ``*_BROW_UPPER`` (iBUG annotates the brows' upper edge) and the
  nose bottom the five of ``NOSE_BOTTOM``;
- points between ends were chosen on mediapipe's landmarks of the bundled reference photo
  (:func:`recon.landmarks.reference_landmarks`): the jaw by equal arc length along ``FACE_OVAL``
  from the ear-level points 234/454 to the chin (the picks on the two halves are mirror images of
  each other, i.e. the same symmetric mediapipe pairs); the nose bridge at thirds of the height from
  the nasion (168) to the tip (1); the eye lids as the two lid vertices flanking the lid midpoint
  (``*_EYE_LID_MID``), which sit near a third and two thirds of the eye width; the lips so that
  49/53 lie halfway between the corner and the cupid's-bow peak (37/267), the lower-lip points
  55-59 under 53, 52, 51, 50, 49, and the inner-lip points 61/63, 65/67 halfway between corner and
  midline. Every choice uses mediapipe's left/right symmetric pairs, so the table is mirror
  symmetric.

Sides are the subject's: iBUG 36 is the subject's right eye's outer corner (image left in a frontal
photo, mediapipe 33), 45 the left eye's outer corner (mediapipe 263). Points on a contour that
slides with head pose (the jaw line) correspond only approximately; fitting code may down-weight
them.
"""

IBUG68_GROUPS: dict[str, range] = {
    "jaw": range(0, 17),
    "right_brow": range(17, 22),
    "left_brow": range(22, 27),
    "nose_bridge": range(27, 31),
    "nose_bottom": range(31, 36),
    "right_eye": range(36, 42),
    "left_eye": range(42, 48),
    "outer_lips": range(48, 60),
    "inner_lips": range(60, 68),
}
"""The iBUG 68-point groups (0-based point ranges)."""

FLAME_NUM_SHAPE = 300
"""FLAME 2020's ``shapedirs`` hold 300 identity (shape) components, then the expression ones."""

BFM_DEFAULT_UNIT_SCALE = 0.1
"""Metres per ``BFM_model_front.mat`` unit: the file is in decimetres (see :func:`load_bfm`)."""

_FLIP_YZ = np.array([1.0, -1.0, -1.0])
"""y up / z towards the viewer (BFM, FLAME, OpenGL) -> y down / z away from the viewer (ours).
A rotation by 180 degrees about x: handedness, and so triangle winding, is preserved."""


# ---------------------------------------------------------------------------------------------
# Errors and small helpers
# ---------------------------------------------------------------------------------------------


class FaceModelFileError(TalkfaceError):
    """A user-supplied face-model file is missing, unreadable, unsafe or malformed."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _check_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise FaceModelFileError(f"{path}: no such file ({what})")
    if not path.is_file():
        raise FaceModelFileError(f"{path}: not a file ({what})")
    return path


def _orient_outward(faces: np.ndarray, verts: np.ndarray) -> tuple[np.ndarray, bool]:
    """Flip all triangles if they wind inwards. Returns ``(faces [F, 3], flipped)``.

    Uses the signed volume of the cones from the vertex centroid to the triangles, which is
    positive for outward normals on a closed surface and on an open one curved around the
    centroid like a face mask (the centroid lies behind the face surface). Assumes consistent
    winding, which both BFM and FLAME have.
    """
    v = np.asarray(verts, dtype=np.float64)
    v = v - v.mean(axis=0)
    a, b, c = v[faces[:, 0]], v[faces[:, 1]], v[faces[:, 2]]
    signed = np.einsum("ij,ij->i", a, np.cross(b, c)).sum()
    if signed < 0:
        return faces[:, [0, 2, 1]].copy(), True
    return faces, False


def require_correspondence(model: MorphableModel) -> MorphableModel:
    """Raise a :class:`TalkfaceError` unless ``model`` has a landmark correspondence to mediapipe.

    Every fitting step calls this first: a FLAME model loaded without its landmark embedding has
    an empty correspondence and cannot be fitted to landmarks. Returns ``model``.
    """
    if len(model.landmark_vertices) == 0:
        source = model.meta.get("source_file", "no source file recorded")
        msg = (
            f"face model '{model.name}' ({source}) has no landmark correspondence to mediapipe,"
            " so it cannot be fitted"
        )
        if model.name == "flame":
            msg += (
                "; pass FLAME's landmark embedding file (landmark_embedding.npy, flame_static_embedding.pkl or"
                " mediapipe_landmark_embedding.npz) together with generic_model.pkl"
            )
        raise TalkfaceError(msg)
    return model


# ---------------------------------------------------------------------------------------------
# BFM (Deep3DFaceRecon's BFM_model_front.mat)
# ---------------------------------------------------------------------------------------------

_BFM_FIELDS = ("meanshape", "idBase", "exBase", "tri", "keypoints")


def load_bfm(
    path: str | Path,
    unit_scale: float = BFM_DEFAULT_UNIT_SCALE,
    *,
    recenter: bool = True,
    num_id: int | None = None,
    num_exp: int | None = None,
) -> MorphableModel:
    """Read Deep3DFaceRecon's ``BFM_model_front.mat`` into a :class:`MorphableModel` named ``"bfm"``.

    The file (a MATLAB v5 ``.mat`` written by scipy) holds, for ``N`` vertices (35709 in the real
    one): ``meanshape: [1, 3N]`` (or ``[3N, 1]``), vertex-interleaved ``x0 y0 z0 x1 ...``;
    ``idBase: [3N, 80]`` and ``exBase: [3N, 64]``, the bases already multiplied by their standard
    deviations (coefficients are roughly unit-variance); ``tri: [F, 3]`` 1-based vertex ids;
    ``keypoints: [1, 68]`` 1-based vertex ids of the 68 iBUG landmarks. Other fields (``meantex``,
    ``texBase``, ``point_buf``, masks) are not read.

    Units: decimetres. Deep3DFaceRecon builds the file from BFM 2009, whose coordinates are in
    micrometres, by dividing by 1e5, and renders with the camera at distance 10 and focal 1015
    px for 224 px crops: 10 units = 1 m puts a ~0.15 m wide face at about 150 px, which is the size
    its crops are aligned to. Hence ``unit_scale`` (metres per file unit) defaults to 0.1; pass
    another value for a file re-exported in other units.

    Axes: BFM is y up, z towards the viewer; we flip y and z (a rotation, so the triangles' winding
    is kept) and then orient the triangles outward (checked, flipped if needed). With
    ``recenter`` (default, as Deep3DFaceRecon does) the mean shape's vertex centroid is moved to
    the origin; the offset added (metres, our axes) is stored in ``meta["offset_m"]``, so a point
    maps back to the file as ``p_file = flip_yz(p - offset_m) / unit_scale``.

    ``num_id`` / ``num_exp`` keep only the first components. The landmark correspondence is
    ``keypoints`` <-> :data:`IBUG68_TO_MEDIAPIPE`.

    Raises :class:`FaceModelFileError` (a :class:`TalkfaceError`; one line naming the file) for a
    missing or unreadable file, missing fields or wrong shapes.
    """
    path = _check_file(path, "BFM model, Deep3DFaceRecon's BFM_model_front.mat")
    if not (np.isfinite(unit_scale) and unit_scale > 0):
        raise ValueError(f"unit_scale must be a positive number of metres per file unit, got {unit_scale}")
    try:
        from scipy.io import loadmat

        mat = loadmat(str(path), variable_names=list(_BFM_FIELDS))
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5) files
        raise FaceModelFileError(
            f"{path}: MATLAB v7.3 (HDF5) .mat files are not supported; expected Deep3DFaceRecon's BFM_model_front.mat"
            f" (a v5 .mat) ({_one_line(exc)})"
        ) from None
    except Exception as exc:  # scipy raises several types for files that are not .mat
        raise FaceModelFileError(f"{path}: not a readable MATLAB .mat file ({_one_line(exc)})") from None
    missing = [k for k in _BFM_FIELDS if k not in mat]
    if missing:
        raise FaceModelFileError(
            f"{path}: missing field(s) {', '.join(missing)}; expected Deep3DFaceRecon's BFM_model_front.mat with"
            f" {', '.join(_BFM_FIELDS)}"
        )

    def bad(msg: str) -> FaceModelFileError:
        return FaceModelFileError(f"{path}: {msg} (expected Deep3DFaceRecon's BFM_model_front.mat)")

    def numeric(name: str) -> np.ndarray:
        arr = np.asarray(mat[name])
        if arr.dtype.kind not in "iuf" or arr.size == 0:
            raise bad(f"field {name} must be a non-empty numeric array, got dtype {arr.dtype} shape {arr.shape}")
        return arr

    meanshape = numeric("meanshape")
    if meanshape.ndim != 2 or 1 not in meanshape.shape or meanshape.size % 3:
        raise bad(f"meanshape must be [1, 3N] or [3N, 1], got {meanshape.shape}")
    n3 = meanshape.size
    n = n3 // 3
    bases = {}
    for name in ("idBase", "exBase"):
        b = numeric(name)
        if b.ndim != 2 or b.shape[0] != n3:
            raise bad(f"{name} must be [3N, K] = [{n3}, K] to match meanshape, got {b.shape}")
        bases[name] = b
    tri = numeric("tri")
    if tri.ndim != 2 or tri.shape[1] != 3:
        raise bad(f"tri must be [F, 3], got {tri.shape}")
    if tri.dtype.kind == "f" and not np.array_equal(tri, np.round(tri)):
        raise bad("tri must hold integer vertex ids")
    tri = tri.astype(np.int64)
    if tri.min() < 1 or tri.max() > n:
        raise bad(f"tri must hold 1-based vertex ids in [1, {n}], got [{tri.min()}, {tri.max()}]")
    keypoints = numeric("keypoints")
    if keypoints.size != 68 or keypoints.ndim > 2:
        raise bad(f"keypoints must be [1, 68] vertex ids, got {keypoints.shape}")
    keypoints = keypoints.reshape(-1).astype(np.int64)
    if keypoints.min() < 1 or keypoints.max() > n:
        raise bad(f"keypoints must be 1-based vertex ids in [1, {n}], got [{keypoints.min()}, {keypoints.max()}]")
    for name, arr in (("meanshape", meanshape), *bases.items()):
        if not np.all(np.isfinite(arr)):
            raise bad(f"field {name} holds non-finite values")

    def basis(b: np.ndarray, keep: int | None) -> np.ndarray:
        k = b.shape[1] if keep is None else min(int(keep), b.shape[1])
        out = b[:, :k].astype(np.float64).reshape(n, 3, k).transpose(2, 0, 1)  # [K, N, 3]
        return (out * (_FLIP_YZ * unit_scale)).astype(np.float32)

    mean = meanshape.astype(np.float64).reshape(n, 3) * (_FLIP_YZ * unit_scale)
    offset = -mean.mean(axis=0) if recenter else np.zeros(3)
    mean = mean + offset
    faces, flipped = _orient_outward(tri - 1, mean)
    id_basis = basis(bases["idBase"], num_id)
    exp_basis = basis(bases["exBase"], num_exp)
    return MorphableModel(
        name="bfm",
        mean=mean.astype(np.float32),
        id_basis=id_basis,
        exp_basis=exp_basis,
        faces=faces,
        landmark_vertices=keypoints - 1,
        landmark_mediapipe=np.asarray(IBUG68_TO_MEDIAPIPE, dtype=np.int64),
        meta={
            "source_file": str(path),
            "format": "Deep3DFaceRecon BFM_model_front.mat",
            "unit_scale_m": float(unit_scale),
            "axes": "file y up, z towards viewer; converted by flipping y and z",
            "offset_m": [float(x) for x in offset],
            "faces_flipped": bool(flipped),
            "file_components": {"id": int(bases["idBase"].shape[1]), "exp": int(bases["exBase"].shape[1])},
            "correspondence": "keypoints <-> IBUG68_TO_MEDIAPIPE",
        },
    )


# ---------------------------------------------------------------------------------------------
# Restricted unpickling (FLAME pickles and landmark embeddings)
# ---------------------------------------------------------------------------------------------


class ChumpyArrayStandIn:
    """Takes the place of ``chumpy.ch.Ch`` while unpickling FLAME files, without importing chumpy.

    chumpy pickles a ``Ch`` as the class plus its state dict, whose ``'x'`` entry is the numpy
    array; this class keeps that state (:attr:`state`) and exposes the array (:attr:`array`,
    ``np.asarray(obj)``). It runs no chumpy code.
    """

    state: dict | None = None

    def __setstate__(self, state):
        self.state = state

    @property
    def array(self) -> np.ndarray:
        x = self.state.get("x") if isinstance(self.state, dict) else None
        if not isinstance(x, np.ndarray):
            raise ValueError("a pickled chumpy.ch.Ch object holds no numpy array under 'x'")
        return x

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.array, dtype=dtype)


class _Refused(pickle.UnpicklingError):
    def __init__(self, qualified: str):
        super().__init__(qualified)
        self.qualified = qualified


def _latin1_encode(text, encoding="latin1"):
    """Stand-in for ``_codecs.encode`` (how protocol-2 pickles store bytes): latin-1 only."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


def _sparse_classes() -> dict[str, type]:
    import scipy.sparse as sp

    names = ("csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array")
    return {name: getattr(sp, name) for name in names if hasattr(sp, name)}


def _safe_reconstructor(cls, base, state):
    """Stand-in for ``copyreg._reconstructor`` (protocol 0/1 pickles of plain objects)."""
    if base is not object or state is not None or not (cls is ChumpyArrayStandIn or cls in _sparse_classes().values()):
        raise _Refused(f"copyreg._reconstructor of {getattr(cls, '__name__', cls)!r}")
    return object.__new__(cls)


def _numpy_core(submodule: str, name: str):
    import importlib

    try:
        module = importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:  # numpy < 1.26
        module = importlib.import_module(f"numpy.core.{submodule}")
    return getattr(module, name)


_NUMPY_CORE_ALLOWED = {("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")}
_BUILTINS_ALLOWED = {"set", "frozenset", "list", "dict", "tuple", "bytearray", "complex", "object"}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only numpy arrays, scipy sparse matrices, builtin containers and
    :class:`ChumpyArrayStandIn`; any other global (``os.system``, arbitrary classes, other chumpy
    classes) raises before anything is called. Use :func:`restricted_load`."""

    def find_class(self, module: str, name: str):
        for prefix in ("numpy.core.", "numpy._core."):
            if module.startswith(prefix) and (module[len(prefix) :], name) in _NUMPY_CORE_ALLOWED:
                return _numpy_core(module[len(prefix) :], name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if module in ("builtins", "__builtin__") and name in _BUILTINS_ALLOWED:
            import builtins

            return getattr(builtins, name)
        if module in ("copyreg", "copy_reg") and name == "_reconstructor":
            return _safe_reconstructor
        if module == "_codecs" and name == "encode":
            return _latin1_encode
        if module == "chumpy.ch" and name == "Ch":
            return ChumpyArrayStandIn
        if module == "scipy.sparse" or module.startswith("scipy.sparse."):
            cls = _sparse_classes().get(name)
            if cls is not None:
                return cls
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        raise _Refused(f"persistent id {pid!r}")


def restricted_load(data: bytes | io.BufferedIOBase, path: str | Path, what: str):
    """Unpickle ``data`` (bytes or a binary file) with :class:`RestrictedUnpickler`.

    ``encoding="latin1"`` reads Python 2 pickles (FLAME's) as numpy expects. Errors become one-line
    :class:`FaceModelFileError` messages naming ``path``.
    """
    stream = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        return RestrictedUnpickler(stream, encoding="latin1").load()
    except _Refused as exc:
        raise FaceModelFileError(
            f"refusing to unpickle {exc.qualified} from {path}: only numpy/scipy arrays are allowed in a {what}"
        ) from None
    except Exception as exc:
        reason = _one_line(exc) or type(exc).__name__
        raise FaceModelFileError(f"{path}: not a readable pickle ({what}): {reason}") from None


def _as_array(value, name: str, path: Path) -> np.ndarray:
    try:
        if isinstance(value, ChumpyArrayStandIn):
            value = value.array
        if hasattr(value, "toarray"):  # scipy.sparse
            value = value.toarray()
        arr = np.asarray(value)
    except Exception as exc:
        raise FaceModelFileError(f"{path}: field {name} is not an array ({_one_line(exc)})") from None
    if arr.dtype.kind not in "iuf":
        raise FaceModelFileError(f"{path}: field {name} must be numeric, got dtype {arr.dtype}")
    return arr


# ---------------------------------------------------------------------------------------------
# FLAME (generic_model.pkl + landmark embedding)
# ---------------------------------------------------------------------------------------------


def _read_embedding(path: Path) -> dict:
    """The landmark-embedding file as a dict of arrays; the format is told by its first bytes."""
    what = "FLAME landmark embedding"
    with open(path, "rb") as f:
        head = f.read(6)
    if head.startswith(b"PK"):  # .npz (e.g. mediapipe_landmark_embedding.npz)
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as exc:
            raise FaceModelFileError(f"{path}: not a readable .npz ({what}): {_one_line(exc)}") from None
    if head.startswith(b"\x93NUMPY"):  # .npy holding a pickled dict (np.save of a dict)
        from numpy.lib import format as npformat

        with open(path, "rb") as f:
            try:
                version = npformat.read_magic(f)
                readers = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}
                read_header = readers.get(version)
                if read_header is None:
                    raise ValueError(f".npy format version {version} not supported")
                shape, _, dtype = read_header(f)
            except Exception as exc:
                raise FaceModelFileError(f"{path}: not a readable .npy file ({what}): {_one_line(exc)}") from None
            if not dtype.hasobject:
                raise FaceModelFileError(
                    f"{path}: .npy holds a plain {dtype} array {shape}; expected a saved dict ({what})"
                )
            obj = restricted_load(f, path, what)
        if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.size == 1:
            obj = obj.reshape(()).item()
    else:
        with open(path, "rb") as f:
            obj = restricted_load(f, path, what)
    if not isinstance(obj, dict):
        raise FaceModelFileError(f"{path}: expected a dict of arrays, got {type(obj).__name__} ({what})")
    return obj


def _embedding_points(emb: dict, path: Path, num_faces: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(face_idx [L], bary [L, 3], mediapipe_ids [L])`` from a FLAME landmark-embedding dict."""
    ibug = np.asarray(IBUG68_TO_MEDIAPIPE, dtype=np.int64)
    if {"landmark_indices", "lmk_face_idx", "lmk_b_coords"} <= emb.keys():  # mediapipe embedding
        face_key, bary_key = "lmk_face_idx", "lmk_b_coords"
        mp = _as_array(emb["landmark_indices"], "landmark_indices", path)
    elif {"full_lmk_faces_idx", "full_lmk_bary_coords"} <= emb.keys():  # DECA landmark_embedding.npy
        face_key, bary_key, mp = "full_lmk_faces_idx", "full_lmk_bary_coords", None
    elif {"lmk_face_idx", "lmk_b_coords"} <= emb.keys():  # flame_static_embedding.pkl
        face_key, bary_key, mp = "lmk_face_idx", "lmk_b_coords", None
    elif {"static_lmk_faces_idx", "static_lmk_bary_coords"} <= emb.keys():
        face_key, bary_key, mp = "static_lmk_faces_idx", "static_lmk_bary_coords", None
    else:
        raise FaceModelFileError(
            f"{path}: no landmark embedding found (keys {sorted(map(str, emb))}); expected lmk_face_idx + lmk_b_coords"
            " (+ landmark_indices), or full_lmk_faces_idx + full_lmk_bary_coords"
        )
    face_idx = _as_array(emb[face_key], face_key, path).reshape(-1)
    bary = _as_array(emb[bary_key], bary_key, path).astype(np.float64)
    if bary.size != 3 * face_idx.size:
        raise FaceModelFileError(f"{path}: {bary_key} must be [L, 3] for {face_idx.size} landmarks, got {bary.shape}")
    bary = bary.reshape(-1, 3)
    if mp is None:
        if face_idx.size == 68:
            mp = ibug
        elif face_idx.size == 51:  # the static embedding: iBUG points 17-67 (no jaw line)
            mp = ibug[17:]
        else:
            raise FaceModelFileError(
                f"{path}: {face_key} has {face_idx.size} landmarks; expected 68 or 51 (iBUG scheme)"
            )
    mp = np.asarray(mp).reshape(-1).astype(np.int64)
    if mp.size != face_idx.size:
        raise FaceModelFileError(f"{path}: landmark_indices has {mp.size} entries for {face_idx.size} landmarks")
    if face_idx.min() < 0 or face_idx.max() >= num_faces:
        raise FaceModelFileError(
            f"{path}: {face_key} must index the model's {num_faces} triangles,"
            f" got [{face_idx.min()}, {face_idx.max()}]"
        )
    if mp.min() < 0 or mp.max() >= 478:
        raise FaceModelFileError(
            f"{path}: landmark_indices must be mediapipe landmarks 0-477, got [{mp.min()}, {mp.max()}]"
        )
    if not np.all(np.isfinite(bary)) or np.abs(bary.sum(axis=1) - 1).max() > 1e-3:
        raise FaceModelFileError(f"{path}: {bary_key} rows must be barycentric coordinates summing to 1")
    return face_idx.astype(np.int64), bary, mp


def _embed_landmarks(mean, id_basis, exp_basis, faces, face_idx, bary):
    """Landmark vertex per embedded point: a mesh vertex when one barycentric weight is ~1, else a
    new vertex appended after the mesh (``sum_k w_k v_k``, in the mean and every basis, so the
    point follows the model exactly; no triangle uses it)."""
    vertex_of = []
    extra_w, extra_ids = [], []
    num_v = mean.shape[0]
    for f, w in zip(face_idx, bary):
        k = int(np.argmax(w))
        if w[k] > 1 - 1e-6:
            vertex_of.append(int(faces[f, k]))
        else:
            vertex_of.append(num_v + len(extra_w))
            extra_w.append(w)
            extra_ids.append(faces[f])
    if not extra_w:
        return mean, id_basis, exp_basis, np.asarray(vertex_of, dtype=np.int64), 0
    w = np.asarray(extra_w)  # [E, 3]
    ids = np.asarray(extra_ids)  # [E, 3]

    def add(a):  # a: [..., V, 3]
        new = np.einsum("...ejc,ej->...ec", a[..., ids, :].astype(np.float64), w)
        return np.concatenate([a, new.astype(a.dtype)], axis=-2)

    return add(mean), add(id_basis), add(exp_basis), np.asarray(vertex_of, dtype=np.int64), len(extra_w)


def load_flame(
    path: str | Path,
    landmark_embedding: str | Path | None = None,
    *,
    recenter: bool = True,
    num_id: int | None = None,
    num_exp: int | None = None,
) -> MorphableModel:
    """Read FLAME 2020's ``generic_model.pkl`` into a :class:`MorphableModel` named ``"flame"``.

    The file is a Python 2 pickle of a dict: ``v_template: [5023, 3]``, ``shapedirs: [5023, 3, 400]``
    (300 shape then 100 expression components, each already scaled so coefficients are roughly
    unit-variance), ``f: [9976, 3]`` 0-based triangles, and parts we do not use (``posedirs``,
    ``J_regressor`` as a scipy.sparse matrix, ``weights``, ``kintree_table``, ``J``). Some arrays are
    stored as ``chumpy.ch.Ch`` objects. It is read with :class:`RestrictedUnpickler`, which builds
    only numpy arrays, scipy sparse matrices, builtin containers and a local stand-in for chumpy's
    ``Ch`` (chumpy is never imported); anything else is refused before it can run.

    Units: metres. Axes: y up, z towards the viewer; we flip y and z (a rotation, winding kept) and
    orient the triangles outward. ``recenter`` moves the template's vertex centroid to the origin
    (offset in ``meta["offset_m"]``, as for :func:`load_bfm`). Identity = the first 300
    ``shapedirs``, expression = the rest; ``num_id`` / ``num_exp`` keep only the first ones of
    each.

    Landmark correspondence: ``generic_model.pkl`` has none; FLAME's landmarks are distributed as a
    separate embedding (triangle index + barycentric coordinates per landmark). Pass it as
    ``landmark_embedding``; accepted: DECA's ``landmark_embedding.npy`` (its 68-point
    ``full_lmk_faces_idx`` / ``full_lmk_bary_coords``), ``flame_static_embedding.pkl``
    (``lmk_face_idx`` / ``lmk_b_coords``; 51 points = iBUG 17-67, or 68), or the
    ``mediapipe_landmark_embedding.npz`` that ships with FLAME (105 points with their mediapipe
    ``landmark_indices``, used directly). iBUG points map to mediapipe by
    :data:`IBUG68_TO_MEDIAPIPE`. A point inside a triangle becomes an extra vertex appended after
    FLAME's mesh (the same barycentric blend of the mean and every basis, so it is exact; no
    triangle uses it; ``meta["num_mesh_vertices"]`` says where the mesh ends). Without an
    embedding the model has an empty correspondence: it can be rendered or exported but not fitted
    to landmarks, and :func:`require_correspondence` says so.

    Raises :class:`FaceModelFileError` (one line naming the file) for a missing, unreadable or
    refused file, missing keys or wrong shapes.
    """
    path = _check_file(path, "FLAME model, generic_model.pkl")
    with open(path, "rb") as f:
        data = restricted_load(f, path, "FLAME model")
    if not isinstance(data, dict):
        raise FaceModelFileError(
            f"{path}: expected a pickled dict (FLAME generic_model.pkl), got {type(data).__name__}"
        )
    missing = [k for k in ("v_template", "shapedirs", "f") if k not in data]
    if missing:
        raise FaceModelFileError(f"{path}: missing key(s) {', '.join(missing)}; expected FLAME's generic_model.pkl")
    v_template = _as_array(data["v_template"], "v_template", path)
    shapedirs = _as_array(data["shapedirs"], "shapedirs", path)
    tri = _as_array(data["f"], "f", path)
    if v_template.ndim != 2 or v_template.shape[1] != 3 or len(v_template) < 3:
        raise FaceModelFileError(f"{path}: v_template must be [V, 3], got {v_template.shape}")
    num_v = len(v_template)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (num_v, 3):
        raise FaceModelFileError(f"{path}: shapedirs must be [{num_v}, 3, K], got {shapedirs.shape}")
    if shapedirs.shape[2] <= FLAME_NUM_SHAPE:
        raise FaceModelFileError(
            f"{path}: shapedirs has {shapedirs.shape[2]} components;"
            f" FLAME 2020 has {FLAME_NUM_SHAPE} shape + 100 expression"
        )
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.dtype.kind == "f" and not np.array_equal(tri, np.round(tri)):
        raise FaceModelFileError(f"{path}: f must be [F, 3] integer vertex ids, got {tri.dtype} {tri.shape}")
    tri = tri.astype(np.int64)
    if tri.min() < 0 or tri.max() >= num_v:
        raise FaceModelFileError(
            f"{path}: f must hold 0-based vertex ids in [0, {num_v - 1}], got [{tri.min()}, {tri.max()}]"
        )
    if not (np.all(np.isfinite(v_template)) and np.all(np.isfinite(shapedirs))):
        raise FaceModelFileError(f"{path}: v_template or shapedirs holds non-finite values")

    mean = v_template.astype(np.float64) * _FLIP_YZ
    offset = -mean.mean(axis=0) if recenter else np.zeros(3)
    mean = mean + offset
    dirs = shapedirs.transpose(2, 0, 1)  # [K, V, 3]
    k_id = FLAME_NUM_SHAPE if num_id is None else min(int(num_id), FLAME_NUM_SHAPE)
    k_exp_all = shapedirs.shape[2] - FLAME_NUM_SHAPE
    k_exp = k_exp_all if num_exp is None else min(int(num_exp), k_exp_all)
    id_basis = (dirs[:k_id] * _FLIP_YZ).astype(np.float32)
    exp_basis = (dirs[FLAME_NUM_SHAPE : FLAME_NUM_SHAPE + k_exp] * _FLIP_YZ).astype(np.float32)
    faces, flipped = _orient_outward(tri, mean)

    meta = {
        "source_file": str(path),
        "format": "FLAME generic_model.pkl",
        "unit_scale_m": 1.0,
        "axes": "file y up, z towards viewer; converted by flipping y and z",
        "offset_m": [float(x) for x in offset],
        "faces_flipped": bool(flipped),
        "file_components": {"id": FLAME_NUM_SHAPE, "exp": int(k_exp_all)},
        "num_mesh_vertices": int(num_v),
    }
    mean = mean.astype(np.float32)
    if landmark_embedding is None:
        lmk_vertices = np.zeros(0, dtype=np.int64)
        lmk_mp = np.zeros(0, dtype=np.int64)
        meta["correspondence"] = "none (no landmark embedding given)"
    else:
        emb_path = _check_file(landmark_embedding, "FLAME landmark embedding")
        face_idx, bary, lmk_mp = _embedding_points(_read_embedding(emb_path), emb_path, len(tri))
        # Barycentrics refer to the file's triangle order and corner order, so embed with ``tri``.
        mean, id_basis, exp_basis, lmk_vertices, n_extra = _embed_landmarks(
            mean, id_basis, exp_basis, tri, face_idx, bary
        )
        meta["landmark_embedding_file"] = str(emb_path)
        meta["embedded_landmark_vertices"] = int(n_extra)
        meta["correspondence"] = f"{len(lmk_mp)} embedded landmarks <-> mediapipe"
    return MorphableModel(
        name="flame",
        mean=mean,
        id_basis=id_basis,
        exp_basis=exp_basis,
        faces=faces,
        landmark_vertices=lmk_vertices,
        landmark_mediapipe=lmk_mp,
        meta=meta,
    )


# ---------------------------------------------------------------------------------------------
# Linear coefficient fit
# ---------------------------------------------------------------------------------------------


def _solve_spd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:  # singular without regularisation: minimum-norm solution
        return np.linalg.lstsq(a, b, rcond=None)[0]


def fit_model_coefficients(
    model: MorphableModel,
    target_landmarks: np.ndarray,
    id_reg: float = 1e-6,
    exp_reg: float = 1e-6,
    *,
    weights: np.ndarray | None = None,
    id_coeffs: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Identity (shared by all frames) and per-frame expression coefficients from 3D landmarks.

    ``target_landmarks: [L, 3]`` or ``[T, L, 3]``, metres, already aligned in model space (the
    head pose removed) and ordered like ``model.landmark_vertices`` / ``model.landmark_mediapipe``.
    Minimises, in closed form (float64)::

        sum_t sum_l w_l |lmk_l(id, exp_t) - target_tl|^2 + id_reg |id|^2 + exp_reg sum_t |exp_t|^2

    This is the MAP estimate under Gaussian landmark noise of std ``sigma`` metres and unit-variance
    Gaussian priors on the coefficients (BFM and FLAME bases are scaled so that their coefficients
    are about unit-variance) when ``id_reg = exp_reg = sigma**2``; the defaults assume 1 mm.
    ``weights: [L]`` optional per-landmark weights (e.g. lower for the sliding jaw line).
    ``id_coeffs: [Ki]`` fixes the identity and solves only for the expressions.

    Returns ``(id [Ki], exp [T, Ke])``; a single frame ``[L, 3]`` gives ``T = 1``.

    Method: with the expression bases ``B_e`` and identity bases ``B_i`` at the landmarks, each
    frame's expression is a ridge solution given the identity, and eliminating it leaves a
    ``Ki x Ki`` system for the identity (a Schur complement), so the cost is linear in ``T``.
    """
    require_correspondence(model)
    y = np.asarray(target_landmarks, dtype=np.float64)
    if y.ndim == 2:
        y = y[None]
    num_l = len(model.landmark_vertices)
    if y.ndim != 3 or y.shape[1:] != (num_l, 3):
        raise ValueError(
            f"target_landmarks must be [L, 3] or [T, L, 3] with L = {num_l}, got {np.shape(target_landmarks)}"
        )
    if not np.all(np.isfinite(y)):
        raise ValueError("target_landmarks holds non-finite values")
    if id_reg < 0 or exp_reg < 0:
        raise ValueError("id_reg and exp_reg must be >= 0")
    num_t = y.shape[0]
    lv = model.landmark_vertices
    bi = model.id_basis[:, lv, :].reshape(model.num_id, -1).T.astype(np.float64)  # [M, Ki]
    be = model.exp_basis[:, lv, :].reshape(model.num_exp, -1).T.astype(np.float64)  # [M, Ke]
    r = (y - model.mean[lv].astype(np.float64)).reshape(num_t, -1)  # [T, M]
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape != (num_l,) or np.any(w < 0):
            raise ValueError(f"weights must be [L] = [{num_l}] non-negative values, got {np.shape(weights)}")
        sw = np.repeat(np.sqrt(w), 3)
        bi, be, r = bi * sw[:, None], be * sw[:, None], r * sw
    ki, ke = bi.shape[1], be.shape[1]
    g = be.T @ be + exp_reg * np.eye(ke)  # [Ke, Ke]

    if id_coeffs is not None:
        a = np.asarray(id_coeffs, dtype=np.float64).reshape(-1)
        if a.shape != (ki,):
            raise ValueError(f"id_coeffs must be [{ki}], got {np.shape(id_coeffs)}")
    elif ki == 0:
        a = np.zeros(0)
    else:
        r_sum = r.sum(axis=0)  # [M]
        if ke:
            h = be.T @ bi  # [Ke, Ki]
            g_inv_h = _solve_spd(g, h)  # [Ke, Ki]
            lhs = num_t * (bi.T @ bi - h.T @ g_inv_h)
            rhs = bi.T @ r_sum - g_inv_h.T @ (be.T @ r_sum)
        else:
            lhs, rhs = num_t * (bi.T @ bi), bi.T @ r_sum
        lhs = 0.5 * (lhs + lhs.T) + id_reg * np.eye(ki)
        a = _solve_spd(lhs, rhs)
    if ke:
        resid = r - (bi @ a)[None] if ki else r  # [T, M]
        e = _solve_spd(g, be.T @ resid.T).T  # [T, Ke]
    else:
        e = np.zeros((num_t, 0))
    return a, e


# ---------------------------------------------------------------------------------------------
# Two-stage fit: carry a built-in fit over to a research model
# ---------------------------------------------------------------------------------------------

TRANSFER_SIGMA_M = 2e-3
"""Assumed error (metres, per coordinate) of the 3D landmarks the research model is fitted to in
:func:`transfer_fit`. Those landmarks come from the built-in fit, so they are already smooth
(mediapipe's ~1 px jitter, about 0.5 mm at 512x512, is mostly filtered by the built-in fit's
priors); what remains is the correspondence error of :data:`IBUG68_TO_MEDIAPIPE` (each iBUG point
is a mediapipe vertex picked by its position on a contour, and a research model's own landmark
vertices were annotated differently), which is of the order of millimetres. 2 mm is that
order."""

TRANSFER_JAW_WEIGHT = 0.25
"""Weight of the landmarks on the face outline (mediapipe's ``FACE_OVAL``: iBUG's jaw line) in
:func:`transfer_fit`. mediapipe's outline points slide over the face as the head turns (they
follow the silhouette), so they correspond to fixed model vertices only approximately: a quarter
weight is an error twice as large as the other points'."""

TRANSFER_SCALE_WARN = (0.5, 2.0)
"""A similarity scale outside this range between the built-in fit's model space and a research
model's (both metres) is reported as a probable units problem: the two disagree on face size by
at most ~1.5x (the built-in model's size is set by ``FitConfig.inter_ocular_m``, a population
value), while a file in the wrong units is off by 10x or more."""


@dataclass
class TransferredFit:
    """A built-in fit re-expressed with a research model (``T`` frames, ``L`` correspondences)."""

    id_coeffs: np.ndarray
    """``[Ki]`` identity coefficients (one for the video)."""
    exp_coeffs: np.ndarray
    """``[T, Ke]`` expression coefficients."""
    rotation_matrices: np.ndarray
    """``[T, 3, 3]`` head rotations for the research model: ``p_camera = R @ p_model + t``."""
    translations: np.ndarray
    """``[T, 3]`` metres."""
    scale: float
    """``s`` of the similarity ``p_research = s Q p_builtin + u`` between the two model spaces."""
    rotation: np.ndarray
    """``[3, 3]`` ``Q`` of that similarity."""
    offset: np.ndarray
    """``[3]`` ``u`` of that similarity, metres."""
    landmarks_2d: np.ndarray
    """``[T, L, 2]`` the research model's fitted landmark vertices projected with ``K`` and the
    re-expressed pose, pixels."""
    reprojection_error: np.ndarray
    """``[T]`` mean distance (pixels) between :attr:`landmarks_2d` and the observed landmarks at
    ``model.landmark_mediapipe``; NaN on frames not fitted (``valid`` False)."""
    info: dict
    """Figures for ``meta.json``, JSON-serialisable."""


def transfer_fit(
    model: MorphableModel,
    builtin: MorphableModel,
    builtin_exp: np.ndarray,
    rotation_matrices: np.ndarray,
    translations: np.ndarray,
    K: np.ndarray,
    valid: np.ndarray,
    observed_px: np.ndarray,
    *,
    sigma_m: float = TRANSFER_SIGMA_M,
    jaw_weight: float = TRANSFER_JAW_WEIGHT,
) -> TransferredFit:
    """Second stage of ``talkface fit --face-model bfm|flame``: a research model's identity,
    expressions and head poses from a finished fit of the built-in model.

    ``builtin`` (mediapipe topology, ``V = 478``), ``builtin_exp [T, Kb]``, ``rotation_matrices
    [T, 3, 3]``, ``translations [T, 3]`` and ``K`` are the built-in fit
    (:class:`recon.fitting.FitResult`); ``valid [T]`` its fitted frames; ``observed_px
    [T, 478, >=2]`` mediapipe's landmarks (pixels), used only to measure the result.

    1. The built-in model's landmarks of every frame, in its model space (the head pose removed),
       at the mediapipe points the research model corresponds to (``model.landmark_mediapipe``).
    2. ONE similarity ``p_research = s Q p_builtin + u`` between the two model spaces, by robust
       Procrustes (:func:`recon.fitting.robust_similarity_align`) of the built-in neutral's
       landmarks onto the research model's mean landmarks. Every frame's landmarks are mapped
       with it. (Re-aligning to the fitted identity's neutral and refitting, in alternation, was
       tried and is worse: on the synthetic subject each round lets the identity absorb more of
       the built-in shape's errors, and the scale, the reprojection error and the jaw correlation
       all drift away, 1.39 -> 1.80 px over 12 rounds.)
    3. :func:`fit_model_coefficients`: one identity from the fitted frames, then an expression per
       frame with that identity fixed. ``exp_reg = sigma_m**2`` is the MAP weight for landmark
       errors of ``sigma_m`` (:data:`TRANSFER_SIGMA_M`) and unit-variance coefficients. The
       identity's weight is ``id_reg = n_frames * sigma_m**2``: the correspondence error is the
       same in every frame, so the frames are not independent evidence about the identity (with
       ``sigma_m**2`` the identity would fit that fixed error with ever more confidence as the
       video gets longer). Outline points weigh ``jaw_weight`` (:data:`TRANSFER_JAW_WEIGHT`).
    4. The head pose re-expressed for the research model: a built-in point ``X`` is the research
       point ``Y = s Q X + u``, so ``R X + t = (R Q^T Y + s t - R Q^T u) / s``. Projection ignores
       a common factor, so ``R' = R Q^T``, ``t' = s t - R' u`` project the research model's
       landmarks onto the same pixels as the built-in ones: the research model keeps its own metric
       size, and the head sits ``s`` times as far from the camera (the scale goes into the
       depth, which the landmarks cannot tell apart from size).

    Limits: 68 (or 51, 105) sparse points determine the identity and the expressions, and only
    through motions the built-in model's expression basis captured. Research-model components
    that move those points little, or not independently, are left near zero by the prior.
    """
    from recon import topology as T
    from recon.fitting import robust_similarity_align

    require_correspondence(model)
    mp = np.asarray(model.landmark_mediapipe, dtype=np.int64)
    if builtin.num_vertices < T.NUM_LANDMARKS or mp.max() >= builtin.num_vertices:
        raise ValueError(f"the built-in model must have mediapipe's {T.NUM_LANDMARKS} vertices, got {builtin.num_vertices}")
    valid = np.asarray(valid, dtype=bool)
    num_t = len(valid)
    if not valid.any():
        raise TalkfaceError("no fitted frame to carry over to the face model")
    exp_b = np.asarray(builtin_exp, dtype=np.float64).reshape(num_t, -1)
    x_neutral = builtin.mean[mp].astype(np.float64)  # [L, 3]
    x = x_neutral + (np.tensordot(exp_b, builtin.exp_basis[:, mp].astype(np.float64), axes=([-1], [0]))
                     if builtin.num_exp else 0.0)  # [T, L, 3]
    weights = np.where(np.isin(mp, T.FACE_OVAL), float(jaw_weight), 1.0)
    sigma2 = float(sigma_m) ** 2
    n_valid = int(valid.sum())
    s, Q, u, rms = robust_similarity_align(x_neutral, model.landmarks()[None])
    s, Q, u = float(s[0]), Q[0], u[0]
    y = s * x @ Q.T + u  # [T, L, 3] research model space
    id_coeffs, _ = fit_model_coefficients(model, y[valid], id_reg=n_valid * sigma2, exp_reg=sigma2, weights=weights)
    _, exp = fit_model_coefficients(model, y, exp_reg=sigma2, weights=weights, id_coeffs=id_coeffs)

    R = np.asarray(rotation_matrices, dtype=np.float64)
    R2 = R @ Q.T
    t2 = s * np.asarray(translations, dtype=np.float64) - R2 @ u
    fitted = model.landmarks(id_coeffs, exp)  # [T, L, 3]
    px = project_posed(fitted, R2, t2, K)
    obs = np.asarray(observed_px, dtype=np.float64)[:, mp, :2]
    err = np.linalg.norm(px - obs, axis=-1).mean(axis=1)
    err[~valid] = np.nan
    builtin_px = project_posed(x, R, np.asarray(translations, dtype=np.float64), K)
    transfer_px = np.linalg.norm(px - builtin_px, axis=-1).mean(axis=1)[valid]
    resid = np.sqrt(np.mean(np.sum((fitted - y)[valid] ** 2, axis=-1)))
    warnings = []
    lo, hi = TRANSFER_SCALE_WARN
    if not lo <= s <= hi:
        warnings.append(
            f"the similarity scale between the built-in fit and the {model.name} model is {s:.3g} (expected about 1:"
            " both are in metres); the model file's units are probably not what the loader assumed"
            f" (unit_scale_m = {model.meta.get('unit_scale_m')})"
        )
    info = {
        "landmarks_used": int(len(mp)),
        "similarity_scale": s,
        "similarity_rms_mm": round(float(rms[0]) * 1e3, 4),
        "landmark_fit_rms_mm": round(float(resid) * 1e3, 4),
        "reprojection_error_px": float(np.nanmean(err)),
        "vs_builtin_px": float(transfer_px.mean()),
        "sigma_m": float(sigma_m),
        "id_reg": n_valid * sigma2,
        "exp_reg": sigma2,
        "jaw_weight": float(jaw_weight),
        "warnings": warnings,
    }
    return TransferredFit(id_coeffs=id_coeffs, exp_coeffs=exp, rotation_matrices=R2, translations=t2, scale=s,
                          rotation=Q, offset=u, landmarks_2d=px, reprojection_error=err, info=info)

"""mediapipe face-mesh topology: triangles from the tessellation, winding, named landmark groups."""

import numpy as np
import pytest

from recon import topology as T


@pytest.fixture(scope="module")
def faces():
    return T.face_triangles()


def _undirected(edges):
    return {tuple(sorted(e)) for e in edges}


def test_tessellation_gives_852_triangles_covering_every_edge(faces):
    from mediapipe.python.solutions import face_mesh_connections as fmc

    assert faces.shape == (T.NUM_TRIANGLES, 3) == (852, 3)
    assert faces.min() == 0 and faces.max() == T.NUM_MESH_VERTICES - 1
    tri_edges = _undirected([(a, b) for f in faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))])
    assert tri_edges == _undirected(fmc.FACEMESH_TESSELATION)
    assert len({tuple(sorted(f)) for f in faces}) == 852  # no duplicate triangles


def test_triangles_from_edges_rejects_open_triples():
    with pytest.raises(ValueError):
        T.triangles_from_edges([(0, 1), (1, 2), (2, 3)])
    with pytest.raises(ValueError):
        T.triangles_from_edges([(0, 1), (1, 2)])


def test_winding_is_consistent(faces):
    # In a consistently oriented surface every directed edge appears once.
    directed = [(a, b) for f in faces for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))]
    assert len(directed) == len(set(directed))


def test_make_winding_consistent_repairs_flipped_triangles(faces):
    rng = np.random.default_rng(0)
    broken = faces.copy()
    flip = rng.random(len(faces)) < 0.3
    broken[flip] = broken[flip][:, [0, 2, 1]]
    fixed = T.make_winding_consistent(broken)
    directed = [(a, b) for f in fixed for a, b in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))]
    assert len(directed) == len(set(directed))


def test_normals_face_the_camera(faces):
    from recon.landmarks import reference_landmarks

    v = reference_landmarks()[: T.NUM_MESH_VERTICES]
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    # A frontal face: nearly every triangle faces the camera (-z); a few at the silhouette may not.
    assert (n[:, 2] < 0).mean() > 0.9


def test_holes_are_the_eyes_mouth_and_outline(faces):
    loops = {frozenset(loop) for loop in T.boundary_loops(faces)}
    assert frozenset(T.FACE_OVAL) in loops
    assert frozenset(T.LIPS_INNER_UPPER + T.LIPS_INNER_LOWER) in loops
    assert frozenset(T.LEFT_EYE_UPPER + T.LEFT_EYE_LOWER) in loops
    assert frozenset(T.RIGHT_EYE_UPPER + T.RIGHT_EYE_LOWER) in loops
    assert len(loops) == 4


@pytest.mark.parametrize(
    "name, groups",
    [
        ("FACEMESH_LIPS", [T.LIPS_OUTER_UPPER, T.LIPS_OUTER_LOWER, T.LIPS_INNER_UPPER, T.LIPS_INNER_LOWER]),
        ("FACEMESH_LEFT_EYE", [T.LEFT_EYE_UPPER, T.LEFT_EYE_LOWER]),
        ("FACEMESH_RIGHT_EYE", [T.RIGHT_EYE_UPPER, T.RIGHT_EYE_LOWER]),
        ("FACEMESH_LEFT_EYEBROW", [T.LEFT_BROW_LOWER, T.LEFT_BROW_UPPER]),
        ("FACEMESH_RIGHT_EYEBROW", [T.RIGHT_BROW_LOWER, T.RIGHT_BROW_UPPER]),
        ("FACEMESH_FACE_OVAL", [T.FACE_OVAL + (T.FACE_OVAL[0],)]),
        ("FACEMESH_LEFT_IRIS", [T.LEFT_IRIS[1:] + (T.LEFT_IRIS[1],)]),
        ("FACEMESH_RIGHT_IRIS", [T.RIGHT_IRIS[1:] + (T.RIGHT_IRIS[1],)]),
    ],
)
def test_named_groups_match_mediapipe_connections(name, groups):
    from mediapipe.python.solutions import face_mesh_connections as fmc

    ours = _undirected([(a, b) for g in groups for a, b in zip(g[:-1], g[1:])])
    assert ours == _undirected(getattr(fmc, name))


def test_side_convention_subject_left_is_image_right():
    from recon.landmarks import reference_landmarks

    lm = reference_landmarks()
    assert lm[T.LEFT_IRIS_CENTER, 0] > lm[T.RIGHT_IRIS_CENTER, 0]
    assert lm[T.MOUTH_CORNERS_OUTER[1], 0] > lm[T.MOUTH_CORNERS_OUTER[0], 0]
    assert lm[T.FOREHEAD, 1] < lm[T.NOSE_TIP, 1] < lm[T.CHIN, 1]


def test_lift_to_metric_reprojects_and_has_metric_scale():
    from recon.landmarks import lift_to_metric, reference_landmarks

    lm = reference_landmarks()
    K = np.array([[1000.0, 0, 255.5], [0, 1000.0, 255.5], [0, 0, 1]])
    xyz = lift_to_metric(lm, K, inter_ocular_m=0.063)
    proj = xyz @ K.T
    np.testing.assert_allclose(proj[:, :2] / proj[:, 2:], lm[:, :2], atol=1e-9)
    iod = np.linalg.norm(xyz[T.LEFT_EYE_CORNERS[0]] - xyz[T.RIGHT_EYE_CORNERS[0]])
    assert abs(iod - 0.063) < 0.002  # exact in the image plane; depth differences add a little
    assert np.all(xyz[:, 2] > 0)

"""Rotation conversions, mesh normals and reproducible npz archives."""

import numpy as np
import torch

from render.mesh import vertex_normals
from render.npz import save_npz
from render.rotations import axis_angle_to_matrix, euler_to_matrix, matrix_to_axis_angle


def test_axis_angle_round_trip_and_orthonormal():
    rng = np.random.default_rng(0)
    aa = rng.normal(size=(100, 3))
    aa *= (rng.uniform(0, 3.0, 100) / np.linalg.norm(aa, axis=1))[:, None]  # angles below pi
    R = axis_angle_to_matrix(aa)
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-12)
    np.testing.assert_allclose(matrix_to_axis_angle(R), aa, atol=1e-9)
    np.testing.assert_allclose(matrix_to_axis_angle(np.eye(3)), 0.0, atol=1e-12)


def test_euler_matches_axis_angle_for_single_axes():
    a = np.array([0.3])
    np.testing.assert_allclose(euler_to_matrix(a, 0 * a, 0 * a), axis_angle_to_matrix(np.array([[0, 0.3, 0]])), atol=1e-12)
    np.testing.assert_allclose(euler_to_matrix(0 * a, a, 0 * a), axis_angle_to_matrix(np.array([[0.3, 0, 0]])), atol=1e-12)
    np.testing.assert_allclose(euler_to_matrix(0 * a, 0 * a, a), axis_angle_to_matrix(np.array([[0, 0, 0.3]])), atol=1e-12)
    # Positive yaw turns the nose (pointing at the camera, -z) towards +x... i.e. x' = sin(yaw) * z.
    R = euler_to_matrix(np.array([np.pi / 2]), np.zeros(1), np.zeros(1))[0]
    np.testing.assert_allclose(R @ [0, 0, 1.0], [1, 0, 0], atol=1e-12)


def test_vertex_normals_of_an_octahedron_point_outwards():
    # Each vertex of a regular octahedron touches four congruent faces placed symmetrically around
    # it, so its area-weighted normal is exactly its own direction.
    v = torch.tensor([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    faces = []
    for x in (0, 1):
        for y in (2, 3):
            for z in (4, 5):
                tri = [x, y, z]
                n = torch.cross(v[y] - v[x], v[z] - v[x], dim=0)
                faces.append(tri if torch.dot(n, v[x] + v[y] + v[z]) > 0 else [x, z, y])
    n = vertex_normals(v[None] * 2.0, torch.tensor(faces))[0]
    np.testing.assert_allclose(n.numpy(), v.numpy(), atol=1e-6)
    flipped = vertex_normals(v[None], torch.tensor(faces)[:, [0, 2, 1]])[0]
    np.testing.assert_allclose(flipped.numpy(), -v.numpy(), atol=1e-6)


def test_save_npz_is_reproducible_and_loadable(tmp_path):
    arrays = {"a": np.arange(10.0), "names": np.array(["x", "yy"]), "flag": np.array(True)}
    p1, p2 = save_npz(tmp_path / "1.npz", **arrays), save_npz(tmp_path / "2.npz", **arrays)
    assert p1.read_bytes() == p2.read_bytes()
    back = np.load(p1, allow_pickle=False)
    np.testing.assert_array_equal(back["a"], arrays["a"])
    assert list(back["names"]) == ["x", "yy"] and bool(back["flag"])


def test_matrix_to_euler_inverts_euler_to_matrix():
    from render.rotations import matrix_to_euler

    rng = np.random.default_rng(1)
    e = rng.uniform(-1.2, 1.2, size=(50, 3))
    R = euler_to_matrix(e[:, 0], e[:, 1], e[:, 2])
    np.testing.assert_allclose(matrix_to_euler(R), e, atol=1e-10)

"""Tests of render.cameras and render.rasterizer: analytic cases, fast vs reference, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from render.cameras import OrthographicCamera, PinholeCamera, from_K
from render.rasterizer import (
    Fragments,
    antialias,
    face_adjacency,
    interpolate,
    rasterize,
    rasterize_reference,
    texture,
)

D64 = torch.float64


def _tri(z=(1.0, 1.0, 1.0), dtype=D64):
    """One generic triangle (no vertex or edge near a pixel centre), clockwise on screen."""
    xy = [[10.3, 5.2], [50.7, 12.9], [22.1, 40.6]]
    verts = torch.tensor([[x, y, zz] for (x, y), zz in zip(xy, z)], dtype=dtype)
    return verts, torch.tensor([[0, 1, 2]])


def _analytic_screen_bary(verts: torch.Tensor, px: float, py: float) -> np.ndarray:
    """Solve [x; y; 1] w = [px; py; 1] for the screen-space barycentrics."""
    v = verts.double().numpy()
    A = np.stack([v[:, 0], v[:, 1], np.ones(3)])
    return np.linalg.solve(A, np.array([px, py, 1.0]))


def _rot(ax: float, ay: float) -> torch.Tensor:
    cx, sx, cy, sy = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay)
    Rx = torch.tensor([[1, 0, 0], [0, cx, -sx], [0, sx, cx]], dtype=D64)
    Ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=D64)
    return Ry @ Rx


def _cube() -> tuple[torch.Tensor, torch.Tensor]:
    """Unit cube corners [8, 3] and 12 triangles wound so that (v1 - v0) x (v2 - v0) points outward."""
    corners = torch.tensor([[x, y, z] for x in (-0.5, 0.5) for y in (-0.5, 0.5) for z in (-0.5, 0.5)], dtype=D64)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = []
    for a, b, c, d in quads:
        faces += [(a, b, c), (a, c, d)]
    faces = torch.tensor(faces)
    tri = corners[faces]
    normal = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1)
    outward = (normal * tri.mean(1)).sum(1)
    faces = torch.where((outward < 0)[:, None], faces[:, [0, 2, 1]], faces)  # make all outward
    return corners, faces


def _grid(nx: int, ny: int, x0: float, y0: float, step: float, jitter: float = 0.0, seed: int = 0):
    """Screen-space grid mesh [nx*ny, 3] (z = 1 + small tilt) and its 2 (nx-1)(ny-1) triangles."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(ny, dtype=D64), torch.arange(nx, dtype=D64), indexing="ij")
    x = x0 + step * xs + jitter * (torch.rand(ny, nx, generator=g, dtype=D64) - 0.5)
    y = y0 + step * ys + jitter * (torch.rand(ny, nx, generator=g, dtype=D64) - 0.5)
    if jitter:  # keep the outer boundary straight
        x[:, 0], x[:, -1], y[0, :], y[-1, :] = x0, x0 + step * (nx - 1), y0, y0 + step * (ny - 1)
    z = 1.0 + 0.01 * xs + 0.02 * ys
    verts = torch.stack([x, y, z], -1).reshape(-1, 3)
    i, j = torch.meshgrid(torch.arange(ny - 1), torch.arange(nx - 1), indexing="ij")
    a = (i * nx + j).reshape(-1)
    faces = torch.cat([torch.stack([a, a + nx, a + 1], 1), torch.stack([a + 1, a + nx, a + nx + 1], 1)])
    return verts, faces


def _random_scene(seed: int, B: int = 2, V: int = 40, F: int = 30, H: int = 56, W: int = 80):
    # H * W >= 4096 so that the CPU backward takes its run-length (sparse matmul) path
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(B, V, 3, generator=g, dtype=D64)
    v[..., 0] = v[..., 0] * (W + 10) - 5
    v[..., 1] = v[..., 1] * (H + 10) - 5
    v[..., 2] = v[..., 2] * 3 + 0.5
    v[0, 0, 2] = -0.1  # triangles touching this vertex must be dropped
    faces = torch.randint(0, V, (F, 3), generator=g)
    return v, faces, (H, W)


# ------------------------------------------------------------------------------------------------
# cameras


def test_pinhole_project_backproject_roundtrip():
    cam = PinholeCamera(fx=500.0, fy=520.0, cx=255.5, cy=239.5)
    pts = torch.tensor([[0.1, -0.2, 2.0], [0.0, 0.0, 1.0], [-0.3, 0.25, 4.0]], dtype=D64)
    uvz = cam.project(pts)
    assert torch.allclose(uvz[1], torch.tensor([255.5, 239.5, 1.0], dtype=D64))
    assert torch.allclose(uvz[0, :2], torch.tensor([500 * 0.05 + 255.5, 520 * -0.1 + 239.5], dtype=D64))
    assert torch.allclose(cam.backproject(uvz[:, :2], uvz[:, 2]), pts)
    K = cam.K
    assert K.shape == (3, 3) and float(K[0, 0]) == 500.0 and float(K[1, 2]) == 239.5 and float(K[2, 2]) == 1.0
    assert from_K(K) == cam and PinholeCamera.from_K(K.numpy()) == cam


def test_orthographic_camera():
    cam = OrthographicCamera(scale=100.0, cx=10.0, cy=20.0)
    pts = torch.tensor([[0.1, -0.2, 3.0]])
    assert torch.allclose(cam.project(pts), torch.tensor([[20.0, 0.0, 3.0]]))
    assert torch.allclose(cam.backproject(cam.project(pts)[:, :2], pts[:, 2]), pts)


def test_camera_bad_input():
    cam = PinholeCamera(1.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"points must have shape \[\.\.\., 3\]"):
        cam.project(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="depth must have shape"):
        cam.backproject(torch.zeros(4, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="no skew"):
        from_K(torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"K must have shape \[3, 3\]"):
        from_K(torch.eye(4))


def test_from_K_keeps_gradient():
    K = torch.tensor([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]], requires_grad=True)
    cam = from_K(K)
    cam.project(torch.tensor([[0.1, 0.2, 1.0]])).sum().backward()
    assert K.grad is not None and float(K.grad[0, 0]) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------------
# single triangle


@pytest.mark.parametrize("winding", [[0, 1, 2], [0, 2, 1]])
def test_triangle_pixel_count_matches_area(winding):
    verts, _ = _tri()
    faces = torch.tensor([winding])
    frags = rasterize(verts, faces, (64, 64))
    count = int((frags.tri_id == 0).sum())
    xy = verts[:, :2].numpy()
    area = 0.5 * abs(np.cross(xy[1] - xy[0], xy[2] - xy[0]))
    perimeter = sum(np.linalg.norm(xy[i] - xy[(i + 1) % 3]) for i in range(3))
    # Each pixel centre is a sample of a unit cell; the count can only be off in cells the edges
    # pass through, whose area is bounded by about perimeter / 2 on either side.
    assert abs(count - area) <= perimeter / 2, (count, area, perimeter)
    assert int((frags.tri_id == -1).sum()) == 64 * 64 - count
    assert bool((frags.depth[frags.tri_id < 0] == 0).all())


def test_backface_culling():
    verts, _ = _tri()  # signed area > 0 (clockwise on screen): a back face under the convention
    back, front = torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2, 1]])
    assert int((rasterize(verts, back, (64, 64), cull_backfaces=True).tri_id >= 0).sum()) == 0
    n_front = int((rasterize(verts, front, (64, 64), cull_backfaces=True).tri_id >= 0).sum())
    assert n_front == int((rasterize(verts, back, (64, 64)).tri_id >= 0).sum()) > 0


def test_triangle_behind_camera_is_dropped():
    verts, faces = _tri(z=(1.0, -1.0, 2.0))
    assert int((rasterize(verts, faces, (64, 64)).tri_id >= 0).sum()) == 0


@pytest.mark.parametrize("perspective_correct", [False, True])
def test_barycentrics_at_interior_pixel(perspective_correct):
    z = torch.tensor([1.0, 2.0, 4.0], dtype=D64)
    verts, faces = _tri(z=tuple(z.tolist()))
    frags = rasterize(verts, faces, (64, 64), perspective_correct=perspective_correct)
    i, j = 15, 25  # pixel centre (x=25, y=15), inside the triangle
    assert int(frags.tri_id[0, i, j]) == 0
    w = torch.tensor(_analytic_screen_bary(verts, j, i), dtype=D64)
    if perspective_correct:
        s = (w / z).sum()
        expected, depth = (w / z) / s, 1.0 / s
    else:
        expected, depth = w, (w * z).sum()
    torch.testing.assert_close(frags.bary[0, i, j], expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(frags.depth[0, i, j], depth, rtol=0, atol=1e-12)
    assert torch.allclose(frags.bary.sum(-1)[frags.tri_id >= 0], torch.ones((), dtype=D64))


def test_interpolate_linear_function_screen_space():
    verts, faces = _tri(z=(1.0, 2.0, 3.0))
    frags = rasterize(verts, faces, (64, 64), perspective_correct=False)

    def f(x, y):
        return torch.stack([0.3 * x - 1.7 * y + 2.0, -0.05 * x + 0.2 * y], -1)

    attrs = f(verts[:, 0], verts[:, 1])  # [3, 2]
    out = interpolate(attrs, frags, faces)
    ys, xs = torch.meshgrid(torch.arange(64, dtype=D64), torch.arange(64, dtype=D64), indexing="ij")
    mask = frags.tri_id[0] >= 0
    torch.testing.assert_close(out[0][mask], f(xs, ys)[mask], rtol=0, atol=1e-10)
    assert bool((out[0][~mask] == 0).all())


def test_interpolate_perspective_correct_recovers_3d_points():
    # A triangle in camera space, projected by a pinhole camera: interpolating the camera-space
    # positions perspective-correctly must give the backprojection of each pixel at its depth.
    cam = PinholeCamera(fx=80.0, fy=80.0, cx=31.5, cy=31.5)
    pts = torch.tensor([[-0.4, -0.3, 1.5], [0.5, -0.2, 3.0], [0.0, 0.45, 2.2]], dtype=D64)
    faces = torch.tensor([[0, 1, 2]])
    frags = rasterize(cam.project(pts), faces, (64, 64))
    out = interpolate(pts, frags, faces)[0]
    ys, xs = torch.meshgrid(torch.arange(64, dtype=D64), torch.arange(64, dtype=D64), indexing="ij")
    mask = frags.tri_id[0] >= 0
    assert int(mask.sum()) > 300
    expected = cam.backproject(torch.stack([xs, ys], -1), frags.depth[0])
    torch.testing.assert_close(out[mask], expected[mask], rtol=0, atol=1e-10)
    torch.testing.assert_close(out[mask][:, 2], frags.depth[0][mask], rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# cube, depth order, holes


def test_cube_visible_faces_and_plane_depth():
    from scipy.spatial import ConvexHull

    corners, faces = _cube()
    R = _rot(0.45, 0.6)
    pts = corners @ R.T + torch.tensor([0.1, -0.05, 3.0], dtype=D64)
    cam = PinholeCamera(fx=60.0, fy=60.0, cx=31.5, cy=31.5)
    verts = cam.project(pts)
    tri = pts[faces]
    normal = torch.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=1)
    facing = (normal * tri[:, 0]).sum(1) < 0  # normal points back at the camera at the origin
    assert int(facing.sum()) == 6  # three faces visible in this pose
    for cull in (False, True):
        frags = rasterize(verts, faces, (64, 64), cull_backfaces=cull)
        seen = set(frags.tri_id.unique().tolist()) - {-1}
        assert seen == set(facing.nonzero().squeeze(1).tolist()), (cull, seen)

    # depth at pixel centres = intersection of the pixel ray with the face plane
    mask = frags.tri_id[0] >= 0
    ys, xs = torch.meshgrid(torch.arange(64, dtype=D64), torch.arange(64, dtype=D64), indexing="ij")
    ray = torch.stack([(xs - 31.5) / 60.0, (ys - 31.5) / 60.0, torch.ones_like(xs)], -1)
    t = frags.tri_id[0].clamp(min=0)
    n, p0 = normal[t], tri[t, 0]
    plane_depth = (n * p0).sum(-1) / (n * ray).sum(-1)
    torch.testing.assert_close(frags.depth[0][mask], plane_depth[mask], rtol=1e-12, atol=1e-12)

    # closed mesh: every pixel centre inside the silhouette (convex hull) is covered, none outside
    hull = ConvexHull(verts[:, :2].numpy())
    centres = torch.stack([xs, ys], -1).reshape(-1, 2).numpy()
    signed = (centres @ hull.equations[:, :2].T + hull.equations[:, 2]).max(1).reshape(64, 64)
    assert bool(mask.numpy()[signed < -1e-9].all())
    assert not bool(mask.numpy()[signed > 1e-9].any())


@pytest.mark.parametrize("jitter", [0.0, 0.8])
def test_no_holes_on_shared_edges(jitter):
    # Vertices on integer and half-integer positions put many pixel centres exactly on shared edges
    # and vertices, the case a careless inside test leaves holes in.
    for step in (1.0, 1.5, 2.0, 3.0):
        verts, faces = _grid(9, 8, 2.0, 3.0, step, jitter=jitter)
        frags = rasterize(verts, faces, (32, 32))
        x1, y1 = 2.0 + 8 * step, 3.0 + 7 * step
        inside = torch.zeros(32, 32, dtype=torch.bool)
        inside[3 : int(y1) + 1, 2 : int(x1) + 1] = True  # centres inside or on the outer square
        assert bool((frags.tri_id[0] >= 0)[inside].all()), f"hole at step {step}"
        assert not bool((frags.tri_id[0] >= 0)[~inside].any())
    # a fan of triangles around a vertex exactly on a pixel centre
    n = 7
    ang = torch.arange(n, dtype=D64) * 2 * math.pi / n + 0.1
    ring = torch.stack([16 + 9 * ang.cos(), 16 + 9 * ang.sin(), torch.ones(n, dtype=D64)], 1)
    verts = torch.cat([torch.tensor([[16.0, 16.0, 1.0]], dtype=D64), ring])
    faces = torch.tensor([[0, 1 + k, 1 + (k + 1) % n] for k in range(n)])
    frags = rasterize(verts, faces, (32, 32))
    assert int(frags.tri_id[0, 16, 16]) >= 0
    assert int(frags.tri_id[0, 16, 10:23].lt(0).sum()) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_holes_where_shared_edges_pass_exactly_through_pixel_centres(dtype):
    # Shared edges along lines y = (num/den) x + c through many lattice points, with endpoints at
    # coordinates that binary floats cannot represent: the two triangles would round the edge
    # crossing differently (and leave holes) unless both evaluate it the same way.
    # (Evaluating each edge in the triangle's own vertex order leaves ~3% of these centres empty.)
    holes, checked = 0, 0
    cols = torch.arange(48, dtype=D64)
    for num, den in [(1, 3), (2, 5), (3, 7), (1, 1), (5, 3), (7, 2), (4, 9), (2, 7), (1, 6)]:
        m = num / den
        for x0 in (0.1, 0.3, 0.7, 1.3):
            for c in (2, 5):
                x1 = 40.7 - x0
                corners = [[x0, m * x0 + c], [x1, m * x1 + c], [x0 - 3.1, m * x1 + c + 9.3], [x1 + 2.9, m * x0 + c - 8.7]]
                verts = torch.tensor([[x, y, 1.0] for x, y in corners], dtype=dtype)
                ys = m * cols + c
                on_line = ((ys - ys.round()).abs() < 1e-9) & (cols > x0) & (cols < x1) & (ys.round() < 80)
                jj = cols[on_line].long()
                ii = ys[on_line].round().long()
                for faces in ([[0, 1, 2], [1, 0, 3]], [[2, 0, 1], [0, 1, 3]], [[0, 1, 2], [0, 3, 1]]):
                    tri_id = rasterize(verts, torch.tensor(faces), (80, 48)).tri_id[0]
                    holes += int((tri_id[ii, jj] < 0).sum())
                    checked += int(jj.numel())
    assert checked > 2000
    assert holes == 0, f"{holes} of {checked} pixel centres on shared edges left empty"


def test_depth_order_nearer_wins_regardless_of_face_order():
    verts = torch.tensor(
        [[5, 5, 2.0], [40, 8, 2.0], [12, 40, 2.0], [10, 3, 3.0], [44, 30, 3.0], [30, 44, 3.0]], dtype=D64
    )
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    a = rasterize(verts, faces, (48, 48))
    b = rasterize(verts, faces.flip(0), (48, 48))
    near = rasterize(verts, faces[:1], (48, 48)).tri_id >= 0
    far = rasterize(verts, faces[1:], (48, 48)).tri_id >= 0
    overlap = near & far
    assert int(overlap.sum()) > 50
    assert bool((a.tri_id[overlap] == 0).all())
    assert bool((a.tri_id[far & ~near] == 1).all())
    mapped = torch.where(b.tri_id >= 0, 1 - b.tri_id, -1)
    assert torch.equal(a.tri_id, mapped)
    torch.testing.assert_close(a.depth, b.depth)
    assert torch.allclose(a.depth[overlap], torch.tensor(2.0, dtype=D64))


# ------------------------------------------------------------------------------------------------
# fast vs reference


@pytest.mark.parametrize("perspective_correct", [True, False])
@pytest.mark.parametrize("cull", [False, True])
def test_fast_matches_reference(perspective_correct, cull):
    for seed in range(3):
        v, faces, size = _random_scene(seed)
        v1 = v.clone().requires_grad_(True)
        v2 = v.clone().requires_grad_(True)
        a = rasterize(v1, faces, size, perspective_correct, cull)
        b = rasterize_reference(v2, faces, size, perspective_correct, cull)
        assert torch.equal(a.tri_id, b.tri_id), f"seed {seed}: {(a.tri_id != b.tri_id).sum()} pixels differ"
        assert int((a.tri_id >= 0).sum()) > 200
        torch.testing.assert_close(a.bary, b.bary, rtol=0, atol=1e-10)
        torch.testing.assert_close(a.depth, b.depth, rtol=1e-10, atol=1e-10)
        w = torch.randn(*a.bary.shape, generator=torch.Generator().manual_seed(seed), dtype=D64)
        ((a.bary * w).sum() + a.depth.sum()).backward()
        ((b.bary * w).sum() + b.depth.sum()).backward()
        torch.testing.assert_close(v1.grad, v2.grad, rtol=1e-8, atol=1e-8)


def test_sum_rows_matches_index_add():
    from render.rasterizer import _sum_rows

    g = torch.Generator().manual_seed(0)
    idx = torch.repeat_interleave(torch.randint(0, 50, (900,), generator=g), torch.randint(1, 30, (900,), generator=g))
    src = torch.randn(idx.numel(), 7, generator=g, dtype=D64)
    assert idx.numel() >= 4096  # the run-length path
    torch.testing.assert_close(_sum_rows(src, idx, 50), torch.zeros(50, 7, dtype=D64).index_add_(0, idx, src))


def test_fast_matches_reference_float32_and_batched_attrs():
    v, faces, size = _random_scene(7)
    v = v.float()
    a, b = rasterize(v, faces, size), rasterize_reference(v, faces, size)
    assert torch.equal(a.tri_id, b.tri_id)
    torch.testing.assert_close(a.bary, b.bary, rtol=0, atol=1e-4)  # float32 rounding
    attrs = torch.randn(2, v.shape[1], 5)
    out = interpolate(attrs, a, faces)
    for bi in range(2):
        torch.testing.assert_close(out[bi : bi + 1], interpolate(attrs[bi], rasterize(v[bi], faces, size), faces))


# ------------------------------------------------------------------------------------------------
# texture


def test_texture_known_values():
    Ht, Wt = 3, 4
    tex = torch.arange(Ht * Wt * 2, dtype=D64).reshape(Ht, Wt, 2)
    # texel centres: uv = ((c + 0.5) / Wt, (r + 0.5) / Ht), v = 0 is the top row
    r, c = torch.meshgrid(torch.arange(Ht), torch.arange(Wt), indexing="ij")
    uv = torch.stack([(c.double() + 0.5) / Wt, (r.double() + 0.5) / Ht], -1)[None]
    torch.testing.assert_close(texture(tex, uv)[0], tex)
    # halfway between texels (0, 1) and (0, 2): the average; a quarter of the way from (1,0) to (2,0)
    uv2 = torch.tensor([[[[2.0 / Wt, 0.5 / Ht], [0.5 / Wt, 1.75 / Ht]]]], dtype=D64)
    out = texture(tex[None], uv2)[0, 0]
    torch.testing.assert_close(out[0], (tex[0, 1] + tex[0, 2]) / 2)
    torch.testing.assert_close(out[1], 0.75 * tex[1, 0] + 0.25 * tex[2, 0])
    # clamp-to-edge outside [0, 1]
    torch.testing.assert_close(texture(tex, torch.tensor([[[[-0.5, -0.5]]]], dtype=D64))[0, 0, 0], tex[0, 0])


# ------------------------------------------------------------------------------------------------
# antialias


def _antialias_loop(color, frags, verts, faces):
    """Direct transcription of the rule in antialias's docstring, one pixel pair at a time."""
    B, H, W, C = color.shape
    out = color.clone()
    owner: dict[tuple[int, int], list[int]] = {}
    for f, tri in enumerate(faces.tolist()):
        for k in range(3):
            a, b = tri[(k + 1) % 3], tri[(k + 2) % 3]
            owner.setdefault((min(a, b), max(a, b)), []).append(f)

    def area2(bi, f):
        a = verts[bi, faces[f]]
        return float((a[1, 0] - a[0, 0]) * (a[2, 1] - a[0, 1]) - (a[2, 0] - a[0, 0]) * (a[1, 1] - a[0, 1]))

    def neighbour(f, k):
        a, b = int(faces[f, (k + 1) % 3]), int(faces[f, (k + 2) % 3])
        others = [g for g in owner[(min(a, b), max(a, b))] if g != f]
        return others[0] if others else -1

    for bi in range(B):
        for i in range(H):
            for j in range(W):
                for di, dj in ((0, 1), (1, 0)):
                    i2, j2 = i + di, j + dj
                    if i2 >= H or j2 >= W:
                        continue
                    tp, tq = int(frags.tri_id[bi, i, j]), int(frags.tri_id[bi, i2, j2])
                    if tp == tq or (tp >= 0 and tq >= 0 and any(neighbour(tp, k) == tq for k in range(3))):
                        continue
                    if tq < 0 or (tp >= 0 and frags.depth[bi, i, j] <= frags.depth[bi, i2, j2]):
                        (fi, fj), (oi, oj), T = (i, j), (i2, j2), tp
                    else:
                        (fi, fj), (oi, oj), T = (i2, j2), (i, j), tq
                    s = math.copysign(1.0, area2(bi, T))
                    best = None
                    for k in range(3):
                        P, Q = verts[bi, faces[T, (k + 1) % 3], :2], verts[bi, faces[T, (k + 2) % 3], :2]

                        def E(x, y, P=P, Q=Q):
                            return s * float((Q[0] - P[0]) * (y - P[1]) - (Q[1] - P[1]) * (x - P[0]))

                        ef, eo = E(fj, fi), E(oj, oi)
                        if eo < 0 and (best is None or ef / (ef - eo) < best[0]):
                            best = (ef / (ef - eo), k, Q - P)
                    if best is None:
                        continue
                    t, k, d = best
                    n = neighbour(T, k)
                    z_ok = n >= 0 and bool((verts[bi, faces[n], 2] > 0).all()) and area2(bi, n) != 0
                    if n >= 0 and z_ok and math.copysign(1.0, area2(bi, n)) == s:
                        continue  # interior edge
                    steep = abs(float(d[1])) >= abs(float(d[0]))
                    if steep != (dj == 1):
                        continue
                    t = min(max(t, 0.0), 1.0)
                    if t > 0.5:
                        out[bi, oi, oj] += (t - 0.5) * (color[bi, fi, fj] - color[bi, oi, oj])
                    else:
                        out[bi, fi, fj] += (0.5 - t) * (color[bi, oi, oj] - color[bi, fi, fj])
    return out


def _aa_scene():
    """A jittered grid patch (consistently wound) with a separate triangle in front of it."""
    verts, faces = _grid(5, 4, 3.3, 4.1, 4.7, jitter=1.5, seed=3)
    front = torch.tensor([[10.2, 2.6, 0.5], [26.9, 12.3, 0.5], [13.7, 22.8, 0.5]], dtype=D64)
    verts = torch.cat([verts, front])
    n = verts.shape[0]
    faces = torch.cat([faces, torch.tensor([[n - 3, n - 1, n - 2]])])
    return verts, faces


def test_antialias_matches_loop_reference():
    verts, faces = _aa_scene()
    frags = rasterize(verts, faces, (24, 30))
    colors = torch.rand(verts.shape[0], 3, generator=torch.Generator().manual_seed(0), dtype=D64)
    img = interpolate(colors, frags, faces) + 0.25 * (frags.tri_id < 0)[..., None]
    out = antialias(img, frags, verts, faces)
    ref = _antialias_loop(img, frags, verts[None], faces)
    assert float((out - img).abs().sum()) > 0.5  # it does something
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    # interior edges of the grid are left alone: pixels whose 4-neighbourhood sees only grid faces
    # that share edges with each other keep their colour
    grid_faces = faces.shape[0] - 1
    t = frags.tri_id[0]
    untouched = (out - img).abs().sum(-1)[0] == 0
    adj = face_adjacency(faces)
    for i in range(1, 23):
        for j in range(1, 29):
            ids = {int(t[i, j]), int(t[i - 1, j]), int(t[i + 1, j]), int(t[i, j - 1]), int(t[i, j + 1])}
            if len(ids) == 1 and min(ids) >= 0 and max(ids) < grid_faces:
                assert bool(untouched[i, j])
    assert adj.shape == faces.shape


def test_antialias_vertical_edge_values_and_analytic_gradient():
    # A rectangle (two triangles sharing a diagonal, which must not be antialiased) of colour 1 over
    # background 0, right edge vertical at x = 10.3 spanning y in [2.2, 12.7] -> rows 3..12.
    x0, x1, y0, y1 = 1.6, 10.3, 2.2, 12.7
    verts = torch.tensor([[x0, y0, 1.0], [x1, y0, 1.0], [x1, y1, 1.0], [x0, y1, 1.0]], dtype=D64, requires_grad=True)
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])
    frags = rasterize(verts, faces, (16, 16))
    img = interpolate(torch.ones(4, 1, dtype=D64), frags, faces)
    out = antialias(img, frags, verts, faces)
    # column 10 is covered, the edge is 0.3 px right of its centre: it keeps 0.5 + 0.3 = 0.8
    torch.testing.assert_close(out[0, 4:12, 10, 0], torch.full((8,), 0.8, dtype=D64))
    torch.testing.assert_close(out[0, 4:12, 11, 0], torch.zeros(8, dtype=D64))
    # left edge at x = 1.6: column 2 covered, edge 0.4 px left of its centre -> 0.9; column 1 gets 0
    torch.testing.assert_close(out[0, 4:12, 2, 0], torch.full((8,), 0.9, dtype=D64))
    # top edge at y = 2.2 (vertical pairs): row 3 covered, edge 0.8 above it: row 2 gets 0.3
    torch.testing.assert_close(out[0, 2, 4:9, 0], torch.full((5,), 0.3, dtype=D64))
    # moving the right edge by dx adds dx of coverage in each of its 10 rows
    out.sum().backward()
    torch.testing.assert_close(verts.grad[[1, 2], 0].sum(), torch.tensor(10.0, dtype=D64))
    torch.testing.assert_close(verts.grad[[0, 3], 0].sum(), torch.tensor(-10.0, dtype=D64))


def test_antialias_gradient_matches_finite_differences():
    # float64 throughout. Coverage is piecewise constant in the vertices, but the antialiased image
    # is continuous and, while no pixel centre crosses an edge, smooth: for a generic triangle the
    # nearest pixel centre is ~1e-2 px from any edge, so central differences with eps = 1e-6 see one
    # smooth piece (checked: tri_id is unchanged under every perturbation). Their truncation error
    # is O(eps^2 * curvature) ~ 1e-12 and rounding ~ 1e-16 / eps ~ 1e-10 per unit loss, hence the
    # 1e-6 tolerance, tight enough to catch a wrong sign or a missing term (gradients are O(1)).
    verts = torch.tensor([[6.37, 4.21, 1.3], [27.83, 9.46, 2.1], [11.18, 25.67, 1.7]], dtype=D64)
    faces = torch.tensor([[0, 1, 2]])
    colors = torch.tensor([[1.0, 0.2, 0.1], [0.1, 0.9, 0.3], [0.2, 0.3, 1.0]], dtype=D64)
    bg = torch.tensor([0.5, 0.4, 0.2], dtype=D64)
    H, W = 32, 32
    weight = torch.rand(1, H, W, 3, generator=torch.Generator().manual_seed(1), dtype=D64)

    def loss(v):
        frags = rasterize(v, faces, (H, W))
        mask = (frags.tri_id >= 0)[..., None]
        img = torch.where(mask, interpolate(colors, frags, faces), bg)
        return (weight * antialias(img, frags, v, faces)).sum(), frags.tri_id

    v = verts.clone().requires_grad_(True)
    val, tri0 = loss(v)
    val.backward()
    eps = 1e-6
    fd = torch.zeros_like(verts)
    for i in range(3):
        for c in range(3):
            vp, vm = verts.clone(), verts.clone()
            vp[i, c] += eps
            vm[i, c] -= eps
            (lp, tp), (lm, tm) = loss(vp), loss(vm)
            assert torch.equal(tp, tri0) and torch.equal(tm, tri0)
            fd[i, c] = (lp - lm) / (2 * eps)
    assert float(v.grad[:, :2].abs().max()) > 1.0  # silhouette gradients exist and are sizeable
    torch.testing.assert_close(v.grad, fd, rtol=1e-6, atol=1e-6)


def test_antialias_gives_gradient_where_interpolate_alone_does_not():
    verts, faces = _tri()
    v = verts.clone().requires_grad_(True)
    frags = rasterize(v, faces, (64, 64))
    img = interpolate(torch.ones(3, 1, dtype=D64), frags, faces)
    img.sum().backward(retain_graph=True)
    assert float(v.grad.abs().max()) < 1e-12  # constant colour: no gradient without antialiasing
    v.grad = None
    antialias(img, frags, v, faces).sum().backward()
    assert float(v.grad[:, :2].abs().max()) > 1.0


# ------------------------------------------------------------------------------------------------
# gradcheck, bad input


def test_interpolate_gradcheck():
    verts, faces = _tri(z=(1.0, 1.6, 2.3))
    verts = verts * torch.tensor([0.25, 0.25, 1.0], dtype=D64)  # fits a 12 x 14 image
    attrs = torch.randn(3, 2, generator=torch.Generator().manual_seed(0), dtype=D64)

    def fn(a, v):
        return interpolate(a, rasterize(v, faces, (12, 14)), faces)

    assert torch.autograd.gradcheck(fn, (attrs.requires_grad_(True), verts.requires_grad_(True)), eps=1e-6, atol=1e-7)


def test_bad_inputs_raise_value_error():
    verts, faces = _tri()
    with pytest.raises(ValueError, match=r"verts must have shape \[B, V, 3\] or \[V, 3\]"):
        rasterize(verts[:, :2], faces, (8, 8))
    with pytest.raises(ValueError, match="float32 or float64"):
        rasterize(verts.long(), faces, (8, 8))
    with pytest.raises(ValueError, match=r"faces must have shape \[F, 3\]"):
        rasterize(verts, faces[:, :2], (8, 8))
    with pytest.raises(ValueError, match="integer"):
        rasterize(verts, faces.double(), (8, 8))
    with pytest.raises(ValueError, match="but there are 3 vertices"):
        rasterize(verts, faces + 1, (8, 8))
    with pytest.raises(ValueError, match="image_size"):
        rasterize(verts, faces, (8,))
    with pytest.raises(ValueError, match="image_size"):
        rasterize(verts, faces, (0, 8))
    frags = rasterize(verts, faces, (8, 8))
    with pytest.raises(ValueError, match=r"attrs must have shape \[V, C\] or \[B, V, C\]"):
        interpolate(torch.zeros(3), frags, faces)
    with pytest.raises(ValueError, match="batch size 2"):
        interpolate(torch.zeros(2, 3, 1), frags, faces)
    with pytest.raises(ValueError, match="but there are 2 vertices"):
        interpolate(torch.zeros(2, 1), frags, faces)
    with pytest.raises(ValueError, match=r"color must have shape \[B, H, W, C\] = \[1, 8, 8, C\]"):
        antialias(torch.zeros(1, 8, 9, 3), frags, verts, faces)
    with pytest.raises(ValueError, match="Fragments"):
        antialias(torch.zeros(1, 8, 8, 3), "frags", verts, faces)
    with pytest.raises(ValueError, match=r"tex must have shape"):
        texture(torch.zeros(4, 4), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"uv must have shape \[B, H, W, 2\]"):
        texture(torch.zeros(4, 4, 3), torch.zeros(1, 2, 2, 3))
    assert isinstance(frags, Fragments)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    v, faces, size = _random_scene(3)
    v = v.float()
    a = rasterize(v, faces, size)
    b = rasterize(v.cuda(), faces.cuda(), size)
    assert torch.equal(a.tri_id, b.tri_id.cpu())
    torch.testing.assert_close(a.bary, b.bary.cpu(), rtol=0, atol=1e-5)
    colors = torch.rand(v.shape[1], 3)
    ia = antialias(interpolate(colors, a, faces), a, v, faces)
    ib = antialias(interpolate(colors.cuda(), b, faces.cuda()), b, v.cuda(), faces.cuda())
    torch.testing.assert_close(ia, ib.cpu(), rtol=0, atol=1e-5)


def test_empty_render_and_dropped_vertices_keep_gradients_finite():
    verts, faces = _tri()
    v = (verts + torch.tensor([500.0, 0.0, 0.0], dtype=D64)).requires_grad_(True)  # off-screen
    frags = rasterize(v, faces, (16, 16))
    assert int((frags.tri_id >= 0).sum()) == 0 and frags.bbox == (0, 0, 0, 0)
    attrs = torch.ones(3, 2, dtype=D64, requires_grad=True)
    out = antialias(interpolate(attrs, frags, faces), frags, v, faces)
    assert out.shape == (1, 16, 16, 2) and float(out.detach().abs().sum()) == 0
    out.sum().backward()
    assert bool((v.grad == 0).all()) and bool((attrs.grad == 0).all())
    # no faces at all
    empty = rasterize(verts, torch.zeros(0, 3, dtype=torch.long), (8, 8))
    assert int((empty.tri_id >= 0).sum()) == 0 and float(empty.depth.abs().sum()) == 0
    # a vertex behind the camera (or at infinity) drops its triangles without poisoning the
    # gradients of vertices shared with visible triangles
    for bad in (float("inf"), float("nan")):
        verts4 = torch.cat([verts, torch.tensor([[60.0, 60.0, 1.0]], dtype=D64)])
        verts4[3, 0] = bad
        faces4 = torch.tensor([[0, 1, 2], [1, 3, 2]])
        v4 = verts4.clone().requires_grad_(True)
        fr = rasterize(v4, faces4, (64, 64))
        assert set(fr.tri_id.unique().tolist()) == {-1, 0}
        img = antialias(interpolate(torch.rand(4, 3, dtype=D64), fr, faces4), fr, v4, faces4)
        (img.sum() + fr.depth.sum()).backward()
        assert bool(torch.isfinite(v4.grad[:3]).all()), bad


def test_batch_elements_are_independent():
    verts, faces = _aa_scene()
    shifted = verts + torch.tensor([2.7, -1.3, 0.2], dtype=D64)
    both = torch.stack([verts, shifted])
    colors = torch.rand(2, verts.shape[0], 3, generator=torch.Generator().manual_seed(2), dtype=D64)
    fr = rasterize(both, faces, (24, 30))
    out = antialias(interpolate(colors, fr, faces), fr, both, faces)
    for b in range(2):
        f1 = rasterize(both[b], faces, (24, 30))
        o1 = antialias(interpolate(colors[b], f1, faces), f1, both[b], faces)
        assert torch.equal(fr.tri_id[b : b + 1], f1.tri_id)
        torch.testing.assert_close(out[b : b + 1], o1, rtol=0, atol=1e-12)
        torch.testing.assert_close(fr.depth[b : b + 1], f1.depth, rtol=0, atol=1e-12)

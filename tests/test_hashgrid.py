"""Hash-grid encoding: layout, the torch reference against analytic values and float64 gradcheck,
the Triton kernels against the reference (CPU: Triton's interpreter, switched on in conftest.py;
CUDA: compiled), module plumbing, tri-plane and audio-spatial encodings."""

import math
import zlib

import numpy as np
import pytest
import torch

from nerf.hashgrid import HashGridEncoding, available_backends, resolve_backend
from nerf.hashgrid_layout import PRIMES, HashGridConfig, grid_layout
from nerf.hashgrid_torch import all_corner_rows, corner_rows, hash_encode_torch


def _cfg(**kw) -> HashGridConfig:
    base = dict(input_dim=3, num_levels=4, features_per_level=2, log2_table_size=10, base_resolution=4,
                finest_resolution=48)
    base.update(kw)
    return HashGridConfig(**base)


def _points(n: int, dim: int, gen: torch.Generator, device="cpu") -> torch.Tensor:
    """Random points over [-0.1, 1.1]^D with the awkward ones mixed in: exact 0 and 1 on each
    axis, and points outside the unit cube."""
    x = torch.rand(n, dim, generator=gen) * 1.2 - 0.1
    k = min(n // 4, 64)
    x[:k] = torch.randint(0, 2, (k, dim), generator=gen).float()  # corners and faces of the cube
    x[k:2 * k, 0] = torch.tensor([0.0, 1.0]).repeat(k)[:k]
    x[2 * k:3 * k] = torch.rand(k, dim, generator=gen) * 4 - 2  # far outside
    return x.to(device)


# ------------------------------------------------------------------------------------------------
# layout


def test_layout_resolutions_sizes_and_offsets():
    cfg = HashGridConfig(input_dim=3, num_levels=5, features_per_level=2, log2_table_size=12,
                         base_resolution=8, per_level_scale=2.0)
    lay = grid_layout(cfg)
    # scale_l = 8 * 2^l - 1, resolution = scale + 1 for integer scales
    np.testing.assert_array_equal(lay.scales, [7, 15, 31, 63, 127])
    np.testing.assert_array_equal(lay.resolutions, [8, 16, 32, 64, 128])
    # dense while res^3 fits 2^12 = 4096 entries: 512 and 4096; hashed above
    np.testing.assert_array_equal(lay.sizes, [512, 4096, 4096, 4096, 4096])
    np.testing.assert_array_equal(lay.hashed, [False, False, True, True, True])
    np.testing.assert_array_equal(lay.offsets, [0, 512, 4608, 8704, 12800])
    assert lay.num_entries == 16896


def test_layout_pads_dense_levels_to_eight_and_finest_resolution():
    cfg = HashGridConfig(input_dim=2, num_levels=3, log2_table_size=16, base_resolution=5, finest_resolution=20)
    lay = grid_layout(cfg)
    assert math.isclose(cfg.level_scale, 2.0)
    np.testing.assert_array_equal(lay.resolutions, [5, 10, 20])
    np.testing.assert_array_equal(lay.sizes, [32, 104, 400])  # 25 -> 32, 100 -> 104, 400
    assert not lay.hashed.any()


def test_config_rejects_bad_values():
    for bad in (dict(input_dim=4), dict(features_per_level=3), dict(num_levels=0), dict(table_dtype="bfloat16"),
                dict(interpolation="cubic"), dict(backend="cuda"), dict(finest_resolution=None)):
        with pytest.raises(ValueError):
            HashGridConfig(**bad)


# ------------------------------------------------------------------------------------------------
# the torch reference against hand-computed values


def _python_hash(vertex):
    h = 0
    for d, v in enumerate(vertex):
        h ^= (v * PRIMES[d]) % 2**32
    return h


def test_corner_rows_match_python_integers():
    gen = np.random.default_rng(0)
    cells = gen.integers(0, 3000, size=(200, 3))
    corners = [[(c >> d) & 1 for d in range(3)] for c in range(8)]  # corner c: bit d on axis d
    got = corner_rows(torch.from_numpy(cells), resolution=2049, size=2**19, hashed=True).numpy()
    want = [[_python_hash([v + b for v, b in zip(cell, bits)]) % 2**19 for bits in corners] for cell in cells.tolist()]
    np.testing.assert_array_equal(got, want)
    got = corner_rows(torch.from_numpy(cells), resolution=3001, size=1000, hashed=False).numpy()
    want = [[((a + i) + (b + j) * 3001 + (c + k) * 3001**2) % 2**32 % 1000 for i, j, k in corners]
            for a, b, c in cells.tolist()]
    np.testing.assert_array_equal(got, want)


def test_reference_reads_table_at_vertices_and_interpolates_between():
    """One dense 2D level, scale 3: x = (k - 0.5) / 3 sits exactly on vertex k."""
    cfg = HashGridConfig(input_dim=2, num_levels=1, features_per_level=2, log2_table_size=8, base_resolution=4,
                         per_level_scale=1.0)
    lay = grid_layout(cfg)
    table = torch.randn(lay.num_entries, 2, dtype=torch.float64)
    for i, j in [(1, 1), (2, 3), (3, 1)]:
        x = torch.tensor([[(i - 0.5) / 3, (j - 0.5) / 3]], dtype=torch.float64)
        torch.testing.assert_close(hash_encode_torch(x, table, lay)[0], table[i + 4 * j])
    # bilinear: a quarter of the way from vertex (1, 2) towards (2, 3) on both axes
    x = torch.tensor([[(1.25 - 0.5) / 3, (2.25 - 0.5) / 3]], dtype=torch.float64)
    want = sum(w * table[a + 4 * b] for w, (a, b) in
               [(0.75 * 0.75, (1, 2)), (0.25 * 0.75, (2, 2)), (0.75 * 0.25, (1, 3)), (0.25 * 0.25, (2, 3))])
    torch.testing.assert_close(hash_encode_torch(x, table, lay)[0], want)
    # smoothstep moves the weights: t = 0.25 -> 0.15625
    s = 0.25 * 0.25 * (3 - 0.5)
    want = sum(w * table[a + 4 * b] for w, (a, b) in
               [((1 - s) ** 2, (1, 2)), (s * (1 - s), (2, 2)), ((1 - s) * s, (1, 3)), (s * s, (2, 3))])
    torch.testing.assert_close(hash_encode_torch(x, table, lay, "smoothstep")[0], want)


def test_reference_clamps_points_outside_the_unit_cube():
    lay = grid_layout(_cfg())
    table = torch.randn(lay.num_entries, 2)
    x = torch.tensor([[-0.5, 0.3, 1.7], [2.0, -1.0, 0.5]])
    torch.testing.assert_close(hash_encode_torch(x, table, lay), hash_encode_torch(x.clamp(0, 1), table, lay))


@pytest.mark.parametrize("interpolation", ["linear", "smoothstep"])
def test_reference_is_continuous_across_cells(interpolation):
    lay = grid_layout(_cfg(num_levels=3))
    table = torch.randn(lay.num_entries, 2, dtype=torch.float64)
    # cell boundaries of level 2 on axis 0: x = (k - 0.5) / scale
    scale = float(lay.scales[2])
    x = torch.tensor([[(7 - 0.5) / scale, 0.37, 0.61]], dtype=torch.float64)
    eps = torch.tensor([[1e-9, 0, 0]], dtype=torch.float64)
    a, b = hash_encode_torch(x - eps, table, lay, interpolation), hash_encode_torch(x + eps, table, lay, interpolation)
    assert (a - b).abs().max() < 1e-6


@pytest.mark.parametrize("dim,interpolation", [(3, "linear"), (2, "smoothstep")])
def test_reference_gradcheck_float64(dim, interpolation):
    lay = grid_layout(_cfg(input_dim=dim, num_levels=3, log2_table_size=8))
    gen = torch.Generator().manual_seed(1)
    table = torch.randn(lay.num_entries, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    x = (0.05 + 0.9 * torch.rand(6, dim, dtype=torch.float64, generator=gen)).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, t: hash_encode_torch(x, t, lay, interpolation), (x, table),
                                    eps=1e-6, atol=1e-5)


# ------------------------------------------------------------------------------------------------
# the Triton kernels against the reference


def _devices():
    out = []
    try:
        from nerf.hashgrid_triton import interpreting
    except ImportError:
        return [pytest.param("cpu", marks=pytest.mark.skip(reason="triton not installed"))]
    out.append(pytest.param("cpu", marks=pytest.mark.skipif(not interpreting(), reason="TRITON_INTERPRET not on")))
    out.append(pytest.param("cuda", marks=pytest.mark.cuda))
    return out


CASES = [  # (D, L, F, log2 T, table dtype, interpolation, N)
    (3, 4, 2, 10, "float32", "linear", 300),
    (3, 3, 4, 8, "float16", "smoothstep", 257),
    (2, 5, 1, 9, "float32", "smoothstep", 200),
    (2, 3, 8, 12, "float16", "linear", 129),
    (3, 2, 2, 16, "float32", "linear", 1),
]


def _rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"D{c[0]}L{c[1]}F{c[2]}T{c[3]}-{c[4]}-{c[5]}-N{c[6]}")
def test_triton_matches_reference(device, case):
    from nerf.hashgrid_triton import LevelTensors, encode_backward, encode_forward

    D, L, F, log2, dtype, interp, N = case
    lay = grid_layout(_cfg(input_dim=D, num_levels=L, features_per_level=F, log2_table_size=log2))
    gen = torch.Generator().manual_seed(zlib.crc32(repr(case).encode()))
    table = (torch.rand(lay.num_entries, F, generator=gen) * 2 - 1).to(getattr(torch, dtype)).to(device)
    x = _points(N, D, gen, device).cpu()
    # a quarter of the points within 1e-4 cells of a cell boundary of some level, both sides and on it
    k = N // 4
    level = torch.randint(0, L, (k,), generator=gen)
    scale = torch.as_tensor(lay.scales)[level][:, None].double()
    offset = torch.tensor([-1e-4, 0.0, 1e-4]).double()[torch.randint(0, 3, (k, D), generator=gen)]
    near = (torch.round(torch.rand(k, D, generator=gen).double() * scale) - 0.5 + offset) / scale
    x[N - k:] = near.clamp(0, 1).float()
    x = x.to(device)
    grad_out = torch.randn(N, L * F, generator=gen).to(device)
    lv = LevelTensors(lay, torch.device(device))
    smooth = interp == "smoothstep"

    out = torch.full((N, L * F), float("nan"), device=device)  # poisoned: every element must be written
    encode_forward(x, table, lv, smooth, out=out)
    gx = torch.full((N, D), float("nan"), device=device)
    gtable, gx = encode_backward(x, table, grad_out, lv, smooth, need_table=True, need_x=True, grad_x=gx)
    assert torch.isfinite(out).all() and torch.isfinite(gx).all() and torch.isfinite(gtable.float()).all()
    assert gtable.dtype == table.dtype

    # reference in float64 on the same (already rounded) table values
    xr = x.double().cpu().requires_grad_()
    tr = table.double().cpu().requires_grad_()
    ref = hash_encode_torch(xr, tr, lay, interp)
    gx_ref, gt_ref = torch.autograd.grad(ref, (xr, tr), grad_out.double().cpu())
    assert _rel(out.cpu(), ref) < 1e-5
    # dL/dx jumps at cell boundaries (the interpolant has kinks there), where float32 and float64
    # may pick different sides: compared away from them
    assert _rel(gx.cpu()[:N - k], gx_ref[:N - k]) < 1e-4  # float32 sums of scale-amplified differences
    assert _rel(gtable.float().cpu(), gt_ref) < (2e-3 if dtype == "float16" else 1e-5)
    # outside the cube the input gradient is exactly zero
    outside = ((x < 0) | (x > 1)).cpu()
    assert (gx.cpu()[outside] == 0).all()


@pytest.mark.parametrize("device", _devices())
def test_triton_backward_only_what_is_asked(device):
    from nerf.hashgrid_triton import LevelTensors, encode_backward

    lay = grid_layout(_cfg(num_levels=2))
    gen = torch.Generator().manual_seed(5)
    table = torch.randn(lay.num_entries, 2, generator=gen).to(device)
    x = torch.rand(64, 3, generator=gen).to(device)
    g = torch.randn(64, 4, generator=gen).to(device)
    lv = LevelTensors(lay, torch.device(device))
    gt, gx = encode_backward(x, table, g, lv, False, need_table=True, need_x=False)
    assert gx is None and gt.shape == table.shape
    gt2, gx2 = encode_backward(x, table, g, lv, False, need_table=False, need_x=True)
    assert gt2 is None and gx2.shape == x.shape
    # the table gradient is linear in dL/dy and sums to sum(dL/dy) per level (weights sum to 1)
    per_level = [g[:, 2 * lv_i:2 * lv_i + 2].sum(0) for lv_i in range(2)]
    got = [gt[int(lay.offsets[i]):int(lay.offsets[i] + lay.sizes[i])].sum(0) for i in range(2)]
    for a, b in zip(got, per_level):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", _devices())
def test_triton_empty_batch(device):
    from nerf.hashgrid_triton import LevelTensors, encode_forward

    lay = grid_layout(_cfg())
    out = encode_forward(torch.empty(0, 3, device=device), torch.zeros(lay.num_entries, 2, device=device),
                         LevelTensors(lay, torch.device(device)), False)
    assert out.shape == (0, 8)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_triton_matches_reference_at_scale_on_cuda(dtype):
    """The benchmark's configuration (16 levels x 2 features, 2^19 table) on 2^16 points."""
    enc_t = HashGridEncoding(HashGridConfig(table_dtype=dtype, backend="triton")).cuda()
    enc_r = HashGridEncoding(HashGridConfig(table_dtype=dtype, backend="torch")).cuda()
    with torch.no_grad():
        enc_t.table.uniform_(-1, 1)
        enc_r.table.copy_(enc_t.table)
    x = torch.rand(1 << 16, 3, device="cuda", requires_grad=True)
    g = torch.randn(1 << 16, 32, device="cuda")
    y_t, y_r = enc_t(x), enc_r(x)
    assert _rel(y_t, y_r) < 1e-5
    gx_t, gt_t = torch.autograd.grad(y_t, (x, enc_t.table), g)
    gx_r, gt_r = torch.autograd.grad(y_r, (x, enc_r.table), g)
    assert _rel(gx_t, gx_r) < 1e-4
    assert _rel(gt_t.float(), gt_r.float()) < (5e-3 if dtype == "float16" else 1e-5)


# ------------------------------------------------------------------------------------------------
# the module


def test_module_shapes_dtype_and_auto_backend_on_cpu():
    enc = HashGridEncoding(_cfg(table_dtype="float16"))
    assert enc.table.dtype == torch.float16 and enc.table.shape == (grid_layout(enc.cfg).num_entries, 2)
    assert enc.table.abs().max() <= 1e-4 * 1.001
    x = torch.rand(5, 7, 3)
    y = enc(x)
    assert y.shape == (5, 7, 8) and y.dtype == torch.float32
    assert resolve_backend("auto", "cpu") == "torch" and available_backends("cpu") == ["torch"]
    with pytest.raises(ValueError, match="coordinates"):
        enc(torch.rand(4, 2))


def test_module_input_gradient_and_training_step():
    """The encoding can fit a function: a few Adam steps reduce the error on a smooth target."""
    torch.manual_seed(0)
    enc = HashGridEncoding(_cfg(input_dim=2, num_levels=4, finest_resolution=32, features_per_level=1))
    opt = torch.optim.Adam(enc.parameters(), lr=0.05)
    x = torch.rand(2048, 2)
    target = torch.sin(6 * x[:, :1]) * torch.cos(4 * x[:, 1:])
    losses = []
    for _ in range(60):
        loss = ((enc(x).sum(-1, keepdim=True) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    xg = torch.rand(3, 2, requires_grad=True)
    (gx,) = torch.autograd.grad(enc(xg).sum(), xg)
    assert gx.shape == (3, 2) and torch.isfinite(gx).all()


def test_checkpoint_moves_between_backends(tmp_path):
    """A table saved from one backend loads into another and gives the same features."""
    pytest.importorskip("triton")
    from nerf.hashgrid_triton import interpreting

    if not interpreting() and not torch.cuda.is_available():
        pytest.skip("no way to run triton here")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a = HashGridEncoding(_cfg(backend="triton")).to(device)
    with torch.no_grad():
        a.table.uniform_(-1, 1)
    torch.save(a.state_dict(), tmp_path / "grid.pt")
    b = HashGridEncoding(_cfg(backend="torch"))
    b.load_state_dict(torch.load(tmp_path / "grid.pt", weights_only=True, map_location="cpu"))
    x = torch.rand(100, 3)
    torch.testing.assert_close(a(x.to(device)).cpu(), b(x), rtol=1e-5, atol=1e-6)


def test_tcnn_config_and_layout_mapping():
    from nerf.hashgrid_tcnn import check_param_count, table_from_tcnn, table_to_tcnn, tcnn_encoding_config

    cfg = HashGridConfig(interpolation="smoothstep", finest_resolution=1024, num_levels=11, base_resolution=16)
    conf = tcnn_encoding_config(cfg)
    assert conf["otype"] == "HashGrid" and conf["interpolation"] == "Smoothstep"
    assert math.isclose(conf["per_level_scale"], 2 ** 0.6) and conf["n_levels"] == 11
    lay = grid_layout(cfg)
    table = torch.arange(lay.num_entries * 2, dtype=torch.float32).reshape(-1, 2)
    flat = table_to_tcnn(table)
    assert flat[5] == table[2, 1]  # row-major: entry r, feature f at r*F + f
    assert torch.equal(table_from_tcnn(flat, 2), table)
    check_param_count(lay.num_entries * 2, lay)
    with pytest.raises(RuntimeError, match="level sizes"):
        check_param_count(lay.num_entries * 2 + 8, lay)


@pytest.mark.cuda
def test_tcnn_backend_matches_reference():
    pytest.importorskip("tinycudann")
    cfg = _cfg(num_levels=8, log2_table_size=14, finest_resolution=256)
    a = HashGridEncoding(HashGridConfig(**{**cfg.__dict__, "backend": "tcnn"})).cuda()
    b = HashGridEncoding(HashGridConfig(**{**cfg.__dict__, "backend": "torch"})).cuda()
    with torch.no_grad():
        a.table.uniform_(-1, 1)
        b.table.copy_(a.table)
    x = torch.rand(4096, 3, device="cuda")
    assert _rel(a(x), b(x)) < 1e-4


def test_corner_rows_stay_inside_each_level():
    lay = grid_layout(_cfg(num_levels=4))
    rows = all_corner_rows(_points(500, 3, torch.Generator().manual_seed(2)), lay)
    lo = torch.as_tensor(lay.offsets)[None, :, None]
    hi = lo + torch.as_tensor(lay.sizes)[None, :, None]
    assert ((rows >= lo) & (rows < hi)).all()


# ------------------------------------------------------------------------------------------------
# tri-plane (ER-NeRF) and audio-spatial (RAD-NeRF)


def test_triplane_combines_the_three_plane_encodings():
    from nerf.triplane import PLANES, TriPlaneConfig, TriPlaneEncoding

    grid = _cfg(input_dim=2, num_levels=3)
    x = torch.rand(50, 3)
    outs = {}
    for combine in ("concat", "sum", "product"):
        torch.manual_seed(0)
        enc = TriPlaneEncoding(TriPlaneConfig(grid=grid, combine=combine))
        with torch.no_grad():
            for p in enc.planes.values():
                p.table.uniform_(-1, 1)
        outs[combine] = enc(x)
        per = [enc.planes[n](x[:, list(ax)]) for n, ax in PLANES.items()]
        assert outs[combine].shape[-1] == enc.output_dim
    torch.testing.assert_close(outs["sum"], per[0] + per[1] + per[2])
    torch.testing.assert_close(outs["product"], per[0] * per[1] * per[2])
    assert outs["concat"].shape == (50, 3 * 6)
    # the XY plane ignores z: moving z changes only the YZ and XZ parts
    enc = TriPlaneEncoding(TriPlaneConfig(grid=grid))
    with torch.no_grad():
        for p in enc.planes.values():
            p.table.uniform_(-1, 1)
    x2 = x.clone()
    x2[:, 2] = torch.rand(50)
    a, b = enc(x), enc(x2)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-3


def test_audio_spatial_encoding_broadcasts_one_frame_latent():
    from nerf.audio_spatial import AudioSpatialConfig, AudioSpatialEncoding

    cfg = AudioSpatialConfig(spatial=_cfg(), audio=_cfg(input_dim=2, features_per_level=1))
    enc = AudioSpatialEncoding(cfg)
    with torch.no_grad():
        enc.audio.table.uniform_(-1, 1)
    x = torch.rand(10, 3)
    a = torch.tensor([0.3, 0.8])
    y = enc(x, a)
    assert y.shape == (10, enc.output_dim) == (10, 8 + 4)
    torch.testing.assert_close(y, enc(x, a.expand(10, 2)))
    torch.testing.assert_close(y[:, :8], enc.spatial(x))
    assert (enc(x, torch.tensor([0.7, 0.1]))[:, 8:] - y[:, 8:]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="do not match"):
        enc(x, torch.rand(9, 2))


def test_reference_compiles_without_graph_breaks_and_matches_eager():
    enc = HashGridEncoding(_cfg(backend="torch", interpolation="smoothstep"))
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    explained = torch._dynamo.explain(enc)(torch.rand(64, 3))
    assert explained.graph_break_count == 0
    compiled = torch.compile(enc, dynamic=False)
    x = torch.rand(500, 3, requires_grad=True)
    g = torch.randn(500, enc.output_dim)
    y_c, y_e = compiled(x), enc(x)
    torch.testing.assert_close(y_c, y_e, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(y_c, (x, enc.table), g), torch.autograd.grad(y_e, (x, enc.table), g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


_AOT = r'''
import collections, re
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from nerf import hashgrid_triton as H

levels = {"offsets_ptr": "*i64", "sizes_ptr": "*i32", "scales_ptr": "*fp32", "res_ptr": "*i32", "hashed_ptr": "*i32",
          "N": "i32", "L": "i32"}


def build(fn, sig, constexprs):
    # pointers 16-byte aligned, as the JIT specialises them for torch's allocations
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(sig) if name.endswith("_ptr")}
    k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs), target=GPUTarget("cuda", 90, 32))
    ops = collections.Counter(re.findall(r"((?:ld|st|red|atom)\.global[.a-z0-9]*)", k.asm["ptx"]))
    return ",".join(f"{op}={n}" for op, n in sorted(ops.items())), len(k.asm["cubin"]) > 0


for D, dt, smooth in [(3, "fp32", False), (3, "fp16", True), (2, "fp32", True)]:
    sig = {"x_ptr": "*fp32", "table_ptr": "*" + dt, "out_ptr": "*fp32", **levels,
           "D": "constexpr", "F": "constexpr", "SMOOTH": "constexpr", "BLOCK": "constexpr"}
    print("fwd", D, dt, *build(H._fwd, sig, {"D": D, "F": 2, "SMOOTH": smooth, "BLOCK": 128}))
    sig = {"x_ptr": "*fp32", "table_ptr": "*" + dt, "gout_ptr": "*fp32", "gtable_ptr": "*fp32", "gx_ptr": "*fp32",
           **levels, "D": "constexpr", "F": "constexpr", "SMOOTH": "constexpr", "NEED_TABLE": "constexpr",
           "NEED_X": "constexpr", "BLOCK": "constexpr"}
    print("bwd", D, dt, *build(H._bwd, sig, {"D": D, "F": 2, "SMOOTH": smooth, "NEED_TABLE": True, "NEED_X": True,
                                            "BLOCK": 128}))
'''


def test_triton_kernels_compile_for_hopper_without_a_gpu():
    """The interpreter does not prove the kernels compile: build them for sm_90 (H100/H200) down to
    a cubin with the ptxas bundled in the triton wheel, no GPU needed, and check the backward's
    table updates are fire-and-forget reductions (``red``), not returning atomics."""
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _AOT], capture_output=True, text=True, cwd=root, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 6 and all(line.endswith("True") for line in lines), out.stdout
    for line in lines:
        kind, _, dtype, ops, _ = line.split()
        if kind == "bwd":  # table updates: vector fire-and-forget reductions, no returning atomics
            assert "red.global.gpu.relaxed.add.v2.f32=" in ops and "atom.global" not in ops, line
        if dtype == "fp32":  # a corner's two float32 features in one 8-byte load
            assert "ld.global.v2.b32=" in ops, line


def test_benchmark_runs_and_counts_the_floor(tmp_path, capsys):
    from scripts import bench_hashgrid as bench

    lay = grid_layout(HashGridConfig())
    # every row of a 2^4-entry toy table read: floor = points + features + touched rows
    toy = grid_layout(HashGridConfig(input_dim=2, num_levels=1, log2_table_size=4, base_resolution=4,
                                     per_level_scale=1.0))
    x = torch.rand(4096, 2)
    assert bench.touched_rows(x, toy) == toy.num_entries == 16
    f = bench.floor_bytes(4096, toy, 16, 4)
    assert f["fwd"] == 4096 * 2 * 4 + 4096 * 2 * 4 + 16 * 2 * 4
    assert f["bwd"] == 4096 * 2 * 4 + 4096 * 2 * 4 + 16 * 2 * 4
    assert bench.floor_bytes(1 << 20, lay, lay.num_entries, 2)["bwd"] == (1 << 20) * (12 + 128) + lay.num_entries * 4
    out = tmp_path / "bench.json"
    assert bench.main(["--device", "cpu", "--log2-points", "8", "--runs", "1", "--dtypes", "float32",
                       "--backends", "torch", "--interpreter-points", "0", "--json", str(out)]) == 0
    import json

    rows = json.loads(out.read_text())["rows"]
    assert [r["pass"] for r in rows] == ["fwd", "bwd", "fwd+bwd"] and all(r["ms"] > 0 for r in rows)
    assert "x floor" in capsys.readouterr().out


def test_auto_checks_a_fast_backend_before_using_it(monkeypatch, caplog):
    """``auto`` uses a fast backend only after it reproduced the reference; a wrong or failing
    one is replaced by torch with a warning (the Triton interpreter stands in for CUDA here)."""
    from nerf import hashgrid
    from nerf.hashgrid_triton import interpreting

    if not interpreting():
        pytest.skip("needs Triton's interpreter")
    monkeypatch.setattr(hashgrid, "available_backends", lambda device: ["triton", "torch"])
    cfg = _cfg(num_levels=2, log2_table_size=8)
    good = HashGridEncoding(cfg)
    assert good.backend_for("cpu") == "triton"
    x = torch.rand(10, 3)
    torch.testing.assert_close(good(x), hash_encode_torch(x, good.table, good.layout))

    import nerf.hashgrid_triton as ht

    real = ht.TritonHashEncode.apply
    monkeypatch.setattr(ht.TritonHashEncode, "apply", lambda *a: real(*a) * 1.01)  # 1% off
    with caplog.at_level("WARNING"):
        assert HashGridEncoding(cfg).backend_for("cpu") == "torch"
    assert "disagrees with the reference" in caplog.text

    def broken(*a):
        raise RuntimeError("no kernel image for this GPU")

    monkeypatch.setattr(ht.TritonHashEncode, "apply", broken)
    with caplog.at_level("WARNING"):
        assert HashGridEncoding(cfg).backend_for("cpu") == "torch"
    assert "no kernel image" in caplog.text

"""``HashGridEncoding``: Instant-NGP's multiresolution hash encoding as a ``torch.nn.Module`` with
interchangeable backends over one parameter layout.

Backends (``HashGridConfig.backend``):

- ``torch``: the readable reference (:mod:`nerf.hashgrid_torch`), any device, ``torch.compile``-able;
- ``triton``: the fused kernels (:mod:`nerf.hashgrid_triton`), CUDA (or Triton's interpreter on CPU);
- ``tcnn``: tiny-cuda-nn's kernels (:mod:`nerf.hashgrid_tcnn`) when ``tinycudann`` is installed;
- ``auto``: on CUDA the triton kernels when triton imports, else tiny-cuda-nn, else torch; on other
  devices torch. Before a fast backend is used it must reproduce the reference on a random probe
  table (once per module and device); if it fails or raises, ``auto`` warns and uses torch. The
  choice is logged once per device.

The parameter is ``table [E, F]`` (float32 or float16) whatever the backend, so a checkpoint
trained on a GPU with ``triton`` loads on a CPU with ``torch`` (``auto`` does that by itself).
Triton and tinycudann are imported only when their backend is chosen.
"""

from __future__ import annotations

import importlib.util
import logging

import torch
from torch import nn

from nerf.hashgrid_layout import GridLayout, HashGridConfig, grid_layout
from nerf.hashgrid_torch import hash_encode_torch

log = logging.getLogger(__name__)
_logged_auto: set[str] = set()


def available_backends(device: torch.device | str) -> list[str]:
    """Backends that can run on ``device``, fastest expected first (torch is always last)."""
    device = torch.device(device)
    found = []
    if device.type == "cuda":
        if importlib.util.find_spec("triton") is not None:
            found.append("triton")
        if importlib.util.find_spec("tinycudann") is not None:
            found.append("tcnn")
    return found + ["torch"]


def resolve_backend(requested: str, device: torch.device | str) -> str:
    """``auto`` -> the first of :func:`available_backends`; other names are checked to be
    importable and returned."""
    device = torch.device(device)
    if requested == "auto":
        return available_backends(device)[0]
    if requested == "triton" and importlib.util.find_spec("triton") is None:
        raise RuntimeError("hash grid backend 'triton' asked for but triton is not installed (pip install triton)")
    if requested == "tcnn" and importlib.util.find_spec("tinycudann") is None:
        raise RuntimeError("hash grid backend 'tcnn' asked for but tinycudann is not installed")
    return requested


class HashGridEncoding(nn.Module):
    """Encode points ``x [..., D]`` in ``[0, 1]^D`` (clamped) to features ``[..., L*F]`` float32.

    The table's gradient always flows; the input's gradient flows when ``x`` requires it (useful
    for deformation fields and for losses on the field's spatial gradient).
    """

    def __init__(self, cfg: HashGridConfig | None = None, **overrides):
        super().__init__()
        if cfg is None:
            cfg = HashGridConfig(**overrides)
        elif overrides:
            raise TypeError("give a HashGridConfig or keyword fields, not both")
        self.cfg = cfg
        self.layout: GridLayout = grid_layout(cfg)
        dtype = torch.float16 if cfg.table_dtype == "float16" else torch.float32
        table = torch.empty(self.layout.num_entries, cfg.features_per_level, dtype=torch.float32)
        nn.init.uniform_(table, -cfg.init_range, cfg.init_range)
        self.table = nn.Parameter(table.to(dtype))
        self._cache: dict[tuple[str, str], object] = {}
        self._backends: dict[str, str] = {}  # device -> backend in use

    @property
    def input_dim(self) -> int:
        return self.cfg.input_dim

    @property
    def output_dim(self) -> int:
        return self.cfg.output_dim

    def backend_for(self, device: torch.device | str) -> str:
        """The backend this module uses on ``device`` (for ``auto``: chosen and checked on first use)."""
        device = torch.device(device)
        key = str(device)
        if key not in self._backends:
            choice = resolve_backend(self.cfg.backend, device)
            if self.cfg.backend == "auto":
                if choice != "torch":
                    choice = self._checked(choice, device)
                if key not in _logged_auto:
                    log.info("hash grid: backend %s on %s", choice, device)
                    _logged_auto.add(key)
            self._backends[key] = choice
        return self._backends[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.cfg.input_dim:
            raise ValueError(f"points have {x.shape[-1]} coordinates, the encoding expects {self.cfg.input_dim}")
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.cfg.input_dim)
        y = self._encode(self.backend_for(flat.device), flat, self.table)
        return y.reshape(*lead, self.output_dim)

    def _encode(self, backend: str, flat: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """``flat [N, D]`` with ``table [E, F]`` through ``backend`` -> ``[N, L*F]`` float32."""
        if backend == "torch":
            return hash_encode_torch(flat, table, self.layout, self.cfg.interpolation)
        if backend == "triton":
            from nerf.hashgrid_triton import TritonHashEncode

            return TritonHashEncode.apply(flat, table, self._device_state("triton", flat.device),
                                          self.cfg.interpolation == "smoothstep")
        return self._device_state("tcnn", flat.device)(flat, table)

    def _checked(self, backend: str, device: torch.device, points: int = 4096) -> str:
        """``backend`` if it reproduces the reference on random points and a random table (relative
        error < 1e-3: float16 storage is shared by both), else ``"torch"`` with a warning."""
        gen = torch.Generator(device=device).manual_seed(0)
        with torch.no_grad():
            x = torch.rand(points, self.cfg.input_dim, device=device, generator=gen)
            probe = (torch.rand(self.table.shape, device=device, generator=gen) * 2 - 1).to(self.table.dtype)
            try:
                fast = self._encode(backend, x, probe)
                ref = hash_encode_torch(x, probe, self.layout, self.cfg.interpolation)
                err = float((fast - ref).norm() / ref.norm())
            except Exception as e:  # a backend that cannot run here must not take the module down
                log.warning("hash grid: backend %s failed on %s (%s); using torch", backend, device, e)
                return "torch"
        if not err < 1e-3:
            log.warning("hash grid: backend %s disagrees with the reference on %s (relative error %.3g); "
                        "using torch", backend, device, err)
            return "torch"
        return backend

    def _device_state(self, backend: str, device: torch.device):
        """Per-device helper objects (level tensors, tiny-cuda-nn module), built on first use."""
        key = (backend, str(device))
        if key not in self._cache:
            if backend == "triton":
                from nerf.hashgrid_triton import LevelTensors

                self._cache[key] = LevelTensors(self.layout, device)
            else:
                from nerf.hashgrid_tcnn import TcnnEncoder

                self._cache[key] = TcnnEncoder(self.cfg, self.layout, device)
        return self._cache[key]

    def extra_repr(self) -> str:
        c = self.cfg
        return (f"D={c.input_dim}, levels={c.num_levels}, F={c.features_per_level}, "
                f"table=2^{c.log2_table_size} {c.table_dtype}, res {c.base_resolution}..{int(self.layout.resolutions[-1]) - 1}, "
                f"{c.interpolation}, backend={c.backend}")

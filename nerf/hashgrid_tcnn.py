"""tiny-cuda-nn backend: a thin wrapper over ``tinycudann.Encoding``.

Used only when ``tinycudann`` imports (it needs a CUDA build the user installed). Our table layout
(:mod:`nerf.hashgrid_layout`) is tiny-cuda-nn's own for ``HashGrid``: the same level sizes and
offsets, row ``r`` of our ``[E, F]`` table is entries ``r*F : (r+1)*F`` of its flat parameter
vector. So mapping between the two is a reshape, and :func:`check_param_count` verifies on first
use that the installed version agrees (it raises rather than silently mixing up levels). Points
are clamped to ``[0, 1]`` before the call, as the other backends do.
"""

from __future__ import annotations

import torch

from nerf.hashgrid_layout import GridLayout, HashGridConfig


def tcnn_encoding_config(cfg: HashGridConfig) -> dict:
    """Our config as tiny-cuda-nn's ``encoding_config`` JSON."""
    return {
        "otype": "HashGrid",
        "n_levels": cfg.num_levels,
        "n_features_per_level": cfg.features_per_level,
        "log2_hashmap_size": cfg.log2_table_size,
        "base_resolution": cfg.base_resolution,
        "per_level_scale": cfg.level_scale,
        "interpolation": {"linear": "Linear", "smoothstep": "Smoothstep"}[cfg.interpolation],
    }


def table_to_tcnn(table: torch.Tensor) -> torch.Tensor:
    """``[E, F]`` -> tiny-cuda-nn's flat ``[E * F]`` parameter vector (a view)."""
    return table.reshape(-1)


def table_from_tcnn(params: torch.Tensor, features: int) -> torch.Tensor:
    """tiny-cuda-nn's flat parameters -> our ``[E, F]`` table (a view)."""
    return params.reshape(-1, features)


def check_param_count(n_params: int, layout: GridLayout) -> None:
    """Raise if tiny-cuda-nn allocated a different table than our layout describes."""
    ours = layout.num_entries * layout.features
    if n_params != ours:
        raise RuntimeError(
            f"tinycudann's HashGrid has {n_params} parameters, our layout {ours}: the installed tiny-cuda-nn "
            "computes level sizes differently, so tables cannot be shared; use backend='triton' or 'torch'")


class TcnnEncoder:
    """Calls tiny-cuda-nn's fused kernels with our table as the parameters."""

    def __init__(self, cfg: HashGridConfig, layout: GridLayout, device: torch.device):
        import tinycudann  # noqa: F401  (optional dependency, imported only here)
        from tinycudann import modules as tcnn_modules

        dtype = torch.float16 if cfg.table_dtype == "float16" else torch.float32
        self._module = tinycudann.Encoding(cfg.input_dim, tcnn_encoding_config(cfg), dtype=dtype).to(device)
        check_param_count(self._module.params.numel(), layout)
        self._function = tcnn_modules._module_function
        self._granularity = int(tcnn_modules._C.batch_size_granularity())

    def __call__(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """``x [N, D]``, ``table [E, F]`` -> ``[N, L*F]`` float32."""
        m = self._module
        n = x.shape[0]
        padded = -(-n // self._granularity) * self._granularity  # tiny-cuda-nn wants whole batches
        x = torch.nn.functional.pad(x.clamp(0.0, 1.0).to(torch.float32), (0, 0, 0, padded - n)).contiguous()
        params = table_to_tcnn(table.to(m.params.dtype)).contiguous()
        y = self._function.apply(m.native_tcnn_module, x, params, m.loss_scale)
        return y[:n, : m.n_output_dims].to(torch.float32)

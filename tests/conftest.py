import os
from pathlib import Path

import pytest

# Triton's interpreter runs the GPU kernels on CPU tensors (how CI tests them without a GPU). It
# must be switched on before triton is first imported; machines with CUDA run compiled kernels.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

SHARED_DATA = Path(os.environ.get("TALKFACE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch is a hard dependency
        has_cuda = False
    skip_cuda = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords and not has_cuda:
            item.add_marker(skip_cuda)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real test media folder (../shared/data); tests using it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test media not found at {SHARED_DATA} (set TALKFACE_SHARED_DATA)")
    return SHARED_DATA

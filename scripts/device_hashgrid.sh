#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the `device` tool): the hash grid's CUDA tests, then the
# benchmark. The table is printed last; the JSON goes to $OUT (or out/). Run from the repository
# root: `bash scripts/device_hashgrid.sh`. The device image has torch, triton and numpy but maybe not
# pytest: carry its wheels in wheels/ (pip download pytest -d wheels) and they are installed offline.
set -uo pipefail
out=${OUT:-out}
mkdir -p "$out"
if ! python -c "import pytest" 2>/dev/null && [ -d wheels ]; then
    python -m pip install -q --no-index --find-links wheels pytest >/dev/null 2>&1
fi
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv,noheader
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
if python -c "import pytest" 2>/dev/null; then
    python -m pytest -q -m cuda tests/test_hashgrid.py -p no:cacheprovider 2>&1 | tail -15
else
    echo "pytest not available: CUDA tests not run"
fi
python scripts/bench_hashgrid.py --json "$out/bench_hashgrid.json" "$@" 2>&1 | grep -v "^W[0-9]" | tail -60

"""Byte-reproducible ``.npz`` archives.

``numpy.savez_compressed`` stamps each member with the current time, so two runs with identical
arrays give different files. :func:`save_npz` writes the same format (a zip of ``.npy`` members,
readable by ``numpy.load``) with a fixed timestamp and member order.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_npz(path: str | os.PathLike, **arrays) -> Path:
    """Write ``arrays`` (name -> array-like) to ``path`` deflate-compressed, deterministically.

    Members are written in the order given. Object arrays are refused (they would need pickle).
    """
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, value in arrays.items():
            arr = np.asanyarray(value)
            if arr.dtype == object:
                raise ValueError(f"{path}: array {name!r} has dtype object; store strings as fixed-width unicode")
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr, allow_pickle=False)
            info = zipfile.ZipInfo(name + ".npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())
    return path

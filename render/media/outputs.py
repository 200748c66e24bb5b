"""Writing outputs safely: folder checks, temp siblings, and atomic replacement.

Every stage writes its files next to their final place under a temporary name and renames them
into place only when the work succeeded, so an interrupted or failed run never leaves a partial
file or folder where a finished one is expected.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from render.errors import OutputError

__all__ = ["ensure_writable_dir", "reserve_temp_file", "atomic_output_dir"]


def _reason(err: OSError) -> str:
    text = err.strerror or str(err)
    return text[:1].lower() + text[1:]


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create folder ``path`` (and its parents) if needed and check that files can be made in it.

    Raises :class:`OutputError` ``"cannot write to output folder PATH: <reason>"`` when the folder
    cannot be created (e.g. a parent is a regular file) or a file cannot be created inside it
    (read-only file system, permissions). The check really creates (and removes) a file, so it
    also holds for root, for whom ``os.access`` always says yes.
    """
    p = Path(path)
    try:
        if p.exists() and not p.is_dir():
            raise OutputError(f"cannot write to output folder {path}: exists and is not a folder")
        p.mkdir(parents=True, exist_ok=True)
        probe_file = p / f".write-test-{secrets.token_hex(4)}"
        with open(probe_file, "xb"):
            pass
        probe_file.unlink()
    except OutputError:
        raise
    except OSError as e:
        raise OutputError(f"cannot write to output folder {path}: {_reason(e)}") from None
    return p


def _temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A fresh hidden name next to ``path`` that keeps its suffix (ffmpeg picks formats by it)."""
    return path.with_name(f".{path.stem}.{tag}-{secrets.token_hex(4)}{path.suffix}")


def reserve_temp_file(path: str | os.PathLike) -> Path:
    """Create an empty temp file next to output file ``path`` and return its name.

    Checks, before any work is done, that ``path`` can be written: its folder must exist and
    accept new files, and ``path`` itself must not be a folder. Raises :class:`OutputError`
    naming ``path`` otherwise. The caller writes the temp file and ``os.replace``s it onto
    ``path`` on success, or deletes it on failure.
    """
    p = Path(path)
    parent = p.parent
    if p.is_dir():
        raise OutputError(f"cannot write {path}: is a folder")
    if not parent.exists():
        raise OutputError(f"cannot write {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise OutputError(f"cannot write {path}: {parent} is not a folder")
    tmp = _temp_sibling(p)
    try:
        # Created with the process umask (unlike mkstemp's 0600), so the final file gets normal
        # permissions after the rename.
        with open(tmp, "xb"):
            pass
    except OSError as e:
        raise OutputError(f"cannot write {path}: {_reason(e)}") from None
    return tmp


def remove_quietly(path: str | os.PathLike | None) -> None:
    """Delete a file if it exists, ignoring errors (cleanup after a failure)."""
    if path is None:
        return
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def atomic_output_dir(final_dir: str | os.PathLike) -> Iterator[Path]:
    """Build a folder under a temporary sibling name and put it in place only on success.

    Yields the temporary folder (a hidden sibling of ``final_dir``, on the same file system).
    When the block ends normally the temp folder replaces ``final_dir`` (an older ``final_dir`` is
    removed). When the block raises, the temp folder is removed, any older ``final_dir`` is left
    untouched, and the exception propagates. Raises :class:`OutputError` before yielding when the
    parent folder cannot be written or ``final_dir`` exists and is not a folder.

    The swap is two renames (old out of the way, new into place), so there is a brief moment
    with no ``final_dir``; if the second rename fails the old folder is put back.
    """
    final = Path(final_dir)
    if final.exists() and not final.is_dir():
        raise OutputError(f"cannot write to output folder {final_dir}: exists and is not a folder")
    parent = ensure_writable_dir(final.parent)
    tmp = parent / f".{final.name}.tmp-{secrets.token_hex(4)}"
    try:
        os.mkdir(tmp)  # 0o777 & ~umask, unlike mkdtemp's 0o700
    except OSError as e:
        raise OutputError(f"cannot write to output folder {final_dir}: {_reason(e)}") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    try:
        if final.exists():
            old = parent / f".{final.name}.old-{secrets.token_hex(4)}"
            os.rename(final, old)
        try:
            os.rename(tmp, final)
        except OSError:
            if old is not None:
                os.rename(old, final)
                old = None
            raise
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"cannot write to output folder {final_dir}: {_reason(e)}") from None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

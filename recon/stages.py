"""Resumable stages over a subject folder.

Each stage of ``talkface fit`` declares its outputs (files or folders inside the subject folder)
and a fingerprint of its inputs (the source video's hash, the options it depends on, the
fingerprints of the stages it reads from). ``meta.json`` records, per finished stage, that
fingerprint and the wall time. A rerun skips a stage whose record matches and whose outputs all
exist; anything else runs again. Outputs are built under temporary names and renamed into place
before the record is written, so an interrupted run leaves no output that a rerun would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from render.errors import OutputError

META = "meta.json"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(*parts) -> str:
    """A short stable hash of JSON-serialisable ``parts``."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_meta(folder: Path) -> dict:
    """The folder's ``meta.json`` (an empty dict when absent or unreadable)."""
    try:
        return json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return {}


def write_meta(folder: Path, meta: dict) -> None:
    """Write ``meta.json`` atomically."""
    tmp = folder / (META + ".partial")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, folder / META)


def _partial(path: Path) -> Path:
    """``a/b.png`` -> ``a/b.partial.png`` (the extension kept: writers choose formats by it)."""
    return path.with_name(path.stem + ".partial" + path.suffix)


class StageRunner:
    """Runs named stages in a subject folder, skipping those already done with the same inputs."""

    def __init__(self, folder: Path, base_meta: dict, log=print):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutputError(f"cannot write to output folder {self.folder}: {err.strerror or err}") from None
        old = read_meta(self.folder)
        same_source = old.get("source", {}).get("sha256") == base_meta.get("source", {}).get("sha256")
        # Same source: keep what earlier stages recorded; another source: start afresh.
        self.meta = {**(old if same_source else {}), **base_meta, "complete": False}
        self.meta.setdefault("stages", {})
        write_meta(self.folder, self.meta)
        self.log = log
        self.ran: list[str] = []
        self.skipped: list[str] = []

    def done(self, name: str, key: str, outputs: list[str]) -> bool:
        """Whether stage ``name`` finished earlier with fingerprint ``key`` and its outputs exist."""
        rec = self.meta["stages"].get(name)
        return bool(rec) and rec.get("fingerprint") == key and all((self.folder / o).exists() for o in outputs)

    @contextmanager
    def stage(self, name: str, key: str, outputs: list[str]) -> Iterator[dict[str, Path] | None]:
        """Context for one stage. Yields ``None`` when the stage can be skipped; otherwise a dict
        mapping each output name to the temporary path to build it at. On success the temporary
        paths are renamed into place and the stage recorded; on error they are removed."""
        if self.done(name, key, outputs):
            self.skipped.append(name)
            self.log(f"[{name}] up to date, skipped")
            yield None
            return
        self.meta["stages"].pop(name, None)
        self.meta["complete"] = False
        write_meta(self.folder, self.meta)
        temps = {o: _partial(self.folder / o) for o in outputs}
        for t in temps.values():
            _remove(t)
        t0 = time.perf_counter()
        try:
            yield temps
        except BaseException:
            for t in temps.values():
                _remove(t)
            raise
        for o, t in temps.items():
            if not t.exists():
                raise RuntimeError(f"stage {name} did not write {o}")
            _remove(self.folder / o)
            os.replace(t, self.folder / o)
        self.meta["stages"][name] = {"fingerprint": key, "seconds": round(time.perf_counter() - t0, 3)}
        write_meta(self.folder, self.meta)
        self.ran.append(name)

    def finish(self, **extra) -> dict:
        """Mark the folder complete (every stage done) and write ``meta.json``."""
        self.meta.update(extra)
        self.meta["complete"] = True
        write_meta(self.folder, self.meta)
        return self.meta


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()

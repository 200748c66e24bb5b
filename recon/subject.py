"""Opening a subject folder written by ``talkface fit``: the check every later stage makes first.

Stages after ``fit`` (audio-to-coefficient training, the NeRF, exporters) call
:func:`open_subject`. It refuses, with one line naming the folder and the problem, a folder that
does not exist, one whose ``fit`` never completed (interrupted, or stopped by bad input), one
missing a file the contract promises (``docs/formats.md``), and, when the stage is driven by
audio (``need_audio=True``), a subject fitted from a video without sound.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recon.stages import read_meta
from render.errors import TalkfaceError

REQUIRED_FILES = ("face_model.npz", "track.npz", "landmarks_raw.npz", "background.png",
                  "transforms_train.json", "transforms_val.json")
"""Files every complete subject folder has (besides ``meta.json``, ``frames/`` and ``masks/``)."""


class SubjectError(TalkfaceError):
    """A subject folder is missing, incomplete, or lacks what a stage needs."""


@dataclass(frozen=True)
class Subject:
    """A complete subject folder and the facts later stages need from ``meta.json``."""

    folder: Path
    meta: dict
    fps: float
    frame_count: int
    frame_size: tuple[int, int]
    """``(H, W)`` of the working frames."""
    has_audio: bool

    @property
    def audio_path(self) -> Path | None:
        """``audio.wav`` (16 kHz mono), or None for a subject without audio."""
        return self.folder / "audio.wav" if self.has_audio else None

    def frame_path(self, k: int) -> Path:
        """The working frame ``k`` (JPEG)."""
        return self.folder / "frames" / f"{k:06d}.jpg"


def open_subject(folder: str | Path, need_audio: bool = False) -> Subject:
    """Check ``folder`` is a complete subject folder and return its :class:`Subject`.

    Raises :class:`SubjectError` (one line naming the folder) when it is not; with
    ``need_audio=True`` also when the subject has no audio track.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise SubjectError(f"{folder}: no such subject folder (make one with `talkface fit VIDEO --out {folder}`)")
    meta = read_meta(folder)
    if not meta:
        raise SubjectError(f"{folder}: not a subject folder (no readable meta.json; `talkface fit` writes one)")
    if meta.get("complete") is not True:
        raise SubjectError(f"{folder}: the fit of this subject did not complete; rerun `talkface fit` on it "
                           "(it resumes where it stopped)")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    missing += [name + "/" for name in ("frames", "masks") if not (folder / name).is_dir()]
    has_audio = bool(meta.get("has_audio"))
    if has_audio and not (folder / "audio.wav").is_file():
        missing.append("audio.wav")
    if missing:
        raise SubjectError(f"{folder}: subject folder is missing {', '.join(missing)}; rerun `talkface fit` on it")
    if need_audio and not has_audio:
        source = meta.get("source", {}).get("file", "its video")
        raise SubjectError(f"{folder}: this subject has no audio ({source} had no sound track), and this stage "
                           "learns from speech; fit a video with sound")
    H, W = meta["frame_size"]
    return Subject(folder=folder, meta=meta, fps=float(meta["fps"]), frame_count=int(meta["frame_count"]),
                   frame_size=(int(H), int(W)), has_audio=has_audio)

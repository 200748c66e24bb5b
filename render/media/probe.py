"""What a media file holds, read from the header report of the ffmpeg binary.

imageio-ffmpeg ships ``ffmpeg`` but not ``ffprobe``, so :func:`probe` runs
``ffmpeg -hide_banner -i PATH`` (which reports the input and then exits with an error because no
output is given) and parses the ``Duration:`` and ``Stream #0:N`` lines of its stderr.

The small helpers here (:func:`ffmpeg_exe`, :func:`input_arg`, :func:`ffmpeg_reason`,
:func:`check_input_file`) are shared by :mod:`render.media.video` and :mod:`render.media.audio`.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from render.errors import MediaError

__all__ = ["MediaInfo", "probe", "ffmpeg_exe", "input_arg", "ffmpeg_reason", "check_input_file"]

PROBE_TIMEOUT_S = 60.0
"""Seconds ``ffmpeg -i`` may take to read a header before the file counts as unreadable."""


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary that imageio-ffmpeg ships (or ``IMAGEIO_FFMPEG_EXE``)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def input_arg(path: str | os.PathLike) -> str:
    """The ``-i`` argument for a local file.

    The ``file:`` prefix stops ffmpeg from reading a name such as ``take:2.mp4`` as a protocol
    or a leading ``-`` as an option.
    """
    return "file:" + os.fspath(Path(path).absolute())


def output_arg(path: str | os.PathLike) -> str:
    """The output argument for a local file (see :func:`input_arg`)."""
    return input_arg(path)


_LOG_PREFIX = re.compile(r"^\[[^\]]*\]\s*")
_NOISE = (
    "at least one output file must be specified",
    "misdetection possible",
    "error opening input file",
    "error opening output file",
    "conversion failed",
)


def ffmpeg_reason(stderr: str | bytes, limit: int = 160) -> str:
    """A short one-line reason from ffmpeg's stderr (the first specific complaint + the verdict).

    ``ffmpeg_reason("[in#0 @ 0x..] moov atom not found\\n... Error opening input files: Invalid
    data found when processing input")`` gives ``"moov atom not found; Invalid data found when
    processing input"``.
    """
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    specific: list[str] = []
    verdict = ""
    for raw in stderr.splitlines():
        line = _LOG_PREFIX.sub("", raw.strip()).strip()
        # Nested prefixes such as "[vost#0:0/x @ ..] [enc:x @ ..] msg".
        line = _LOG_PREFIX.sub("", line).strip()
        if not line:
            continue
        low = line.lower()
        if low.startswith("error opening input files:") or low.startswith("error opening input:"):
            verdict = line.split(":", 1)[1].strip()
            continue
        if any(n in low for n in _NOISE):
            continue
        if line not in specific:
            specific.append(line)
    parts = specific[:1] + ([verdict] if verdict and verdict not in specific[:1] else [])
    reason = "; ".join(parts) if parts else "unknown error"
    reason = " ".join(reason.split())  # one line
    if len(reason) > limit:
        reason = reason[: limit - 3] + "..."
    return reason


def check_input_file(path: str | os.PathLike) -> Path:
    """Raise :class:`MediaError` unless ``path`` names an existing regular file (or a device)."""
    p = Path(path)
    if not p.exists():
        raise MediaError(f"{path}: file not found")
    if p.is_dir():
        raise MediaError(f"{path}: is a folder, not a media file")
    return p


@dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` found in a media file. Fields of an absent stream are ``None``."""

    path: Path
    """The file probed."""
    duration_s: float | None
    """Container duration in seconds (``None`` when ffmpeg reports ``N/A``)."""
    has_video: bool
    """Whether there is a video stream (cover art / attached pictures do not count)."""
    width: int | None
    """Displayed width in pixels of the first video stream (after rotation metadata)."""
    height: int | None
    """Displayed height in pixels of the first video stream (after rotation metadata)."""
    fps: float | None
    """Nominal frame rate of the first video stream (the ``fps`` figure, else ``tbr``). For a
    variable-frame-rate file this is an average, not a promise."""
    video_codec: str | None
    """ffmpeg's codec name of the first video stream, e.g. ``"h264"``, ``"mpeg4"``."""
    has_audio: bool
    """Whether there is an audio stream."""
    audio_sample_rate: int | None
    """Sample rate in Hz of the first audio stream."""
    audio_channels: int | None
    """Channel count of the first audio stream."""
    audio_codec: str | None
    """ffmpeg's codec name of the first audio stream, e.g. ``"aac"``, ``"pcm_s16le"``."""
    rotation_deg: float = 0.0
    """Display rotation of the first video stream (ffmpeg applies it when decoding)."""


_DURATION = re.compile(r"Duration:\s*(?:(\d+):(\d+):(\d+(?:\.\d+)?)|N/A)")
_STREAM = re.compile(r"^\s*Stream #\d+:\d+.*?:\s*(Video|Audio|Subtitle|Data|Attachment):\s*(.*)$")
_SIZE = re.compile(r"(?<![\w])([1-9]\d*)x([1-9]\d*)(?![\w])")
_RATE = re.compile(r"(\d+(?:\.\d+)?)(k?)\s+(fps|tbr)\b")
_HZ = re.compile(r"(\d+)\s*Hz")
_ROTATION = re.compile(r"rotation of\s*(-?\d+(?:\.\d+)?)\s*degrees")
_NAMED_LAYOUTS = {
    "mono": 1,
    "stereo": 2,
    "downmix": 2,
    "quad": 4,
    "hexagonal": 6,
    "octagonal": 8,
    "hexadecagonal": 16,
}


def _channels(layout: str) -> int | None:
    layout = layout.strip().lower()
    m = re.match(r"(\d+)\s+channels", layout)
    if m:
        return int(m.group(1))
    base = layout.split("(", 1)[0].strip()
    if base in _NAMED_LAYOUTS:
        return _NAMED_LAYOUTS[base]
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", base)
    if m:  # "5.1" -> 6, "7.1.4" -> 12
        return sum(int(g) for g in m.groups() if g)
    return None


def _rate(text: str) -> float | None:
    rates = {}
    for value, kilo, kind in _RATE.findall(text):
        rates.setdefault(kind, float(value) * (1000.0 if kilo else 1.0))
    return rates.get("fps") or rates.get("tbr")


def parse_ffmpeg_header(stderr: str, path: str | os.PathLike) -> MediaInfo:
    """Parse the report ``ffmpeg -i`` prints for input #0 (exposed for tests)."""
    duration = None
    m = _DURATION.search(stderr)
    if m and m.group(1) is not None:
        duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))

    video: dict | None = None
    audio: dict | None = None
    current: dict | None = None
    for line in stderr.splitlines():
        if line.lstrip().startswith("Input #") and not line.lstrip().startswith("Input #0"):
            break  # only one input is ever given
        sm = _STREAM.match(line)
        if sm:
            kind, rest = sm.groups()
            current = None
            if kind == "Video" and video is None and "(attached pic)" not in rest:
                codec = rest.split(None, 1)[0].rstrip(",") if rest.strip() else None
                size = _SIZE.search(rest)
                video = current = {
                    "codec": None if codec in (None, "none") else codec,
                    "width": int(size.group(1)) if size else None,
                    "height": int(size.group(2)) if size else None,
                    "fps": _rate(rest),
                    "rotation": 0.0,
                }
            elif kind == "Audio" and audio is None:
                codec = rest.split(None, 1)[0].rstrip(",") if rest.strip() else None
                hz = _HZ.search(rest)
                channels = None
                if hz:
                    after = rest[hz.end():].lstrip(", ")
                    channels = _channels(after.split(",", 1)[0])
                audio = {
                    "codec": None if codec in (None, "none") else codec,
                    "rate": int(hz.group(1)) if hz else None,
                    "channels": channels,
                }
            continue
        if current is video and video is not None:
            rm = _ROTATION.search(line)
            if rm:
                video["rotation"] = float(rm.group(1))

    width = height = None
    rotation = 0.0
    if video:
        width, height, rotation = video["width"], video["height"], video["rotation"]
        if width and height and round(abs(rotation)) % 180 == 90:
            width, height = height, width
    return MediaInfo(
        path=Path(path),
        duration_s=duration,
        has_video=video is not None,
        width=width,
        height=height,
        fps=video["fps"] if video else None,
        video_codec=video["codec"] if video else None,
        has_audio=audio is not None,
        audio_sample_rate=audio["rate"] if audio else None,
        audio_channels=audio["channels"] if audio else None,
        audio_codec=audio["codec"] if audio else None,
        rotation_deg=rotation,
    )


def probe(path: str | os.PathLike) -> MediaInfo:
    """Read the streams and duration of a media file.

    Raises :class:`MediaError` when the file is missing, is a folder, or ffmpeg cannot open it
    ("``PATH: not a readable media file (ffmpeg: <reason>)``").
    """
    check_input_file(path)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", input_arg(path)]
    try:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise MediaError(
            f"{path}: not a readable media file (ffmpeg: no header after {PROBE_TIMEOUT_S:.0f} s)"
        ) from None
    stderr = proc.stderr.decode("utf-8", "replace")
    if not re.search(r"^Input #0\b", stderr, flags=re.MULTILINE):
        raise MediaError(f"{path}: not a readable media file (ffmpeg: {ffmpeg_reason(stderr)})")
    return parse_ffmpeg_header(stderr, path)

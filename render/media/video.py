"""Reading and writing video through the ffmpeg binary (subprocess pipes, raw RGB frames).

Reading resamples to a constant target frame rate with ffmpeg's ``fps`` filter, so frame ``i``
of any input (30 fps, variable frame rate, MPEG-4 Part 2, ...) shows the picture at time
``i / fps`` seconds from the start of the file. Frames are streamed; only :func:`read_video`
holds a whole video in memory.

Writing produces H.264 (yuv420p, BT.709 limited range, tagged) in MP4 with optional AAC audio,
byte-identical for identical input, and appears at its final path only when complete.
"""

from __future__ import annotations

import math
import numbers
import os
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from render.errors import MediaError, OutputError
from render.media.outputs import remove_quietly, reserve_temp_file
from render.media.probe import MediaInfo, ffmpeg_exe, ffmpeg_reason, input_arg, output_arg, probe

__all__ = ["Frame", "VideoReader", "read_video", "read_frames_at", "VideoWriter", "write_video"]

_NTSC_RATES = (Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001))

WRITER_THREADS = 4
"""x264 thread count of :class:`VideoWriter`. Fixed (not "auto") because x264's output depends
on its thread count; a fixed count gives the same bytes on every machine of the same build."""


def fps_fraction(fps: float) -> Fraction:
    """``fps`` as an exact ratio for ffmpeg: 29.97 -> 30000/1001, 25.0 -> 25/1."""
    if isinstance(fps, bool) or not (isinstance(fps, numbers.Real) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    for r in _NTSC_RATES:
        if abs(float(r) - float(fps)) < 0.005:
            return r
    return Fraction(fps).limit_denominator(1001)


def fit_size(width: int, height: int, max_size: int | None) -> tuple[int, int]:
    """Output ``(W, H)``: unchanged when it fits in ``max_size`` (or no limit), else scaled
    down keeping the aspect ratio to even dimensions with ``max(W, H) <= max_size``."""
    if max_size is None or max(width, height) <= max_size:
        return width, height
    if max_size < 2:
        raise ValueError(f"max_size must be >= 2, got {max_size}")
    scale = max_size / max(width, height)
    top = max_size - max_size % 2

    def even(v: float) -> int:
        return min(top, max(2, 2 * round(v / 2)))

    return even(width * scale), even(height * scale)


@dataclass(frozen=True)
class Frame:
    """One decoded frame."""

    index: int
    """Frame number at the reader's fps, from 0."""
    time_s: float
    """Presentation time in seconds from the start of the file: ``index / fps``."""
    image: np.ndarray
    """RGB pixels, ``uint8 [H, W, 3]``."""


def _stop(proc: subprocess.Popen) -> None:
    """Kill an ffmpeg child if still running and reap it."""
    if proc.poll() is None:
        proc.kill()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    proc.wait()


def _read_stderr(f) -> str:
    try:
        f.seek(0)
        return f.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return ""


class VideoReader:
    """Stream the frames of a video, resampled to a constant frame rate.

    ``fps``: target frame rate (ffmpeg ``fps`` filter: frames are dropped or repeated to the
    nearest source frame; variable-frame-rate input works). ``None`` uses the source's nominal
    rate (the same filter, so ``time_s = index / fps`` still holds).
    ``max_size``: when given and the frame is larger, scale down (area filter) so that
    ``max(H, W) <= max_size`` keeping the aspect ratio, with even dimensions.

    Iterating starts one ffmpeg process and yields :class:`Frame` objects (``image: uint8
    [H, W, 3]`` RGB); breaking out of the loop or :meth:`close` (also on leaving a ``with``
    block) kills it. Each new iteration decodes from the start again.

    Raises :class:`MediaError` when the file is missing, unreadable, has no video stream, or
    decodes to no frames ("``cannot read video PATH: contains no video frames``").
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = 25.0, max_size: int | None = None):
        self.path = Path(path)
        self._name = str(path)
        self.info: MediaInfo = probe(path)
        if not self.info.has_video:
            raise MediaError(f"cannot read video {path}: no video stream")
        if not self.info.width or not self.info.height:
            raise MediaError(f"cannot read video {path}: frame size unknown (unsupported codec?)")
        if fps is None:
            if not self.info.fps:
                raise MediaError(f"cannot read video {path}: frame rate unknown; pass fps explicitly")
            fps = self.info.fps
        self._fps = fps_fraction(fps)
        self.fps: float = float(self._fps)
        """Frame rate of the frames yielded."""
        if max_size is not None and (int(max_size) != max_size or max_size < 2):
            raise ValueError(f"max_size must be an integer >= 2 or None, got {max_size!r}")
        self.width, self.height = fit_size(self.info.width, self.info.height, max_size)
        self._procs: set[subprocess.Popen] = set()
        self._closed = False

    @property
    def size(self) -> tuple[int, int]:
        """``(W, H)`` of the frames yielded."""
        return self.width, self.height

    @property
    def num_frames_estimate(self) -> int | None:
        """About how many frames iteration yields (container duration x fps), or ``None``."""
        if self.info.duration_s is None:
            return None
        return int(round(self.info.duration_s * self.fps))

    def _command(self) -> list[str]:
        downscale = (self.width, self.height) != (self.info.width, self.info.height)
        flags = "area" if downscale else "bicubic"
        # fps first (cheap, on decoded frames), then one scale that both resizes and converts to
        # RGB. start_time=0 makes frame i the picture at i/fps in the file's time line (a video
        # stream that starts late repeats its first frame), which keeps it aligned with the audio.
        rate = f"{self._fps.numerator}/{self._fps.denominator}"
        vf = f"fps=fps={rate}:start_time=0,scale={self.width}:{self.height}:flags={flags}"
        return [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
            "-i", input_arg(self.path),
            "-map", "0:v:0", "-an", "-sn", "-dn",
            "-vf", vf, "-fps_mode", "passthrough",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        ]

    def __iter__(self) -> Iterator[Frame]:
        return self._frames()

    def _frames(self) -> Iterator[Frame]:
        if self._closed:
            raise ValueError(f"VideoReader for {self._name} is closed")
        h, w = self.height, self.width
        nbytes = h * w * 3
        err = tempfile.TemporaryFile()
        proc = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
            bufsize=max(nbytes, 1 << 16),
        )
        self._procs.add(proc)
        index = 0
        try:
            while True:
                image = np.empty((h, w, 3), dtype=np.uint8)
                view = memoryview(image).cast("B")
                got = 0
                while got < nbytes:
                    try:
                        n = proc.stdout.readinto(view[got:])
                    except (ValueError, OSError):
                        if self._closed:  # close() killed ffmpeg and closed the pipe
                            return
                        raise
                    if not n:
                        break
                    got += n
                if got < nbytes:  # end of stream (a partial trailing frame is dropped)
                    break
                yield Frame(index, index / self.fps, image)
                index += 1
            rc = proc.wait()
            if self._closed:
                return
            if index == 0:
                reason = ffmpeg_reason(_read_stderr(err)) if rc != 0 else ""
                raise MediaError(
                    f"cannot read video {self._name}: contains no video frames"
                    + (f" (ffmpeg: {reason})" if reason else "")
                )
            if rc != 0:
                raise MediaError(
                    f"cannot read video {self._name}: decoding failed after {index} frames "
                    f"(ffmpeg: {ffmpeg_reason(_read_stderr(err))})"
                )
        finally:
            _stop(proc)
            self._procs.discard(proc)
            err.close()

    def close(self) -> None:
        """Stop any running decode (ends open iterations)."""
        self._closed = True
        for proc in list(self._procs):
            _stop(proc)
        self._procs.clear()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"VideoReader({self._name!r}, fps={self.fps:g}, size={self.width}x{self.height})"


def read_video(
    path: str | os.PathLike, fps: float | None = 25.0, max_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a whole video: ``frames: uint8 [T, H, W, 3]`` RGB and ``times: float64 [T]`` seconds.

    Holds every frame in memory (``T*H*W*3`` bytes); use :class:`VideoReader` to stream.
    """
    with VideoReader(path, fps=fps, max_size=max_size) as reader:
        cap = max(1, (reader.num_frames_estimate or 0) + 2)
        frames = np.empty((cap, reader.height, reader.width, 3), dtype=np.uint8)
        n = 0
        for frame in reader:
            if n == len(frames):
                grow = np.empty((max(16, len(frames) // 4),) + frames.shape[1:], dtype=np.uint8)
                frames = np.concatenate([frames, grow])
            frames[n] = frame.image
            n += 1
        times = np.arange(n, dtype=np.float64) / reader.fps
    return (frames[:n] if n == len(frames) else frames[:n].copy()), times


SEEK_JOBS = 4
"""ffmpeg processes :func:`read_frames_at` runs at once (most of a seek is process start-up)."""


def read_frames_at(
    path: str | os.PathLike, times_s: Iterable[float], max_size: int | None = None, exact: bool = True
) -> list[np.ndarray | None]:
    """The pictures at ``times_s`` (seconds from the start of the file), each decoded by its own
    seek: one ``uint8 [H, W, 3]`` RGB image per time, or ``None`` where no frame starts at or
    after it (a time past the last frame). ``max_size`` scales down as :class:`VideoReader` does.

    ffmpeg seeks to the keyframe at or before each time. ``exact=True`` then decodes on to the
    first frame whose time is >= ``t`` (at ``t = i / fps`` the picture of :class:`VideoReader`'s
    frame ``i`` when ``fps`` is the source's rate); that costs up to one keyframe interval of
    decoding (x264's default: 250 frames) per time. ``exact=False`` returns the keyframe itself:
    one frame decoded per time whatever the source, for when any frame near ``t`` will do (times
    within one keyframe interval give the same picture). Up to :data:`SEEK_JOBS` seeks run at once.

    Raises :class:`MediaError` as :class:`VideoReader` does, and when a seek fails to decode.
    """
    info = probe(path)
    if not info.has_video:
        raise MediaError(f"cannot read video {path}: no video stream")
    if not info.width or not info.height:
        raise MediaError(f"cannot read video {path}: frame size unknown (unsupported codec?)")
    if max_size is not None and (int(max_size) != max_size or max_size < 2):
        raise ValueError(f"max_size must be an integer >= 2 or None, got {max_size!r}")
    times = [float(t) for t in times_s]
    for t in times:
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f"times must be finite and >= 0 seconds, got {t!r}")
    w, h = fit_size(info.width, info.height, max_size)
    flags = "area" if (w, h) != (info.width, info.height) else "bicubic"

    def start(t: float) -> subprocess.Popen:
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
            "-ss", f"{t:.6f}", *([] if exact else ["-noaccurate_seek", "-copyts"]), "-i", input_arg(path),
            "-map", "0:v:0", "-an", "-sn", "-dn", "-frames:v", "1",
            "-vf", f"scale={w}:{h}:flags={flags}",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
        ]
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def finish(t: float, proc: subprocess.Popen) -> np.ndarray | None:
        data, err = proc.communicate()
        if proc.returncode != 0:
            raise MediaError(f"cannot read video {path}: decoding at {t:.3f} s failed (ffmpeg: {ffmpeg_reason(err)})")
        return np.frombuffer(data, np.uint8).reshape(h, w, 3).copy() if len(data) == h * w * 3 else None

    frames: list[np.ndarray | None] = []
    running: list[tuple[float, subprocess.Popen]] = []  # in order of times
    try:
        for t in times:
            running.append((t, start(t)))
            if len(running) >= SEEK_JOBS:
                frames.append(finish(*running.pop(0)))
        while running:
            frames.append(finish(*running.pop(0)))
    finally:
        for _, proc in running:  # after an error: stop the others
            _stop(proc)
            proc.stderr.close()
    return frames


def _as_mono_float(audio, what: str) -> np.ndarray:
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ValueError(f"{what}: audio must be mono float32 [N], got shape {np.shape(audio)}")
    if a.size == 0:
        raise ValueError(f"{what}: audio is empty")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{what}: audio contains NaN or infinity")
    return np.clip(a, -1.0, 1.0)


class VideoWriter:
    """Write RGB frames to an H.264 MP4 (or MOV/MKV, by suffix), with optional mono AAC audio.

    ``size``: ``(W, H)``; inferred from the first frame when ``None``. Odd sizes are padded by
    one black pixel at the right/bottom (H.264 yuv420p needs even sizes): see ``output_size``.
    ``audio``: ``float32 [N]`` mono in [-1, 1] at ``sample_rate`` Hz, muxed as AAC as given
    (neither trimmed nor padded to the video's length). ``crf``/``preset``: x264 quality/speed.

    The file is written to a hidden temp sibling and renamed onto ``path`` when the writer is
    closed without error; an exception inside the ``with`` block (or :meth:`abort`) deletes it,
    so nothing partial ever appears at ``path``. Identical input gives byte-identical files
    (bit-exact flags, no metadata, fixed thread count).

    Raises :class:`OutputError` at construction when ``path`` cannot be written (its folder is
    missing or not a folder), and when ffmpeg fails.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        size: tuple[int, int] | None = None,
        audio: np.ndarray | None = None,
        sample_rate: int = 16000,
        crf: int = 18,
        preset: str = "veryfast",
    ):
        self.path = Path(path)
        self._name = str(path)
        self._fps = fps_fraction(fps)
        self.fps = float(self._fps)
        if not (0 <= crf <= 51):
            raise ValueError(f"crf must be in [0, 51], got {crf}")
        self.crf = int(crf)
        self.preset = preset
        if size is not None:
            w, h = (int(v) for v in size)
            if w <= 0 or h <= 0:
                raise ValueError(f"{path}: size must be positive (W, H), got {size}")
            size = (w, h)
        self._audio = None
        if audio is not None:
            if int(sample_rate) != sample_rate or sample_rate <= 0:
                raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
            self._audio = _as_mono_float(audio, self._name)
        self.sample_rate = int(sample_rate)
        self.size: tuple[int, int] | None = size
        self.frames_written = 0
        self._proc: subprocess.Popen | None = None
        self._err = None
        self._audio_tmp: str | None = None
        self._done = False
        # Checks the folder and reserves the temp name before any work.
        self._tmp: Path | None = reserve_temp_file(self.path)
        if size is not None:
            self._start()

    @property
    def output_size(self) -> tuple[int, int] | None:
        """``(W, H)`` in the file: ``size`` rounded up to even numbers."""
        if self.size is None:
            return None
        w, h = self.size
        return w + w % 2, h + h % 2

    def _command(self) -> list[str]:
        w, h = self.size
        ow, oh = self.output_size
        cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
            "-framerate", f"{self._fps.numerator}/{self._fps.denominator}", "-i", "pipe:0",
        ]
        if self._audio_tmp is not None:
            cmd += ["-f", "f32le", "-ar", str(self.sample_rate), "-ch_layout", "mono",
                    "-i", input_arg(self._audio_tmp)]
        vf = []
        if (ow, oh) != (w, h):
            vf.append(f"pad={ow}:{oh}:0:0:black")
        vf.append("scale=out_color_matrix=bt709:out_range=tv:flags=bicubic+accurate_rnd+full_chroma_int")
        vf.append("format=yuv420p")
        vf.append("setparams=range=tv:color_primaries=bt709:color_trc=bt709:colorspace=bt709")
        cmd += [
            "-map", "0:v:0", "-vf", ",".join(vf),
            "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf),
            "-pix_fmt", "yuv420p", "-threads:v", str(WRITER_THREADS),
            "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
            "-color_range", "tv",
        ]
        if self._audio_tmp is not None:
            cmd += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "128k"]
        cmd += [
            "-map_metadata", "-1", "-map_chapters", "-1",
            "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
            "-filter_threads", "1",
        ]
        if self.path.suffix.lower() in (".mp4", ".m4v", ".mov"):
            cmd += ["-movflags", "+faststart"]
        cmd.append(output_arg(self._tmp))
        return cmd

    def _start(self) -> None:
        if self._audio is not None:
            fd, self._audio_tmp = tempfile.mkstemp(prefix="talkface-audio-", suffix=".f32")
            with os.fdopen(fd, "wb") as f:
                self._audio.astype("<f4").tofile(f)
        self._err = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                self._command(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._err,
            )
        except OSError as e:
            self.abort()
            raise OutputError(f"cannot write video {self._name}: cannot start ffmpeg ({e})") from None

    def _fail(self, what: str) -> OutputError:
        reason = ffmpeg_reason(_read_stderr(self._err)) if self._err is not None else "unknown error"
        self.abort()
        return OutputError(f"cannot write video {self._name}: {what} (ffmpeg: {reason})")

    def write(self, frame: np.ndarray) -> None:
        """Append one frame, ``uint8 [H, W, 3]`` RGB of the writer's size."""
        if self._done:
            raise ValueError(f"VideoWriter for {self._name} is closed")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8:
            raise ValueError(f"{self._name}: frames must be uint8, got {frame.dtype}")
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"{self._name}: frames must be [H, W, 3] RGB, got shape {frame.shape}")
        if self.size is None:
            self.size = (frame.shape[1], frame.shape[0])
        if self._proc is None:
            self._start()
        w, h = self.size
        if frame.shape[:2] != (h, w):
            raise ValueError(
                f"{self._name}: frame {self.frames_written} has shape {frame.shape}, expected ({h}, {w}, 3)"
            )
        try:
            self._proc.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except (BrokenPipeError, OSError):
            self._proc.wait()
            raise self._fail(f"encoder stopped at frame {self.frames_written}") from None
        self.frames_written += 1

    def close(self) -> Path:
        """Finish the file and move it to ``path``. Returns ``path``."""
        if self._done:
            return self.path
        if self.frames_written == 0:
            self.abort()
            raise OutputError(f"cannot write video {self._name}: no frames were written")
        try:
            self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        rc = self._proc.wait()
        if rc != 0:
            raise self._fail("encoding failed")
        try:
            os.replace(self._tmp, self.path)
        except OSError as e:
            self.abort()
            raise OutputError(f"cannot write video {self._name}: {e.strerror or e}") from None
        self._tmp = None
        self._cleanup()
        self._done = True
        return self.path

    def abort(self) -> None:
        """Stop encoding and delete the temp file; nothing appears at ``path``."""
        if self._proc is not None:
            _stop(self._proc)
        remove_quietly(self._tmp)
        self._tmp = None
        self._cleanup()
        self._done = True

    def _cleanup(self) -> None:
        remove_quietly(self._audio_tmp)
        self._audio_tmp = None
        if self._err is not None:
            self._err.close()
            self._err = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self):
        try:
            if not self._done:
                self.abort()
        except Exception:
            pass


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    **kwargs,
) -> Path:
    """Write ``frames`` (each ``uint8 [H, W, 3]`` RGB) and optional mono ``audio`` to ``path``.

    ``kwargs`` go to :class:`VideoWriter` (``size``, ``crf``, ``preset``). Returns ``path``.
    """
    with VideoWriter(path, fps, audio=audio, sample_rate=sample_rate, **kwargs) as writer:
        for frame in frames:
            writer.write(frame)
    return writer.path

"""Audio I/O: load any audio (or a video's audio track) as mono float32, write 16-bit WAV.

Decoding goes through the ffmpeg binary, so every format ffmpeg reads works: 16/24/32-bit and
float WAV (including WAVE_FORMAT_EXTENSIBLE, which Python's ``wave`` rejects), any sample rate,
mono/stereo/surround, AAC/MP3 tracks of videos.
"""

from __future__ import annotations

import os
import subprocess
from math import gcd
from pathlib import Path

import numpy as np

from render.errors import MediaError, NoAudioStreamError, OutputError
from render.media.outputs import remove_quietly, reserve_temp_file
from render.media.probe import check_input_file, ffmpeg_exe, ffmpeg_reason, input_arg, probe

__all__ = ["load_audio", "write_wav", "resample"]


def _check_rate(sample_rate, name: str = "sample_rate") -> int:
    if isinstance(sample_rate, bool) or int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"{name} must be a positive integer (Hz), got {sample_rate!r}")
    return int(sample_rate)


def _decode(path, sample_rate: int, af: str) -> subprocess.CompletedProcess:
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error",
        "-i", input_arg(path),
        "-map", "0:a:0", "-vn", "-sn", "-dn",
        "-af", af,
        "-f", "f32le", "-c:a", "pcm_f32le", "pipe:1",
    ]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream of ``path`` to ``float32 [N]`` mono in [-1, 1] at ``sample_rate``.

    Channels are downmixed with ffmpeg's standard matrix normalised so that it cannot clip
    (stereo -> (L + R) / 2; surround uses the centre/side weights, LFE dropped). Sample 0 is
    time 0 of the file (an audio stream that starts late is padded with silence at the start).

    Raises :class:`NoAudioStreamError` ("``PATH: no audio stream``") for e.g. a silent video,
    :class:`MediaError` when the file is missing, a folder, unreadable, or decodes to nothing.
    """
    sample_rate = _check_rate(sample_rate)
    check_input_file(path)
    info = probe(path)
    if not info.has_audio:
        raise NoAudioStreamError(f"{path}: no audio stream")
    # rematrix_maxval=1 normalises the downmix matrix (plain "-ac 1" sums stereo as
    # 0.707*(L+R), which exceeds 1 for loud in-phase channels); first_pts=0 pads a late start.
    af = f"aresample={sample_rate}:ochl=mono:rematrix_maxval=1:first_pts=0"
    proc = _decode(path, sample_rate, af)
    if proc.returncode != 0 and info.audio_channels and info.audio_channels > 2:
        # Layouts swresample cannot downmix (e.g. unlabelled multichannel): average channels.
        n = info.audio_channels
        pan = "mono|c0=" + "+".join(f"{1.0 / n:.6f}*c{i}" for i in range(n))
        proc = _decode(path, sample_rate, f"pan={pan},aresample={sample_rate}:first_pts=0")
    if proc.returncode != 0:
        raise MediaError(f"cannot read audio {path}: ffmpeg: {ffmpeg_reason(proc.stderr)}")
    audio = np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)
    if audio.size == 0:
        raise MediaError(f"cannot read audio {path}: audio stream contains no samples")
    np.clip(audio, -1.0, 1.0, out=audio)
    return audio


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int) -> Path:
    """Write ``audio: float32 [N]`` (mono, clipped to [-1, 1]) as 16-bit PCM WAV; returns ``path``.

    Written to a temp sibling and renamed into place, so ``path`` never holds a partial file.
    Raises :class:`OutputError` when the folder is missing or cannot be written.
    """
    import soundfile as sf

    sample_rate = _check_rate(sample_rate)
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ValueError(f"{path}: audio must be mono float32 [N], got shape {np.shape(audio)}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{path}: audio contains NaN or infinity")
    a = np.clip(a, -1.0, 1.0)
    tmp = reserve_temp_file(path)
    try:
        sf.write(os.fspath(tmp), a, sample_rate, subtype="PCM_16", format="WAV")
        os.replace(tmp, path)
    except OSError as e:
        remove_quietly(tmp)
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        remove_quietly(tmp)
        raise
    return Path(path)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample ``audio: [N]`` (or ``[N, C]``, along axis 0) from ``sr_in`` to ``sr_out`` Hz.

    Polyphase filtering (``scipy.signal.resample_poly``); the output has
    ``ceil(N * sr_out / sr_in)`` samples, float32.
    """
    from scipy.signal import resample_poly

    sr_in = _check_rate(sr_in, "sr_in")
    sr_out = _check_rate(sr_out, "sr_out")
    a = np.asarray(audio, dtype=np.float32)
    if sr_in == sr_out:
        return a.copy()
    g = gcd(sr_in, sr_out)
    return resample_poly(a, sr_out // g, sr_in // g, axis=0).astype(np.float32)

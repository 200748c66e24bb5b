"""``talkface probe VIDEO``: decode a video as the toolkit will and report what it found.

Run it on your footage before fitting: it resamples to the working frame rate, counts the frames,
decodes the audio track (or reports it absent) and fails with one clear line on unusable files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import tyro


@dataclass
class ProbeConfig:
    """Decode VIDEO at the working frame rate and report its frames and audio."""

    video: tyro.conf.Positional[Path]
    """The video file to check."""
    fps: float = 25.0
    """Frame rate the toolkit resamples to."""


def probe_video(cfg: ProbeConfig) -> dict:
    """Decode ``cfg.video`` fully; returns a summary dict (raises MediaError on unusable input)."""
    from render.errors import NoAudioStreamError
    from render.media.audio import load_audio
    from render.media.video import VideoReader

    with VideoReader(cfg.video, fps=cfg.fps) as video:
        info = video.info  # VideoReader already refused files without video frames
        frames = sum(1 for _ in video)
        size = video.size
    try:
        audio_s = round(len(load_audio(cfg.video)) / 16000, 3)
    except NoAudioStreamError:
        audio_s = None
    return {
        "file": str(cfg.video),
        "source": {"size": [info.width, info.height], "fps": info.fps, "codec": info.video_codec, "duration_s": info.duration_s},
        "frames": frames,
        "fps": cfg.fps,
        "frame_size": list(size),
        "video_s": round(frames / cfg.fps, 3),
        "audio_s": audio_s,
    }


def main(cfg: ProbeConfig) -> None:
    summary = probe_video(cfg)
    print(json.dumps(summary))
    if summary["audio_s"] is None:
        print(f"{cfg.video}: no audio track (audio stages will refuse this video)")

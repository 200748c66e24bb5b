"""``talkface fit VIDEO --out SUBJECT``: thin wrapper over :func:`recon.pipeline.run_fit`."""

from __future__ import annotations

from recon.pipeline import FitPipelineConfig, run_fit
from recon.stages import read_meta


def main(cfg: FitPipelineConfig) -> None:
    folder = run_fit(cfg)
    meta = read_meta(folder)
    audio = "with audio" if meta.get("has_audio") else "NO AUDIO (audio stages will refuse this subject)"
    print(f"subject written to {folder}: {meta.get('frame_count')} frames, {audio}; stage seconds {meta.get('timings_s')}")

"""``talkface synth-subject``: thin wrapper over :func:`recon.synthetic.subject.make_synthetic_subject`."""

from __future__ import annotations

import json

from recon.synthetic.subject import SynthSubjectConfig, make_synthetic_subject


def main(cfg: SynthSubjectConfig) -> None:
    out = make_synthetic_subject(cfg)
    timings = json.loads((out / "timings.json").read_text())
    print(f"synthetic subject written to {out} ({cfg.seconds:g} s at {cfg.fps:g} fps); timings {timings}")

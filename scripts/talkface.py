"""The ``talkface`` command: parses a subcommand into its config dataclass and calls its ``main``.

Library code never sees the parsed arguments, only the config objects.
"""

from __future__ import annotations

import sys
from typing import Callable

from render.errors import TalkfaceError


def _subcommands() -> dict[str, tuple[type, Callable]]:
    from recon.pipeline import FitPipelineConfig
    from recon.synthetic.subject import SynthSubjectConfig
    from scripts.fit import main as fit_main
    from scripts.demo import DemoConfig
    from scripts.demo import main as demo_main
    from scripts.probe import ProbeConfig
    from scripts.probe import main as probe_main
    from scripts.synth_subject import main as synth_main

    return {
        "fit": (FitPipelineConfig, fit_main),
        "synth-subject": (SynthSubjectConfig, synth_main),
        "demo": (DemoConfig, demo_main),
        "probe": (ProbeConfig, probe_main),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen subcommand; returns the exit status."""
    import tyro

    from render.cpu_tuning import tune_glibc_malloc

    tune_glibc_malloc()  # the rasterizer's large per-frame temporaries: see its docstring
    commands = _subcommands()  # each config's docstring is its subcommand's help text
    cfg = tyro.extras.subcommand_cli_from_dict(
        {name: cls for name, (cls, _) in commands.items()},
        prog="talkface",
        description="Audio-driven talking faces on 3D face models.",
        args=sys.argv[1:] if argv is None else argv,
    )
    for _name, (cls, run) in commands.items():
        if isinstance(cfg, cls):
            run(cfg)
            return 0
    raise AssertionError(f"no subcommand for {type(cfg).__name__}")


def entry() -> None:
    """Console-script entry point: one clear error line and a non-zero exit on bad input."""
    try:
        code = main()
    except TalkfaceError as err:
        print(f"talkface: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("talkface: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    entry()

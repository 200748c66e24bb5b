"""Package imports stay light: no mediapipe, no eSpeak, no ffmpeg process at import time."""

import subprocess
import sys


def test_importing_packages_loads_no_heavy_optional_modules():
    code = (
        "import sys\n"
        "import render, render.rasterizer, render.cameras, render.media.video, render.media.audio\n"
        "import recon, recon.topology, recon.landmarks, recon.synthetic.subject, recon.synthetic.face\n"
        "import recon.synthetic.speech, recon.synthetic.visemes, audio2coeff, nerf, scripts.talkface\n"
        "import nerf.hashgrid, nerf.triplane, nerf.audio_spatial, nerf.hashgrid_tcnn\n"
        "heavy = [m for m in ('mediapipe', 'skimage', 'tensorflow', 'triton', 'tinycudann', 'librosa') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "", f"imported at package import: {out.stdout.strip()}"


def test_nerf_never_pulls_mediapipe():
    code = "import sys, nerf, nerf.hashgrid, nerf.triplane\nprint('mediapipe' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False"

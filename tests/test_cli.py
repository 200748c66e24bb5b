"""The ``talkface`` command: help on every subcommand, one-line errors with a non-zero exit."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scripts.talkface import main


def run_cli(*args, cwd=None):
    """Run ``talkface`` as a user would (a fresh process) -> CompletedProcess."""
    code = "from scripts.talkface import entry; entry()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


@pytest.mark.parametrize("sub", ["fit", "synth-subject", "demo", "probe"])
def test_help_for_every_subcommand(sub):
    with pytest.raises(SystemExit) as exc:
        main([sub, "--help"])
    assert exc.value.code == 0


def test_top_level_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for sub in ("fit", "synth-subject", "demo", "probe"):
        assert sub in out


def _error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("talkface: error:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _make(tmp_path: Path, name: str, *ffmpeg_args) -> Path:
    import imageio_ffmpeg

    out = tmp_path / name
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *ffmpeg_args, str(out)], check=True)
    return out


def test_bad_inputs_give_one_clear_line(tmp_path):
    random_bytes = tmp_path / "random.mp4"
    random_bytes.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    audio_only = _make(tmp_path, "speech.m4a", "-f", "lavfi", "-i", "sine=f=300:d=1")
    cases = {
        tmp_path / "missing.mp4": "file not found",
        random_bytes: "not a readable media file",
        audio_only: "no video stream",
        tmp_path: "",  # a folder
    }
    for path, problem in cases.items():
        proc = run_cli("probe", str(path))
        assert proc.returncode == 2, proc.stderr
        line = _error_line(proc)
        assert str(path) in line and problem in line, line
        assert "Traceback" not in proc.stderr


def test_zero_length_video(tmp_path):
    full = _make(tmp_path, "full.mp4", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:d=2", "-c:v", "libx264")
    truncated = tmp_path / "truncated.mp4"
    # A download that stopped early: the header (moved to the front by +faststart) promises two
    # seconds of video, but the media data is cut off.
    faststart = _make(tmp_path, "fs.mp4", "-i", str(full), "-c", "copy", "-movflags", "+faststart")
    data = faststart.read_bytes()
    mdat = data.index(b"mdat") - 4
    truncated.write_bytes(data[: mdat + 16])
    proc = run_cli("probe", str(truncated))
    assert proc.returncode == 2
    line = _error_line(proc)
    assert str(truncated) in line and "no video frames" in line, line


def test_video_without_audio_is_readable_and_reported(tmp_path):
    silent = _make(tmp_path, "silent.mp4", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=25:d=1", "-c:v", "libx264")
    proc = run_cli("probe", str(silent))
    assert proc.returncode == 0, proc.stderr
    assert '"frames": 25' in proc.stdout and '"audio_s": null' in proc.stdout
    assert "no audio track" in proc.stdout


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    target = blocker / "subject"
    proc = run_cli("synth-subject", "--out", str(target), "--seconds", "1")
    assert proc.returncode == 2
    line = _error_line(proc)
    assert str(blocker) in line
    assert blocker.read_text() == "not a folder"


def test_invalid_option_values(tmp_path):
    proc = run_cli("synth-subject", "--out", str(tmp_path / "s"), "--seconds", "-1")
    assert proc.returncode == 2 and "seconds" in _error_line(proc)
    proc = run_cli("synth-subject", "--out", str(tmp_path / "s"), "--seconds", "1", "--voice", "xx-nonexistent")
    assert proc.returncode == 2 and "xx-nonexistent" in _error_line(proc)
    assert not (tmp_path / "s").exists()


def test_demo_writes_a_playable_video_with_sound(tmp_path):
    import imageio.v3 as iio

    from render.media.audio import load_audio
    from render.media.probe import probe
    from render.media.video import read_video

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--seconds", "2", "--contact-frames", "4"]) == 0
    info = probe(out / "demo.mp4")
    assert info.has_audio and info.video_codec == "h264" and (info.width, info.height) == (1024, 512)
    frames, _ = read_video(out / "demo.mp4")
    assert len(frames) == 50
    # The left half is the talking subject (a photo: varied colours); the right half the shaded
    # mesh over a dark background: both non-trivial.
    assert frames[:, :, :512].std() > 30 and (frames[:, :, 512:].mean(axis=-1) > 100).mean() > 0.05
    audio = load_audio(out / "demo.mp4")
    assert abs(len(audio) / 16000 - 2.0) < 0.05 and np.abs(audio).max() > 0.05
    sheet = iio.imread(out / "contact_sheet.png")
    assert sheet.shape == (256, 4 * 512, 3)
    assert (out / "config.json").is_file() and (out / "subject" / "ground_truth.npz").is_file()


def test_fit_bad_inputs_exit_with_one_line(tmp_path):
    noface = _make(tmp_path, "noface.mp4", "-f", "lavfi", "-i", "testsrc=size=128x128:rate=25:d=1", "-c:v", "libx264")
    for video, problem in ((tmp_path / "missing.mp4", "file not found"), (noface, "no face")):
        proc = run_cli("fit", str(video), "--out", str(tmp_path / "subject"))
        assert proc.returncode == 2, proc.stderr
        line = _error_line(proc)
        assert str(video) in line and problem in line, line

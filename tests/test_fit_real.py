"""``talkface fit`` on the real videos in ../shared/data/video (skipped when absent)."""

import numpy as np
import pytest

from recon.pipeline import FitPipelineConfig, run_fit
from recon.stages import read_meta

SHORT = ["may_5s.mp4", "aoc_8s_mp4v.mp4", "face1_22fps_700px.mp4", "face4_30fps_700px.mp4"]


def _fit(video, out):
    folder = run_fit(FitPipelineConfig(video=video, out=out, preview=False), progress=False, log=lambda *_: None)
    meta = read_meta(folder)
    assert meta["complete"] and meta["has_audio"]
    with np.load(folder / "track.npz") as z:
        valid, err = z["valid"], z["reprojection_error"]
        n = len(valid)
    # Duration at 25 fps (variable-frame-rate and 30 fps sources are resampled).
    assert abs(n / 25.0 - meta["audio_info"]["audio_seconds"]) < 0.2
    assert valid.mean() > 0.95
    assert np.mean(err[valid]) <= 2.0
    return folder


@pytest.mark.parametrize("name", SHORT)
def test_real_short_videos_fit(shared_data, tmp_path, name):
    _fit(shared_data / "video" / name, tmp_path / "subject")


@pytest.mark.slow
def test_cnn2_fits(shared_data, tmp_path):
    _fit(shared_data / "video" / "cnn2_25fps.mp4", tmp_path / "subject")

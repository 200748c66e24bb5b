"""A full-length (30 s) synthetic subject: what mediapipe sees over the whole video."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_thirty_second_subject(tmp_path):
    from recon.synthetic.subject import SynthSubjectConfig, make_synthetic_subject
    from recon.tracking import track_landmarks

    out = make_synthetic_subject(SynthSubjectConfig(out=tmp_path / "s", seconds=30.0, seed=0), progress=False)
    gt = np.load(out / "ground_truth.npz")
    track = track_landmarks(out / "video.mp4", progress=False)
    lm = np.where(track.detected[:, None, None], track.landmarks, np.nan)
    assert len(lm) == 750
    found = ~np.isnan(lm[:, 0, 0])
    assert found.mean() >= 0.99
    iod = np.linalg.norm(lm[found][:, 263, :2] - lm[found][:, 33, :2], axis=1)
    opening = np.linalg.norm(lm[found][:, 13, :2] - lm[found][:, 14, :2], axis=1) / iod
    assert np.corrcoef(opening, gt["rig_weights"][found, 0])[0, 1] >= 0.8

"""Masks and background plate (recon.masks): known answers on synthetic input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from recon.masks import (
    JAW_ANGLES,
    LABEL_HEAD,
    LABEL_TORSO,
    BackgroundAccumulator,
    MaskConfig,
    head_zone_polygons,
    masked_median,
    read_labels_png,
    split_head_torso,
    write_labels_png,
)
from recon.topology import CHIN, FACE_OVAL, FOREHEAD
from render.errors import MediaError

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- synthetic subject


@pytest.fixture(scope="module")
def synth_frame(tmp_path_factory):
    """A frame of the built-in synthetic subject (astronaut, grey backdrop), its ground-truth
    landmarks [478, 2] and mediapipe's person probability."""
    from recon.masks import PersonSegmenter
    from recon.synthetic.subject import SynthSubjectConfig, make_synthetic_subject
    from render.media.video import VideoReader

    out = make_synthetic_subject(SynthSubjectConfig(out=tmp_path_factory.mktemp("synth") / "s", seconds=0.4, seed=1), progress=False)
    gt = np.load(out / "ground_truth.npz")
    pick = 6
    with VideoReader(out / "video.mp4") as reader:
        frame = next(f.image for f in reader if f.index == pick)
    with PersonSegmenter() as segment:
        prob = segment(frame)
    return frame, gt["landmarks_2d"][pick].astype(np.float64), prob


def _at(img, pts):
    p = np.round(np.asarray(pts)).astype(int)
    return img[p[..., 1], p[..., 0]]


def _face_axes(lm):
    up = lm[FOREHEAD] - lm[CHIN]
    height = np.hypot(*up)
    return up / height, height


def test_person_mask_covers_face_not_backdrop(synth_frame):
    frame, lm, prob = synth_frame
    assert prob.shape == frame.shape[:2] and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    assert (_at(prob, lm) >= 0.5).mean() >= 0.99  # the face is person
    for corner in (prob[:24, :24], prob[:24, -24:]):  # the grey studio backdrop above the shoulders
        assert corner.max() < 0.5


def test_head_and_torso_labels_on_synthetic_subject(synth_frame):
    _, lm, prob = synth_frame
    labels = split_head_torso(prob, lm)
    assert labels.dtype == np.uint8 and labels.shape == prob.shape
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert (_at(labels, lm[list(FACE_OVAL)]) == LABEL_HEAD).all()
    up, height = _face_axes(lm)
    # Hair above the forehead landmark (which sits at mid-forehead, under the fringe).
    for f in (0.2, 0.35):
        assert _at(labels, lm[FOREHEAD] + f * height * up) == LABEL_HEAD
    # Below the chin: neck and collar are torso; so is the neck under the jaw angles.
    for f in (0.15, 0.3, 0.5):
        assert _at(labels, lm[CHIN] - f * height * up) == LABEL_TORSO
    jaw_mid = lm[list(JAW_ANGLES)].mean(axis=0)
    assert _at(labels, (jaw_mid + lm[CHIN]) / 2 - 0.2 * height * up) == LABEL_TORSO


def test_labels_partition_the_person_mask(synth_frame):
    _, lm, prob = synth_frame
    person = prob >= 0.5
    strict = split_head_torso(prob, lm, MaskConfig(face_in_person=False))
    np.testing.assert_array_equal(strict > 0, person)  # head and torso: disjoint labels, union = person
    assert (strict == LABEL_HEAD).any() and (strict == LABEL_TORSO).any()
    # By default the (enlarged) face oval counts as person too, so the head always covers the face.
    labels = split_head_torso(person, lm)
    oval_poly, _ = head_zone_polygons(lm, MaskConfig(), person.shape)
    oval = np.zeros(person.shape, np.uint8)
    cv2.fillPoly(oval, [np.round(oval_poly).astype(np.int32)], 1)
    k = np.ones((3, 3), np.uint8)  # rounding of the polygon's edge: one pixel either way
    assert ((labels > 0) >= person).all()
    assert ((labels > 0) <= (person | (cv2.dilate(oval, k) > 0))).all()
    assert (labels[cv2.erode(oval, k) > 0] == LABEL_HEAD).all()
    assert ((labels > 0) & ~person).any()  # the test is not vacuous: the oval added some pixels


def test_no_face_makes_everything_person_torso(synth_frame):
    _, _, prob = synth_frame
    labels = split_head_torso(prob, None)
    np.testing.assert_array_equal(labels, (prob >= 0.5).astype(np.uint8))


def test_split_follows_head_roll(synth_frame):
    """Rotating mask and landmarks together rotates the labels: the neck line follows the roll."""
    _, lm, prob = synth_frame
    person = prob >= 0.5
    labels = split_head_torso(person, lm)
    centre = tuple(lm[list(FACE_OVAL)].mean(axis=0))
    M = cv2.getRotationMatrix2D(centre, 25.0, 1.0)
    size = person.shape[::-1]
    rot_person = cv2.warpAffine(person.view(np.uint8), M, size, flags=cv2.INTER_NEAREST) > 0
    rot_lm = lm @ M[:, :2].T + M[:, 2]
    got = split_head_torso(rot_person, rot_lm)
    want = cv2.warpAffine(labels, M, size, flags=cv2.INTER_NEAREST)
    for lab in (LABEL_HEAD, LABEL_TORSO):
        inter = ((got == lab) & (want == lab)).sum()
        union = ((got == lab) | (want == lab)).sum()
        assert inter / union > 0.97, (lab, inter / union)


def test_split_rejects_bad_input():
    person = np.zeros((32, 32), bool)
    with pytest.raises(ValueError):
        split_head_torso(np.zeros((32, 32, 1), bool), None)
    with pytest.raises(ValueError):
        split_head_torso(np.zeros((32, 32), np.int32), None)
    with pytest.raises(ValueError):
        split_head_torso(person, np.zeros((10, 3)))
    with pytest.raises(ValueError):
        split_head_torso(person, np.full((478, 3), np.nan))
    with pytest.raises(ValueError):
        MaskConfig(model_selection=2)


def test_person_segmenter_rejects_bad_input():
    from recon.masks import PersonSegmenter

    seg = PersonSegmenter()
    with pytest.raises(ValueError):
        seg(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError):
        seg(np.zeros((64, 64, 3), np.float32))
    seg.close()
    with pytest.raises(RuntimeError):
        seg(np.zeros((64, 64, 3), np.uint8))


def test_import_does_not_load_mediapipe():
    code = "import sys, recon.masks; sys.exit('mediapipe' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# --------------------------------------------------------------------------- background plate

H, W = 96, 128


def _true_background(seed=0):
    """Smooth colour gradients with mild texture, uint8 [H, W, 3]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:H, :W].astype(np.float64)
    base = np.stack([60 + 120 * x / W, 40 + 150 * y / H, 200 - 80 * (x + y) / (W + H)], axis=-1)
    tex = cv2.GaussianBlur(rng.normal(0, 12, (H, W, 3)), (0, 0), 1.0)
    return np.clip(base + tex, 0, 255).astype(np.uint8)


def _disc(cx, cy, r):
    y, x = np.mgrid[:H, :W]
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def _disc_video(n=60, r=34, halo=0, noise=0.0, seed=0):
    """A moving opaque disc (the "person", its exact mask) over a known background.

    Yields (frame, mask); ``halo`` paints the disc's colour that many pixels beyond the mask (a
    blended edge the segmentation leaves out); ``noise`` adds Gaussian pixel noise of that sigma.
    """
    rng = np.random.default_rng(seed)
    bg = _true_background()
    for t in range(n):
        cx = 64 + 22 * np.sin(2 * np.pi * t / n)
        cy = 50 + 6 * np.cos(2 * np.pi * t / n)
        mask = _disc(cx, cy, r)
        frame = bg.astype(np.float64)
        frame[_disc(cx, cy, r + halo)] = rng.uniform(0, 255, 3)  # the person's colour changes
        if noise:
            frame += rng.normal(0, noise, frame.shape)
        yield np.clip(np.round(frame), 0, 255).astype(np.uint8), mask


def _accumulate(cfg, **video):
    acc = BackgroundAccumulator(cfg)
    masks = []
    for frame, mask in _disc_video(**video):
        acc.add(frame, mask.astype(np.uint8))
        masks.append(mask)
    return acc, np.stack(masks)


def test_background_exact_where_uncovered_and_never_seen_exact():
    cfg = MaskConfig(bg_margin_px=0, bg_stride=1, bg_max_samples=16)
    acc, masks = _accumulate(cfg)
    plate, never_seen = acc.result()
    truth = _true_background()
    assert plate.dtype == np.uint8 and plate.shape == truth.shape
    want_never = masks.all(axis=0)
    assert want_never.sum() > 300  # the test has a real never-uncovered region
    np.testing.assert_array_equal(never_seen, want_never)
    np.testing.assert_array_equal(plate[~never_seen], truth[~never_seen])
    # Thinning kept the memory bounded and the samples spread over the whole video.
    assert cfg.bg_max_samples // 2 <= acc.num_samples < cfg.bg_max_samples
    assert acc.stride * acc.num_samples >= acc.frames_added > acc.stride * (acc.num_samples - 1)


def test_background_inpainted_region_is_plausible():
    acc, masks = _accumulate(MaskConfig(bg_margin_px=0))
    plate, never_seen = acc.result()
    truth = _true_background()
    ring = (cv2.dilate(never_seen.view(np.uint8), np.ones((9, 9), np.uint8)) > 0) & ~never_seen
    filled = plate[never_seen].astype(np.float64)
    around = truth[ring].astype(np.float64)
    # Inside the range of the surrounding background, close to its mean and to the smooth truth.
    assert (filled >= around.min(axis=0) - 1).all() and (filled <= around.max(axis=0) + 1).all()
    assert np.abs(filled.mean(axis=0) - around.mean(axis=0)).max() < 5
    assert np.abs(filled - truth[never_seen]).mean() < 8


def test_background_margin_keeps_halo_out():
    """The disc's colour bleeds 2 px beyond its mask; a 3 px margin keeps it out of the plate."""
    cfg = MaskConfig(bg_margin_px=3, bg_stride=2)
    acc, masks = _accumulate(cfg, halo=2)
    plate, never_seen = acc.result()
    kernel = np.ones((7, 7), np.uint8)
    covered = np.stack([cv2.dilate(m.view(np.uint8), kernel) > 0 for m in masks])
    np.testing.assert_array_equal(never_seen, covered.all(axis=0))
    np.testing.assert_array_equal(plate[~never_seen], _true_background()[~never_seen])


def test_background_median_rejects_noise():
    sigma = 4.0
    acc, _ = _accumulate(MaskConfig(bg_margin_px=0, bg_stride=1, bg_max_samples=64), noise=sigma, n=60)
    plate, never_seen = acc.result()
    err = np.abs(plate.astype(np.float64) - _true_background())[~never_seen]
    # One frame's noise has mean |error| 0.8 sigma; the median of many samples far less. Pixels
    # uncovered in few frames keep more of it, hence the loose 99th percentile.
    assert err.mean() < 0.25 * sigma
    assert np.percentile(err, 99) <= 1.5 * sigma


def test_small_uncovered_island_is_not_trusted():
    """A patch of 'person' the segmentation always misses (at the image edge) is inpainted
    instead of being taken as background and smeared over the never-seen region."""
    cfg = MaskConfig(bg_margin_px=0, bg_min_island_fraction=0.01)
    acc = BackgroundAccumulator(cfg)
    bg = _true_background()
    person = np.zeros((H, W), bool)
    person[40:, :] = True  # a static torso filling the bottom
    island = np.zeros((H, W), bool)
    island[80:90, :6] = True  # missed by the segmentation, still shows the torso's colour
    for _ in range(10):
        frame = bg.copy()
        frame[person] = (250, 120, 30)
        acc.add(frame, (person & ~island).astype(np.uint8))
    plate, never_seen = acc.result()
    np.testing.assert_array_equal(never_seen, person)
    assert np.abs(plate[never_seen].astype(int) - (250, 120, 30)).sum(axis=-1).min() > 60


def test_background_edge_cases():
    acc = BackgroundAccumulator()
    with pytest.raises(ValueError):
        acc.result()
    frame = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError):
        acc.add(frame, np.zeros((8, 9), np.uint8))
    acc.add(frame, np.ones((8, 8), np.uint8))  # the person covers everything
    with pytest.raises(ValueError):
        acc.add(np.zeros((9, 8, 3), np.uint8), np.zeros((9, 8), np.uint8))
    plate, never_seen = acc.result()
    assert never_seen.all() and (plate == 128).all()


@pytest.mark.parametrize("n", [1, 2, 7])
def test_masked_median_matches_reference(n):
    rng = np.random.default_rng(3)
    h, w = 5, 6
    samples = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    valid = rng.random((n, h, w)) < 0.6
    valid[:, 0, 0] = False  # no valid sample
    valid[:, 0, 1] = True  # all valid
    median, count = masked_median(list(samples), list(valid))
    np.testing.assert_array_equal(count, valid.sum(axis=0))
    for y in range(h):
        for x in range(w):
            vals = np.sort(samples[valid[:, y, x], y, x], axis=0)
            want = vals[(len(vals) - 1) // 2] if len(vals) else np.zeros(3)
            np.testing.assert_array_equal(median[y, x], want)  # lower median for even counts
    zeroed = samples * valid[..., None]
    np.testing.assert_array_equal(masked_median(zeroed, valid, zeroed=True)[0], median)


# --------------------------------------------------------------------------- label-map files


def test_labels_png_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (37, 53), dtype=np.uint8)
    p = write_labels_png(tmp_path / "000001.png", labels)
    back = read_labels_png(p)
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, labels)
    img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    assert img.ndim == 2  # single channel
    write_labels_png(p, labels == 2)  # bool maps too, overwriting
    np.testing.assert_array_equal(read_labels_png(p), (labels == 2).astype(np.uint8))
    assert sorted(os.listdir(tmp_path)) == ["000001.png"]


def test_labels_png_bad_files(tmp_path):
    with pytest.raises(MediaError, match="no such file"):
        read_labels_png(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(MediaError, match="not a readable PNG"):
        read_labels_png(tmp_path / "junk.png")
    cv2.imwrite(str(tmp_path / "rgb.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(MediaError, match="single-channel"):
        read_labels_png(tmp_path / "rgb.png")
    with pytest.raises(ValueError):
        write_labels_png(tmp_path / "x.png", np.zeros((4, 4), np.int32))


@pytest.mark.parametrize("where", ["mid-write", "before-rename"])
def test_failed_write_leaves_no_file(tmp_path, monkeypatch, where):
    import recon.masks as masks

    labels = np.ones((40, 40), np.uint8)
    new = tmp_path / "new.png"
    old = tmp_path / "old.png"
    write_labels_png(old, labels * 2)
    before = old.read_bytes()

    if where == "mid-write":

        class HalfWriter:
            def __init__(self, f):
                self.f = f

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                raise OSError(28, "No space left on device")

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

        monkeypatch.setattr(masks, "open", lambda *a, **k: HalfWriter(open(*a, **k)), raising=False)
        err = OSError
    else:

        def interrupted(*a, **k):
            raise KeyboardInterrupt

        monkeypatch.setattr(masks.os, "replace", interrupted)
        err = KeyboardInterrupt
    for path in (new, old):
        with pytest.raises(err):
            write_labels_png(path, labels)
    monkeypatch.undo()
    assert not new.exists()
    assert old.read_bytes() == before  # the previous file is intact
    assert sorted(os.listdir(tmp_path)) == ["old.png"]  # no temp files left behind

"""``talkface fit VIDEO --out SUBJECT``: a person's video in, a subject folder out.

Stages (each resumable, see :mod:`recon.stages`):

1. ``frames``: the working resolution (:mod:`recon.working_size`: by default the largest at
   which the head fits a 512x512 crop, never upscaled), then one decoding pass at the working fps
   and resolution. Per frame: mediapipe face mesh
   (tracking mode), selfie segmentation split into head and torso, the frame written as JPEG and
   its label map as PNG, frames sampled for the background plate. Writes ``frames/``,
   ``masks/``, ``landmarks_raw.npz``, ``background.png``.
2. ``audio``: the audio track to ``audio.wav`` (16 kHz mono), or a record that there is none.
3. ``fit``: camera, head pose, per-subject morphable model and expression (:mod:`recon.fitting`);
   eyes (:mod:`recon.eyes`). With ``--face-model bfm|flame`` the fit is then carried over to that
   research model (:func:`recon.face_models.transfer_fit`). Writes ``face_model.npz`` and
   ``track.npz``.
4. ``transforms``: the train/val split and ``transforms_train.json`` / ``transforms_val.json``.
5. ``preview``: ``preview.mp4`` (fitted mesh and landmarks over the video) and ``tracks.png``.

All files are documented in ``docs/formats.md``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tyro.conf import Positional

from recon.fitting import FitConfig
from recon.masks import MaskConfig
from recon.tracking import TrackingConfig
from recon.working_size import WorkingSizeConfig
from render.errors import MediaError, TalkfaceError

VERSION = "0.1.0"


@dataclass
class FitPipelineConfig:
    """Fit a person's talking video into a subject folder: landmarks, camera and head pose,
    per-subject morphable model, expression, blinks, gaze, masks, background, NeRF transforms."""

    video: Positional[Path]
    """The training video (any format ffmpeg reads)."""
    out: Path
    """The subject folder to write (created; a rerun resumes it)."""
    fps: float = 25.0
    """Working frame rate: the video is resampled to it."""
    max_size: int | None = None
    """Working resolution (longer side of the working frames). None: automatic, the face box fits
    working.crop crops: the largest size, never above the source's, at which the head crop
    (working.margin x the face box, at most the whole frame) fits working.crop x working.crop
    pixels; longer side <= 1024 when no face is found while probing (recon/working_size.py).
    An int forces that longer side: larger frames are downscaled to it. meta.json records the
    scale, the rule used and the face box."""
    val_fraction: float = 0.1
    """Fraction of the video, at its end, kept for validation."""
    jpeg_quality: int = 95
    """Quality of the frames written to frames/."""
    preview: bool = True
    """Write preview.mp4 and tracks.png."""
    working: WorkingSizeConfig = field(default_factory=WorkingSizeConfig)
    """Automatic working resolution (used when max_size is None)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Face landmark tracking (its max_size is not used here: see max_size above)."""
    masks: MaskConfig = field(default_factory=MaskConfig)
    """Person / head / torso masks and the background plate."""
    fit: FitConfig = field(default_factory=FitConfig)
    """Camera, pose and expression fitting."""
    face_model: Literal["builtin", "bfm", "flame"] = "builtin"
    """The morphable model written to face_model.npz and track.npz. builtin: mediapipe topology
    with the subject's own neutral and expression basis (no download). bfm / flame: a research
    model file you supply (--face-model-path; docs/face_models.md): the built-in fit runs first
    (camera, pose, expression), then the research model's identity and expressions are fitted
    to its 3D landmarks and the head pose is re-expressed for it."""
    face_model_path: Path | None = None
    """The research model's file: Deep3DFaceRecon's BFM_model_front.mat (bfm) or FLAME 2020's
    generic_model.pkl (flame). Required with --face-model bfm or flame."""
    face_model_landmarks: Path | None = None
    """FLAME's landmark embedding (landmark_embedding.npy, flame_static_embedding.pkl or
    mediapipe_landmark_embedding.npz). Required with --face-model flame; not used otherwise."""


def _frames_stage(cfg: FitPipelineConfig, tmp: dict[str, Path], progress: bool) -> dict:
    """Stage 1: decode once; landmarks, masks, frames, background."""
    import cv2
    from tqdm import tqdm

    from recon.masks import BackgroundAccumulator, PersonSegmenter, split_head_torso, write_labels_png
    from recon.tracking import FaceTracker, LandmarkTrack, check_usable, fill_gaps
    from render.media.video import VideoReader

    frames_dir, masks_dir = tmp["frames"], tmp["masks"]
    frames_dir.mkdir()
    masks_dir.mkdir()
    t = time.perf_counter()
    max_size, working = _working_size(cfg)
    raw, times = [], {"working_size": time.perf_counter() - t, "decode": 0.0, "landmarks": 0.0, "masks": 0.0, "write": 0.0}
    params = [cv2.IMWRITE_JPEG_QUALITY, int(cfg.jpeg_quality)]
    with VideoReader(cfg.video, fps=cfg.fps, max_size=max_size) as video, \
            FaceTracker(cfg.tracking) as tracker, PersonSegmenter(cfg.masks) as segment:
        info = video.info
        background = BackgroundAccumulator(cfg.masks)
        n_est = video.num_frames_estimate
        t = time.perf_counter()
        for frame in tqdm(video, total=n_est, desc="fit: frames", unit="frame", disable=not progress):
            t1 = time.perf_counter()
            times["decode"] += t1 - t
            image = frame.image
            lm = tracker(image)
            t2 = time.perf_counter()
            labels = split_head_torso(segment(image), lm, cfg.masks)
            background.add(image, labels)
            t3 = time.perf_counter()
            name = f"{frame.index:06d}"
            cv2.imwrite(str(frames_dir / f"{name}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
            write_labels_png(masks_dir / f"{name}.png", labels)
            raw.append(np.full((478, 3), np.nan, dtype=np.float32) if lm is None else lm.astype(np.float32))
            t = time.perf_counter()
            times["landmarks"] += t2 - t1
            times["masks"] += t3 - t2
            times["write"] += t - t3
        size = video.size  # (W, H) at working resolution
    landmarks = np.stack(raw)
    detected = ~np.isnan(landmarks[:, 0, 0])
    filled, usable = fill_gaps(landmarks, detected, cfg.tracking.max_gap)
    W, H = size
    track = LandmarkTrack(
        landmarks=filled.astype(np.float32), detected=detected, usable=usable, interpolated=usable & ~detected,
        frame_size=(H, W), source_size=(info.height, info.width), scale=W / info.width, fps=cfg.fps,
    )
    check_usable(track, str(cfg.video), cfg.tracking.min_usable_fraction)
    track.save(tmp["landmarks_raw.npz"])
    bg, never_seen = background.result()
    cv2.imwrite(str(tmp["background.png"]), bg[..., ::-1])
    return {"frame_count": len(landmarks), "frame_size": [H, W], "source_size": [info.height, info.width],
            "scale": W / info.width, **working, "source_fps": info.fps, "detected_fraction": float(detected.mean()),
            "usable_fraction": float(usable.mean()), "background_never_seen_fraction": float(never_seen.mean()),
            "frames_timing_s": {k: round(v, 3) for k, v in times.items()}}


def _working_size(cfg: FitPipelineConfig) -> tuple[int, dict]:
    """The ``max_size`` to decode at and what meta.json records about it: ``working_rule``
    (``"face"``: the head fits ``working.crop``; ``"fallback"``: no face while probing, longer side
    <= 1024; ``"fixed"``: ``cfg.max_size`` given) and ``face_box_px`` (median face box longer
    side in source pixels; None unless probed and found)."""
    from recon.working_size import choose_working_size

    if cfg.max_size is not None:
        return cfg.max_size, {"working_rule": "fixed", "face_box_px": None}
    ws = choose_working_size(cfg.video, cfg.working, cfg.tracking.max_faces, cfg.tracking.min_detection_confidence)
    box = None if ws.face_box_px is None else round(ws.face_box_px, 2)
    return ws.max_size, {"working_rule": ws.rule, "face_box_px": box}


def _audio_stage(cfg: FitPipelineConfig, tmp: dict[str, Path], has_audio: bool) -> dict:
    from render.media.audio import load_audio, write_wav

    if not has_audio:
        return {"has_audio": False}
    audio = load_audio(cfg.video, 16000)
    write_wav(tmp["audio.wav"], audio, 16000)
    return {"has_audio": True, "audio_seconds": round(len(audio) / 16000, 4)}


def _external_face_model(cfg: FitPipelineConfig, log=print):
    """Check the face-model options and load a research model: ``None`` for the built-in model,
    else ``(model, record)`` with ``record`` = name, files and their SHA-256 (what the fit stage's
    fingerprint and ``meta.json`` keep). Raises a one-line :class:`TalkfaceError` naming the file
    for a missing option, a missing, unreadable or malformed file."""
    from recon.face_models import FaceModelFileError, load_bfm, load_flame, require_correspondence
    from recon.stages import file_sha256

    choice = cfg.face_model
    path, landmarks = cfg.face_model_path, cfg.face_model_landmarks
    if choice not in ("builtin", "bfm", "flame"):
        raise TalkfaceError(f"--face-model must be builtin, bfm or flame, got {choice!r}")
    if choice == "builtin":
        if path is not None or landmarks is not None:
            given = str(path if path is not None else landmarks)
            raise TalkfaceError(
                f"{given}: --face-model-path / --face-model-landmarks are only used with --face-model bfm or flame"
                " (the default, builtin, needs no file)"
            )
        return None
    if path is None:
        expected = "BFM_model_front.mat" if choice == "bfm" else "generic_model.pkl"
        raise TalkfaceError(f"--face-model {choice} needs --face-model-path (the model file, e.g. {expected})")
    path = Path(path)
    if choice == "bfm" and landmarks is not None:
        raise TalkfaceError(f"{landmarks}: --face-model-landmarks is only used with --face-model flame"
                            " (BFM_model_front.mat has its own keypoints)")
    if choice == "flame" and landmarks is None:
        raise TalkfaceError(
            f"{path}: --face-model flame needs --face-model-landmarks (FLAME's landmark embedding:"
            " landmark_embedding.npy, flame_static_embedding.pkl or mediapipe_landmark_embedding.npz)"
        )
    try:
        model = load_bfm(path) if choice == "bfm" else load_flame(path, landmarks)
        require_correspondence(model)
        record = {"name": choice, "file": str(path.resolve()), "sha256": file_sha256(path)}
        if landmarks is not None:
            record.update(landmarks_file=str(Path(landmarks).resolve()), landmarks_sha256=file_sha256(landmarks))
    except OSError as err:  # e.g. no read permission
        raise FaceModelFileError(f"{err.filename or path}: cannot read the face-model file ({err.strerror or err})") from None
    log(f"[fit] face model {choice}: {path} ({model.num_vertices} vertices, {model.num_id} identity and"
        f" {model.num_exp} expression components, {len(model.landmark_vertices)} landmarks)")
    return model, record


def _fit_stage(cfg: FitPipelineConfig, folder: Path, tmp: dict[str, Path], external=None, log=print) -> dict:
    """Stage 3. ``external``: ``(model, record)`` from :func:`_external_face_model`, or None."""
    from recon.eyes import blink_signal, gaze
    from recon.fitting import fit_video
    from recon.tracking import LandmarkTrack
    from render.npz import save_npz

    track = LandmarkTrack.load(folder / "landmarks_raw.npz")
    res = fit_video(track.landmarks, track.usable, track.frame_size, cfg.fit, fps=track.fps)
    blink = blink_signal(track.landmarks, track.usable)
    gz = gaze(track.landmarks)
    usable = track.usable
    info = {"reprojection_error_px": float(np.nanmean(res.reprojection_error[usable])),
            "focal_px": float(res.K[0, 0]), "expression_components": int(res.model.num_exp)}
    pose = {"rotation": res.rotations.astype(np.float64), "rotation_matrix": res.rotation_matrices.astype(np.float64),
            "translation": res.translations.astype(np.float64)}
    extra = {}
    if external is None:
        model = res.model
        expression = res.exp_coeffs.astype(np.float32)
        identity = np.zeros(res.model.num_id, dtype=np.float32) if res.id_coeffs is None else res.id_coeffs.astype(np.float32)
    else:
        from recon.face_models import transfer_fit
        from render.rotations import matrix_to_axis_angle

        model, record = external
        tr = transfer_fit(model, res.model, res.exp_coeffs, res.rotation_matrices, res.translations, res.K,
                          res.valid, track.landmarks)
        expression = tr.exp_coeffs.astype(np.float32)
        identity = tr.id_coeffs.astype(np.float32)
        pose = {"rotation": matrix_to_axis_angle(tr.rotation_matrices).astype(np.float64),
                "rotation_matrix": tr.rotation_matrices.astype(np.float64),
                "translation": tr.translations.astype(np.float64)}
        extra = {"model_landmarks_2d": tr.landmarks_2d.astype(np.float32),
                 "model_reprojection_error": tr.reprojection_error.astype(np.float32)}
        info = {**info, "builtin_expression_components": info["expression_components"],
                "expression_components": int(model.num_exp), "identity_components": int(model.num_id),
                "face_model": {**record, **tr.info}}
        for w in tr.info["warnings"]:
            log(f"[fit] warning: {w}")
    model.save(tmp["face_model.npz"])
    save_npz(
        tmp["track.npz"],
        fps=np.float64(track.fps),
        image_size=np.array(track.frame_size, dtype=np.int64),
        intrinsics=res.K,
        **pose,
        expression=expression,
        identity=identity,
        blink=np.nan_to_num(blink).astype(np.float32),
        gaze=np.nan_to_num(gz).astype(np.float32),
        landmarks_2d=track.landmarks[..., :2].astype(np.float32),
        fitted_landmarks_2d=res.landmarks_2d.astype(np.float32),
        reprojection_error=res.reprojection_error.astype(np.float32),
        detected=track.detected,
        valid=track.usable,
        interpolated=track.interpolated,
        **extra,
    )
    return info


def _transforms_stage(cfg: FitPipelineConfig, folder: Path, tmp: dict[str, Path]) -> dict:
    from recon.nerf_transforms import split_frames, write_transforms

    with np.load(folder / "track.npz") as z:
        K, R, t, valid = z["intrinsics"], z["rotation_matrix"], z["translation"], z["valid"]
        size = tuple(int(x) for x in z["image_size"])
    train, val = split_frames(valid, cfg.val_fraction)
    write_transforms(tmp["transforms_train.json"], K, R, t, train, size)
    write_transforms(tmp["transforms_val.json"], K, R, t, val, size)
    return {"split": {"train": [int(train.min()), int(train.max())] if len(train) else [],
                      "val": [int(val.min()), int(val.max())] if len(val) else [],
                      "train_frames": int(len(train)), "val_frames": int(len(val))}}


def run_fit(cfg: FitPipelineConfig, progress: bool = True, log=print) -> Path:
    """Run (or resume) every stage; returns the subject folder."""
    from recon.stages import StageRunner, file_sha256, fingerprint
    from render.media.probe import probe

    t_start = time.perf_counter()
    video = Path(cfg.video)
    info = probe(video)
    if not info.has_video:
        raise MediaError(f"cannot read video {video}: no video stream")
    external = _external_face_model(cfg, log)  # bad face-model options fail here, before any stage
    source = {"file": str(video.resolve()), "sha256": file_sha256(video)}
    base = {"toolkit_version": VERSION, "source": source, "fps": cfg.fps, "kind": "subject"}
    runner = StageRunner(Path(cfg.out), base, log=log)
    folder = runner.folder
    (folder / "config.json").write_text(_config_json(cfg))
    meta = runner.meta

    size_rule = cfg.max_size if cfg.max_size is not None else asdict(cfg.working)
    k_frames = fingerprint("frames", source["sha256"], cfg.fps, size_rule, cfg.jpeg_quality, asdict(cfg.tracking), asdict(cfg.masks))
    with runner.stage("frames", k_frames, ["frames", "masks", "landmarks_raw.npz", "background.png"]) as tmp:
        if tmp is not None:
            meta["frames_info"] = _frames_stage(cfg, tmp, progress)
    k_audio = fingerprint("audio", source["sha256"])
    with runner.stage("audio", k_audio, ["audio.wav"] if info.has_audio else []) as tmp:
        if tmp is not None:
            meta["audio_info"] = _audio_stage(cfg, tmp, info.has_audio)
    k_fit = fingerprint("fit", k_frames, asdict(cfg.fit))
    if external is not None:  # the file's content, not its path, and the transfer's settings
        from recon import face_models as fm

        record = external[1]
        k_fit = fingerprint("fit", k_frames, asdict(cfg.fit), record["name"], record["sha256"],
                            record.get("landmarks_sha256"), fm.TRANSFER_SIGMA_M, fm.TRANSFER_JAW_WEIGHT)
    with runner.stage("fit", k_fit, ["face_model.npz", "track.npz"]) as tmp:
        if tmp is not None:
            meta["fit_info"] = _fit_stage(cfg, folder, tmp, external, log)
    k_tr = fingerprint("transforms", k_fit, cfg.val_fraction)
    with runner.stage("transforms", k_tr, ["transforms_train.json", "transforms_val.json"]) as tmp:
        if tmp is not None:
            meta.update(_transforms_stage(cfg, folder, tmp))
    if cfg.preview:
        from recon.preview import write_preview

        with runner.stage("preview", fingerprint("preview", k_fit), ["preview.mp4", "tracks.png"]) as tmp:
            if tmp is not None:
                write_preview(folder, tmp["preview.mp4"], tmp["tracks.png"], progress=progress)
    has_audio = bool(meta.get("audio_info", {}).get("has_audio"))
    runner.finish(has_audio=has_audio, frame_count=meta.get("frames_info", {}).get("frame_count"),
                  frame_size=meta.get("frames_info", {}).get("frame_size"),
                  timings_s={name: rec["seconds"] for name, rec in meta["stages"].items()},
                  last_run_seconds=round(time.perf_counter() - t_start, 3))
    return folder


def _config_json(cfg: FitPipelineConfig) -> str:
    import json

    return json.dumps(asdict(cfg), indent=2, default=str) + "\n"

"""``talkface synth-subject``: a talking-head video with ground truth, made only from shipped data.

Pipeline: eSpeak NG speech with phoneme timing (:mod:`recon.synthetic.speech`) -> visemes with
coarticulation (:mod:`recon.synthetic.visemes`) + blinks, brows, smile drift and head motion
(:mod:`recon.synthetic.motion`) -> the rigged astronaut mesh (:mod:`recon.synthetic.face`) ->
rasterised frames (:mod:`render.rasterizer`) -> ``video.mp4`` with the speech muxed in.

Files written in the output folder are documented in ``docs/formats.md``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from recon.synthetic.arkit import RIG_INDEX, RIG_NAMES
from recon.synthetic.motion import MotionConfig
from render.errors import TalkfaceError

VERSION = "0.1.0"


@dataclass
class SynthSubjectConfig:
    """Make the built-in synthetic talking subject: video.mp4 (with speech), audio.wav and
    ground_truth.npz, from the astronaut photo and eSpeak NG, with no download."""

    out: Path
    """Output folder; replaced as a whole when the run succeeds, untouched when it fails."""
    seconds: float = 30.0
    """Length of the video, seconds."""
    seed: int = 0
    """Random seed of the motion (head, blinks, brows) and of the default sentences."""
    text: str | None = None
    """What the subject says; by default built-in sentences chosen by ``seed``. Repeated or cut
    to fit ``seconds``."""
    voice: str = "en-us"
    """eSpeak NG voice name (e.g. en-us, en-gb, en-us+f3)."""
    rate: int = 165
    """Speaking rate, words per minute."""
    fps: float = 25.0
    """Frame rate of the video."""
    size: int = 512
    """Width and height of the video, pixels."""
    motion: MotionConfig = field(default_factory=MotionConfig)
    """Head motion, blinks and other non-speech motion."""


def animation_tracks(cfg: SynthSubjectConfig, phonemes, n_frames: int) -> dict[str, np.ndarray]:
    """Rig weights and head motion for ``n_frames`` frames (deterministic for ``cfg.seed``).

    Returns ``rig_weights [T, R]``, ``head_euler [T, 3]`` (yaw, pitch, roll radians),
    ``head_rotation_matrix [T, 3, 3]``, ``head_offset [T, 3]`` (metres) and ``blink_intervals [N, 2]``.
    """
    from recon.synthetic import motion
    from recon.synthetic.visemes import coarticulate

    rng = np.random.default_rng(cfg.seed)
    w = coarticulate(phonemes, cfg.fps, n_frames).astype(np.float64)
    blink, intervals = motion.blink_track(rng, n_frames, cfg.fps, cfg.motion)
    w[:, RIG_INDEX["eyeBlinkLeft"]] = blink
    w[:, RIG_INDEX["eyeBlinkRight"]] = blink
    w[:, RIG_INDEX["browInnerUp"]] = np.maximum(w[:, RIG_INDEX["browInnerUp"]], motion.brow_track(rng, n_frames, cfg.fps, cfg.motion))
    smile = motion.smile_track(rng, n_frames, cfg.fps, cfg.motion)
    for name in ("mouthSmileLeft", "mouthSmileRight"):
        w[:, RIG_INDEX[name]] = np.clip(w[:, RIG_INDEX[name]] + smile, 0, 1)
    euler, R, offset = motion.head_pose_track(rng, n_frames, cfg.fps, cfg.motion)
    return {
        "rig_weights": w,
        "head_euler": euler,
        "head_rotation_matrix": R,
        "head_offset": offset,
        "blink_intervals": np.asarray(intervals, dtype=np.float64).reshape(-1, 2),
    }


def pose_vertices(face, weights: torch.Tensor, R: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Deformed and posed vertices ``[B, V, 3]`` (camera space, metres).

    ``weights: [B, R]`` rig weights, ``R: [B, 3, 3]`` head rotations, ``offset: [B, 3]``. A vertex
    ``p`` (rest + rig) moves to ``h * (R (p - pivot) + pivot + offset) + (1 - h) * p`` with ``h`` its
    head weight: the face and hair rigidly, the neck blending, the background not at all.
    """
    dt = weights.dtype
    verts = torch.as_tensor(face.verts, dtype=dt)
    rig = torch.as_tensor(face.rig, dtype=dt)
    pivot = torch.as_tensor(face.pivot, dtype=dt)
    h = torch.as_tensor(face.head_weight, dtype=dt)[None, :, None]
    p = verts + torch.einsum("br,rvc->bvc", weights, rig)
    rigid = torch.einsum("bij,bvj->bvi", R, p - pivot) + pivot + offset[:, None]
    return h * rigid + (1 - h) * p


class FrameRenderer:
    """Renders the synthetic face mesh to RGB frames with the toolkit's rasterizer."""

    def __init__(self, face):
        from render.cameras import PinholeCamera

        self.face = face
        K = face.K
        self.camera = PinholeCamera(fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]), cy=float(K[1, 2]))
        self.faces = torch.as_tensor(face.faces, dtype=torch.long)
        self.attrs = torch.as_tensor(np.concatenate([face.uv, face.color, face.color_mix[:, None]], axis=1), dtype=torch.float32)
        self.photo = torch.as_tensor(face.photo, dtype=torch.float32) / 255.0
        self.size = face.photo.shape[:2]

    def __call__(self, verts_cam: torch.Tensor) -> np.ndarray:
        """``verts_cam: [B, V, 3]`` -> frames ``[B, H, W, 3]`` uint8."""
        from render.rasterizer import interpolate, rasterize, texture

        screen = self.camera.project(verts_cam.float())
        frags = rasterize(screen, self.faces, self.size)
        attr = interpolate(self.attrs, frags, self.faces)
        tex = texture(self.photo, attr[..., :2])
        mix = attr[..., 5:6]
        rgb = mix * attr[..., 2:5] + (1 - mix) * tex
        empty = (frags.tri_id < 0)[..., None]
        rgb = torch.where(empty, self.photo.expand_as(rgb), rgb)  # never happens on a closed sheet
        return (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def make_synthetic_subject(cfg: SynthSubjectConfig, progress: bool = True) -> Path:
    """Write the synthetic subject to ``cfg.out`` (see ``docs/formats.md``); returns the folder."""
    from tqdm import tqdm

    from recon.synthetic.face import build_synthetic_face
    from recon.synthetic.speech import speech_for_duration
    from render.media.audio import resample, write_wav
    from render.media.outputs import atomic_output_dir, ensure_writable_dir
    from render.media.video import VideoWriter

    if cfg.seconds <= 0:
        raise TalkfaceError(f"--seconds must be positive, got {cfg.seconds}")
    out = Path(cfg.out)
    ensure_writable_dir(out.parent if out.parent != Path("") else Path("."))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    speech = speech_for_duration(cfg.text, cfg.seconds, voice=cfg.voice, rate=cfg.rate, seed=cfg.seed)
    audio16k = resample(speech.audio, speech.sample_rate, 16000).astype(np.float32)
    timings["speech_s"] = time.perf_counter() - t0

    n = int(round(cfg.seconds * cfg.fps))
    tracks = animation_tracks(cfg, speech.phonemes, n)
    t1 = time.perf_counter()
    face = build_synthetic_face(cfg.size)
    timings["face_s"] = time.perf_counter() - t1

    weights = torch.as_tensor(tracks["rig_weights"])
    Rm = torch.as_tensor(tracks["head_rotation_matrix"])
    off = torch.as_tensor(tracks["head_offset"])
    lm3d = np.zeros((n, face.num_landmarks, 3))
    render_frames = FrameRenderer(face)
    t2 = time.perf_counter()
    with atomic_output_dir(out) as tmp:
        batch = 4
        with VideoWriter(tmp / "video.mp4", fps=cfg.fps, audio=audio16k, sample_rate=16000) as writer:
            for s in tqdm(range(0, n, batch), desc="synth-subject: render", unit="batch", disable=not progress):
                e = min(n, s + batch)
                posed = pose_vertices(face, weights[s:e], Rm[s:e], off[s:e])
                lm3d[s:e] = posed[:, : face.num_landmarks].numpy()
                for frame in render_frames(posed):
                    writer.write(frame)
        timings["render_s"] = time.perf_counter() - t2
        write_wav(tmp / "audio.wav", audio16k, 16000)

        K = face.K
        proj = lm3d @ K.T
        lm2d = proj[..., :2] / proj[..., 2:3]
        from render.npz import save_npz
        from render.rotations import matrix_to_axis_angle

        blink = np.stack([tracks["rig_weights"][:, RIG_INDEX["eyeBlinkLeft"]], tracks["rig_weights"][:, RIG_INDEX["eyeBlinkRight"]]], axis=1)
        save_npz(
            tmp / "ground_truth.npz",
            fps=np.float64(cfg.fps),
            image_size=np.array(face.photo.shape[:2], dtype=np.int64),
            rig_names=np.array(RIG_NAMES),
            rig_weights=tracks["rig_weights"].astype(np.float32),
            head_rotation=matrix_to_axis_angle(tracks["head_rotation_matrix"]),
            head_rotation_matrix=tracks["head_rotation_matrix"],
            head_euler=tracks["head_euler"],
            head_translation=face.pivot[None] + tracks["head_offset"],
            head_origin_rest=face.pivot,
            intrinsics=K,
            landmarks_3d=lm3d.astype(np.float32),
            landmarks_2d=lm2d.astype(np.float32),
            neutral_landmarks_3d=(face.verts[: face.num_landmarks] - face.pivot).astype(np.float32),
            blink=blink.astype(np.float32),
            blink_flags=blink > 0.5,
            blink_intervals=tracks["blink_intervals"],
            phoneme_symbols=np.array([p.symbol for p in speech.phonemes]),
            phoneme_intervals=np.array([[p.start, p.end] for p in speech.phonemes], dtype=np.float64).reshape(-1, 2),
        )
        config = asdict(cfg)
        config["out"] = str(cfg.out)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        meta = {
            "kind": "synthetic_subject",
            "toolkit_version": VERSION,
            "fps": cfg.fps,
            "frame_size": [int(face.photo.shape[0]), int(face.photo.shape[1])],
            "frame_count": n,
            "audio_sample_rate": 16000,
            "text": speech.text,
            "voice": cfg.voice,
            "rate": cfg.rate,
            "seed": cfg.seed,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        # Wall times differ from run to run: kept apart so every other file is reproducible.
        (tmp / "timings.json").write_text(json.dumps({k: round(v, 3) for k, v in timings.items()}, indent=2) + "\n")
    return out

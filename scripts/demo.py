"""``talkface demo``: run every stage that exists so far on the built-in synthetic subject.

Stages today: the synthetic subject (speech, animation, rendering of the photo mesh), then a
re-render of its ground-truth 3D face mesh with the toolkit's differentiable rasterizer (shaded,
antialiased), side by side with the video, with the speech muxed in. Later stages (fit,
audio-to-coefficients, neural renderer, NeRF) join here as they land.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from recon.synthetic.subject import SynthSubjectConfig, make_synthetic_subject


@dataclass
class DemoConfig:
    """Run every stage that exists so far on the built-in synthetic subject and write
    OUT/demo.mp4 (with sound) and OUT/contact_sheet.png."""

    out: Path = Path("out/demo")
    """Output folder."""
    seconds: float = 10.0
    """Length of the synthetic subject's video, seconds."""
    seed: int = 0
    """Random seed of the synthetic subject."""
    text: str | None = None
    """What the subject says (default: built-in sentences)."""
    contact_frames: int = 12
    """Frames on the contact sheet."""


def render_mesh_frames(landmarks_3d: np.ndarray, K: np.ndarray, size: tuple[int, int], zoom: float = 2.0, batch: int = 8):
    """Yield shaded renders ``[H, W, 3]`` uint8 of the face mesh at ``landmarks_3d: [T, 478, 3]``
    seen through ``K: [3, 3]`` magnified ``zoom`` times about the face (centred in the image)."""
    import torch

    from recon.topology import NUM_MESH_VERTICES, face_triangles
    from render.cameras import PinholeCamera
    from render.mesh import lambert, vertex_normals
    from render.rasterizer import antialias, interpolate, rasterize

    verts_all = torch.as_tensor(landmarks_3d[:, :NUM_MESH_VERTICES], dtype=torch.float32)
    faces = torch.as_tensor(face_triangles(landmarks_3d[0]), dtype=torch.long)
    # Zoom on the face: scale the image plane by `zoom` about the first frame's face centre.
    proj = landmarks_3d[0, :NUM_MESH_VERTICES] @ K.T
    centre = (proj[:, :2] / proj[:, 2:]).mean(axis=0)
    fx, fy, cx, cy = K[0, 0] * zoom, K[1, 1] * zoom, K[0, 2], K[1, 2]
    cx, cy = cx * zoom + (size[1] - 1) / 2 - centre[0] * zoom, cy * zoom + (size[0] - 1) / 2 - centre[1] * zoom
    cam = PinholeCamera(fx=float(fx), fy=float(fy), cx=float(cx), cy=float(cy))
    skin = torch.tensor([0.85, 0.72, 0.62])
    for s in range(0, len(verts_all), batch):
        verts = verts_all[s : s + batch]
        screen = cam.project(verts)
        frags = rasterize(screen, faces, size)
        normals = interpolate(vertex_normals(verts, faces), frags, faces)
        normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        shade = lambert(normals) * skin
        covered = (frags.tri_id >= 0)[..., None].float()
        background = torch.tensor([0.08, 0.09, 0.12])
        color = covered * shade + (1 - covered) * background
        color = antialias(color, frags, screen, faces)
        yield from (color.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()


def contact_sheet(frames: list[np.ndarray], columns: int = 4) -> np.ndarray:
    """Tile ``frames`` (each ``[H, W, 3]`` uint8) into one image, row by row."""
    h, w = frames[0].shape[:2]
    rows = -(-len(frames) // columns)
    sheet = np.zeros((rows * h, columns * w, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, columns)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = f
    return sheet


def main(cfg: DemoConfig) -> Path:
    import imageio.v3 as iio

    from render.media.audio import load_audio
    from render.media.outputs import ensure_writable_dir
    from render.media.video import VideoReader, VideoWriter

    out = Path(cfg.out)
    ensure_writable_dir(out)
    t0 = time.perf_counter()
    subject = make_synthetic_subject(SynthSubjectConfig(out=out / "subject", seconds=cfg.seconds, seed=cfg.seed, text=cfg.text))
    t_subject = time.perf_counter() - t0

    gt = np.load(subject / "ground_truth.npz")
    size = tuple(int(x) for x in gt["image_size"])
    audio = load_audio(subject / "video.mp4")
    n = len(gt["landmarks_3d"])
    picks = set(np.linspace(0, n - 1, cfg.contact_frames).round().astype(int).tolist())
    sheet_frames = []
    t1 = time.perf_counter()
    with VideoReader(subject / "video.mp4", fps=float(gt["fps"])) as video, \
            VideoWriter(out / "demo.mp4", fps=float(gt["fps"]), audio=audio, sample_rate=16000) as writer:
        for frame, mesh in zip(video, render_mesh_frames(gt["landmarks_3d"], gt["intrinsics"], size)):
            both = np.concatenate([frame.image, mesh], axis=1)
            writer.write(both)
            if frame.index in picks:
                sheet_frames.append(both[::2, ::2])
    partial = out / "contact_sheet.partial.png"
    iio.imwrite(partial, contact_sheet(sheet_frames))
    partial.replace(out / "contact_sheet.png")
    t_render = time.perf_counter() - t1
    timings = {"synth_subject_s": round(t_subject, 2), "mesh_render_s": round(t_render, 2), "total_s": round(time.perf_counter() - t0, 2)}
    config = asdict(cfg) | {"out": str(cfg.out)}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(f"demo written to {out / 'demo.mp4'} and {out / 'contact_sheet.png'}; timings {timings}")
    return out / "demo.mp4"

"""Human checks of a fit: ``preview.mp4`` (fitted mesh and landmarks over the video) and
``tracks.png`` (pose angles, the largest expression coefficients and blinks over time)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_WIREFRAME_EDGES = 20000
"""Meshes with more edges (BFM: ~105k) are drawn as a vertex subsample instead of a wireframe:
a wireframe that dense is a solid blob at preview resolution, and slow to draw."""
MAX_DOTS = 4000
"""Vertices drawn (evenly strided) for a mesh too dense for a wireframe."""
_CHUNK_VALUES = 4_000_000
"""Frames are projected in chunks of at most this many vertices x frames (bounds memory)."""


def fitted_vertices_2d(model, track: dict, vertices: np.ndarray | None = None,
                       frames: slice = slice(None)) -> np.ndarray:
    """Project the fitted model: ``[T, V, 2]`` pixels (``vertices``: only those, ``frames``: only
    those frames)."""
    from recon.morphable import project_posed

    verts = model.vertices_at(slice(None) if vertices is None else vertices,
                              track["identity"] if model.num_id else None, track["expression"][frames])  # [T, V, 3]
    return project_posed(verts, track["rotation_matrix"][frames], track["translation"][frames], track["intrinsics"])


def _mesh_edges(faces: np.ndarray) -> np.ndarray:
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    return np.unique(np.sort(e, axis=1), axis=0)


def _dots(img: np.ndarray, points: np.ndarray, color) -> None:
    """Mark ``points: [N, 2]`` (pixels) on ``img`` as 2x2 dots, in place (vectorised; cheap)."""
    h, w = img.shape[:2]
    xy = np.floor(points[np.isfinite(points).all(axis=1)]).astype(np.int64)
    for dx in (0, 1):
        for dy in (0, 1):
            x, y = xy[:, 0] + dx, xy[:, 1] + dy
            ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            img[y[ok], x[ok]] = color


def write_preview(folder: Path, video_path: Path, plot_path: Path, progress: bool = True, preset: str = "ultrafast") -> None:
    """Write the preview video (with the subject's audio when it has some) and the track plot."""
    import cv2
    from tqdm import tqdm

    from recon.morphable import MorphableModel
    from render.media.audio import load_audio
    from render.media.video import VideoWriter

    folder = Path(folder)
    model = MorphableModel.load(folder / "face_model.npz")
    with np.load(folder / "track.npz") as z:
        track = {k: z[k] for k in z.files}
    edges = _mesh_edges(model.faces)
    sub = None
    if len(edges) > MAX_WIREFRAME_EDGES:
        used = np.unique(model.faces)
        sub = used[:: max(1, int(np.ceil(len(used) / MAX_DOTS)))]
        edges = None
    n_frames = len(track["expression"])
    chunk = max(1, _CHUNK_VALUES // (model.num_vertices if sub is None else len(sub)))
    pts = None
    raw = track["landmarks_2d"]
    model_lm = track.get("model_landmarks_2d")  # research models: their landmark vertices
    valid = track["valid"]
    audio = load_audio(folder / "audio.wav") if (folder / "audio.wav").is_file() else None
    fps = float(track["fps"])
    # A check for the eye, not a deliverable: the fastest x264 preset keeps it cheap.
    with VideoWriter(video_path, fps=fps, audio=audio, sample_rate=16000, crf=23, preset=preset) as writer:
        for k in tqdm(range(n_frames), desc="fit: preview", unit="frame", disable=not progress):
            if k % chunk == 0:
                pts = fitted_vertices_2d(model, track, sub, slice(k, k + chunk))
            img = cv2.imread(str(folder / "frames" / f"{k:06d}.jpg"))
            if valid[k]:
                if edges is not None:
                    lines = np.round(pts[k % chunk][edges] * 4).astype(np.int32)  # 2 fractional bits
                    cv2.polylines(img, list(lines), False, (80, 220, 80), 1, cv2.LINE_AA, shift=2)
                else:
                    _dots(img, pts[k % chunk], (80, 220, 80))
                _dots(img, raw[k], (40, 40, 255))
                if model_lm is not None:
                    _dots(img, model_lm[k], (255, 200, 0))
            else:
                cv2.putText(img, "no face", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 255), 2)
            writer.write(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    plot_tracks(track, plot_path)


def plot_tracks(track: dict, path: Path, top_k: int = 5) -> None:
    """Pose angles (degrees), translation (cm), the ``top_k`` expression coefficients with the
    largest variance, and the blink signals, against time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from render.rotations import matrix_to_euler

    t = np.arange(len(track["rotation_matrix"])) / float(track["fps"])
    euler = np.rad2deg(matrix_to_euler(track["rotation_matrix"]))
    exp = track["expression"]
    top = np.argsort(-exp.std(axis=0))[:top_k]
    fig, ax = plt.subplots(4, 1, figsize=(12, 9), sharex=True)
    for i, name in enumerate(("yaw", "pitch", "roll")):
        ax[0].plot(t, euler[:, i], label=name)
    ax[0].set_ylabel("head rotation (deg)")
    trans = track["translation"] - np.nanmedian(track["translation"], axis=0)
    for i, name in enumerate("xyz"):
        ax[1].plot(t, trans[:, i] * 100, label=name)
    ax[1].set_ylabel("translation - median (cm)")
    for j in top:
        ax[2].plot(t, exp[:, j], label=f"exp {j}")
    ax[2].set_ylabel("expression coeff.")
    ax[3].plot(t, track["blink"][:, 0], label="left")
    ax[3].plot(t, track["blink"][:, 1], label="right")
    ax[3].set_ylabel("blink")
    ax[3].set_xlabel("time (s)")
    for a in ax:
        a.legend(loc="upper right", fontsize=8, ncol=5)
        a.grid(alpha=0.3)
    invalid = ~track["valid"]
    if invalid.any():
        for a in ax:
            a.fill_between(t, 0, 1, where=invalid, color="red", alpha=0.1, transform=a.get_xaxis_transform())
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=80)
    plt.close(fig)

"""talkface: audio-driven talking faces built on 3D face models."""

from setuptools import find_packages, setup

setup(
    name="talkface",
    version="0.1.0",
    description="Audio-driven talking faces on 3D face models: fit, animate from audio, render, export.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["recon*", "audio2coeff*", "render*", "nerf*", "scripts*"]),
    install_requires=[
        # The last mediapipe release that ships its face-mesh, face-detection and
        # selfie-segmentation models inside the wheel (0.10.30+ drops `solutions`).
        "mediapipe==0.10.21",
        "numpy<2",  # mediapipe 0.10.21 is built against numpy 1.x
        # Any recent torch; install the build for your hardware first (see README). Kept as a
        # range so an installed CPU or CUDA build is never replaced.
        "torch>=2.1",
        "scipy",
        "librosa",
        "soundfile",
        "imageio",
        "imageio-ffmpeg",
        "trimesh",
        "scikit-image",
        "espeakng-loader",
        "tyro",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "test": ["pytest", "pytest-timeout", "triton"],  # triton: its interpreter tests the GPU kernels on CPU
        "dev": ["pytest", "pytest-timeout", "triton", "ruff"],
        "triton": ["triton"],
    },
    entry_points={"console_scripts": ["talkface=scripts.talkface:entry"]},
)

"""Audio-conditioned NeRF with hash-grid encodings (AD-NeRF lineage).

So far: the multiresolution hash-grid encoding with interchangeable backends
(:mod:`nerf.hashgrid`, see ``docs/hashgrid.md``), ER-NeRF's tri-plane encoding
(:mod:`nerf.triplane`) and RAD-NeRF's audio-spatial encoding (:mod:`nerf.audio_spatial`).
Must never import mediapipe, directly or through :mod:`recon`; triton and tinycudann are imported
only when their backend is used.
"""

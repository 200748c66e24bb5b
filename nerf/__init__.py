"""Audio-conditioned NeRF with hash-grid encodings (AD-NeRF lineage).

Not implemented yet: the package exists so the layout and import order are fixed from the start.
Must never import mediapipe, directly or through :mod:`recon`.
"""

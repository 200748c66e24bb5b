"""Reconstruction: from a person's video to a subject folder (face topology, landmarks, fitting).

May import :mod:`render`; mediapipe is imported only inside the functions that need it.
"""

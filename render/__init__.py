"""Rendering base: cameras, rotations, the differentiable mesh rasterizer, media I/O.

This package imports none of the toolkit's other packages.
"""

"""Audio to expression, head pose and blink coefficients (FACIAL and ADEVP methods).

Not implemented yet: the package exists so the layout and import order are fixed from the start.
"""

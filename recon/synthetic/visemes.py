"""Phonemes -> visemes -> per-frame mouth rig weights, with coarticulation.

Three steps:

1. :data:`PHONEME_VISEMES` maps each eSpeak NG English phoneme mnemonic (as
   :mod:`recon.synthetic.speech` reports them, stress marks stripped) to one viseme, or to two for
   diphthongs and r-/l-coloured vowels (the mouth moves from the first shape to the second within
   the phoneme). Symbols not in the table fall back by their first letter or vowel class
   (:func:`phoneme_visemes`), never raising.
2. :data:`VISEME_TARGETS` gives each viseme a target over the mouth channels of
   :data:`recon.synthetic.arkit.RIG_NAMES` (``jawOpen``, ``mouthClose``, ``mouthFunnel``,
   ``mouthPucker``, ``mouthSmile*``, ``mouthStretch*``; blink and brow channels stay 0), and
   :data:`VISEME_DOMINANCE` how strongly the viseme holds the jaw and the lips.
3. :func:`coarticulate` blends the targets over time with dominance functions in the manner of
   Cohen & Massaro (1993): every viseme segment is a target with a dominance that is flat over the
   middle of the segment and decays exponentially away from it (faster after the segment than
   before it: anticipation reaches further than carry-over); each channel is
   ``sum_i D_i(t) * target_i / sum_i D_i(t)``. Consonants that leave the lips free (t, d, k, g, h)
   have low lip dominance, so a neighbouring rounded vowel shows through them; bilabials
   (p, b, m) dominate jaw and lips so the lips really close. A small Gaussian smoothing follows.

Shapes: ``weights: [T, R]`` with ``R = len(RIG_NAMES)``, frame ``k`` at time ``k / fps`` seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from recon.synthetic.arkit import RIG_INDEX, RIG_NAMES

MOUTH_CHANNELS: tuple[str, ...] = tuple(n for n in RIG_NAMES if n.startswith(("jaw", "mouth")))
"""Rig channels driven by speech; the others (blinks, brows) are left at 0 here."""

LIP_CHANNELS: tuple[str, ...] = MOUTH_CHANNELS[1:]
"""Mouth channels that belong to the lips (dominance group ``lips``); ``jawOpen`` is group ``jaw``."""


def _t(jaw=0.0, close=0.0, funnel=0.0, pucker=0.0, smile=0.0, stretch=0.0) -> dict[str, float]:
    """A symmetric mouth target (left and right channels equal)."""
    return {
        "jawOpen": jaw,
        "mouthClose": close,
        "mouthFunnel": funnel,
        "mouthPucker": pucker,
        "mouthSmileLeft": smile,
        "mouthSmileRight": smile,
        "mouthStretchLeft": stretch,
        "mouthStretchRight": stretch,
    }


VISEME_TARGETS: dict[str, dict[str, float]] = {
    # silence: the neutral, relaxed closed mouth
    "SIL": _t(),
    # consonants
    "PP": _t(jaw=0.03, close=1.00, pucker=0.10),  # p b m: lips pressed together, jaw nearly closed
    "FF": _t(jaw=0.10, close=0.45, stretch=0.10),  # f v: lower lip to the upper teeth
    "TH": _t(jaw=0.16, close=0.05, stretch=0.15),  # T D: tongue between the teeth
    "DD": _t(jaw=0.18, stretch=0.12, smile=0.05),  # t d n l: tongue tip, lips free
    "SS": _t(jaw=0.07, stretch=0.35, smile=0.20),  # s z: teeth together, lips spread
    "SH": _t(jaw=0.12, funnel=0.55, pucker=0.25),  # S Z tS dZ: lips protruded and rounded
    "KK": _t(jaw=0.24, stretch=0.08),  # k g N x: back of the tongue, lips free
    "HH": _t(jaw=0.30),  # h: takes the shape of the next vowel (low dominance)
    "RR": _t(jaw=0.15, funnel=0.35, pucker=0.25),  # r: slight rounding
    "WW": _t(jaw=0.08, funnel=0.35, pucker=0.85),  # w: tight rounding
    "YY": _t(jaw=0.10, stretch=0.30, smile=0.25),  # j and eSpeak's linking glide ';'
    # vowels (open -> close)
    "AA": _t(jaw=0.80, stretch=0.05),  # A: aa A@ a#: open, unrounded
    "AE": _t(jaw=0.68, stretch=0.25, smile=0.10),  # a (trap): open front, spread
    "OP": _t(jaw=0.65, funnel=0.30, pucker=0.05),  # 0 O2 (lot): open, slightly rounded
    "AO": _t(jaw=0.50, funnel=0.45, pucker=0.20),  # O: O@ (thought): open-mid, rounded
    "AH": _t(jaw=0.58, stretch=0.05),  # V (strut): open-mid central
    "EH": _t(jaw=0.45, stretch=0.25, smile=0.10),  # E e@ (dress): open-mid front, spread
    "ER": _t(jaw=0.28, funnel=0.25, pucker=0.10),  # 3: 3 VR (nurse, r-coloured schwa)
    "AX": _t(jaw=0.28, stretch=0.05),  # @ @2 (schwa): mid, relaxed
    "OW": _t(jaw=0.38, funnel=0.50, pucker=0.30),  # start of oU o@: mid, rounded
    "IH": _t(jaw=0.20, stretch=0.30, smile=0.15),  # I i (kit, happy): close front, spread
    "IY": _t(jaw=0.12, stretch=0.45, smile=0.30),  # i: (fleece): close front, most spread
    "UH": _t(jaw=0.20, funnel=0.35, pucker=0.45),  # U (foot): close back, rounded
    "UW": _t(jaw=0.12, funnel=0.45, pucker=0.80),  # u: (goose): close back, tightly rounded
}
"""Target weight per mouth channel of every viseme (channels not named are 0)."""

VOWEL_VISEMES = frozenset({"AA", "AE", "OP", "AO", "AH", "EH", "ER", "AX", "OW", "IH", "IY", "UH", "UW"})
"""Visemes of vowels (their targets are scaled by stress, see :class:`CoarticulationConfig`)."""

OPEN_VISEMES = frozenset({"AA", "AE", "OP", "AH"})
"""Visemes of open vowels (``jawOpen >= 0.5``)."""

VISEME_DOMINANCE: dict[str, tuple[float, float]] = {
    # (jaw, lips): how strongly a viseme holds jawOpen and the lip channels against its neighbours
    "SIL": (0.6, 0.6),
    "PP": (8.0, 8.0),  # lips must close: see CoarticulationConfig.bilabial_dominance
    "FF": (1.5, 4.0),
    "TH": (0.8, 0.8),
    "DD": (0.6, 0.3),
    "SS": (1.0, 0.8),
    "SH": (0.8, 2.0),
    "KK": (0.5, 0.3),
    "HH": (0.2, 0.2),
    "RR": (0.8, 1.2),
    "WW": (1.0, 3.0),
    "YY": (0.8, 1.0),
    "AA": (1.0, 1.0),
    "AE": (1.0, 1.0),
    "OP": (1.0, 1.2),
    "AO": (1.0, 1.5),
    "AH": (1.0, 1.0),
    "EH": (1.0, 1.0),
    "ER": (1.0, 1.2),
    "AX": (0.7, 0.7),
    "OW": (1.0, 1.5),
    "IH": (1.0, 1.0),
    "IY": (1.0, 1.2),
    "UH": (1.0, 1.5),
    "UW": (1.0, 2.0),
}
"""Dominance magnitude of every viseme over the jaw (``jawOpen``) and over the lips (the rest)."""

VISEME_SHARPNESS: dict[str, float] = {"PP": 2.0, "FF": 1.5}
"""Multiplier of the dominance decay rates of a viseme (default 1): lip closures are brief,
sharply timed gestures, so their strong dominance stays local instead of flattening the vowels
around them. ``PP`` uses :attr:`CoarticulationConfig.bilabial_sharpness`."""

PHONEME_VISEMES: dict[str, tuple[str, ...]] = {
    # pauses
    "_": ("SIL",),
    # bilabials, labiodentals, dentals
    "p": ("PP",), "b": ("PP",), "m": ("PP",),
    "f": ("FF",), "v": ("FF",),
    "T": ("TH",), "D": ("TH",),
    # alveolars (t# is the US flap, t[ a dental t, t2 a reduced t, n- syllabic n, ? a glottal stop)
    "t": ("DD",), "d": ("DD",), "n": ("DD",), "l": ("DD",),
    "t#": ("DD",), "t[": ("DD",), "t2": ("DD",), "d#": ("DD",), "n-": ("DD",), "l-": ("DD",), "l/": ("DD",),
    "?": ("DD",),
    "s": ("SS",), "z": ("SS",),
    "S": ("SH",), "Z": ("SH",), "tS": ("SH",), "dZ": ("SH",),
    # velars, glottal
    "k": ("KK",), "g": ("KK",), "N": ("KK",), "x": ("KK",),
    "h": ("HH",),
    # approximants (w# is Scottish "wh", ';' eSpeak's linking glide after i:)
    "r": ("RR",), "r-": ("RR",),
    "w": ("WW",), "w#": ("WW",),
    "j": ("YY",), ";": ("YY",),
    # monophthongs
    "a": ("AE",), "aa": ("AA",), "a#": ("AA",), "A:": ("AA",), "A#": ("AA",),
    "0": ("OP",), "O2": ("OP",),
    "O:": ("AO",), "O": ("AO",),
    "V": ("AH",),
    "E": ("EH",), "e": ("EH",),
    "3:": ("ER",), "3": ("ER",), "VR": ("ER",),
    "@": ("AX",), "@2": ("AX",), "@5": ("AX",),
    "I": ("IH",), "I2": ("IH",), "I#": ("IH",), "i": ("IH",),
    "i:": ("IY",),
    "U": ("UH",),
    "u:": ("UW",), "u": ("UW",),
    # diphthongs and coloured vowels: (onset, offset)
    "eI": ("EH", "IH"),
    "aI": ("AA", "IH"), "aI2": ("AE", "IH"), "aI@": ("AA", "AX"), "aI3": ("AA", "ER"),
    "aU": ("AA", "UH"),
    "OI": ("AO", "IH"),
    "oU": ("OW", "UH"), "o@": ("OW", "AX"),
    "e@": ("EH", "AX"),
    "i@": ("IY", "AX"), "i@3": ("IY", "ER"),
    "U@": ("UH", "AX"),
    "A@": ("AA", "AX"),
    "O@": ("AO", "AX"),
    "IR": ("IH", "RR"),
    "@L": ("AX", "DD"),
}
"""Visemes of eSpeak NG's English phoneme mnemonics (stress marks stripped). Covers everything the
shipped English voices emitted for a long varied text (see ``tests/test_speech.py``)."""

OPEN_VOWEL_PHONEMES = frozenset(s for s, v in PHONEME_VISEMES.items() if v[0] in OPEN_VISEMES)
"""Phonemes that start on an open vowel shape (``a``, ``A:``, ``aI``, ``aU``, ``0``, ``V``, ...)."""

_FIRST_LETTER: dict[str, str] = {
    "p": "PP", "b": "PP", "m": "PP", "f": "FF", "v": "FF", "T": "TH", "D": "TH",
    "t": "DD", "d": "DD", "n": "DD", "l": "DD", "L": "DD", "s": "SS", "z": "SS",
    "S": "SH", "Z": "SH", "c": "KK", "k": "KK", "g": "KK", "q": "KK", "N": "KK", "x": "KK", "X": "KK",
    "h": "HH", "H": "HH", "r": "RR", "R": "RR", "w": "WW", "W": "WW", "j": "YY", "J": "YY", "y": "YY",
    "a": "AA", "A": "AA", "0": "OP", "O": "AO", "o": "OW", "V": "AH", "E": "EH", "e": "EH",
    "3": "ER", "@": "AX", "I": "IH", "i": "IY", "Y": "IY", "U": "UH", "u": "UW",
}


def phoneme_visemes(symbol: str) -> tuple[str, ...]:
    """Visemes of one phoneme: the table entry, else a fallback (never raises).

    Fallbacks, in order: stress marks stripped; pause symbols (``_...``) to ``SIL``; the symbol
    with trailing modifiers (``# - : [ ; 2 3 5``) removed; the first letter's class
    (``p`` -> bilabial, ``a`` -> open vowel, ...); else the schwa ``AX``.
    """
    s = str(symbol).lstrip("',=")
    if s in PHONEME_VISEMES:
        return PHONEME_VISEMES[s]
    if not s or s.startswith("_"):
        return ("SIL",)
    t = s
    while len(t) > 1 and t[-1] in "#-:[;2345/":
        t = t[:-1]
        if t in PHONEME_VISEMES:
            return PHONEME_VISEMES[t]
    return (_FIRST_LETTER.get(s[0], "AX"),)


def is_known_phoneme(symbol: str) -> bool:
    """Whether ``symbol`` (stress marks allowed) has its own table entry (no fallback)."""
    s = str(symbol).lstrip("',=")
    return s in PHONEME_VISEMES or s.startswith("_")


def viseme_target(viseme: str) -> np.ndarray:
    """``[R]`` rig weights of one viseme (channels in :data:`RIG_NAMES` order)."""
    w = np.zeros(len(RIG_NAMES), np.float64)
    for name, value in VISEME_TARGETS[viseme].items():
        w[RIG_INDEX[name]] = value
    return w


def viseme_dominance(viseme: str) -> np.ndarray:
    """``[R]`` dominance of one viseme per channel (jaw value on ``jawOpen``, lips value on the lips)."""
    jaw, lips = VISEME_DOMINANCE[viseme]
    d = np.zeros(len(RIG_NAMES), np.float64)
    d[RIG_INDEX["jawOpen"]] = jaw
    for name in LIP_CHANNELS:
        d[RIG_INDEX[name]] = lips
    return d


@dataclass
class CoarticulationConfig:
    """Parameters of :func:`coarticulate` (dominance-function blending of viseme targets)."""

    anticipation: float = 22.0
    """Decay rate (1/s) of a segment's dominance *before* it: how far ahead a viseme is
    anticipated (dominance falls to 1/e at ``1/anticipation`` seconds before the plateau)."""
    carryover: float = 28.0
    """Decay rate (1/s) of a segment's dominance *after* it (carry-over coarticulation)."""
    exponent: float = 1.0
    """Shape ``c`` of the decay ``exp(-(rate * distance) ** c)``; 1 is Cohen & Massaro's exponential."""
    plateau: float = 0.6
    """Fraction of a segment (centred) over which its dominance stays at full strength."""
    bilabial_dominance: float = 8.0
    """Lip dominance of p, b, m (overrides :data:`VISEME_DOMINANCE`): high so the lips close even
    in short bilabials between open vowels."""
    bilabial_sharpness: float = 2.0
    """Multiplier of the decay rates of p, b, m (overrides :data:`VISEME_SHARPNESS`)."""
    diphthong_split: float = 0.45
    """Fraction of a two-viseme phoneme (diphthong) given to its first viseme."""
    stress_gain: tuple[float, float, float] = (0.85, 0.95, 1.0)
    """Scale of vowel targets for unstressed, secondary and primary stress."""
    amplitude: float = 1.0
    """Overall articulation strength: every mouth target is multiplied by it (then clipped)."""
    rest_dominance: float = 1e-3
    """Dominance of the neutral pose everywhere, so times far from any phoneme go to rest."""
    smoothing: float = 0.012
    """Standard deviation (seconds) of the Gaussian smoothing applied after blending; 0 for none."""
    internal_rate: float = 250.0
    """Rate (Hz) of the internal time grid on which the blend and smoothing are computed before
    sampling at the frame times (so results barely depend on ``fps``)."""


class _PhonemeLike(Protocol):
    symbol: str
    start: float
    end: float


def viseme_segments(phonemes: Iterable[_PhonemeLike], config: CoarticulationConfig | None = None):
    """Viseme segments of ``phonemes``: ``(visemes [S], starts [S], ends [S], stress [S])``.

    A diphthong becomes two segments split at ``config.diphthong_split``; zero-length phonemes are
    skipped.
    """
    cfg = config or CoarticulationConfig()
    vis, starts, ends, stress = [], [], [], []
    for p in phonemes:
        s, e = float(p.start), float(p.end)
        if not e > s:
            continue
        parts = phoneme_visemes(p.symbol)
        st = int(getattr(p, "stress", 0) or 0)
        if len(parts) == 1:
            bounds = [s, e]
        else:
            mid = s + cfg.diphthong_split * (e - s)
            bounds = [s, mid, e] if len(parts) == 2 else list(np.linspace(s, e, len(parts) + 1))
        for k, v in enumerate(parts):
            vis.append(v)
            starts.append(bounds[k])
            ends.append(bounds[k + 1])
            stress.append(st)
    return vis, np.asarray(starts, np.float64), np.asarray(ends, np.float64), np.asarray(stress, np.int64)


def coarticulate(
    phonemes: Iterable[_PhonemeLike],
    fps: float,
    n_frames: int,
    config: CoarticulationConfig | None = None,
) -> np.ndarray:
    """Per-frame rig weights ``[n_frames, R]`` float32 in [0, 1] for a phoneme sequence.

    ``phonemes``: objects with ``symbol``, ``start``, ``end`` (seconds) and optionally ``stress``
    (e.g. :class:`recon.synthetic.speech.Phoneme`); frame ``k`` is sampled at ``k / fps``. Only the
    mouth channels are non-zero. See the module docstring for the model.
    """
    from scipy.ndimage import gaussian_filter1d

    cfg = config or CoarticulationConfig()
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    n_frames = int(n_frames)
    R = len(RIG_NAMES)
    if n_frames <= 0:
        return np.zeros((0, R), np.float32)
    vis, starts, ends, stress = viseme_segments(phonemes, cfg)
    t_end = (n_frames - 1) / fps
    dt = 1.0 / cfg.internal_rate
    n_fine = int(np.ceil(t_end / dt)) + 2
    t = np.arange(n_fine) * dt
    num = np.zeros((n_fine, R), np.float64)
    den = np.full((n_fine, R), cfg.rest_dominance, np.float64)
    mouth = np.zeros(R, bool)
    mouth[[RIG_INDEX[n] for n in MOUTH_CHANNELS]] = True
    lips = np.zeros(R, bool)
    lips[[RIG_INDEX[n] for n in LIP_CHANNELS]] = True
    reach = 12.0 / min(cfg.anticipation, cfg.carryover)  # beyond this dominance is < e^-12
    for v, s, e, st in zip(vis, starts, ends, stress):
        target = viseme_target(v) * cfg.amplitude
        if v in VOWEL_VISEMES:
            target = target * cfg.stress_gain[int(np.clip(st, 0, 2))]
        dom = viseme_dominance(v)
        if v == "PP":
            dom[lips] = cfg.bilabial_dominance
        dom[~mouth] = 0.0
        sharp = cfg.bilabial_sharpness if v == "PP" else VISEME_SHARPNESS.get(v, 1.0)
        c, half = 0.5 * (s + e), 0.5 * (e - s) * cfg.plateau
        lo = max(0, int(np.floor((s - reach) / dt)))
        hi = min(n_fine, int(np.ceil((e + reach) / dt)) + 1)
        if hi <= lo:
            continue
        tt = t[lo:hi]
        before = np.maximum(0.0, (c - half) - tt)
        after = np.maximum(0.0, tt - (c + half))
        x = sharp * (cfg.anticipation * before + cfg.carryover * after)
        shape = np.exp(-(x**cfg.exponent))
        D = shape[:, None] * dom[None, :]
        num[lo:hi] += D * target[None, :]
        den[lo:hi] += D
    w = num / den
    if cfg.smoothing > 0:
        w = gaussian_filter1d(w, sigma=cfg.smoothing / dt, axis=0, mode="nearest")
    tf = np.arange(n_frames) / fps
    out = np.empty((n_frames, R), np.float64)
    for r in range(R):
        out[:, r] = np.interp(tf, t, w[:, r])
    out[:, ~mouth] = 0.0
    return np.clip(out, 0.0, 1.0).astype(np.float32)

"""Speech with phoneme timing from eSpeak NG, through its C API (``ctypes``).

The library and its data come from the ``espeakng_loader`` package, so nothing is downloaded and no
system eSpeak is needed. eSpeak NG runs in synchronous mode with phoneme events enabled
(``espeakINITIALIZE_PHONEME_EVENTS``): a synth callback collects the int16 samples and the events,
and every phoneme event gives the phoneme's mnemonic (eSpeak's ASCII phoneme names, e.g. ``aI``,
``tS``, ``@L``) and its start sample.

Every request runs the C API in a fresh child interpreter (``python -S``, stdlib and ``ctypes``
only, ~30 ms): eSpeak NG's waveform generator carries state from one utterance to the next that no
API call resets, so in one process the same call gives different samples on every repeat; a freshly
initialised library is reproducible. This also keeps eSpeak's process-global state (one voice, one
set of parameters, one callback) out of the caller's process: calls from several threads need no
lock. Results are cached per argument set.

Voices are written ``LANGUAGE[+VARIANT]``: ``LANGUAGE`` a language code or a voice file name
(``en``, ``en-us``, ``en-gb``, ``en-gb-x-rp``, ``en-gb-scotland``, ...; see :func:`list_voices`),
``VARIANT`` one of eSpeak's voice variants (``f3``, ``m2``, ``klatt``, ...; see
:func:`list_variants`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from render.errors import TalkfaceError

SILENCE = "_"
"""Symbol of a pause (eSpeak's ``_`` and ``_:`` pauses, the lead-in before the first phoneme and
padding added by :func:`speech_for_duration`)."""

STRESS_MARKS = "',="
"""Characters eSpeak puts before a vowel's mnemonic to mark stress (``'`` primary, ``,``
secondary, ``=`` stress moved by the sentence); stripped from :attr:`Phoneme.symbol`."""

RATE_RANGE = (80, 450)
"""Speaking rates eSpeak NG accepts, words per minute."""

DEFAULT_SENTENCES: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs.",
    "How vexingly quick daft zebras jump!",
    "Sphinx of black quartz, judge my vow.",
    "A wizard's job is to vex chumps quickly in fog.",
    "We promptly judged antique ivory buckles for the next prize.",
    "Big fjords vex quick waltz nymphs.",
    "The five boxing wizards jump quickly.",
    "She measured the treasure with pleasure, then went back to the beach.",
    "My father thought the old boat would float through the rough water.",
    "Would you put the good book on the hook by the window?",
    "Nine white kites flew high above the quiet town.",
    "Our noisy boy enjoyed the toy all through the cloudy afternoon.",
    "Thirty thousand feathers were thoroughly washed in the bath.",
    "Please bring a map, a pen and some paper to the meeting.",
    "Blue moons are rare, but you knew the truth all along.",
    "Every morning the baker makes fresh bread and warm muffins.",
    "Which way is the shortest path back to the village church?",
)
"""Built-in sentences (written for this toolkit; pangram-like, with varied phonemes) used by
:func:`speech_for_duration` when no text is given."""


class SpeechError(TalkfaceError, ValueError):
    """Bad speech input: empty text, unknown voice, parameter out of range."""


@dataclass(frozen=True)
class Phoneme:
    """One phoneme (or pause) of an utterance."""

    symbol: str
    """eSpeak NG mnemonic without stress marks (e.g. ``aI``, ``tS``, ``@L``); :data:`SILENCE` for pauses."""
    start: float
    """Start time, seconds from the start of the audio."""
    end: float
    """End time, seconds: the next phoneme's start; the last phoneme ends at the end of the audio."""
    stress: int = 0
    """Stress of a vowel as eSpeak marked it: 2 primary (``'``), 1 secondary (``,``), 0 none."""

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass
class Speech:
    """Synthesised speech with its phoneme timing."""

    audio: np.ndarray
    """``[N]`` float32 samples in [-1, 1], mono."""
    sample_rate: int
    """Samples per second of ``audio`` (22050 for eSpeak NG's voices)."""
    phonemes: list[Phoneme]
    """Phonemes and pauses in time order; contiguous, covering ``[0, duration]``."""
    text: str
    """The text spoken (for :func:`speech_for_duration`, what remains after repeating/cutting)."""
    voice: str
    """Voice as given (``LANGUAGE[+VARIANT]``)."""
    rate: int
    """Speaking rate, words per minute."""
    word_starts: list[float] = field(default_factory=list)
    """Start time of every word, seconds (from eSpeak's word events)."""

    @property
    def duration(self) -> float:
        """Length of the audio, seconds."""
        return len(self.audio) / float(self.sample_rate)

    def phoneme_at(self, times: np.ndarray) -> list[Phoneme]:
        """The phoneme sounding at each of ``times: [T]`` seconds (clamped to the audio)."""
        return phonemes_at(self.phonemes, times)


def phonemes_at(phonemes: list[Phoneme], times) -> list[Phoneme]:
    """The phoneme whose interval holds each time of ``times: [T]`` (seconds; clamped to the ends)."""
    if not phonemes:
        raise ValueError("no phonemes")
    starts = np.array([p.start for p in phonemes])
    idx = np.clip(np.searchsorted(starts, np.asarray(times, dtype=np.float64), side="right") - 1, 0, len(phonemes) - 1)
    return [phonemes[i] for i in idx]


# --------------------------------------------------------------------------------------------
# The C API (speak_lib.h), driven from a fresh child interpreter per call
#
# Why a child process: eSpeak NG's waveform generator keeps state from one utterance to the next
# (pitch flutter index, glottal phase, ...) that no API call resets, not even espeak_Terminate +
# espeak_Initialize; in one process the same text gives different samples and phoneme times on
# every call (checked with eSpeak NG 1.52 from espeakng-loader). A freshly initialised library is
# reproducible, and starting a bare interpreter (``python -S``, stdlib only) costs ~30 ms. It also
# keeps eSpeak's process-global state (voice, parameters, callback) out of the caller's process,
# so calls from several threads need no lock.

_WORKER_SOURCE = r"""
import ctypes, json, sys

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
INITIALIZE_DONT_EXIT = 0x8000
CHARS_UTF8 = 1
ENDPAUSE = 0x1000  # add a sentence pause at the end of the text
POS_CHARACTER = 1
EVENT_LIST_TERMINATED, EVENT_PHONEME = 0, 7
# espeak_PARAMETER
RATE, VOLUME, PITCH, RANGE, PUNCTUATION, CAPITALS, WORDGAP = 1, 2, 3, 4, 5, 6, 7

class EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]

class Event(ctypes.Structure):
    # espeak_EVENT: 40 bytes on 64-bit (six 4-byte ints, a pointer, an 8-byte union)
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # sample index (finer than audio_position)
        ("user_data", ctypes.c_void_p),
        ("id", EventId),
    ]

class Voice(ctypes.Structure):
    # espeak_VOICE; languages: (priority byte, zero-terminated code)*, then a 0 byte
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]

Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event))

def main():
    lib = ctypes.CDLL(sys.argv[1])
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetSynthCallback.argtypes = [Callback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
    lib.espeak_ListVoices.argtypes = [ctypes.POINTER(Voice)]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(Voice))
    out = sys.stdout.buffer
    # the path may name espeak-ng-data itself or its parent: eSpeak NG tries <path>/espeak-ng-data, then <path>
    sr = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, sys.argv[2].encode(),
                               INITIALIZE_PHONEME_EVENTS | INITIALIZE_DONT_EXIT)
    if sr <= 0:
        out.write(json.dumps({"error": "espeak_Initialize failed with status %d" % sr}).encode() + b"\n")
        return
    req = json.loads(sys.stdin.buffer.read().decode("utf-8"))
    if req["cmd"] == "voices":
        def listing(spec):
            arr = lib.espeak_ListVoices(spec)
            res, i = [], 0
            while arr[i]:
                v = arr[i].contents
                langs, j = [], 0
                while True:
                    prio = ctypes.c_ubyte.from_address(v.languages + j).value
                    if prio == 0:
                        break
                    code = ctypes.string_at(v.languages + j + 1)
                    langs.append([prio, code.decode("utf-8", "replace")])
                    j += 2 + len(code)
                res.append([v.name.decode("utf-8", "replace"), v.identifier.decode("utf-8", "replace"), langs])
                i += 1
            return res
        spec = Voice()
        keep = ctypes.c_char_p(b"variant")
        spec.languages = ctypes.cast(keep, ctypes.c_void_p)
        body = {"voices": listing(None), "variants": listing(ctypes.byref(spec))}
        out.write(json.dumps(body).encode() + b"\n")
        return
    pcm, events = [], []
    def on_synth(wav, n, ev):
        if n > 0 and wav:
            pcm.append(ctypes.string_at(wav, 2 * n))
        i = 0
        while ev[i].type != EVENT_LIST_TERMINATED:
            e = ev[i]
            if e.type == EVENT_PHONEME:
                payload = bytes(e.id.string).split(b"\0", 1)[0].decode("ascii", "replace")
            else:
                payload = e.id.number
            events.append([e.type, e.sample, payload])
            i += 1
        return 0
    cb = Callback(on_synth)
    lib.espeak_SetSynthCallback(cb)
    status = lib.espeak_SetVoiceByName(req["voice"].encode())
    if status != 0:
        out.write(json.dumps({"error": "voice %r not loaded (status %d)" % (req["voice"], status)}).encode() + b"\n")
        return
    for param, value in ((RATE, req["rate"]), (PITCH, req["pitch"]), (RANGE, 50), (VOLUME, 100),
                         (WORDGAP, req["word_gap"]), (PUNCTUATION, 0), (CAPITALS, 0)):
        lib.espeak_SetParameter(param, int(value), 0)
    text = req["text"].encode("utf-8") + b"\0"
    status = lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, CHARS_UTF8 | ENDPAUSE, None, None)
    if status != 0:
        out.write(json.dumps({"error": "espeak_Synth failed with status %d" % status}).encode() + b"\n")
        return
    lib.espeak_Synchronize()
    audio = b"".join(pcm)
    out.write(json.dumps({"sample_rate": sr, "events": events, "n_bytes": len(audio)}).encode() + b"\n")
    out.write(audio)
    out.flush()

main()
"""

_WORKER_TIMEOUT_S = 120.0
_EVENT_WORD = 1  # espeak_EVENT_TYPE values the parent reads
_EVENT_PHONEME = 7


def _run_worker(request: dict) -> tuple[dict, bytes]:
    """Run one eSpeak NG request in a fresh interpreter; returns (header, payload bytes)."""
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("speech synthesis needs eSpeak NG from the espeakng-loader package: pip install espeakng-loader") from e
    cmd = [sys.executable, "-S", "-c", _WORKER_SOURCE, espeakng_loader.get_library_path(), espeakng_loader.get_data_path()]
    proc = subprocess.run(cmd, input=json.dumps(request).encode("utf-8"), capture_output=True, timeout=_WORKER_TIMEOUT_S, check=False)
    head, _, payload = proc.stdout.partition(b"\n")
    if proc.returncode != 0 or not head:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RuntimeError(f"eSpeak NG worker failed (exit {proc.returncode}): {err[-1] if err else 'no output'}")
    header = json.loads(head)
    if "error" in header:
        raise RuntimeError(f"eSpeak NG: {header['error']}")
    return header, payload


@dataclass(frozen=True)
class _VoiceInfo:
    name: str
    identifier: str
    languages: tuple[tuple[int, str], ...]  # (priority, code); lower priority = better match

    @property
    def file_name(self) -> str:
        return self.identifier.rsplit("/", 1)[-1]


@lru_cache(maxsize=1)
def _catalogue() -> tuple[tuple[_VoiceInfo, ...], tuple[_VoiceInfo, ...]]:
    """(voices, variants) shipped with espeakng-loader's data."""
    header, _ = _run_worker({"cmd": "voices"})

    def conv(rows):
        return tuple(_VoiceInfo(n, i, tuple((int(p), c) for p, c in langs)) for n, i, langs in rows)

    return conv(header["voices"]), conv(header["variants"])


# --------------------------------------------------------------------------------------------
# Voices


def list_voices(language_prefix: str = "en") -> list[str]:
    """Language codes of the shipped voices starting with ``language_prefix`` (e.g. ``en``,
    ``en-gb``, ``en-us``, ``en-gb-x-rp``); each is a valid ``voice`` (optionally ``+variant``)."""
    voices, _ = _catalogue()
    prefix = language_prefix.lower()
    codes = {code.lower() for v in voices for _, code in v.languages}
    codes |= {v.file_name.lower() for v in voices}
    return sorted(c for c in codes if c.startswith(prefix) and c != "variant")


def list_variants() -> list[str]:
    """Voice variants (``f1``..``f5``, ``m1``..``m8``, ``klatt``, ``whisper``, ...) for ``voice="en+f3"``."""
    return sorted(v.file_name for v in _catalogue()[1])


def _resolve_voice(voice: str) -> str:
    """``LANGUAGE[+VARIANT]`` -> the name eSpeak's SetVoiceByName accepts (voice file [+variant file])."""
    if not isinstance(voice, str) or not voice.strip():
        raise SpeechError(f"voice must be a non-empty string, got {voice!r}")
    voices, variants = _catalogue()
    lang, _, variant = voice.strip().partition("+")
    key = lang.lower()
    chosen = None
    for v in voices:  # a voice file name (en, en-US, en-GB-x-rp) or a voice's name
        if key in (v.file_name.lower(), v.identifier.lower(), v.name.lower()):
            chosen = v
            break
    if chosen is None:  # a language code: the voice that lists it with the best (lowest) priority
        best = None
        for v in voices:
            for prio, code in v.languages:
                if code.lower() == key and (best is None or prio < best[0]):
                    best = (prio, v)
        chosen = best[1] if best else None
    if chosen is None:
        suggestions = list_voices(key[:2]) or list_voices("en")
        raise SpeechError(f"unknown eSpeak NG voice {voice!r}; available for example: {', '.join(suggestions[:10])}")
    name = chosen.file_name
    if variant:
        var = None
        for v in variants:
            if variant.lower() in (v.file_name.lower(), v.name.lower()):
                var = v
                break
        if var is None:
            raise SpeechError(
                f"unknown eSpeak NG voice variant {variant!r} in {voice!r}; available for example: "
                f"{', '.join(list_variants()[:12])}"
            )
        name += "+" + var.file_name
    return name


# --------------------------------------------------------------------------------------------
# Synthesis


def _phonemes_from_events(events, n_samples: int, sr: int) -> tuple[list[Phoneme], list[float]]:
    """Contiguous phoneme intervals covering ``[0, n_samples / sr]`` from eSpeak's events."""
    marks: list[tuple[int, str, int]] = []  # (start sample, symbol, stress)
    words: list[float] = []
    for kind, sample, payload in events:
        sample = int(min(max(sample, 0), n_samples))
        if kind == _EVENT_WORD:
            words.append(sample / sr)
        elif kind == _EVENT_PHONEME:
            raw = str(payload)
            stress = 2 if raw.startswith("'") else 1 if raw.startswith(",") else 0
            sym = raw.lstrip(STRESS_MARKS)
            if not sym:
                continue
            if sym.startswith("_"):
                sym, stress = SILENCE, 0
            marks.append((sample, sym, stress))
    if not marks or marks[0][0] > 0:
        marks.insert(0, (0, SILENCE, 0))
    phonemes: list[Phoneme] = []
    for i, (s, sym, stress) in enumerate(marks):
        e = marks[i + 1][0] if i + 1 < len(marks) else n_samples
        if e <= s:
            continue  # zero-length (e.g. the final "_" at the end of the audio)
        if phonemes and sym == SILENCE and phonemes[-1].symbol == SILENCE:
            phonemes[-1] = Phoneme(SILENCE, phonemes[-1].start, e / sr)
            continue
        phonemes.append(Phoneme(sym, s / sr, e / sr, stress))
    if not phonemes:  # no audio at all
        phonemes = [Phoneme(SILENCE, 0.0, n_samples / sr)]
    return phonemes, words


def _check_params(rate: int, pitch: int, word_gap: int) -> None:
    if not RATE_RANGE[0] <= int(rate) <= RATE_RANGE[1]:
        raise SpeechError(f"rate must be in {RATE_RANGE[0]}..{RATE_RANGE[1]} words per minute, got {rate}")
    if not 0 <= int(pitch) <= 100:
        raise SpeechError(f"pitch must be in 0..100, got {pitch}")
    if int(word_gap) < 0:
        raise SpeechError(f"word_gap must be >= 0 (units of 10 ms), got {word_gap}")


def synthesize(text: str, voice: str = "en-us", rate: int = 165, pitch: int = 50, word_gap: int = 0) -> Speech:
    """Speak ``text`` with eSpeak NG; deterministic for the same arguments.

    ``voice``: ``LANGUAGE[+VARIANT]`` (e.g. ``en-us``, ``en-gb``, ``en-us+f3``); ``rate``: words per
    minute (80..450); ``pitch``: 0..100 (50 is the voice's normal); ``word_gap``: extra pause
    between words in units of 10 ms. Raises :class:`SpeechError` (a ``ValueError``) on empty text,
    an unknown voice or parameters out of range.
    """
    if not isinstance(text, str) or not text.strip():
        raise SpeechError("text to speak is empty")
    _check_params(rate, pitch, word_gap)
    name = _resolve_voice(voice)
    cached = _synthesize_cached(text, name, voice, int(rate), int(pitch), int(word_gap))
    return replace(cached, audio=cached.audio.copy(), phonemes=list(cached.phonemes), word_starts=list(cached.word_starts))


@lru_cache(maxsize=32)
def _synthesize_cached(text: str, name: str, voice: str, rate: int, pitch: int, word_gap: int) -> Speech:
    header, payload = _run_worker({"cmd": "synth", "text": text, "voice": name, "rate": rate, "pitch": pitch, "word_gap": word_gap})
    if len(payload) != header["n_bytes"]:
        raise RuntimeError(f"eSpeak NG worker returned {len(payload)} bytes of audio, announced {header['n_bytes']}")
    pcm = np.frombuffer(payload, dtype="<i2")
    sr = int(header["sample_rate"])
    events = [(int(k), int(smp), payload_) for k, smp, payload_ in header["events"]]
    audio = (pcm.astype(np.float32) / 32768.0).clip(-1.0, 1.0)
    phonemes, words = _phonemes_from_events(events, len(pcm), sr)
    return Speech(audio, sr, phonemes, text, voice, rate, words)


def clear_cache() -> None:
    """Forget cached syntheses (the next call runs eSpeak NG again)."""
    _synthesize_cached.cache_clear()


# --------------------------------------------------------------------------------------------
# Speech of a given length

_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (split after ``. ! ? ;`` followed by white space)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _concat(parts: list[Speech]) -> tuple[np.ndarray, list[Phoneme], list[float]]:
    audio, phonemes, words = [], [], []
    offset = 0
    for part in parts:
        sr = part.sample_rate
        t0 = offset / sr
        audio.append(part.audio)
        for p in part.phonemes:
            q = Phoneme(p.symbol, t0 + p.start, t0 + p.end, p.stress)
            if phonemes and q.symbol == SILENCE and phonemes[-1].symbol == SILENCE:
                q = Phoneme(SILENCE, phonemes[-1].start, q.end)
                phonemes[-1] = q
            else:
                phonemes.append(q)
        words.extend(t0 + w for w in part.word_starts)
        offset += len(part.audio)
    return np.concatenate(audio), phonemes, words


def _cut_time(phonemes: list[Phoneme], words: list[float], seconds: float) -> float:
    """Where to end the speech at or before ``seconds``: the start of a pause if one is near the
    end, else a word start, else a phoneme boundary."""
    pauses = [p.start for p in phonemes if p.symbol == SILENCE and 0 < p.start <= seconds]
    if pauses and pauses[-1] >= max(seconds - 1.0, 0.5 * seconds):
        return pauses[-1]
    ws = [w for w in words if 0 < w <= seconds]
    if ws and ws[-1] >= max(seconds - 0.6, 0.5 * seconds):
        return ws[-1]
    bounds = [p.start for p in phonemes if 0 < p.start <= seconds]
    return max(bounds) if bounds else seconds


def speech_for_duration(
    text: str | None,
    seconds: float,
    voice: str = "en-us",
    rate: int = 165,
    seed: int = 0,
    pitch: int = 50,
) -> Speech:
    """Speech exactly ``seconds`` long (``round(seconds * sample_rate)`` samples).

    The sentences of ``text`` (or, when ``text`` is None, the :data:`DEFAULT_SENTENCES` in an
    order drawn from ``seed``) are spoken one after another, repeated as often as needed, cut at a
    pause, word or phoneme boundary at or before ``seconds`` (with a 10 ms fade), and padded with
    silence to the exact length. Phonemes after the cut are dropped; the cut-off tail and the
    padding are one :data:`SILENCE` interval. ``Speech.text`` is the text actually spoken (a
    partly spoken last sentence included).
    """
    if not np.isfinite(seconds) or seconds <= 0:
        raise SpeechError(f"seconds must be positive, got {seconds}")
    if text is None:
        order = np.random.default_rng(seed).permutation(len(DEFAULT_SENTENCES))
        sentences = [DEFAULT_SENTENCES[i] for i in order]
    else:
        if not isinstance(text, str) or not text.strip():
            raise SpeechError("text to speak is empty")
        sentences = split_sentences(text)
    parts: list[Speech] = []
    spoken: list[str] = []
    total = 0.0
    i = 0
    while total < seconds:
        s = sentences[i % len(sentences)]
        part = synthesize(s, voice=voice, rate=rate, pitch=pitch)
        parts.append(part)
        spoken.append(s)
        total += part.duration
        i += 1
        if i == len(sentences) and total == 0.0:
            raise SpeechError(f"eSpeak NG produced no audio for {text!r}")
    sr = parts[0].sample_rate
    audio, phonemes, words = _concat(parts)
    n_out = round(seconds * sr)
    end = seconds
    if len(audio) > n_out:
        end = _cut_time(phonemes, words, n_out / sr)
    n_keep = min(round(end * sr), n_out, len(audio))
    out = np.zeros(n_out, np.float32)
    out[:n_keep] = audio[:n_keep]
    if n_keep < len(audio):
        fade = min(n_keep, int(0.010 * sr))
        out[n_keep - fade : n_keep] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    t_keep, t_out = n_keep / sr, n_out / sr
    kept: list[Phoneme] = []
    for p in phonemes:
        if p.start >= t_keep:
            break
        kept.append(Phoneme(p.symbol, p.start, min(p.end, t_keep), p.stress))
    if t_keep < t_out:
        if kept and kept[-1].symbol == SILENCE:
            kept[-1] = Phoneme(SILENCE, kept[-1].start, t_out)
        else:
            kept.append(Phoneme(SILENCE, t_keep, t_out))
    elif kept:
        kept[-1] = Phoneme(kept[-1].symbol, kept[-1].start, t_out, kept[-1].stress)
    # the text actually spoken: whole sentences before the cut, the last one as far as it got
    spoken_text = _spoken_text(parts, spoken, t_keep)
    return Speech(out, sr, kept, spoken_text, voice, int(rate), [w for w in words if w < t_keep])


def _spoken_text(parts: list[Speech], sentences: list[str], t_keep: float) -> str:
    out = []
    t0 = 0.0
    for part, s in zip(parts, sentences):
        if t0 >= t_keep:
            break
        if t0 + part.duration <= t_keep + 1e-9:
            out.append(s)
        else:  # partly spoken: words whose start is before the cut
            n_words = sum(1 for w in part.word_starts if t0 + w < t_keep - 1e-9)
            if n_words >= len(part.word_starts):
                out.append(s)
            elif n_words:  # eSpeak's words are close to, not always the same as, split() words
                out.append(" ".join(s.split()[:n_words]) + " ...")
        t0 += part.duration
    return " ".join(out)

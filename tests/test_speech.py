"""eSpeak NG speech with phoneme timing (recon.synthetic.speech) and visemes with coarticulation
(recon.synthetic.visemes). Fast: every synthesis is a short eSpeak NG run (~40 ms)."""

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from recon.synthetic.arkit import RIG_INDEX, RIG_NAMES
from recon.synthetic.speech import (
    DEFAULT_SENTENCES,
    SILENCE,
    Phoneme,
    clear_cache,
    list_variants,
    list_voices,
    phonemes_at,
    speech_for_duration,
    synthesize,
)
from recon.synthetic.visemes import (
    MOUTH_CHANNELS,
    OPEN_VOWEL_PHONEMES,
    PHONEME_VISEMES,
    CoarticulationConfig,
    coarticulate,
    is_known_phoneme,
    phoneme_visemes,
)

PANGRAM = "The quick brown fox jumps over the lazy dog."

VARIED_TEXT = (
    "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. "
    "She sells sea shells by the sea shore; the measure of treasure is usually pleasure. "
    "Thirty thousand feathers thoroughly thrashed, then bathed in the cheap church's bridge. "
    "Our noisy boy enjoyed the toy; the cow bowed down now. Father's car is far, but the bird "
    "heard the word first. Would you put the good book on the hook? Go slow, don't throw the "
    "boat's oars. Air, care, fair, there; poor tour, sure. Here, near, clear, beer. Bottle, "
    "button, rhythm, vision, azure, yellow, young, whale, thought, water, better, happy, loch, "
    "million, onion, hour, power, player, royal, idea, really, the apple, fire, hire."
)

COMMON_PHONEMES = (
    "p b m f v T D t d n l s z S Z tS dZ k g N h r w j "
    "a A: aa @ 3: 3 I i i: E e@ eI aI aU OI oU O: U u: V 0 @L @2 I2 i@ U@ O@ A@ a# t# r- _"
).split()

J, C = RIG_INDEX["jawOpen"], RIG_INDEX["mouthClose"]


def _check_intervals(speech):
    ph = speech.phonemes
    assert ph, "no phonemes"
    assert ph[0].start == 0.0
    assert ph[-1].end == pytest.approx(speech.duration, abs=1e-9)
    for a, b in itertools.pairwise(ph):
        assert a.end == pytest.approx(b.start, abs=1e-12)  # contiguous: ordered, no overlap, no hole
    assert all(p.end > p.start for p in ph)


# -------------------------------------------------------------------------------------------- speech


def test_synthesize_audio_and_phonemes():
    sp = synthesize(PANGRAM)
    assert sp.sample_rate == 22050
    assert sp.audio.dtype == np.float32 and sp.audio.ndim == 1
    assert np.abs(sp.audio).max() <= 1.0
    assert np.sqrt(np.mean(sp.audio**2)) > 0.02  # not silent
    # 9 words at 165 words per minute: about 3.3 s, plus lead-in and final pause
    assert 2.0 < sp.duration < 5.0
    assert sp.duration == len(sp.audio) / sp.sample_rate
    _check_intervals(sp)
    symbols = [p.symbol for p in sp.phonemes]
    assert symbols[-1] == SILENCE
    assert {"k", "w", "b", "r", "f", "s", "z", "D"} <= set(symbols)
    assert not any(s[0] in "',=" for s in symbols)  # stress marks are stripped
    assert any(p.stress == 2 for p in sp.phonemes)
    assert len(sp.word_starts) == 9
    assert sp.text == PANGRAM and sp.voice == "en-us" and sp.rate == 165
    # audio is loud inside the phonemes and quiet in the final pause
    sr = sp.sample_rate
    last = sp.phonemes[-1]
    tail = sp.audio[int(last.start * sr) + int(0.05 * sr) :]
    assert np.abs(tail).max() < 0.2 * np.abs(sp.audio).max()


def test_synthesize_is_deterministic():
    a = synthesize("Hello there, my friend.")
    clear_cache()  # really synthesise again, not a cached copy
    b = synthesize("Hello there, my friend.")
    assert np.array_equal(a.audio, b.audio)
    assert a.phonemes == b.phonemes
    a.audio[:] = 0  # results are copies: mutating one does not change the cache
    assert np.abs(synthesize("Hello there, my friend.").audio).max() > 0


def test_synthesize_from_threads_is_deterministic():
    clear_cache()
    texts = ["One two three.", "Four five six.", "One two three.", "Four five six."]
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(synthesize, texts))
    assert np.array_equal(outs[0].audio, outs[2].audio)
    assert np.array_equal(outs[1].audio, outs[3].audio)


def test_different_texts_differ():
    a, b = synthesize("Good morning."), synthesize("Pack my box.")
    assert a.audio.shape != b.audio.shape or not np.array_equal(a.audio, b.audio)
    assert [p.symbol for p in a.phonemes] != [p.symbol for p in b.phonemes]


def test_voices_and_rates():
    voices = list_voices("en")
    assert {"en", "en-us", "en-gb", "en-gb-x-rp"} <= set(voices)
    assert all(v.startswith("en") for v in voices)
    assert {"f3", "m3", "klatt"} <= set(list_variants())
    base = synthesize(PANGRAM, voice="en-us")
    for voice in ("en-gb", "en-us+f3", "en+klatt"):
        other = synthesize(PANGRAM, voice=voice)
        assert other.voice == voice
        assert other.audio.shape != base.audio.shape or not np.array_equal(other.audio, base.audio)
    assert not np.array_equal(synthesize(PANGRAM, pitch=80).audio[:5000], base.audio[:5000])
    slow, fast = synthesize(PANGRAM, rate=110), synthesize(PANGRAM, rate=260)
    assert slow.duration > 1.5 * fast.duration
    assert base.duration < slow.duration and base.duration > fast.duration
    gap = synthesize(PANGRAM, word_gap=20)
    assert gap.duration > base.duration + 8 * 0.15  # 8 gaps of ~200 ms (some absorbed by existing pauses)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"text": ""}, "empty"),
        ({"text": "   \n"}, "empty"),
        ({"text": "Hi.", "voice": "xx-nowhere"}, "xx-nowhere"),
        ({"text": "Hi.", "voice": "en-us+nosuchvariant"}, "nosuchvariant"),
        ({"text": "Hi.", "rate": 10}, "rate"),
        ({"text": "Hi.", "pitch": 101}, "pitch"),
    ],
)
def test_bad_input_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthesize(**kwargs)


def test_unknown_voice_lists_available_ones():
    with pytest.raises(ValueError) as err:
        synthesize("Hi.", voice="xx-klingon")
    assert "xx-klingon" in str(err.value) and "en-us" in str(err.value)


@pytest.mark.parametrize("seconds", [0.5, 2.345, 7.0])
def test_speech_for_duration_exact_length(seconds):
    sp = speech_for_duration(None, seconds, voice="en-us", rate=165, seed=3)
    assert len(sp.audio) == round(seconds * sp.sample_rate)
    _check_intervals(sp)
    assert sp.phonemes[-1].end == pytest.approx(seconds, abs=0.5 / sp.sample_rate)
    assert sum(p.symbol != SILENCE for p in sp.phonemes) > 3 * seconds  # it speaks
    assert np.abs(sp.audio).max() > 0.1


def test_speech_for_duration_repeats_and_trims_text():
    short = speech_for_duration("Hello there.", 5.0, voice="en-gb", rate=165, seed=0)
    assert short.duration == pytest.approx(5.0)
    assert short.text.count("Hello there.") >= 3  # repeated
    assert [p.symbol for p in short.phonemes].count("D") >= 3
    long_text = " ".join(DEFAULT_SENTENCES[:4])
    cut = speech_for_duration(long_text, 3.0, voice="en-us", rate=165, seed=0)
    full = synthesize(long_text)
    assert full.duration > 4.0
    assert cut.duration == pytest.approx(3.0)
    assert len(cut.phonemes) < len(full.phonemes)  # phonemes after the cut are dropped
    assert cut.phonemes[-1].symbol == SILENCE
    n_pad = int(0.005 * cut.sample_rate)
    assert np.abs(cut.audio[-n_pad:]).max() == 0.0  # padded with silence


def test_speech_for_duration_seed():
    a = speech_for_duration(None, 4.0, seed=0)
    b = speech_for_duration(None, 4.0, seed=0)
    c = speech_for_duration(None, 4.0, seed=1)
    assert np.array_equal(a.audio, b.audio) and a.phonemes == b.phonemes and a.text == b.text
    assert a.text != c.text and not np.array_equal(a.audio, c.audio)
    with pytest.raises(ValueError):
        speech_for_duration(None, 0.0)
    with pytest.raises(ValueError):
        speech_for_duration("", 2.0)


# -------------------------------------------------------------------------------------------- visemes


def test_viseme_table_covers_what_espeak_emits():
    assert set(COMMON_PHONEMES) <= set(PHONEME_VISEMES)  # these never use the fallback
    seen = set()
    for voice in ("en-us", "en-gb", "en-gb-scotland", "en-029"):
        seen |= {p.symbol for p in synthesize(VARIED_TEXT, voice=voice).phonemes}
    assert len(seen) > 50
    missing = sorted(s for s in seen if not is_known_phoneme(s))
    assert not missing, f"phonemes without a viseme entry: {missing}"


def test_viseme_fallback_never_raises():
    assert phoneme_visemes("p5") == ("PP",)
    assert phoneme_visemes("'a:") == phoneme_visemes("a")
    assert phoneme_visemes("u:#") == ("UW",)
    assert phoneme_visemes("_!") == ("SIL",)
    for odd in ("", "Q", "%", "zz", "@@@", "12"):
        assert isinstance(phoneme_visemes(odd), tuple)
    w = coarticulate([Phoneme("Q#", 0.0, 0.2), Phoneme("%", 0.2, 0.3), Phoneme("", 0.3, 0.4)], 25, 10)
    assert w.shape == (10, len(RIG_NAMES)) and np.isfinite(w).all()


def _vcv(consonant, dur=0.100, vowel="A:"):
    return [
        Phoneme(SILENCE, 0.0, 0.25),
        Phoneme(vowel, 0.25, 0.45, 2),
        Phoneme(consonant, 0.45, 0.45 + dur),
        Phoneme(vowel, 0.45 + dur, 0.65 + dur, 2),
        Phoneme(SILENCE, 0.65 + dur, 1.2),
    ]


@pytest.mark.parametrize("fps", [25.0, 30.0, 60.0])
def test_coarticulate_shape_and_range(fps):
    sp = synthesize(PANGRAM)
    n = int(sp.duration * fps)
    w = coarticulate(sp.phonemes, fps, n)
    assert w.shape == (n, len(RIG_NAMES)) and w.dtype == np.float32
    assert w.min() >= 0.0 and w.max() <= 1.0
    others = [i for i, name in enumerate(RIG_NAMES) if name not in MOUTH_CHANNELS]
    assert np.all(w[:, others] == 0.0)  # blinks and brows are not driven by speech
    assert w[:, J].max() > 0.3 and w[:, C].max() > 0.5
    assert coarticulate(sp.phonemes, fps, 0).shape == (0, len(RIG_NAMES))
    assert np.all(coarticulate([], fps, 5) == 0.0)


@pytest.mark.parametrize("bilabial", ["p", "b", "m"])
def test_bilabial_closes_lips_between_open_vowels(bilabial):
    fps = 100.0
    w = coarticulate(_vcv(bilabial), fps, 120)
    t = np.arange(len(w)) / fps
    centre = (t > 0.46) & (t < 0.54)
    vowels = ((t > 0.32) & (t < 0.38)) | ((t > 0.62) & (t < 0.68))  # vowel centres
    assert w[centre, C].max() > 0.5  # the lips close
    peak_t = t[np.argmax(w[:, C])]
    assert abs(peak_t - 0.50) < 0.03  # near the consonant's centre
    assert w[centre, J].min() < 0.5 * w[vowels, J].max()  # while the jaw rises
    assert w[vowels, J].max() > 0.55  # open vowels open the jaw
    assert w[vowels, C].max() < 0.3


def test_other_consonants_do_not_close_lips():
    fps = 100.0
    for c in ("t", "k", "s"):
        w = coarticulate(_vcv(c), fps, 120)
        assert w[:, C].max() < 0.2, c
    w_f = coarticulate(_vcv("f"), fps, 120)
    assert 0.2 < w_f[:, C].max() < 0.7  # labiodental: partial closure


def test_rounding_and_spreading():
    fps = 100.0
    pucker, stretch = RIG_INDEX["mouthPucker"], RIG_INDEX["mouthStretchLeft"]
    u = coarticulate([Phoneme(SILENCE, 0, 0.2), Phoneme("u:", 0.2, 0.5), Phoneme(SILENCE, 0.5, 0.8)], fps, 80)
    i = coarticulate([Phoneme(SILENCE, 0, 0.2), Phoneme("i:", 0.2, 0.5), Phoneme(SILENCE, 0.5, 0.8)], fps, 80)
    assert u[35, pucker] > 0.5 and u[35, stretch] < 0.1
    assert i[35, stretch] > 0.3 and i[35, pucker] < 0.1
    assert u[35, J] < 0.3 and i[35, J] < 0.3


def test_silence_is_neutral():
    w = coarticulate([Phoneme(SILENCE, 0.0, 2.0)], 25.0, 50)
    assert np.abs(w).max() < 1e-6
    w = coarticulate(_vcv("p"), 100.0, 200)  # long pause after speech relaxes to rest
    assert np.abs(w[110:]).max() < 0.01


def test_config_changes_the_blend():
    ph = _vcv("t")
    base = coarticulate(ph, 100.0, 120)
    loud = coarticulate(ph, 100.0, 120, CoarticulationConfig(amplitude=1.3))
    sharp = coarticulate(ph, 100.0, 120, CoarticulationConfig(smoothing=0.0, anticipation=40.0, carryover=40.0))
    assert loud[:, J].max() > base[:, J].max()
    assert not np.allclose(sharp, base)


def test_jaw_follows_open_vowels_in_real_speech():
    sp = speech_for_duration(None, 12.0, voice="en-us", rate=165, seed=0)
    fps = 25.0
    n = round(12.0 * fps)
    w = coarticulate(sp.phonemes, fps, n)
    times = np.arange(n) / fps
    at = phonemes_at(sp.phonemes, times)
    open_vowel = np.array([p.symbol in OPEN_VOWEL_PHONEMES for p in at], float)
    bilabial = np.array([p.symbol in ("p", "b", "m") for p in at], float)
    assert open_vowel.sum() > 20 and bilabial.sum() > 5
    assert np.corrcoef(w[:, J], open_vowel)[0, 1] > 0.45
    assert np.corrcoef(w[:, C], bilabial)[0, 1] > 0.45
    silent = np.array([p.symbol == SILENCE and p.duration > 0.3 for p in at])
    assert w[silent, J].mean() < w[open_vowel > 0, J].mean() * 0.5

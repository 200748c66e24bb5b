"""Tests of render.media: probe, video read/write, audio load/write, safe outputs.

All media are made on the fly with the ffmpeg binary imageio-ffmpeg ships (lavfi testsrc /
sine sources) into pytest temp folders; nothing is committed. The optional last test uses the
real clips in ../shared/data and skips when they are absent.
"""

from __future__ import annotations

import hashlib
import os
import subprocess

import numpy as np
import pytest
import soundfile as sf

from render.errors import MediaError, NoAudioStreamError, OutputError, TalkfaceError
from render.media.audio import load_audio, resample, write_wav
from render.media.outputs import atomic_output_dir, ensure_writable_dir
from render.media.probe import MediaInfo, ffmpeg_exe, probe
from render.media.video import Frame, VideoReader, VideoWriter, fit_size, read_video, write_video

FRAME_S = 1 / 25  # one frame at 25 fps: the tolerance for audio/video durations


def ff(*args: str) -> None:
    """Run ffmpeg quietly (test media generation)."""
    subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
        check=True, stdin=subprocess.DEVNULL,
    )


def peak_hz(audio: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / sr)[np.argmax(spec)])


def sine(seconds: float, sr: int, hz: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def flat_frames(n: int, w: int = 64, h: int = 48, rgb=(200, 60, 30)) -> list[np.ndarray]:
    frame = np.empty((h, w, 3), np.uint8)
    frame[:] = rgb
    return [frame] * n


def ls(folder) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Small test files, made once per module with ffmpeg."""
    d = tmp_path_factory.mktemp("media")
    m = {}
    # 2 s at 30 fps (60 frames), 64x48, H.264 + AAC 44.1 kHz.
    m["src30"] = d / "src30.mp4"
    ff("-f", "lavfi", "-i", "testsrc=size=64x48:rate=30:duration=2",
       "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=2",
       "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
       str(m["src30"]))
    # Variable frame rate: 30 frames 1/15 s apart (2 s), then 60 frames 1/30 s apart (2 s);
    # 4 s and 90 frames in all, timestamps kept as they are (-fps_mode vfr).
    m["vfr"] = d / "vfr.mp4"
    ff("-f", "lavfi", "-i", "testsrc=size=64x48:rate=30", "-frames:v", "90",
       "-vf", "setpts='if(lt(N,30),N/15,2+(N-30)/30)/TB'", "-fps_mode", "vfr",
       "-video_track_timescale", "90000",
       "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(m["vfr"]))
    # MPEG-4 Part 2 ("mp4v"), 1 s at 25 fps, no audio.
    m["mpeg4"] = d / "mpeg4.mp4"
    ff("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=1", "-c:v", "mpeg4", str(m["mpeg4"]))
    # 24-bit 48 kHz stereo WAV: ffmpeg writes >16-bit / >2-channel PCM as WAVE_FORMAT_EXTENSIBLE.
    m["wav24"] = d / "st24_48k.wav"
    ff("-f", "lavfi", "-i", "aevalsrc='0.6*sin(2*PI*1000*t)|0.6*sin(2*PI*1000*t)':s=48000:d=1.5",
       "-c:a", "pcm_s24le", str(m["wav24"]))
    # 44.1 kHz 16-bit mono.
    m["wav16"] = d / "mono_44k.wav"
    sf.write(m["wav16"], sine(1.25, 44100, hz=440), 44100, subtype="PCM_16")
    # Audio only, in an MP4 container.
    m["audio_only"] = d / "audio_only.m4a"
    ff("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(m["audio_only"]))
    # A video whose header promises 50 frames but whose sample data is gone: a download cut off
    # right after the moov atom (faststart layout: ftyp, moov, mdat). ffmpeg opens it, reports a
    # 2 s video stream, and decodes no frame.
    full = d / "full.mp4"
    ff("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=2", "-c:v", "libx264",
       "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(full))
    data = full.read_bytes()
    m["no_frames"] = d / "cut_after_header.mp4"
    m["no_frames"].write_bytes(data[: data.index(b"mdat") + 4])
    # Random bytes named .mp4 (fixed seed).
    m["random"] = d / "random.mp4"
    m["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return m


# --- probe ------------------------------------------------------------------------------------


def test_probe_video_and_audio(media):
    info = probe(media["src30"])
    assert isinstance(info, MediaInfo)
    assert info.has_video and info.has_audio
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(30.0)
    assert info.video_codec == "h264"
    assert info.audio_codec == "aac" and info.audio_sample_rate == 44100 and info.audio_channels == 1
    assert info.duration_s == pytest.approx(2.0, abs=0.05)

    wav = probe(media["wav24"])
    assert not wav.has_video and wav.width is None
    assert (wav.audio_sample_rate, wav.audio_channels, wav.audio_codec) == (48000, 2, "pcm_s24le")
    assert probe(media["mpeg4"]).video_codec == "mpeg4"


@pytest.mark.parametrize("kind", ["missing", "folder", "random"])
def test_probe_bad_input(media, tmp_path, kind):
    path = {"missing": tmp_path / "nope.mp4", "folder": tmp_path, "random": media["random"]}[kind]
    with pytest.raises(MediaError) as e:
        probe(path)
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg
    if kind == "missing":
        assert msg.endswith("file not found")
    if kind == "random":
        assert "not a readable media file (ffmpeg: " in msg


# --- video reading ----------------------------------------------------------------------------


def test_reader_30fps_source_at_25(media):
    with VideoReader(media["src30"], fps=25) as reader:
        frames = list(reader)
    assert reader.fps == 25.0 and (reader.width, reader.height) == (64, 48)
    assert abs(len(frames) - 2.0 * 25) <= 1
    assert abs(reader.num_frames_estimate - len(frames)) <= 1
    assert all(isinstance(f, Frame) for f in frames)
    assert [f.index for f in frames] == list(range(len(frames)))
    assert frames[10].time_s == pytest.approx(10 / 25)
    assert frames[0].image.dtype == np.uint8 and frames[0].image.shape == (48, 64, 3)


def test_reader_keeps_source_rate(media):
    frames, times = read_video(media["src30"], fps=None)
    assert frames.shape == (60, 48, 64, 3)
    assert times[1] == pytest.approx(1 / 30)


def test_reader_variable_frame_rate(media):
    frames, times = read_video(media["vfr"], fps=25)
    assert abs(len(frames) - 4.0 * 25) <= 1
    np.testing.assert_allclose(times, np.arange(len(frames)) / 25)
    # It really is VFR: 90 frames spanning 4 s give 120 +- 1 frames at 30 fps (slow half doubled).
    assert abs(len(read_video(media["vfr"], fps=30)[0]) - 120) <= 1


def test_reader_mpeg4_part2(media):
    frames, _ = read_video(media["mpeg4"], fps=25)
    assert frames.shape == (25, 48, 64, 3)
    assert frames.std() > 10  # a test pattern, not a blank picture


def test_reader_max_size(media):
    with VideoReader(media["src30"], max_size=32) as reader:
        first = next(iter(reader))
    assert (reader.width, reader.height) == (32, 24)
    assert first.image.shape == (24, 32, 3)
    assert fit_size(64, 48, 30) == (30, 22)  # even, max <= 30, aspect ~kept
    assert fit_size(700, 700, 256) == (256, 256)
    assert fit_size(64, 48, None) == fit_size(64, 48, 100) == (64, 48)


def test_reader_early_break_stops_ffmpeg(media):
    reader = VideoReader(media["src30"], fps=25)
    procs = []
    for frame in reader:
        procs.extend(reader._procs)
        if frame.index == 2:
            break
    assert procs and all(p.poll() is not None for p in procs)  # killed and reaped
    assert not reader._procs

    # close() ends an iteration that is still open.
    with VideoReader(media["src30"], fps=25) as reader:
        it = iter(reader)
        next(it)
        (proc,) = reader._procs
    assert proc.poll() is not None
    assert list(it) == []


def test_reader_no_video_stream(media):
    with pytest.raises(MediaError) as e:
        VideoReader(media["audio_only"])
    assert str(media["audio_only"]) in str(e.value) and "no video stream" in str(e.value)


def test_reader_zero_frames(media):
    # Opens fine (the header describes a 2 s video stream) but nothing decodes.
    assert probe(media["no_frames"]).has_video
    reader = VideoReader(media["no_frames"])
    with pytest.raises(MediaError) as e:
        list(reader)
    assert str(media["no_frames"]) in str(e.value) and "contains no video frames" in str(e.value)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["missing", "folder", "random"])
def test_reader_bad_input(media, tmp_path, kind):
    path = {"missing": tmp_path / "nope.mp4", "folder": tmp_path, "random": media["random"]}[kind]
    with pytest.raises(MediaError, match=str(path)):
        VideoReader(path)
    with pytest.raises(MediaError, match=str(path)):
        read_video(path)


def test_video_without_audio(media):
    frames, _ = read_video(media["mpeg4"])
    assert len(frames) == 25
    with pytest.raises(NoAudioStreamError) as e:
        load_audio(media["mpeg4"])
    assert str(e.value) == f"{media['mpeg4']}: no audio stream"


# --- video writing ----------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path):
    n, sr = 37, 16000
    audio = sine(n / 25, sr, hz=440)
    out = write_video(tmp_path / "out.mp4", flat_frames(n), fps=25, audio=audio, sample_rate=sr)
    assert out == tmp_path / "out.mp4" and ls(tmp_path) == ["out.mp4"]  # no temp files left

    info = probe(out)
    assert info.video_codec == "h264" and info.audio_codec == "aac" and info.fps == 25.0

    frames, times = read_video(out, fps=25)
    assert frames.shape == (n, 48, 64, 3)  # exact frame count
    assert times[-1] == pytest.approx((n - 1) / 25)
    # Flat colour survives RGB -> yuv420p (BT.709) -> H.264 crf 18 -> RGB within a few levels.
    assert np.abs(frames.astype(int) - [200, 60, 30]).max() <= 4

    back = load_audio(out, sample_rate=sr)
    assert abs(len(back) / sr - n / 25) <= FRAME_S
    assert peak_hz(back, sr) == pytest.approx(440, abs=2)


def test_writer_byte_identical(tmp_path):
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(10)]
    audio = sine(0.4, 16000)
    a = write_video(tmp_path / "a.mp4", frames, 25, audio=audio)
    b = write_video(tmp_path / "b.mp4", frames, 25, audio=audio)
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    assert digest[0] == digest[1]


def test_writer_odd_size_is_padded(tmp_path):
    out = write_video(tmp_path / "odd.mp4", flat_frames(3, w=63, h=47), 25)
    info = probe(out)
    assert (info.width, info.height) == (64, 48)


def test_writer_exception_leaves_nothing(tmp_path):
    old = tmp_path / "keep.mp4"
    write_video(old, flat_frames(2), 25)
    before = old.read_bytes()
    with pytest.raises(RuntimeError):
        with VideoWriter(tmp_path / "new.mp4", 25, audio=sine(1, 16000)) as w:
            for frame in flat_frames(5):
                w.write(frame)
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        with VideoWriter(old, 25) as w:  # an older file of the same name stays as it was
            w.write(flat_frames(1)[0])
            raise RuntimeError("boom")
    assert ls(tmp_path) == ["keep.mp4"] and old.read_bytes() == before


def test_writer_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="expected"):
        with VideoWriter(tmp_path / "x.mp4", 25, size=(64, 48)) as w:
            w.write(flat_frames(1, w=32, h=32)[0])
    with pytest.raises(ValueError, match="uint8"):
        with VideoWriter(tmp_path / "x.mp4", 25) as w:
            w.write(np.zeros((48, 64, 3), np.float32))
    with pytest.raises(OutputError, match="no frames"):
        write_video(tmp_path / "x.mp4", [], 25)
    assert ls(tmp_path) == []


@pytest.mark.parametrize("where", ["parent_is_file", "missing_folder"])
def test_unwritable_output(tmp_path, where):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    parent = blocker if where == "parent_is_file" else tmp_path / "missing"
    target = parent / "out.mp4"
    with pytest.raises(OutputError, match=str(target)):
        VideoWriter(target, 25)
    with pytest.raises(OutputError, match=str(parent / "a.wav")):
        write_wav(parent / "a.wav", np.zeros(100, np.float32), 16000)
    with pytest.raises(OutputError) as e:
        ensure_writable_dir(blocker / "sub")
    assert str(e.value).startswith(f"cannot write to output folder {blocker / 'sub'}: ")
    with pytest.raises(OutputError):
        with atomic_output_dir(blocker / "sub"):
            pass
    assert ls(tmp_path) == ["file.txt"]


# --- audio --------------------------------------------------------------------------------------


def test_load_wav24_extensible_stereo(media):
    header = media["wav24"].read_bytes()[:64]
    assert header[12:16] == b"fmt " and header[20:22] == b"\xfe\xff"  # WAVE_FORMAT_EXTENSIBLE
    audio = load_audio(media["wav24"], sample_rate=16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) == pytest.approx(1.5 * 16000, abs=2)
    assert peak_hz(audio, 16000) == pytest.approx(1000, abs=2)
    # Identical channels at 0.6: the downmix averages (plain "-ac 1" would give 0.85).
    assert np.abs(audio).max() == pytest.approx(0.6, abs=0.02)


def test_load_wav16_mono_44k(media):
    audio = load_audio(media["wav16"], sample_rate=16000)
    assert len(audio) == pytest.approx(1.25 * 16000, abs=2)
    assert peak_hz(audio, 16000) == pytest.approx(440, abs=2)
    assert np.abs(audio).max() <= 1.0


@pytest.mark.parametrize("kind", ["missing", "folder", "random"])
def test_load_audio_bad_input(media, tmp_path, kind):
    path = {"missing": tmp_path / "nope.wav", "folder": tmp_path, "random": media["random"]}[kind]
    with pytest.raises(MediaError, match=str(path)) as e:
        load_audio(path)
    assert not isinstance(e.value, NoAudioStreamError)


def test_write_wav_round_trip(tmp_path):
    audio = sine(0.5, 16000, amp=0.9)
    audio[0] = 1.7  # out of range: clipped, not wrapped
    out = write_wav(tmp_path / "a.wav", audio, 16000)
    assert ls(tmp_path) == ["a.wav"]
    info = sf.info(out)
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (16000, 1, "PCM_16", 8000)
    back = load_audio(out, 16000)
    assert back[0] > 0.99
    np.testing.assert_allclose(back[1:], audio[1:], atol=2 / 32768)


def test_resample():
    x = sine(1.0, 44100, hz=440)
    y = resample(x, 44100, 16000)
    assert y.dtype == np.float32 and len(y) == 16000
    assert peak_hz(y, 16000) == pytest.approx(440, abs=2)
    np.testing.assert_array_equal(resample(x, 44100, 44100), x)


# --- output folders ---------------------------------------------------------------------------


def test_ensure_writable_dir(tmp_path):
    d = ensure_writable_dir(tmp_path / "a" / "b")
    assert d.is_dir() and ls(d) == []


def test_atomic_output_dir(tmp_path):
    final = tmp_path / "subject"
    with atomic_output_dir(final) as tmp:
        assert tmp != final and tmp.parent == tmp_path
        (tmp / "v1.txt").write_text("1")
        assert not final.exists()
    assert ls(final) == ["v1.txt"]

    with pytest.raises(KeyError):
        with atomic_output_dir(final) as tmp:
            (tmp / "v2.txt").write_text("2")
            raise KeyError("fail")
    assert ls(final) == ["v1.txt"] and ls(tmp_path) == ["subject"]

    with atomic_output_dir(final) as tmp:
        (tmp / "v3.txt").write_text("3")
    assert ls(final) == ["v3.txt"] and ls(tmp_path) == ["subject"]


def test_errors_are_talkface_errors():
    assert issubclass(NoAudioStreamError, MediaError) and issubclass(MediaError, TalkfaceError)
    assert issubclass(OutputError, TalkfaceError)


# --- real media (../shared/data; skipped when absent) ------------------------------------------


def test_shared_data(shared_data):
    videos = sorted((shared_data / "video").glob("*.mp4"))
    audios = sorted((shared_data / "audio").glob("*.wav"))
    assert videos or audios
    for path in videos:
        info = probe(path)
        assert info.has_video and info.width and info.height and info.fps, path
        with VideoReader(path, fps=25, max_size=128) as reader:
            for frame in reader:
                assert frame.image.shape == (reader.height, reader.width, 3)
                assert max(frame.image.shape[:2]) <= 128
                if frame.index == 4:
                    break
        assert frame.index == 4, path
        assert abs(reader.num_frames_estimate - info.duration_s * 25) <= 1
        if info.has_audio:
            audio = load_audio(path)
            # The audio track may end up to a few frames before the container's end.
            assert abs(len(audio) / 16000 - info.duration_s) < 0.1, path
    for path in audios:
        audio = load_audio(path, sample_rate=16000)
        expected = sf.info(path).duration
        assert abs(len(audio) / 16000 - expected) < 1e-3, path
        assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0

"""The extra noise set's pure parts (app/offline/extra_noise.py): which package files count as non-speech, the
resample-and-cut of a decoded clip, the manifest row and the copyright summary. No network, no packages."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.audio import dbfs
from app.offline.extra_noise import (
    MANIFEST_COLUMNS,
    SAMPLE_RATE,
    Piece,
    cut,
    is_spoken_tuxpaint,
    manifest_row,
    parse_copyright,
    resample,
    select_hedgewars,
    select_scratch,
    select_tuxpaint,
    source_of,
    to_pcm16,
)

TUX = "usr/share/tuxpaint/stamps/"
HW = "usr/share/games/hedgewars/Data/Sounds/voices/"
SCRATCH = "usr/share/scratch/Media/Sounds/"


def test_spoken_tuxpaint_files_are_left_out() -> None:
    spoken = ["animals/mammals/dogs/dog_desc.ogg", "animals/mammals/dogs/dog_desc_fr.ogg",
              "food/fruit/apple_red_desc_da.ogg.ogg", "symbols/math/7_en_GB.ogg", "symbols/alphabet/a.ogg",
              "household/kettle_fr.ogg", "household/kettle_fr.ogg.ogg", "household/kettle_en_GB.ogg",
              "town/x_zh_tw.ogg", "symbols/money/us/coins/001penny.ogg"]
    for rel in spoken:
        assert is_spoken_tuxpaint(TUX + rel), rel
        assert select_tuxpaint(TUX + rel) is None, rel
    # Three-letter or longer last parts are names, not language codes.
    assert select_tuxpaint(TUX + "food/fruit/apple_red.ogg") == "eating"
    assert select_tuxpaint(TUX + "animals/mammals/dogs/dog.ogg") == "dog_bark"
    assert select_tuxpaint(TUX + "animals/birds/crow.ogg") == "bird"
    assert select_tuxpaint(TUX + "household/tools/saw.ogg") == "tool"
    assert select_tuxpaint(TUX + "seasonal/hanukkah/dreydl-nun.ogg") is None  # a letter's name, said
    assert select_tuxpaint(TUX + "town/roadsigns/xing_ped.ogg") == "car_horn"  # "_ped" is no language
    assert select_tuxpaint(TUX + "clothes/hat.ogg") is None  # no category: not taken


def test_only_non_verbal_hedgewars_voices_and_chosen_scratch_folders() -> None:
    assert select_hedgewars(HW + "Default/PoisonCough.ogg") == "cough"
    assert select_hedgewars(HW + "Pirate/Laugh.ogg") == "laughter"
    assert select_hedgewars(HW + "Robot/Ooff2.ogg") == "grunt"
    spoken = ["Default/Incoming.ogg", "Default/Hmm.ogg", "Default/Ouch.ogg", "Default/Nooo.ogg", "Default/Jump2.ogg",
              "Russian_pl/Laugh.ogg", "HillBilly/Jump3.ogg"]
    for line in spoken:
        assert select_hedgewars(HW + line) is None, line
    assert select_hedgewars("usr/share/games/hedgewars/Data/Sounds/Laugh.ogg") is None  # not a voice pack
    assert select_scratch(SCRATCH + "Human/Sneeze-male.wav") == "sneeze"
    assert select_scratch(SCRATCH + "Animal/Dog1.wav") == "dog_bark"
    for rel in ["Vocals/Ya.wav", "Music Loops/Drum.mp3", "Human/PartyNoise.wav", "Instruments/Chord.wav"]:
        assert select_scratch(SCRATCH + rel) is None, rel


def _tone(seconds: float, rate: int, level: float = 0.3) -> npt.NDArray[np.float32]:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)


def test_resample_keeps_the_length_and_the_tone() -> None:
    y = resample(_tone(2.0, 44100), 44100)
    assert abs(len(y) - 2 * SAMPLE_RATE) <= 2
    spectrum = np.abs(np.fft.rfft(y[1000:9000]))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / 8000 - 440.0) <= 1.0
    assert abs(float(np.sqrt(np.mean(y[1000:-1000] ** 2))) - 0.3 / np.sqrt(2)) < 0.01
    # Above the new Nyquist frequency nothing comes through (no alias at 8000 - 6000 = 2000 Hz).
    t = np.arange(44100) / 44100
    alias = resample((0.5 * np.sin(2 * np.pi * 6000.0 * t)).astype(np.float32), 44100)
    assert float(np.sqrt(np.mean(alias[500:-500] ** 2))) < 0.005


def test_cut_makes_five_second_windows_and_drops_silence_and_slivers() -> None:
    tone = _tone(1.0, SAMPLE_RATE)
    silence = np.zeros(SAMPLE_RATE * 5, np.float32)
    # 12.5 s: 5 s of tone, 5 s of silence, 2.5 s of tone -> windows at 0 s and 10 s; the silent one is dropped.
    x = np.concatenate([np.tile(tone, 5), silence, np.tile(tone, 2), tone[: SAMPLE_RATE // 2]])
    pieces = cut(to_pcm16(x))
    assert [p.start_s for p in pieces] == [0.0, 10.0]
    assert [len(p.pcm) for p in pieces] == [5 * SAMPLE_RATE, int(2.5 * SAMPLE_RATE)]
    assert all(p.cut and p.pcm.dtype == np.int16 for p in pieces)
    pcm = to_pcm16(x)
    assert np.array_equal(pieces[0].pcm[:80], pcm[:80])  # the file's own start is left as recorded
    assert abs(int(pieces[0].pcm[-1])) < 200  # faded out at the cut
    assert np.all(np.abs(pieces[1].pcm[:40].astype(int)) < np.abs(pcm[80000:80040].astype(int)) + 1)  # faded in
    assert not np.array_equal(pieces[1].pcm[:80], pcm[80000:80080])
    short = cut(to_pcm16(tone[:2000]))  # 0.25 s: kept whole, not a cut
    assert len(short) == 1 and not short[0].cut and short[0].duration_s == 0.25
    assert cut(to_pcm16(tone[:1000])) == []  # 0.125 s: under 0.15 s
    quiet = to_pcm16((tone * 10 ** (-60 / 20) / 0.3).astype(np.float32))  # about -63 dBFS
    assert dbfs(quiet) < -55 and cut(quiet) == []


def test_manifest_row_and_source() -> None:
    piece = Piece(np.zeros(8000, np.int16), 5.0, True)
    src = source_of("scratch", "1.4.0.6~dfsg1-6.1", SCRATCH + "Effects/CarPassing.wav", piece)
    assert src == "debian:scratch/1.4.0.6~dfsg1-6.1:usr/share/scratch/Media/Sounds/Effects/CarPassing.wav@5.00-6.00s"
    row = manifest_row("noise/engine_001.wav", "engine", piece.duration_s, src)
    assert tuple(row) == MANIFEST_COLUMNS
    assert row == {"path": "noise/engine_001.wav", "kind": "noise", "category": "engine", "duration_s": "1.000",
                   "speech_onset_s": "", "source": src}
    assert source_of("p", "1", "a.wav", Piece(piece.pcm, 0.0, False)) == "debian:p/1:a.wav"


def test_copyright_groups() -> None:
    text = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            "Files: *\nCopyright:\n        2004 A <a@x>\n        2006 B\nLicense: GPL-2\n\n"
            "Files: share/Sounds/*\nCopyright: C\nLicense: GFDL-1.3\n\n"
            "License: GPL-2\n On Debian systems ...\n")
    groups = parse_copyright(text)
    assert [(g.files, g.licence, g.holders) for g in groups] == [
        ("*", "GPL-2", ("2004 A <a@x>", "2006 B")), ("share/Sounds/*", "GFDL-1.3", ("C",))]

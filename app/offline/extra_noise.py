"""An extra set of real non-speech recordings (coughs, sneezes, laughter, barks, household sounds) from Debian.

Theory of operation
-------------------
The training pool (../shared/corpus-pool) has almost no cough, sneeze, bark or laughter clips outside the
ones it shares with the report set, so a fix for those false stops can be neither fitted nor priced on it.
Debian `main` ships sound effects under DFSG-free licences inside a few data packages; this tool takes the
non-speech ones and lays them out as a corpus the evaluator reads with `--corpus OUT_DIR`:

1. `apt-get download` each package of PACKAGES into the cache (skipped, and said so, when the archive is
   larger than the package's size limit) and `dpkg-deb -x` it there. Both steps are skipped when the cache
   already holds the result, so a re-run does no network work.
2. Each package's `select` maps a path inside the package to a category, or to None to leave the file out.
   Anything that carries words is left out: Tux Paint's spoken descriptions (`*_desc*.ogg`), its spoken
   translations (`*_<lang>.ogg`, `*_<lang>_<CC>.ogg`) and its whole `symbols/` tree (letters, digits, coins
   said aloud); Hedgewars' voice lines except the non-verbal ones (coughs, laughs, grunts); Scratch's
   Vocals and Music Loops. Every candidate was spot-checked once, by Whisper tiny.en's words and no-speech
   probability and, where that was unclear, a spectrogram; what that check heard as words is listed by name
   and left out. Files whose bytes repeat an earlier file (Hedgewars' packs copy many voices) are used once.
   The `grunt` clips (Hedgewars' Ooff, Ow and Jump from 14 voice packs) are short voiced exclamations, the
   nearest thing to speech here and the least sure of the check: leave the category out when in doubt.
3. Each file is decoded with PyAV, downmixed to mono by the mean of its channels (in float, so nothing
   clips), resampled to 8 kHz by libswresample (av.AudioResampler, whose low-pass keeps the band below
   4 kHz) and rounded to 16-bit PCM. A clip longer than 5 s is cut into consecutive 5 s windows (the last
   one shorter), with 10 ms fades where a cut falls inside the sound, as the pool's windows have; any piece
   shorter than 0.15 s or quieter than -55 dBFS RMS is dropped (a click, or the silence between sounds).
4. The clips go to OUT_DIR/noise/<category>_<nnn>.wav, numbered per category in the order of PACKAGES and
   of the sorted paths, with OUT_DIR/manifest.csv in the pool's columns, an empty OUT_DIR/speech/,
   OUT_DIR/LICENSES.md (each package's version and the licence names and holders of its copyright file)
   and an OUT_DIR/dev_overlap.csv with only its header: none of this audio is in the report set.

Same cache and same code give the same files, names and bytes.

    python -m app.offline.extra_noise OUT_DIR [--cache /tmp/extra-noise-cache]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import shutil
import subprocess
import wave
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import av
import numpy as np
import numpy.typing as npt

from app.audio import dbfs

SAMPLE_RATE = 8000
WINDOW_S = 5.0
MIN_CLIP_S = 0.15
SILENT_DBFS = -55.0
FADE_S = 0.010
DEFAULT_CACHE = Path("/tmp/extra-noise-cache")
MANIFEST_COLUMNS = ("path", "kind", "category", "duration_s", "speech_onset_s", "source")

F32 = npt.NDArray[np.float32]
I16 = npt.NDArray[np.int16]
Select = Callable[[str], str | None]


# --- which files, and what they are ------------------------------------------------------------------------


def _by_stem(table: dict[str, str]) -> Select:
    """A selector from file stems (without extension) to categories; anything not in the table is left out."""

    def select(path: str) -> str | None:
        return table.get(PurePosixPath(path).stem)

    return select


_SCRATCH_ROOT = "usr/share/scratch/Media/Sounds/"
# Scratch's Human, Animal, Effects and Percussion folders, file by file. Left out: Human/PartyNoise (a crowd
# talking: Whisper tiny.en wrote two sentences, and its spectrogram is babble), and the Vocals, Music Loops,
# Instruments and Electronic folders (singing, words, music, synthesiser effects).
_SCRATCH: dict[str, str] = {
    "Human/BabyCry": "crying_baby", "Human/Cough-female": "cough", "Human/Cough-male": "cough",
    "Human/FingerSnap": "finger_snap", "Human/Footsteps-1": "footsteps", "Human/Footsteps-2": "footsteps",
    "Human/Laugh-female": "laughter", "Human/Laugh-male1": "laughter", "Human/Laugh-male2": "laughter",
    "Human/Laugh-male3": "laughter", "Human/Scream-female": "scream", "Human/Scream-male1": "scream",
    "Human/Scream-male2": "scream", "Human/Slurp": "drinking_sipping", "Human/Sneeze-female": "sneeze",
    "Human/Sneeze-male": "sneeze",
    "Animal/Bird": "bird", "Animal/Cat": "cat", "Animal/Cricket": "insect", "Animal/Crickets": "insect",
    "Animal/Dog1": "dog_bark", "Animal/Dog2": "dog_bark", "Animal/Duck": "bird", "Animal/Goose": "bird",
    "Animal/Horse": "animal_call", "Animal/HorseGallop": "hoofbeats", "Animal/Kitten": "cat",
    "Animal/Meow": "cat", "Animal/Owl": "bird", "Animal/Rooster": "bird", "Animal/SeaLion": "animal_call",
    "Animal/WolfHowl": "animal_call",
    "Effects/BalloonScratch": "effect", "Effects/BellToll": "bell", "Effects/Bubbles": "water",
    "Effects/CarPassing": "engine", "Effects/DoorClose": "door_slam", "Effects/DoorCreak": "door_creak",
    "Effects/MotorcyclePassing": "engine", "Effects/Plunge": "water", "Effects/Pop": "effect",
    "Effects/Rattle": "effect", "Effects/Ripples": "water", "Effects/SewingMachine": "household",
    "Effects/Typing": "keyboard_typing", "Effects/WaterDrop": "water", "Effects/WaterRunning": "water",
    "Percussion/CymbalCrash": "percussion", "Percussion/DrumBuzz": "percussion", "Percussion/Gong": "percussion",
    "Percussion/HandClap": "clapping", "Percussion/RideCymbal": "percussion", "Percussion/Shaker": "percussion",
}


def select_scratch(path: str) -> str | None:
    if not path.startswith(_SCRATCH_ROOT):
        return None
    rel = PurePosixPath(path[len(_SCRATCH_ROOT) :])
    return _SCRATCH.get(str(rel.with_suffix("")))


_TUX_ROOT = "usr/share/tuxpaint/stamps/"
# Tux Paint's spoken files: a description (`frog_desc.ogg`, `frog_desc_fr.ogg`) or a name said in a language
# (`7_en_GB.ogg`, `a_zh_tw.ogg`). A two-letter last part is taken as a language code even when it might not
# be one: leaving out a real sound costs little, keeping a spoken one would teach the detector to miss speech.
_SPOKEN_STEM = re.compile(r"(_desc(_.*)?|_[a-z]{2}(_[A-Za-z]{2})?)$")
# The stems under the stamps tree that are real sounds but not their folder's default category, or that are
# speech. Every candidate was spot-checked (Whisper tiny.en's words and no-speech probability, and a
# spectrogram where that was unclear); the ones mapped to None carry a voice.
_TUX_STEMS: dict[str, str | None] = {
    "dog": "dog_bark", "blackcat": "cat", "toilet": "toilet_flush", "vacuum_cleaner": "vacuum_cleaner",
    "Washing-machine": "household", "kettle": "household", "rubberduck": "household", "bottle": "dishes",
    "glass": "dishes", "camera_35mm": "household", "gift": "household", "apple_red": "eating",
    "hard_candy": "eating", "lightningbolt": "thunder", "fireworks": "fireworks", "firetruck": "siren",
    "checkeredflag": "engine", "xing_ped": "car_horn", "final-roll-call": "music", "bat_left": "effect",
    "spider": "effect", "santahat": "effect", "no_uturn": "effect", "bathyscape": "effect",
    # Voices: each dreidel side is its letter's name said aloud (Whisper: "Kimo", "Hey", "None", "Shen"), the
    # lander is "one small step ..." over the radio, the school crossing is children's voices and the ghost a
    # person's "woooo".
    "dreydl-gimmel": None, "dreydl-hay": None, "dreydl-nun": None, "dreydl-shin": None, "apollo_lander": None,
    "xing_school": None, "ghost": None,
}
# The folder a stamp sits in gives the category of anything not named above (first match wins).
_TUX_FOLDERS: tuple[tuple[str, str], ...] = (
    ("animals/birds/", "bird"),
    ("animals/insects/", "insect"),
    ("animals/", "animal_call"),
    ("household/tools/", "tool"),
    ("household/arttools/", "tool"),
    ("hobbies/music/percussion/", "percussion"),
    ("hobbies/music/", "music"),
)


def is_spoken_tuxpaint(path: str) -> bool:
    """True for a Tux Paint stamp sound that is (or may be) speech: left out whatever else it is."""
    rel = path[len(_TUX_ROOT) :] if path.startswith(_TUX_ROOT) else path
    name = PurePosixPath(rel).name
    while name.endswith(".ogg"):  # one file is `*_desc_da.ogg.ogg`
        name = name[: -len(".ogg")]
    return rel.startswith("symbols/") or _SPOKEN_STEM.search(name) is not None


def select_tuxpaint(path: str) -> str | None:
    if not path.startswith(_TUX_ROOT) or not path.endswith(".ogg") or is_spoken_tuxpaint(path):
        return None
    rel = path[len(_TUX_ROOT) :]
    stem = PurePosixPath(rel).stem
    if stem in _TUX_STEMS:
        return _TUX_STEMS[stem]
    return next((cat for folder, cat in _TUX_FOLDERS if rel.startswith(folder)), None)


_HEDGEWARS_ROOT = "usr/share/games/hedgewars/Data/Sounds/voices/"
# The non-verbal voice files only: every other file of a voice pack is a line with words ("Incoming!").
# "Hmm" is left out too (a caller's "hmm" is a backchannel, not noise), and so is "Ouch" (a word). Jump2 is
# left out: in 7 of the 15 packs Whisper tiny.en heard it confidently as a word ("Wow", "Hi", "Hello"; no-speech
# probability at most 0.2), so it is an exclamation rather than a grunt.
_HEDGEWARS: dict[str, str] = {
    "PoisonCough": "cough", "Laugh": "laughter",
    "Ooff1": "grunt", "Ooff2": "grunt", "Ooff3": "grunt",
    "Ow1": "grunt", "Ow2": "grunt", "Ow3": "grunt", "Ow4": "grunt",
    "Jump1": "grunt", "Jump3": "grunt",
}
# The same check on the rest: the Russian_pl pack was heard as words in 7 of its 11 files ("Bad, yeah, bloom"
# for its laugh), so none of it is used; these three single files were heard as words too.
_HEDGEWARS_SPOKEN_PACKS = frozenset({"Russian_pl"})
_HEDGEWARS_SPOKEN = frozenset({"Default_pl/Jump1", "Default_pl/Ow3", "HillBilly/Jump3"})


def select_hedgewars(path: str) -> str | None:
    if not path.startswith(_HEDGEWARS_ROOT) or not path.endswith(".ogg"):
        return None
    rel = PurePosixPath(path[len(_HEDGEWARS_ROOT) :])
    if len(rel.parts) != 2 or str(rel.parent) in _HEDGEWARS_SPOKEN_PACKS:
        return None
    if f"{rel.parent}/{rel.stem}" in _HEDGEWARS_SPOKEN:
        return None
    return _HEDGEWARS.get(rel.stem)


_FLIGHTGEAR_ROOT = "usr/share/games/flightgear/Sounds/"
_FLIGHTGEAR: dict[str, str] = {"coughing": "cough"}


def select_flightgear(path: str) -> str | None:
    if not path.startswith(_FLIGHTGEAR_ROOT) or "/" in path[len(_FLIGHTGEAR_ROOT) :]:
        return None
    return _FLIGHTGEAR.get(PurePosixPath(path).stem)


MB = 1_000_000


@dataclass(frozen=True)
class Package:
    """A Debian package to take sounds from."""

    name: str
    root: str  # the folder inside the package that holds the sounds
    select: Select
    licence_files: str  # the copyright file's `Files:` pattern that covers `root` (checked, and reported)
    max_bytes: int = 400 * MB  # larger archives are skipped: too much download for a handful of sounds


PACKAGES: tuple[Package, ...] = (
    Package("scratch", _SCRATCH_ROOT, select_scratch, "Help/* Media/* Projects"),
    Package("tuxpaint-stamps-default", _TUX_ROOT, select_tuxpaint, "*"),
    Package("hedgewars-data", _HEDGEWARS_ROOT, select_hedgewars, "share/hedgewars/Data/Sounds/*"),
    Package("flightgear-data-base", _FLIGHTGEAR_ROOT, select_flightgear, "*", max_bytes=300 * MB),
)
AUDIO_SUFFIXES = (".wav", ".ogg", ".mp3", ".flac")


# --- decoding, resampling and cutting ----------------------------------------------------------------------


def _planes(frame: av.AudioFrame) -> F32:
    """A decoded frame as float32 (channels, samples) in [-1, 1], whatever its sample format."""
    x = np.asarray(frame.to_ndarray())
    channels = frame.layout.nb_channels
    if not frame.format.is_planar:
        x = x.reshape(-1, channels).T  # packed: one row, channels interleaved
    y: F32
    if x.dtype == np.uint8:
        y = ((x.astype(np.float32) - 128.0) / 128.0).astype(np.float32)
    elif np.issubdtype(x.dtype, np.integer):
        y = (x.astype(np.float64) / float(2 ** (8 * x.dtype.itemsize - 1))).astype(np.float32)
    else:
        y = x.astype(np.float32)
    return y


def decode_mono(path: Path) -> tuple[F32, int]:
    """The file's first audio stream, downmixed to mono (mean of the channels), at its own rate."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        parts = [_planes(frame).mean(axis=0) for frame in container.decode(stream)]
        rate = int(stream.codec_context.sample_rate)
    return (np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)), rate


def resample(x: F32, rate: int, out_rate: int = SAMPLE_RATE) -> F32:
    """Mono float samples at `rate` resampled to `out_rate` by libswresample (flushed: the tail is kept)."""
    if rate == out_rate or len(x) == 0:
        return x.astype(np.float32)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=out_rate)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x, dtype=np.float32)[None, :], format="flt",
                                       layout="mono")
    frame.sample_rate = rate
    frame.pts = 0
    out = [f.to_ndarray().reshape(-1) for f in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def to_pcm16(x: F32) -> I16:
    return np.clip(np.round(x.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def _faded(pcm: I16, fade_in: bool, fade_out: bool) -> I16:
    n = min(int(FADE_S * SAMPLE_RATE), len(pcm) // 2)
    if n == 0 or not (fade_in or fade_out):
        return pcm
    y = pcm.astype(np.float64)
    ramp = np.arange(n) / n
    if fade_in:
        y[:n] *= ramp
    if fade_out:
        y[-n:] *= ramp[::-1]
    return np.round(y).astype(np.int16)


@dataclass(frozen=True)
class Piece:
    """One clip cut from a file: its samples at 8 kHz and where it sits in the file."""

    pcm: I16
    start_s: float
    cut: bool  # True when the file was longer than one window (the source names the excerpt)

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / SAMPLE_RATE


def cut(pcm: I16) -> list[Piece]:
    """The 8 kHz clip as it goes into the set: whole if up to 5 s, else consecutive 5 s windows (the last one
    what is left); pieces under 0.15 s or below -55 dBFS RMS are dropped."""
    window = int(WINDOW_S * SAMPLE_RATE)
    is_cut = len(pcm) > window
    pieces: list[Piece] = []
    for start in range(0, max(len(pcm), 1), window):
        end = min(start + window, len(pcm))
        # A fade only where the cut falls inside the sound: a file's own start and end are left as recorded.
        piece = _faded(pcm[start:end], fade_in=start > 0, fade_out=end < len(pcm))
        if len(piece) < MIN_CLIP_S * SAMPLE_RATE or dbfs(piece) < SILENT_DBFS:
            continue
        pieces.append(Piece(piece, start / SAMPLE_RATE, is_cut))
    return pieces


def load_pieces(path: Path) -> list[Piece]:
    x, rate = decode_mono(path)
    return cut(to_pcm16(resample(x, rate)))


# --- the Debian side ---------------------------------------------------------------------------------------


def _run(cmd: Sequence[str], cwd: Path | None = None) -> str:
    return subprocess.run(list(cmd), cwd=cwd, check=True, capture_output=True, text=True).stdout


def _apt_fields(name: str) -> dict[str, str]:
    """The candidate version's Version and Size, updating apt's lists once if the package is unknown."""
    for attempt in range(2):
        try:
            text = _run(["apt-cache", "show", "--no-all-versions", name])
        except subprocess.CalledProcessError:
            text = ""
        fields = dict(re.findall(r"^(Version|Size|Filename): (.+)$", text, flags=re.M))
        if "Version" in fields:
            return fields
        if attempt == 0:
            _run(["apt-get", "update"])
    raise SystemExit(f"apt does not know {name}")


@dataclass
class Fetched:
    """A package unpacked in the cache, or the reason it was skipped."""

    package: Package
    version: str = ""
    size: int = 0
    root: Path | None = None
    skipped: str = ""
    used: Counter[str] = field(default_factory=Counter)


def fetch(package: Package, cache: Path) -> Fetched:
    """Download and unpack `package` into the cache (each step skipped when its result is already there)."""
    fields = _apt_fields(package.name)
    got = Fetched(package, fields["Version"], int(fields.get("Size", "0")))
    if got.size > package.max_bytes:
        got.skipped = f"archive {got.size / MB:.0f} MB, over the {package.max_bytes / MB:.0f} MB limit"
        return got
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = debs / PurePosixPath(fields.get("Filename", f"{package.name}_{got.version}_all.deb")).name
    if not deb.exists():
        _run(["apt-get", "download", f"{package.name}={got.version}"], cwd=debs)
    root = cache / "root" / deb.stem
    done = root / ".unpacked"
    if not done.exists():
        if root.exists():
            shutil.rmtree(root)  # a half-finished unpack from an interrupted run
        root.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(root)])
        done.touch()
    got.root = root
    return got


def candidates(root: Path, package: Package) -> Iterator[tuple[str, str, Path]]:
    """(path inside the package, category, file) for each selected sound, sorted by path."""
    base = root / package.root
    if not base.is_dir():
        return
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.name.lower().endswith(AUDIO_SUFFIXES))
    for file in files:
        rel = file.relative_to(root).as_posix()
        category = package.select(rel)
        if category:
            yield rel, category, file


# --- licences ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileGroup:
    files: str
    licence: str
    holders: tuple[str, ...]


def parse_copyright(text: str) -> list[FileGroup]:
    """The `Files:` paragraphs of a machine-readable (DEP-5) copyright file: pattern, licence name, holders."""
    groups: list[FileGroup] = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, list[str]] = {}
        key = ""
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key].append(line.strip())
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = [value.strip()]
        if "Files" in fields:
            files = " ".join(v for v in fields["Files"] if v)
            holders = tuple(v for v in fields.get("Copyright", []) if v and v != ".")
            groups.append(FileGroup(files, (fields.get("License") or ["?"])[0], holders))
    return groups


def licences_md(fetched: Sequence[Fetched]) -> str:
    lines = ["# Licences", "", "Every clip comes from a Debian `main` package (DFSG-free). Per package: the version",
             "used, the licence of the file group its sounds fall under, and every file group of its",
             "`usr/share/doc/<package>/copyright` (licence names and copyright holders only; the full texts are",
             "in that file).", ""]
    for got in fetched:
        lines.append(f"## {got.package.name}")
        lines.append("")
        if got.skipped or got.root is None:
            lines += [f"Not used: {got.skipped} (version {got.version}).", ""]
            continue
        path = got.root / "usr/share/doc" / got.package.name / "copyright"
        groups = parse_copyright(path.read_text(encoding="utf-8", errors="replace"))
        covering = next((g for g in groups if g.files == got.package.licence_files), None)
        if covering is None:
            raise SystemExit(f"{path}: no `Files: {got.package.licence_files}` group; check the licence by hand")
        lines += [f"- Version: {got.version}", f"- Clips: {sum(got.used.values())}, from `{got.package.root}`",
                  f"- Licence of the sounds used: **{covering.licence}** (`Files: {covering.files}`; "
                  f"{'; '.join(covering.holders) or 'no holder named'})", "",
                  "| Files | Licence | Copyright |", "|---|---|---|"]
        for g in groups:
            holders = "; ".join(g.holders).replace("|", "/")
            lines.append(f"| `{g.files}` | {g.licence} | {holders} |")
        lines.append("")
    return "\n".join(lines)


# --- writing the set ---------------------------------------------------------------------------------------


def manifest_row(path: str, category: str, duration_s: float, source: str) -> dict[str, str]:
    return {"path": path, "kind": "noise", "category": category, "duration_s": f"{duration_s:.3f}",
            "speech_onset_s": "", "source": source}


def source_of(package: str, version: str, inner: str, piece: Piece) -> str:
    """`debian:<package>/<version>:<path>`, plus the excerpt's seconds when the file was cut (as the pool)."""
    base = f"debian:{package}/{version}:{inner}"
    if not piece.cut:
        return base
    return f"{base}@{piece.start_s:.2f}-{piece.start_s + piece.duration_s:.2f}s"


def write_wav(path: Path, pcm: I16) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.astype("<i2").tobytes())


def build(out: Path, cache: Path, packages: Sequence[Package] = PACKAGES) -> tuple[list[dict[str, str]], list[Fetched]]:
    (out / "noise").mkdir(parents=True, exist_ok=True)
    (out / "speech").mkdir(exist_ok=True)
    rows: list[dict[str, str]] = []
    numbers: Counter[str] = Counter()
    seen: set[bytes] = set()
    fetched: list[Fetched] = []
    for package in packages:
        got = fetch(package, cache)
        fetched.append(got)
        if got.root is None:
            continue
        for inner, category, file in candidates(got.root, package):
            digest = hashlib.sha256(file.read_bytes()).digest()
            if digest in seen:
                continue  # the same recording again (a language pack's copy)
            seen.add(digest)
            for piece in load_pieces(file):
                numbers[category] += 1
                rel = f"noise/{category}_{numbers[category]:03d}.wav"
                write_wav(out / rel, piece.pcm)
                rows.append(manifest_row(rel, category, piece.duration_s, source_of(package.name, got.version,
                                                                                     inner, piece)))
                got.used[category] += 1
    written = {r["path"] for r in rows}
    for stale in (out / "noise").glob("*.wav"):  # from an earlier run with another selection
        if f"noise/{stale.name}" not in written:
            stale.unlink()
    with open(out / "manifest.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    (out / "dev_overlap.csv").write_text("path,relation,dev_paths\n", encoding="utf-8")
    (out / "LICENSES.md").write_text(licences_md(fetched), encoding="utf-8")
    return rows, fetched


def summary(rows: Sequence[dict[str, str]], fetched: Sequence[Fetched]) -> str:
    by_cat: Counter[str] = Counter(r["category"] for r in rows)
    seconds: Counter[str] = Counter()
    for r in rows:
        seconds[r["category"]] += round(float(r["duration_s"]) * 1000)
    lines = [f"{'category':<18} {'clips':>5} {'min':>6}"]
    for cat in sorted(by_cat):
        lines.append(f"{cat:<18} {by_cat[cat]:>5} {seconds[cat] / 60000:>6.2f}")
    total_ms = sum(seconds.values())
    lines.append(f"{'total':<18} {len(rows):>5} {total_ms / 60000:>6.2f}")
    lines.append("")
    for got in fetched:
        name = f"{got.package.name} {got.version}"
        if got.skipped:
            lines.append(f"{name}: skipped ({got.skipped})")
        else:
            cats = ", ".join(f"{c} {n}" for c, n in sorted(got.used.items()))
            lines.append(f"{name}: {sum(got.used.values())} clips ({cats})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="output directory (laid out like ../shared/corpus-pool)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="downloads and unpacked packages")
    args = parser.parse_args(argv)
    rows, fetched = build(args.out, args.cache)
    print(summary(rows, fetched))


if __name__ == "__main__":
    main()

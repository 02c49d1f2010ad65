"""`python -m app.bench.words_tuning`: tune the recognizer's short-utterance decoding on tuning data only.

Theory of operation
-------------------
The held-out sets (app/bench/phrases.py, the stop_words phrases, app/bench/stt.py's phrases, the report corpus)
are never read here. What is:

1. app/bench/tuning_phrases.py's phrases, each spoken by its voices, as the session hands a short utterance to
   the recognizer: `LEAD_S` of line silence first (the session's pre-roll before the detector's onset), then the
   words, through the mu-law round trip. Scored: the interruption kind of the words heard (app/bargein/words.py)
   against the phrase's, and how many backchannels came out as a kind that stops the agent (must stay 0).
2. The corpus pool's noise clips, each cut to its loudest second with the lead before it (what a VAD would call
   an utterance): how many come out as a kind that stops the agent; the same for each `--noise DIR` (a set in
   the pool's layout, e.g. `python -m app.offline.extra_noise DIR`'s real noises), by category.
3. The pool's spoken digits (short real speech, and the short_words condition's stand-ins for a backchannel):
   word errors, and how many come out as a kind that stops the agent.
4. CPU seconds per clip, the whole process (nothing else runs in it).

Each configuration (`--hint none|gated`, `--hint-text`, `--max-ms`, `--gate`) is one run; compare runs side by
side.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from app.bargein.words import STOPS_THE_AGENT, interruption
from app.bench.stats import wilson
from app.bench.stt import labelled_clips, read_wav, word_errors
from app.bench.tuning_phrases import TUNING_PHRASES, TUNING_VOICES
from providers.mulaw import Pcm16, pcm16_to_ulaw, ulaw_to_pcm16
from providers.stt.whisper_hint import COMMANDS, Hint

LEAD_S = 0.4  # the pre-roll before the onset, less the detector's lag
POOL = Path(__file__).resolve().parents[3] / "shared" / "corpus-pool"


def _pct(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{k}/{n} ({k / n:.0%}, CI {lo:.0%}-{hi:.0%})" if n else "-"


def with_lead(pcm: Pcm16, seconds: float = LEAD_S) -> Pcm16:
    return np.concatenate([np.zeros(int(seconds * 8000), dtype=np.int16), pcm])


async def spoken_by(texts: Sequence[str], voice: str, wpm: int, stretch: float) -> list[Pcm16]:
    from providers.tts.espeak import EspeakTts

    tts = EspeakTts(voice=voice, rate_wpm=wpm, sample_rate=8000)
    out = []
    for text in texts:
        pcm = (await tts.synthesize(text)).pcm.astype(np.float64)
        pos = np.arange(0, len(pcm) - 1, 1 / stretch)
        stretched = np.clip(np.interp(pos, np.arange(len(pcm)), pcm), -32768, 32767).astype(np.int16)
        out.append(ulaw_to_pcm16(pcm16_to_ulaw(stretched)))
    return out


def loudest_second(pcm: Pcm16) -> Pcm16:
    """The loudest 1 s of a clip, with the lead before it (where the clip has it)."""
    hop = 800
    frames = [float(np.mean(pcm[i : i + 8000].astype(np.float64) ** 2)) for i in range(0, max(1, len(pcm) - 8000), hop)]
    start = int(np.argmax(frames)) * hop
    return pcm[max(0, start - int(LEAD_S * 8000)) : start + 8000]


def noise_clips(root: Path) -> list[tuple[str, Pcm16]]:
    with (root / "manifest.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "noise"]
    return [(r["path"], loudest_second(read_wav(root / r["path"]))) for r in rows]


async def run(hint: Hint | None, voices: int, show: bool, extra: Sequence[Path] = (),
              phrases: bool = True) -> dict[str, str]:
    from providers.stt.whisper import WhisperStt

    stt = WhisperStt(workers=1, cpu_threads=1, hint=hint)
    await stt.start()

    heard: dict[str, str] = {}

    async def hear(pcm: Pcm16, name: str) -> str:
        heard[name] = (await stt.transcribe(pcm16_to_ulaw(pcm), "mulaw")).text
        return heard[name]

    cpu0, clips = time.process_time(), 0
    texts = [t for t, _ in TUNING_PHRASES]
    right = stopped_bc = n_bc = n = 0
    by_kind: dict[str, list[int]] = {}
    for voice, wpm, stretch in TUNING_VOICES[:voices] if phrases else ():
        spoken = await spoken_by(texts, voice, wpm, stretch)
        for (text, kind), pcm in zip(TUNING_PHRASES, spoken, strict=True):
            said = await hear(with_lead(pcm), f"{voice}|{kind}|{text}")
            clips += 1
            got = interruption(said)
            n += 1
            right += got == kind
            by_kind.setdefault(kind, [0, 0])[0] += got == kind
            by_kind[kind][1] += 1
            if kind == "backchannel":
                n_bc += 1
                stopped_bc += got in STOPS_THE_AGENT
            if show and got != kind:
                print(f"    {voice}: {text!r} ({kind}) heard {said!r} -> {got}")
    print(f"hint: {hint}")
    print(f"  tuning phrases, kinds right: {_pct(right, n)}")
    for name, (k, m) in sorted(by_kind.items()):
        print(f"    {name:<14} {_pct(k, m)}")
    print(f"  backchannels that would stop the agent: {stopped_bc}/{n_bc}")

    noise_stops = noise_words = 0
    noise = noise_clips(POOL)
    for name, pcm in noise:
        said = await hear(pcm, f"noise|{name}")
        clips += 1
        noise_words += bool(said.strip())
        if interruption(said) in STOPS_THE_AGENT:
            noise_stops += 1
            if show:
                print(f"    noise {name}: heard {said!r} -> {interruption(said)}")
    print(f"  pool noise (loudest 1 s): with words {noise_words}/{len(noise)}, "
          f"would stop the agent {_pct(noise_stops, len(noise))}")
    for root in extra:
        stops: dict[str, list[int]] = {}
        for name, pcm in noise_clips(root):
            said = await hear(pcm, f"noise|{root.name}|{name}")
            clips += 1
            category = Path(name).stem.rsplit("_", 1)[0]
            stops.setdefault(category, [0, 0])[1] += 1
            if interruption(said) in STOPS_THE_AGENT:
                stops[category][0] += 1
                if show:
                    print(f"    noise {root.name}/{name}: heard {said!r} -> {interruption(said)}")
        total = [sum(k for k, _ in stops.values()), sum(m for _, m in stops.values())]
        print(f"  {root} noise (loudest 1 s): would stop the agent {_pct(*total)}; "
              + ", ".join(f"{c} {k}/{m}" for c, (k, m) in sorted(stops.items()) if k))

    digits = [c for c in labelled_clips(POOL) if len(c.reference.split()) == 1]
    errors = word_errors("", "")
    digit_stops = 0
    for item in digits:
        pcm = np.concatenate([read_wav(p) for p in item.clips])
        said = await hear(with_lead(pcm, 0.2), f"digit|{item.name}|{item.reference}")
        clips += 1
        errors = errors + word_errors(item.reference, said)
        if interruption(said) in STOPS_THE_AGENT:
            digit_stops += 1
            if show:
                print(f"    digit {item.reference}: heard {said!r} -> {interruption(said)}")
    print(f"  pool digits: WER {errors.wer:.1%} ({errors.errors}/{errors.ref_words}), "
          f"would stop the agent {digit_stops}/{len(digits)}")
    print(f"  CPU per clip {(time.process_time() - cpu0) / clips:.3f} s over {clips} clips")
    await stt.aclose()
    return heard


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.bench.words_tuning", description=__doc__.split("\n")[0])
    p.add_argument("--hint", choices=("none", "gated"), default="gated")
    p.add_argument("--hint-text", default=COMMANDS)
    p.add_argument("--max-ms", type=float, default=Hint().max_ms)
    p.add_argument("--gate", type=float, default=Hint().gate, help="1.0: the hint on every short clip")
    p.add_argument("--min-word-prob", type=float, default=Hint().min_word_prob)
    p.add_argument("--believe", choices=("mean", "min"), default=Hint().believe)
    p.add_argument("--vowel-min-word-prob", type=float, default=Hint().vowel_min_word_prob)
    p.add_argument("--voices", type=int, default=len(TUNING_VOICES))
    p.add_argument("--show", action="store_true")
    p.add_argument("--noise", type=Path, action="append", default=[],
                   help="another noise set in the pool's layout (repeatable)")
    p.add_argument("--no-phrases", action="store_true", help="skip the spoken tuning phrases")
    p.add_argument("--json", type=Path, help="write every clip's heard text here")
    args = p.parse_args(argv)
    hint = None if args.hint == "none" else Hint(args.hint_text, args.max_ms, args.gate, args.min_word_prob,
                                                 args.believe, args.vowel_min_word_prob)
    heard = asyncio.run(run(hint, args.voices, args.show, args.noise, not args.no_phrases))
    if args.json is not None:
        args.json.write_text(json.dumps(heard, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

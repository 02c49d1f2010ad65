"""What the going-on rule (app/call/going_on.py) makes of the embedded recognizer's text, on the tuning pool.

A caller turn that stopped the agent is, once heard, either answered or "gone on" over (the agent says the rest
of its cut turn). The rule reads the recognizer's text, so it is measured on what Whisper writes:

- noise: every 2 s piece (at 0, 1, 2 and 3 s) of the pool's noise clips: each should go on (a bark taken for
  the caller's turn is not a question);
- speech: the pool's speech clips whole (a seeded sample): none should go on, bar a listener's words alone
  ("Thank you.", "Yeah.", which is what the rule means to go on over).

The pool is `/work/shared/corpus-pool` minus the clips its dev_overlap.csv ties to the report corpus; the report
corpus is never read here. The audio goes through the mu-law round trip, as the call path hands it over.

    python -m app.offline.going_on_eval [--speech 300] [--seed 8] [--show]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import random
from collections import Counter
from pathlib import Path

from app.bargein.words import interruption
from app.bench.stats import wilson
from app.bench.stt import phone_leg, read_wav
from app.call.going_on import StopLeft, go_on

POOL = Path(__file__).resolve().parents[3] / "shared" / "corpus-pool"
REST = StopLeft("b", 1, "Our opening", "opening hours are nine to five on weekdays.")


def pool_rows(pool: Path) -> list[dict[str, str]]:
    with open(pool / "dev_overlap.csv", newline="") as f:
        overlap = {r["path"] for r in csv.DictReader(f)}
    with open(pool / "manifest.csv", newline="") as f:
        return [r for r in csv.DictReader(f) if r["path"] not in overlap]


async def evaluate(pool: Path, speech_n: int, seed: int, show: bool) -> None:
    from providers.stt.whisper import WhisperStt  # loads the model: only when run

    rows = pool_rows(pool)
    noise = [r for r in rows if r["kind"] == "noise"]
    speech = [r for r in rows if r["kind"] == "speech"]
    speech = random.Random(seed).sample(speech, min(speech_n, len(speech)))
    stt = WhisperStt()
    try:
        for kind, clips in (("noise", noise), ("speech", speech)):
            outcomes: Counter[str] = Counter()
            shown: list[str] = []
            for r in clips:
                pcm = read_wav(pool / r["path"])
                pieces = [pcm] if kind == "speech" else [pcm[a:a + 16000] for a in (0, 8000, 16000, 24000)]
                for piece in pieces:
                    if len(piece) < 4000:
                        continue
                    text = (await stt.transcribe(phone_leg(piece), "mulaw")).text
                    reason = go_on(REST, text, None, "")
                    outcomes[reason or f"answered ({interruption(text)})"] += 1
                    if show and (reason is None) == (kind == "noise"):
                        shown.append(f"{Path(r['path']).name}: {text[:50]!r} -> {reason or 'answered'}")
            total = sum(outcomes.values())
            went = outcomes["no_words"] + outcomes["listener_words"]
            lo, hi = wilson(went, total)
            print(f"{kind}: {len(clips)} clips, {total} pieces; went on {went}/{total} ({went / total:.0%}, "
                  f"CI {lo:.0%}-{hi:.0%}): " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
            for line in shown:
                print("   ", line)
    finally:
        await stt.aclose()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pool", type=Path, default=POOL)
    p.add_argument("--speech", type=int, default=300, help="speech clips sampled from the pool")
    p.add_argument("--seed", type=int, default=8)
    p.add_argument("--show", action="store_true", help="print each noise piece answered, each speech clip gone on")
    args = p.parse_args()
    asyncio.run(evaluate(args.pool, args.speech, args.seed, args.show))


if __name__ == "__main__":
    main()

"""`bargein bench --mode words`: the interruption kinds (app/bargein/words.py) on the held-out spoken phrases.

Each phrase of app/bench/phrases.py is spoken by a synthetic caller (espeak-ng, a British voice unlike the
agent's American one), sent through the phone leg (8 kHz mu-law) to the embedded recognizer, and its words are
classified. Printed: how many phrases got the right kind, from their text (the rules alone) and from what the
recognizer heard (rules and recognizer), per kind, with Wilson 95% intervals; and how many backchannels would
have stopped the agent (the count that must be 0).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from app.bargein.words import STOPS_THE_AGENT, interruption
from app.bench.phrases import PHRASES
from app.bench.stats import wilson
from app.bench.stt import PHRASE_VOICE, phone_leg, synthesise_phrases


def _line(label: str, k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"  {label:<14} {k:>2}/{n:<2} ({k / n:.0%}, CI {lo:.0%}-{hi:.0%})" if n else f"  {label:<14} -"


async def measure(show: bool, hint: bool = True) -> int:
    from providers.stt.whisper import WhisperStt
    from providers.stt.whisper_hint import COMMAND_HINT

    texts = [t for t, _ in PHRASES]
    spoken = await synthesise_phrases(texts, PHRASE_VOICE)
    stt = WhisperStt(workers=1, hint=COMMAND_HINT if hint else None)
    await stt.start()
    heard = [(await stt.transcribe(phone_leg(pcm), "mulaw")).text for pcm in spoken]
    await stt.aclose()
    kinds = sorted({k for _, k in PHRASES})
    print(f"interruption kinds on {len(PHRASES)} held-out phrases (espeak-ng {PHRASE_VOICE}, Whisper tiny.en, "
          f"command hint {'on' if hint else 'off'}):")
    for source, said in (("text", texts), ("spoken", heard)):
        got = [interruption(s) for s in said]
        right = sum(g == k for g, (_, k) in zip(got, PHRASES, strict=True))
        print(_line(f"{source}: all", right, len(PHRASES)))
        for kind in kinds:
            idx = [i for i, (_, k) in enumerate(PHRASES) if k == kind]
            print(_line(f"  {kind}", sum(got[i] == kind for i in idx), len(idx)))
        stopped = sum(got[i] in STOPS_THE_AGENT for i, (_, k) in enumerate(PHRASES) if k == "backchannel")
        print(f"  backchannels that would stop the agent: {stopped}")
        if show:
            for (text, kind), s, g in zip(PHRASES, said, got, strict=True):
                if g != kind:
                    print(f"    {text!r} ({kind}) heard {s!r} -> {g}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bargein bench --mode words", description=__doc__.split("\n")[0])
    p.add_argument("--show", action="store_true", help="print every phrase given the wrong kind")
    p.add_argument("--hint", choices=("on", "off"), default="on",
                   help="the recognizer's command-word second decode on short clips (providers/stt/whisper_hint.py)")
    args = p.parse_args(argv)
    return asyncio.run(measure(args.show, args.hint == "on"))


if __name__ == "__main__":
    raise SystemExit(main())

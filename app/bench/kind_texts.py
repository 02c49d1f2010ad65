"""`python -m app.bench.kind_texts`: the interruption-kind rules (app/bargein/words.py) on written utterances.

Theory of operation
-------------------
The spoken tuning phrases (app/bench/tuning_phrases.py) are few, because each one is synthesised in four voices
and decoded by the recognizer. The rules' own coverage (what a caller says, written as the recognizer would
write it) is cheaper to tune on text: these utterances were written for that, apart from the held-out sets
(app/bench/phrases.py, the stop_words condition's phrases), which are never read here. They are what callers
say over an agent in the six kinds, with the punctuation and casing Whisper writes, and the ways a short
utterance is run together ("no wait", "okay stop"). A change to the rules is kept when it gets more of these
right and breaks none of tests/bargein/test_words.py; the held-out sets are then measured once
(`bargein bench --mode words`, which prints the kinds from text and from audio).

Prints the share right per kind with Wilson 95% intervals, and every miss. Exit status 1 if a backchannel came
out as a kind that stops the agent (that must never happen).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from app.bargein.words import STOPS_THE_AGENT, Kind, interruption
from app.bench.stats import wilson

KIND_TEXTS: tuple[tuple[str, Kind], ...] = (
    # backchannels: the agent keeps talking
    ("Mm-hmm.", "backchannel"), ("Uh huh.", "backchannel"), ("Mhm.", "backchannel"), ("Yeah, yeah.", "backchannel"),
    ("Right, right.", "backchannel"), ("Okay, okay.", "backchannel"), ("Of course.", "backchannel"),
    ("Sounds good.", "backchannel"), ("Makes sense.", "backchannel"), ("I understand.", "backchannel"),
    ("Yes.", "backchannel"), ("Sure, sure.", "backchannel"), ("Okay, got it.", "backchannel"),
    ("All right.", "backchannel"), ("Alright then.", "backchannel"), ("Uh-huh, yeah.", "backchannel"),
    ("Yep.", "backchannel"), ("Great, thanks.", "backchannel"), ("Thank you.", "backchannel"),
    ("Oh, okay.", "backchannel"), ("Ah, I see.", "backchannel"), ("Fair enough.", "backchannel"),
    ("Absolutely.", "backchannel"), ("Definitely.", "backchannel"), ("Go on.", "backchannel"),
    ("Go ahead.", "backchannel"), ("Yeah, go on.", "backchannel"), ("Mm.", "backchannel"), ("Hmm.", "backchannel"),
    ("Okay, cool.", "backchannel"), ("That's fine.", "backchannel"), ("That's great.", "backchannel"),
    ("Wonderful.", "backchannel"), ("Lovely.", "backchannel"), ("Brilliant.", "backchannel"),
    ("Yes, please.", "backchannel"), ("Okay, thank you.", "backchannel"), ("Right.", "backchannel"),
    ("Uh-huh.", "backchannel"), ("Yeah, sure.", "backchannel"), ("Oh nice.", "backchannel"),
    ("Yes, that's right.", "backchannel"), ("Correct.", "backchannel"), ("Understood.", "backchannel"),
    ("Noted.", "backchannel"), ("Got you.", "backchannel"),
    # stop / wait
    ("Wait a minute.", "stop"), ("Hold on a sec.", "stop"), ("Hang on a second.", "stop"), ("Whoa, whoa.", "stop"),
    ("Stop talking.", "stop"), ("Can you stop?", "stop"), ("Please stop.", "stop"), ("No, stop.", "stop"),
    ("Sorry, wait.", "stop"), ("Wait, wait.", "stop"), ("Shh.", "stop"), ("Just a sec.", "stop"),
    ("One moment, please.", "stop"), ("Hold on, hold on.", "stop"), ("Wait a sec.", "stop"),
    ("Stop, please.", "stop"), ("Okay, hold on.", "stop"), ("Yeah, hang on.", "stop"), ("Hey, hey.", "stop"),
    ("Excuse me.", "stop"), ("Sorry, can I just say something?", "stop"), ("Let me stop you there.", "stop"),
    ("Sorry to cut you off.", "stop"), ("Give me a second.", "stop"), ("Give me a moment.", "stop"),
    ("Hold that thought.", "stop"), ("Not so fast.", "stop"), ("Wait, what?", "stop"), ("Stop it.", "stop"),
    ("Okay, enough.", "stop"), ("That's enough.", "stop"), ("Let me think.", "stop"), ("No, no, no.", "stop"),
    ("Um, wait.", "stop"), ("Uh, hold on.", "stop"), ("Hang on a minute.", "stop"), ("Wait up.", "stop"),
    ("Stop right now.", "stop"), ("Could you hold on?", "stop"), ("Can you wait a second?", "stop"),
    # cancellations
    ("Cancel that.", "cancellation"), ("Don't bother.", "cancellation"), ("No need.", "cancellation"),
    ("Forget about it.", "cancellation"), ("Never mind that.", "cancellation"),
    ("I don't want that anymore.", "cancellation"), ("Don't worry about it.", "cancellation"),
    ("Actually, cancel it.", "cancellation"), ("Call it off.", "cancellation"), ("Drop it.", "cancellation"),
    ("Leave it.", "cancellation"), ("No, forget it.", "cancellation"), ("Oh, never mind.", "cancellation"),
    ("Cancel the booking.", "cancellation"), ("Please cancel.", "cancellation"),
    ("I don't need that.", "cancellation"), ("Don't do it.", "cancellation"), ("Scrap that.", "cancellation"),
    ("Let's not.", "cancellation"), ("Stop the order.", "cancellation"), ("I'll pass.", "cancellation"),
    ("No thanks, forget it.", "cancellation"), ("Undo that.", "cancellation"),
    ("Actually, never mind.", "cancellation"), ("Don't book it.", "cancellation"),
    # corrections
    ("No, not Tuesday.", "correction"), ("That's not correct.", "correction"), ("You got it wrong.", "correction"),
    ("No, Thursday.", "correction"), ("I didn't say that.", "correction"), ("Not Monday, Tuesday.", "correction"),
    ("It's actually seven.", "correction"), ("No, I said four people.", "correction"),
    ("That's the wrong date.", "correction"), ("No, it was the blue one.", "correction"),
    ("Actually, I meant eight.", "correction"), ("Sorry, I meant Saturday.", "correction"),
    ("No, that's not it.", "correction"), ("Wrong number.", "correction"), ("That's incorrect.", "correction"),
    ("No, the other one.", "correction"), ("Not that one.", "correction"), ("Make that three.", "correction"),
    ("Change it to Friday.", "correction"), ("No, my name is Anna.", "correction"),
    ("You misheard me.", "correction"), ("That's not what I asked.", "correction"),
    ("No no, I said ten.", "correction"), ("I meant the later one.", "correction"),
    # clarifications
    ("Sorry?", "clarification"), ("What was that?", "clarification"), ("Can you say that again?", "clarification"),
    ("I didn't get that.", "clarification"), ("What did you just say?", "clarification"),
    ("Repeat please.", "clarification"), ("One more time?", "clarification"), ("Say it again.", "clarification"),
    ("Could you say that slower?", "clarification"), ("What does that mean?", "clarification"),
    ("I'm confused.", "clarification"), ("Sorry, what was that?", "clarification"),
    ("Could you repeat that?", "clarification"), ("I missed that.", "clarification"),
    ("Say that one more time.", "clarification"), ("Come again?", "clarification"),
    ("Sorry, I didn't hear you.", "clarification"), ("What do you mean by that?", "clarification"),
    ("Can you explain?", "clarification"), ("Pardon me?", "clarification"), ("Huh?", "clarification"),
    ("What?", "clarification"), ("Sorry, can you repeat?", "clarification"),
    ("I can't hear you.", "clarification"), ("You're breaking up.", "clarification"),
    ("Slow down, please.", "clarification"), ("Sorry, I don't follow.", "clarification"),
    # redirects: a new question or request; the caller takes the turn
    ("What time do you close?", "redirect"), ("Do you deliver to Leeds?", "redirect"),
    ("I want to speak to a person.", "redirect"), ("Can I book for tomorrow?", "redirect"),
    ("How much is it?", "redirect"), ("Is there parking?", "redirect"), ("My order hasn't arrived.", "redirect"),
    ("I'd like a refund.", "redirect"), ("Can you text me the details?", "redirect"),
    ("What about next week?", "redirect"), ("Yeah, but what about Sunday?", "stop"),
    ("Okay, and how long does it take?", "redirect"), ("Do you take cards?", "redirect"),
    ("I'm calling about my bill.", "redirect"), ("Where's my package?", "redirect"),
    ("Can I change my address?", "redirect"), ("I have a question about the menu.", "redirect"),
    ("Is the manager there?", "redirect"), ("Are you open on holidays?", "redirect"),
    ("My name is Jordan.", "redirect"), ("I need to reschedule.", "redirect"),
    ("What's the earliest slot?", "redirect"), ("Can you call me back later?", "redirect"),
    ("Sorry to bother you, is this the dentist?", "redirect"), ("What do you have for vegetarians?", "redirect"),
)


def score(texts: Sequence[tuple[str, Kind]]) -> tuple[dict[Kind, tuple[int, int]], list[tuple[str, Kind, str]]]:
    """Right and total per kind, and the misses (text, expected, got)."""
    per: dict[Kind, tuple[int, int]] = {}
    misses: list[tuple[str, Kind, str]] = []
    for text, kind in texts:
        got = interruption(text)
        right, total = per.get(kind, (0, 0))
        per[kind] = (right + (got == kind), total + 1)
        if got != kind:
            misses.append((text, kind, str(got)))
    return per, misses


def main(argv: Sequence[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)
    per, misses = score(KIND_TEXTS)
    for kind, (right, total) in per.items():
        lo, hi = wilson(right, total)
        print(f"{kind:14s} {right:3d}/{total:<3d} ({right / total:.0%}, CI {lo:.0%}-{hi:.0%})")
    right = sum(r for r, _ in per.values())
    print(f"{'all':14s} {right:3d}/{len(KIND_TEXTS):<3d} ({right / len(KIND_TEXTS):.0%})")
    for text, kind, got in misses:
        print(f"  miss: {text!r}: {kind}, read as {got}")
    stopped = [m for m in misses if m[1] == "backchannel" and m[2] in STOPS_THE_AGENT]
    return 1 if stopped else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Going on after a false barge-in found late: the caller's turn held no words, so the agent says the rest.

Theory of operation
-------------------
The barge-in policy (app/bargein/detector.py) settles a candidate within about a second, from the sound alone:
a sound that goes on and looks like speech is the caller taking the turn, and the agent's turn is stopped (the
LLM stream closed, the turn cut on record at the heard position). Some such sounds are not the caller taking the
turn at all: a dog barking for a second, a cough fit, a long "mmm-hmm", a television. The recognizer tells, once
the caller's turn has ended: it hears no words, or only a listener's words ("mm-hmm", "yeah", "okay"). Whisper
writes something for most noises (on the pool's: "You" for a knock, "Ow!" for a cat, "Pup pup pup pup!" for a
bark): a turn made only of such vocalisations, or of one syllable over and over, counts as no words; a digit
is a word.
Answering such a turn answers nothing (the demo agent moves on to its next line, a hosted LLM is asked about
"[the caller spoke]"), and the rest of what the agent was saying is lost. So the agent goes on instead: the
unheard rest of its cut turn, from the start of the word the caller stopped hearing (at most one word back,
as a resume does), said as a new agent turn that continues the cut one (`Turn.continues`). The caller hears a
longer pause than a resume gives, not a lost turn.

Only what the agent's turn had produced can be said: all of it when the LLM had finished and every sentence was
synthesised before the stop (`AgentTurn.spoken_all`); of a reply cut while the LLM was still streaming (the stop
closed the stream), the rest up to the last whole sentence synthesised (`whole_sentences`), so the agent ends
on a full stop, not mid-clause; with no whole sentence left it answers as before. Nor does the agent
go on when the heard part already asked the caller something ("...would you like to book?" then "yeah": an
answer, not a backchannel), when keys were pressed, or when the recognizer failed (no words because it could
not hear, not because nothing was said). BARGEIN_GO_ON_WITHOUT_WORDS turns it off.

When: such a turn is heard at its first pause (BARGEIN_GO_ON_AT_PAUSE_MS, 250 ms), not only at its end: without
words it ends there and the agent goes on, instead of after the turn-end silence (700 ms) and a second
recognizer pass; with words it runs to its silence and is heard and answered as any turn (`_watch_go_on` in
app/call/caller_turn.py). A caller who goes on before those words are in is heard again at the next pause.

This module holds the decision and what it needs; the session (app/call/caller_turn.py) acts on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from app.bargein.words import interruption, normalize

GoOnReason = Literal["no_words", "listener_words"]

_WORD_CHAR = re.compile(r"[\w']")


@dataclass(frozen=True, slots=True)
class StopLeft:
    """What a stop left behind for the caller's turn it opened: the barge-in (its record gets the kind of that
    turn's words) and the agent's turn it cut, with what it left unsaid (said if that turn holds no words)."""

    bargein_id: str
    turn_id: int  # the cut agent turn (-1: the agent had none)
    heard_text: str  # what the caller heard of it
    rest: str  # the unheard rest, from the start of the word the caller stopped hearing ("": none to go on with)


def rest_from(text: str, char_offset: int) -> str:
    """The rest of `text` after a cut at `char_offset`, from the start of the word being said there.

    A cut inside a word starts at that word (said again whole); a cut between words starts at the next word.
    """
    start = max(0, min(char_offset, len(text)))
    while start > 0 and start < len(text) and _WORD_CHAR.match(text[start]) and _WORD_CHAR.match(text[start - 1]):
        start -= 1
    return text[start:].strip()


# What Whisper writes, as a whole turn, for a sound that holds no words: on the pool's noise clips a knock, rain,
# wind or a mouse click come out as "You" (or "I"), a cat, a baby or a laugh as "Ow!", "Ahh!", "Whoo-hoo!".
# No caller's turn is made of these alone; within a sentence they are left alone.
VOCALISATIONS = frozenset({"you", "i", "ow", "ouch", "ah", "ahh", "aw", "ha", "hah", "heh", "hee", "ho", "hoo",
                           "whoo", "woo", "ooh", "ugh", "argh", "eek", "achoo"})
_ELONGATED = re.compile(r"^(?:([a-z])\1{2,}h*|[aeiou]+h{2,})$")  # "aaaah", "ahhhhhh", "ohhh": a held vowel
# Laughter written as one word ("hahahaha", "hehehe", "hohoho": the Debian extra set's laughs came out so, and
# were answered as a question): a sound, as "ha ha ha" already is.
_LAUGH = re.compile(r"^(?:h[aeiou]h?){2,}$")
_DIGIT = re.compile(r"\d")
# Whisper's best-known invention on music, sirens, birds and other sound without words: a video's sign-off
# ("Thank you for watching!", "... and I'll see you in the next video"), learnt from subtitles. On the pool's
# and the Debian set's noise it is 22 of the 447 clips' whole transcript in one window or the other. No caller
# says it to an agent: the sign-off, and the "and" / "bye" around it, are not words of the turn (the rest is).
_SIGN_OFF = re.compile(
    r"\b(?:thank you|thanks)(?: (?:so|very) much)? for watching\b"
    r"|\b(?:i'll |we'll )?see you (?:all )?in the next video\b"
)
_SIGN_OFF_FILLER = frozenset({"and", "bye", "guys", "everyone", "everybody", "so"})


_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def whole_sentences(text: str) -> str:
    """`text` up to the end of its last whole sentence ("" if none ends in it)."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[: ends[-1]].strip() if ends else ""


def without_sign_offs(words: str) -> str:
    """`words` normalised, with a video's sign-off (and the fillers around it) taken out (see `_SIGN_OFF`)."""
    said = normalize(words)
    kept = _SIGN_OFF.sub(" ", said)
    if kept == said:
        return said
    return " ".join(t for t in kept.split() if t not in _SIGN_OFF_FILLER)


def babble(tokens: list[str]) -> bool:
    """One syllable over and over ("Pup pup pup pup!", "Buh-buh-buh-buh!"): what Whisper writes for a bark or a
    sneeze, not what a caller says. Three or more of the same token and nothing else."""
    return len(tokens) >= 3 and len(set(tokens)) == 1


def go_on(rest: StopLeft | None, words: str, recognizer_error: str | None, keys: str) -> GoOnReason | None:
    """Why the agent goes on with `rest` instead of answering a caller turn heard as `words`; None: it answers."""
    if rest is None or not rest.rest or recognizer_error is not None or keys or _DIGIT.search(words):
        return None  # a number is words ("5.": the recognizer writes digits, which the word rules drop)
    tokens = without_sign_offs(words).replace("-", " ").split()
    lexical = [t for t in tokens if t not in VOCALISATIONS and not _ELONGATED.match(t) and not _LAUGH.match(t)]
    if not lexical:
        return "no_words"
    said = " ".join(lexical)
    kind = interruption(said)
    # Babble that is not a known word ("no no no" is a stop, "yeah yeah yeah" a listener's) is no words.
    if kind is None or (kind == "redirect" and babble(lexical)):
        return "no_words"
    if kind == "backchannel" and "?" not in rest.heard_text:
        return "listener_words"
    return None


# At a pause the caller may only be gathering their words: "Um...", "So...", "I..." open a turn as often as they
# end one. The pause lets the agent go on only for a turn of sounds alone (nothing, a laugh, "Ow!", a held vowel);
# listener words and a lone word wait for the turn's end, where `go_on` decides as before. "I" is what a caller
# says before their pause as well as Whisper's guess at a knock: at the pause it counts as a word.
_PAUSE_WORDS = frozenset({"i"})


def go_on_at_pause(rest: StopLeft | None, words: str, recognizer_error: str | None, keys: str) -> bool:
    """The caller paused in a turn that stopped the agent, and `words` are what it holds so far: go on now?"""
    if go_on(rest, words, recognizer_error, keys) != "no_words":
        return False
    return not any(t in _PAUSE_WORDS for t in normalize(words).split())

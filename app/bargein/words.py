"""What kind of interruption the caller's words are: the recognizer's half of the barge-in decision.

Theory of operation
-------------------
The acoustic policy (`detector.py`) settles a candidate from its sound: its length, whether it is speech,
whether it is the agent's own echo. Once a recognizer has the caller's words, they say more than the sound
can: "okay" and "stop" are both half a second of speech, and only the words tell them apart. `interruption`
names the kind of an utterance said over the agent; the policy reads it through its `Words` input and the
session acts on it:

    backchannel    "mm-hmm", "yeah", "okay", "right": the agent goes on (resumes); no new turn starts
    stop           "stop", "wait", "hold on", "one second": the agent stops and waits for the caller
    cancellation   "cancel that", "never mind", "forget it": stops the agent and withdraws the request
    correction     "no, I said Tuesday", "I meant ...", "that's wrong": stops; the next reply fixes it
    clarification  "sorry?", "what?", "say that again", "what do you mean": stops; the cut sentence is
                   said again, more clearly
    redirect       anything else with words in it: a new question or a new topic; the caller takes the turn

The rules are a small phrase table read in order, most specific first: a phrase matches as whole words at
the start of the utterance (where people put the word that says what they want: "no wait, ..." is a stop,
"wait, no, the other one" too), except the clarification and correction phrases, which count anywhere in
a short utterance. Backchannels are utterances made only of listener words and phrases ("yeah okay", "sounds
good"); "yeah, but what about Sunday" is not one. A caller often opens with a word that says nothing yet
(OPENERS: "um, wait", "sorry, can you repeat that", "actually, cancel it"): when the rest has a kind that stops
the agent, the utterance has it. "No" before words of their own takes their kind ("no, forget it" withdraws,
"no, stop" stops), and before anything else corrects ("no, the blue one").
Nothing here is learned; the table is the whole decision, so a team can read and change it. The utterances it
is tuned on are app/bench/kind_texts.py's (written, apart from the held-out sets) and the spoken tuning phrases.

The words come from a small recognizer over a phone line, and a one-word command is where it goes wrong most:
"wait" comes back as "way". So an utterance of at most SOUNDS_LIKE_MAX_WORDS words whose first word is in
SOUNDS_LIKE (a word a command word is heard as, by a rule of how it sounds over the line, not from any test
phrase), followed by nothing or by a word a command is said with (COMMAND_TAIL: "wake up" for "wait up"), is
read as the command word, when the utterance had no kind of its own by then (a backchannel stays one). Other
utterances are taken as written: "way to go", "know what I mean" and "council tax" are not commands.
"""

from __future__ import annotations

import re
from typing import Literal

Kind = Literal["backchannel", "stop", "cancellation", "correction", "clarification", "redirect"]
KINDS: tuple[Kind, ...] = ("backchannel", "stop", "cancellation", "correction", "clarification", "redirect")
# The kinds whose words stop the agent at once (the policy's STOP_WORDS, detector.py); a redirect is left to the
# sound, a backchannel resumes it.
STOPS_THE_AGENT: frozenset[Kind] = frozenset({"stop", "cancellation", "correction", "clarification"})

# Words a listener says to show they are listening. An utterance made only of these is a backchannel.
BACKCHANNEL = frozenset({
    "mm", "mhm", "mmhmm", "mm-hmm", "hmm", "uh-huh", "uhhuh", "uh", "huh", "um", "yeah", "yep", "yes", "yup",
    "ok", "okay", "right", "sure", "alright", "all", "i", "see", "got", "it", "cool", "great", "fine", "good",
    "aha", "ah", "oh", "true", "exactly", "totally", "indeed", "gotcha", "nice", "perfect", "thanks", "thank",
    "you", "go", "on", "ahead", "and",
})
# ... but not every sequence of those words: "i see" and "got it" are backchannels, "go on" too, while these
# are requests. Checked before the all-filler rule.
NOT_BACKCHANNEL = ("i", "you", "and", "it", "on", "all", "go")
# Listener phrases whose words are not listener words alone ("that's" opens "that's wrong", "enough" is a stop):
# an utterance made of these and BACKCHANNEL words is a backchannel too.
BACKCHANNEL_PHRASES = (
    "of course", "sounds good", "sounds great", "makes sense", "fair enough", "that's fine", "that's great",
    "that's good", "that's right", "that's true", "that is right", "i understand", "understood", "noted",
    "absolutely", "definitely", "wonderful", "lovely", "brilliant", "excellent", "correct", "yes please",
    "alright then", "all right", "okay then", "uh huh", "mm hmm", "got you", "no problem", "no worries", "not bad",
    "oh no",
)
# Words a caller opens with before saying what they want ("um, wait", "sorry, can you repeat", "okay, hold on",
# "actually, cancel it"): when the rest has a kind that stops the agent, the utterance has it.
OPENERS = ("um", "uh", "er", "hmm", "mm", "oh", "ah", "okay", "ok", "yeah", "yes", "sorry", "actually", "so", "well",
           "please", "hey", "look", "listen", "and", "but", "oops", "alright", "all right", "right")

# Phrases by kind, most specific first. Leading phrases must open the utterance; anywhere phrases may sit
# anywhere in an utterance of at most ANYWHERE_MAX_WORDS words.
LEADING: tuple[tuple[Kind, tuple[str, ...]], ...] = (
    ("cancellation", (
        "never mind", "nevermind", "forget it", "forget that", "forget about it", "cancel", "scratch that",
        "scrap that", "scrap it", "don't do that", "do not do that", "don't do it", "don't book", "don't cancel",
        "don't send", "don't bother", "don't worry about it", "no don't", "no do not", "skip it",
        "i changed my mind", "i've changed my mind", "no need", "no thanks", "no thank you", "call it off",
        "call off", "drop it", "leave it", "let's not", "i'll pass", "undo", "i don't want", "i do not want",
        "i don't need", "i do not need", "stop the order", "stop my order", "stop the booking", "stop the payment",
    )),
    ("correction", (
        "no i said", "no i meant", "i said", "i meant", "no no i", "that's wrong", "that is wrong",
        "that's not right", "that is not right", "that's not what i said", "not that", "no not", "no it's",
        "no it is", "wrong", "incorrect", "correction", "it's not", "it is not", "that's not", "that is not",
        "that's incorrect", "that's the wrong", "you got it wrong", "you've got it wrong", "you got that wrong",
        "i didn't say", "i did not say", "you misheard", "you heard me wrong", "it's actually", "it is actually",
        "make that", "make it", "change it to", "change that to", "the other one",
    )),
    ("clarification", (
        "sorry what", "what was that", "what did you say", "what did you just say", "say that again",
        "say again", "say it again", "say that", "one more time", "can you repeat", "could you repeat",
        "repeat", "come again", "pardon", "excuse me what", "what do you mean", "what does that mean",
        "i didn't catch", "i did not catch", "i didn't get", "i did not get", "i missed that",
        "i don't understand", "i do not understand", "i don't follow", "i'm confused", "i am confused",
        "huh what", "slow down", "slower please", "can you say that", "could you say that", "can you explain",
        "could you explain", "i can't hear", "i cannot hear", "you're breaking up",
    )),
    ("stop", (
        "stop", "wait", "hold on", "hang on", "hold up", "one second", "one sec", "just a second", "just a sec",
        "just a minute", "just a moment", "one moment", "a moment", "pause", "shut up", "be quiet", "quiet",
        "enough", "that's enough", "that is enough", "no way", "no no", "no", "nope", "hold it", "hold that thought",
        "not so fast", "shh", "sh", "shush", "give me a second", "give me a sec",
        "give me a moment", "give me a minute", "excuse me", "hey", "listen", "actually", "sorry to interrupt",
        "sorry to cut", "let me", "can i just", "can i say", "can i interrupt", "can i stop you",
        "can you stop", "could you stop", "can you wait", "could you wait", "can you hold", "could you hold",
        "okay stop", "ok stop", "okay wait", "ok wait", "yeah but", "yes but", "but",
    )),
)
ANYWHERE: tuple[tuple[Kind, tuple[str, ...]], ...] = (
    ("clarification", ("say that again", "repeat that", "what do you mean", "didn't catch", "didn't hear",
                       "did not catch", "did not hear", "come again", "pardon", "didn't get that", "missed that",
                       "can't hear you", "breaking up", "don't follow", "what does that mean")),
    ("correction", ("i said", "i meant", "not what i said")),
    ("cancellation", ("never mind", "forget it", "cancel that", "changed my mind")),
)
ANYWHERE_MAX_WORDS = 12
# Said alone, these ask for the sentence again; opening a longer utterance ("what time do you open", "sorry to
# bother you") they do not.
ALONE: tuple[tuple[Kind, tuple[str, ...]], ...] = (
    ("clarification", ("what", "sorry", "huh", "pardon me", "what what", "sorry sorry", "what please")),
)

# What the recognizer writes for a command word it half heard over a phone line, by three rules of how the
# words sound there (the line passes 300-3400 Hz, and the end of a short utterance is said softly):
#   homophones                    "know" for "no", "weight" / "weigh" / "whey" for "wait" less its /t/, "watt"
#   a final stop lost or misplaced a word-final /p t k d/ is often unreleased, and its burst is what tells them
#                                 apart: "wait" as "way", "wake", "wade"; "stop" as "stock"; "hold" as "hole"
#   /s/ lost before a consonant   most of /s/'s energy is above the line's 3.4 kHz: "stop" as "top"
# Endings the decoder adds to a stem ("stopped", "waits") are the stem.
SOUNDS_LIKE: dict[str, str] = {
    "way": "wait", "weigh": "wait", "whey": "wait", "weight": "wait", "wake": "wait", "wade": "wait",
    "weighed": "wait", "waits": "wait", "waited": "wait", "weights": "wait",
    "stock": "stop", "stops": "stop", "stopped": "stop", "top": "stop",
    "know": "no", "noh": "no",
    "hole": "hold", "whole": "hold", "holed": "hold",
    "watt": "what", "wot": "what",
    "council": "cancel", "counsel": "cancel", "cancelled": "cancel", "canceled": "cancel",
}
SOUNDS_LIKE_MAX_WORDS = 2
# ... and the words a command is said with ("wait up", "hold on", "stop it", "cancel that", "what now"): a
# sound-alike followed by any other word is taken as written ("council tax", "top floor").
COMMAND_TAIL = frozenset({"please", "now", "there", "it", "that", "up", "on", "stop", "wait", "no", "what", "sorry"})

_NON_WORD = re.compile(r"[^a-z' -]+")


def normalize(text: str) -> str:
    """Lower case, punctuation dropped, hyphens kept inside words ("uh-huh"), single spaces."""
    lowered = text.lower().replace("\u2019", "'")
    return " ".join(_NON_WORD.sub(" ", lowered).replace(" -", " ").replace("- ", " ").split())


def _starts_with(said: str, phrase: str) -> bool:
    return said == phrase or said.startswith(phrase + " ")


def _contains(said: str, phrase: str) -> bool:
    return f" {phrase} " in f" {said} "


def is_backchannel(said: str) -> bool:
    """An utterance made only of listener words and phrases ("yeah okay", "mm-hmm right", "i see", "sounds
    good", "of course")."""
    if not said or said in NOT_BACKCHANNEL:
        return False
    rest = f" {said} "
    for phrase in BACKCHANNEL_PHRASES:
        rest = rest.replace(f" {phrase} ", " ")
    return all(w in BACKCHANNEL for w in rest.split())


def interruption(text: str) -> Kind | None:
    """The kind of an utterance said over the agent; None when it holds no words."""
    said = normalize(text)
    if not said:
        return None
    kind = _kind(said)
    if kind == "redirect":  # a half-heard command word? (see SOUNDS_LIKE)
        words = said.split()
        if len(words) <= SOUNDS_LIKE_MAX_WORDS and words[0] in SOUNDS_LIKE and set(words[1:]) <= COMMAND_TAIL:
            return _kind(" ".join([SOUNDS_LIKE[words[0]], *words[1:]]))
    return kind


def _kind(said: str) -> Kind:
    # Phrases of several words first: "okay wait", "yeah but", "i meant" open with a listener word and are
    # not a backchannel; "no no i said" is a correction before it is a "no".
    for kind, phrases in LEADING:
        if any(_starts_with(said, p) for p in phrases if " " in p):
            return kind
    for kind, phrases in ALONE:
        if said in phrases:
            return kind
    if is_backchannel(said):
        return "backchannel"
    words = said.split()
    # "um, wait", "sorry, can you repeat", "okay, enough": the opener says nothing the rest does not.
    opener = next((len(o.split()) for o in OPENERS if _starts_with(said, o)), 0)
    if opener and len(words) > opener:
        rest = _kind(" ".join(words[opener:]))
        if rest not in ("redirect", "backchannel"):
            return rest
    # "no" before words of its own: "no, forget it" withdraws, "no, the blue one" corrects, "no, stop" stops.
    if len(words) > 1 and words[0] in ("no", "nope"):
        rest = _kind(" ".join(w for w in words[1:] if w not in ("no", "nope")) or "no")
        return "correction" if rest in ("redirect", "backchannel") else rest
    short = len(words) <= ANYWHERE_MAX_WORDS
    for kind, phrases in LEADING:
        if any(_starts_with(said, p) for p in phrases):
            return kind
    if short:
        for kind, phrases in ANYWHERE:
            if any(_contains(said, p) for p in phrases):
                return kind
    return "redirect"


# A turn whose words end on one of these has not ended, whatever the silence says: "I'd like to book a table
# for ... two, tonight". Articles, prepositions, conjunctions, possessives, fillers, and the words a clause
# goes on from; not the ones a sentence may end on ("I want that", "what is this").
UNFINISHED_LAST_WORDS = frozenset({
    "a", "an", "the", "and", "or", "but", "so", "because", "if", "to", "of", "for", "with", "in", "on", "at",
    "from", "about", "into", "by", "my", "your", "our", "their", "his", "her", "its", "um", "uh", "er", "is",
    "are", "was", "were", "i", "i'm", "we", "i'd", "i'll", "want", "like", "need", "then", "than", "also", "some",
    "any",
})


def unfinished(text: str) -> bool:
    """The caller's words stop mid-clause: a trailing comma, dash or ellipsis, or a last word that a sentence
    does not end on. (Whisper punctuates what it hears: a full stop after "for" is its guess, not the caller's.)"""
    stripped = text.strip()
    if not stripped:
        return False
    if stripped.endswith((",", "...", "\u2026", "-", "\u2014")):
        return True
    words = normalize(stripped).split()
    return bool(words) and words[-1] in UNFINISHED_LAST_WORDS

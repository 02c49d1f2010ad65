"""The command vocabulary offered to Whisper on short clips: what the caller says over the agent.

Theory of operation
-------------------
Whisper decodes with an optional text context: tokens after `<|startofprev|>`, as if the window before had said
them (faster-whisper's `initial_prompt` and `hotwords` both put text there; with no prefix the two give the same
prompt). Context shifts the decoder toward its words. tiny.en on a half-second "wait" over a phone line writes
"way" or "weight" often enough to miss a stop; told that callers say "wait", it writes "wait".

The risk is the other way round, and it is large: offered the hint on everything, the decoder wrote "No." or
"Stop." for half of the corpus pool's noise clips (81 of 158, cut to their loudest second; 2 without the hint),
and the pool's spoken digits went from 11% to 47% word errors. So the hint is a second opinion, asked only where
the first one says there is speech:

1. the clip is decoded as always, with no context (its text and Whisper's no-speech probability, read at the
   start of the transcript, are what the engine had before);
2. only if that clip is short (`max_ms`: an utterance said over the agent with its pre-roll, not a whole turn),
   the plain pass wrote words and no number (`has_number`: a caller's digits are content, and the hint turned
   a heard "Nine." into "No."), and its no-speech probability is under `gate`, the same encoder output is
   decoded again with the hint;
3. that text is taken if the audio alone backs it: the mean probability of its words with no context (what
   the word-time alignment computes anyway) is at least `min_word_prob`; it does not look like a loop; and it
   does not say a word twice where the plain text said it once (the hint is a list, and the decoder goes on
   with the list: the pool's spoken digits came back as "Three. Three.", 5 word insertions of 73 became 17).
   Otherwise the plain text stands.

Tuned on app/bench/words_tuning.py's data only (other wordings and voices than the report sets; the pool's noise).
The plain pass's no-speech probability separates most noise: the tuning phrases up to 0.63, nearly all under 0.5;
the noise clips that the ungated hint turned into a stop word 0.7 to 1.0, or no words. Three noise clips got
through that gate (a sneeze as "Stop.", breaking glass as "Wait.") and the word test stops them: their hinted words
had probability 0.004 or less with no context, the hinted words that were right 0.027 or more (`min_word_prob` 0.01
sat between). The Debian extra set (`python -m app.offline.extra_noise DIR`, real noises and short voiced
exclamations, "oof", "hup", a scream) put noise in that gap: the hint turned 12 of its 289 clips into a stop or a
question ("Hup!" into "Stop." at 0.011-0.015, "Please." into "Wait." at 0.013, a scream's "AHH!" into "No!" at
0.02). At 0.025 (`python -m app.bench.words_tuning --noise DIR --min-word-prob 0.025`) 6 of those 12 keep their
plain words (19 -> 13 of 289 would stop the agent), and the tuning clips lose one right kind (155 -> 154 of 244: a
"what?" heard plainly as "Well..."); requiring every word, not the mean, to reach it (`--believe min`) lost 8. So
0.025. With all of it, at 0.01 (`python -m app.bench.words_tuning --hint none|gated`): the 244 tuning clips (61
phrases, four voices) got their interruption kind right 124 times without the hint and 151 with it (stop 44 -> 57
of 80, cancellation 2 -> 7 of 24, clarification 11 -> 16 of 28); the pool's noise clips that would stop the agent 2
of 158 either way (dog barks heard as "What?" and "No, no, no, no." with no hint); backchannels that would stop it
1 of 72 either way (a misheard "exactly"); the pool's spoken digits 11.0% word errors and 1 of 73 heard as a stop
word ("nine" as "No.") either way.

Nothing here does I/O; `Hint` only says what is offered and when.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# The words a caller says to stop, cancel or question the agent (app/bargein/words.py's kinds), as a caller
# would say them, written as a short list so the decoder reads it as context rather than a sentence to go on.
# Not "No.": it is what the decoder writes for a noise it is told to expect words in (65 of the 81 noise clips the
# ungated hint turned into a stop word came out "No."; the nasal-vowel "no" is also the nearest thing to a
# backchannel "oh"), and tiny.en hears a spoken "no" well without help. Without it the tuning phrases' kinds
# came out the same (155 of 244 either way).
COMMANDS = "Stop. Wait. Hold on. Cancel. Sorry? What?"


@dataclass(frozen=True, slots=True)
class Hint:
    """Context text for a second decode of a short clip that the first decode says is speech."""

    text: str = COMMANDS
    max_ms: float = 3000.0  # the clip with its pre-roll: longer ones are caller turns, decoded as before
    gate: float = 0.5  # the plain decode's no-speech probability must be under this
    min_word_prob: float = 0.025  # the hinted words' mean probability given the audio alone, at least
    believe: Literal["mean", "min"] = "mean"  # the words' mean probability reaches min_word_prob, or each one
    vowel_min_word_prob: float = 0.01  # the bar after a bare vowel (see BARE_VOWELS), if lower than min_word_prob

    def __post_init__(self) -> None:
        if not self.text.strip() or self.max_ms <= 0 or not 0 < self.gate <= 1 or not 0 <= self.min_word_prob < 1 \
                or not 0 <= self.vowel_min_word_prob < 1 or self.believe not in ("mean", "min"):
            raise ValueError("a hint needs text, max_ms > 0, 0 < gate <= 1, 0 <= min_word_prob < 1 and believe "
                             "'mean' or 'min'")

    def applies(self, audio_ms: float) -> bool:
        """A clip this long may be decoded again with the hint."""
        return audio_ms <= self.max_ms

    def wanted(self, plain_text: str, no_speech_prob: float) -> bool:
        """The plain decode of a short clip heard speech, and no number in it: ask again with the hint."""
        return any(c.isalnum() for c in plain_text) and no_speech_prob < self.gate and not has_number(plain_text)

    def believed(self, word_probs: list[float], plain_text: str = "") -> bool:
        """The hinted words are in the audio: their mean probability with no context (from the alignment) is
        at least `min_word_prob`, not only the hint's doing."""
        # After a bare vowel the bar is `vowel_min_word_prob`: a low "stop" heard "Oh" comes back "Stop." at
        # 0.009-0.09 (by where the clip starts), and only the hint's own words may replace the vowel there.
        if not word_probs:
            return False
        score = min(word_probs) if self.believe == "min" else sum(word_probs) / len(word_probs)
        bar = min(self.min_word_prob, self.vowel_min_word_prob) if bare_vowel(plain_text) else self.min_word_prob
        return score >= bar

    def adds_a_repeat(self, plain_text: str, hinted_text: str) -> bool:
        """The hinted text says a run of one to three words twice in a row where the plain one did not: the
        list in the hint invites it ("Three. Three." for "three"), a caller rarely does it in a short clip."""
        return says_twice(hinted_text) and not says_twice(plain_text)


# Numbers are what a caller says most on a booking or support line (party sizes, digits of an account), and
# the hint has none: asked again, a heard "Nine." came back "No." and "Five." "Stop it." (the pool's spoken
# digits). A clip whose plain text holds a number keeps it.
NUMBER_WORDS = frozenset({
    "zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty", "thirty", "forty",
    "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "thousand",
})


def has_number(text: str) -> bool:
    """Digits, or a number said in words."""
    return any(c.isdigit() for c in text) or any(w in NUMBER_WORDS for w in re.findall(r"[a-z]+", text.lower()))


def says_twice(text: str) -> bool:
    """A run of one to three words said again straight after itself."""
    words = re.findall(r"[a-z0-9']+", text.lower())
    return any(words[i : i + n] == words[i + n : i + 2 * n] for n in (1, 2, 3) for i in range(len(words) - 2 * n + 1))


COMMAND_HINT = Hint()  # the engine's default (providers/stt/whisper.py)


# What tiny.en writes for a one-syllable command whose consonants it missed: the vowel alone. A low-pitched "stop"
# over a phone line (the /s/ above the band, the /t/ and /p/ unreleased) came back "Oh" from three of the four
# tuning voices (app/bench/tuning_phrases.py's TUNING_VOICES saying the bare word, pitch lowered by 1.2), with a
# no-speech probability of 0.52-0.64: over the hint's gate, and "oh" also reads as the digit zero, so the hint
# was never asked and "Oh" (a backchannel) resumed the agent. A spoken "oh" keeps its word when asked again
# (hinted "Oh." on every tuning voice, "oh" and "oh okay" at both pitches), and the word test still stands.
# The answer is taken only if it opens with one of the hint's words (`hint_taken`): a pool cough, plain "Oh" at
# 0.63, came back "No." (word probability 0.018), the word the hint leaves out for that reason. With both
# (`python -m app.bench.words_tuning`): tuning kinds right 151 -> 153 of 244 ("stop now" and "hold it", heard
# "Oh", now stop), and as before 1 of 72 backchannels, 2 of 158 pool noise clips and 1 of 73 pool digits would
# stop the agent, the digits' word error 11.0% either way.
BARE_VOWELS = frozenset({"oh", "o", "uh", "u", "ah"})
BARE_VOWEL_GATE = 0.7  # the plain decode's no-speech probability, under this (the pool's noise: mostly above)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def bare_vowel(plain_text: str) -> bool:
    """The plain decode wrote one bare vowel ("Oh", "uh")."""
    words = _words(plain_text)
    return len(words) == 1 and words[0] in BARE_VOWELS


def hint_wanted(hint: Hint, plain_text: str, no_speech_prob: float) -> bool:
    """Ask the hint about this short clip? `Hint.wanted`, and a bare vowel (see BARE_VOWELS) up to its own gate."""
    if bare_vowel(plain_text):
        return no_speech_prob < max(hint.gate, BARE_VOWEL_GATE)
    return hint.wanted(plain_text, no_speech_prob)


def hint_taken(hint: Hint, plain_text: str, hinted_text: str) -> bool:
    """May the hinted text replace the plain one (besides the hint's word and loop tests)? After a bare vowel,
    only if it opens with one of the hint's own words or the vowel ("Stop now.", "Hold it.", not "No.")."""
    if not bare_vowel(plain_text):
        return True
    words = _words(hinted_text)
    return bool(words) and words[0] in set(_words(hint.text)) | BARE_VOWELS

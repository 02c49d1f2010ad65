"""Phrases and voices for tuning the recognizer's short-utterance decoding (app/bench/words_tuning.py).

The report sets (app/bench/phrases.py, the stop_words condition's phrases, app/bench/stt.py's phrases) are
held out: nothing is tuned on them. These were written apart from them: other wordings of the same kinds, spoken
by espeak-ng voices the report sets do not use (they use `en-gb`), at other rates. A phrase here may share a
word with a report phrase ("stop" is the point of both), not the phrase.
"""

from __future__ import annotations

from app.bargein.words import Kind

TUNING_PHRASES: tuple[tuple[str, Kind], ...] = (
    # backchannels: must never come out as a word that stops the agent
    ("mm-hmm", "backchannel"), ("uh-huh", "backchannel"), ("okay", "backchannel"), ("yeah", "backchannel"),
    ("right", "backchannel"), ("got it", "backchannel"), ("I see", "backchannel"), ("sure", "backchannel"),
    ("okay great", "backchannel"), ("yes yes", "backchannel"), ("cool", "backchannel"), ("fine", "backchannel"),
    ("exactly", "backchannel"), ("perfect", "backchannel"), ("yeah okay", "backchannel"),
    ("good", "backchannel"), ("nice", "backchannel"), ("hmm", "backchannel"),
    # stop
    ("stop it", "stop"), ("stop right there", "stop"), ("wait up", "stop"), ("wait wait wait", "stop"),
    ("hold it", "stop"), ("hold on there", "stop"), ("hang on", "stop"), ("one second please", "stop"),
    ("no no no", "stop"), ("pause", "stop"), ("just a moment", "stop"), ("excuse me", "stop"),
    ("stop stop", "stop"), ("no wait", "stop"), ("hey", "stop"), ("enough", "stop"), ("hold up", "stop"),
    ("wait there", "stop"), ("nope", "stop"), ("stop now", "stop"),
    # cancellations
    ("forget it", "cancellation"), ("cancel it", "cancellation"), ("never mind", "cancellation"),
    ("scratch that", "cancellation"), ("skip it", "cancellation"), ("cancel my order", "cancellation"),
    # corrections
    ("no I meant Friday", "correction"), ("that's wrong", "correction"), ("I said two", "correction"),
    ("no it's seven", "correction"), ("that is not right", "correction"),
    # clarifications
    ("what?", "clarification"), ("pardon?", "clarification"), ("come again?", "clarification"),
    ("say again", "clarification"), ("what did you say", "clarification"), ("sorry, what?", "clarification"),
    ("huh?", "clarification"),
    # redirects
    ("is the shop open on Sunday", "redirect"), ("I need a taxi", "redirect"), ("what's the price", "redirect"),
    ("book me in for noon", "redirect"), ("where are you based", "redirect"),
)

# (espeak-ng voice, words per minute, pitch stretch): none of them the report sets' en-gb.
TUNING_VOICES: tuple[tuple[str, int, float], ...] = (
    ("en-gb-scotland", 160, 1.0),
    ("en-gb-x-rp", 150, 1.15),
    ("en-us", 170, 1.0),
    ("en-029", 150, 1.1),
)

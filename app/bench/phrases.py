"""Spoken test phrases for the interruption kinds: what a caller says over the agent, and what it means.

Written down before the rules in app/bargein/words.py were run on them, and never used to change those rules:
the figures on this set are a held-out measurement (the unit tests in tests/bargein/test_words.py hold the
phrases the rules were written against). `bargein bench --mode words` speaks them with a synthetic caller
voice unlike the agent's (espeak-ng, another voice) through the recognizer when one is configured, and
classifies the words it hears; without a recognizer it classifies the text itself.
"""

from __future__ import annotations

from app.bargein.words import Kind

PHRASES: tuple[tuple[str, Kind], ...] = (
    # backchannels
    ("mhm", "backchannel"), ("uh huh", "backchannel"), ("yeah yeah", "backchannel"), ("okay sure", "backchannel"),
    ("right right", "backchannel"), ("yes", "backchannel"), ("sure thing", "backchannel"),
    ("alright", "backchannel"), ("oh okay", "backchannel"), ("I see, okay", "backchannel"),
    ("great", "backchannel"), ("yep", "backchannel"),
    # stop / wait
    ("wait a second", "stop"), ("stop please", "stop"), ("hang on a moment", "stop"), ("hold on hold on", "stop"),
    ("whoa whoa wait", "stop"), ("just a minute", "stop"), ("no stop", "stop"), ("okay hold on", "stop"),
    ("wait wait", "stop"), ("can I say something", "stop"),
    # cancellations
    ("never mind that", "cancellation"), ("cancel the booking", "cancellation"),
    ("forget about it", "cancellation"), ("actually never mind", "cancellation"),
    ("don't do that", "cancellation"), ("I changed my mind, don't book it", "cancellation"),
    # corrections
    ("no, I said Thursday", "correction"), ("I meant the other address", "correction"),
    ("that's not what I said", "correction"), ("no it's Smith with an I", "correction"),
    ("wrong number, it's five five two", "correction"), ("not Monday, Tuesday", "correction"),
    # clarifications
    ("sorry?", "clarification"), ("what was that?", "clarification"), ("could you repeat that", "clarification"),
    ("say that again please", "clarification"), ("I didn't catch that", "clarification"),
    ("what do you mean?", "clarification"),
    # redirects: a new question or topic
    ("what time do you close today", "redirect"), ("do you have parking", "redirect"),
    ("I want to book a table for four", "redirect"), ("how much is the delivery", "redirect"),
    ("can you send me an email instead", "redirect"), ("my order number is one two three", "redirect"),
)

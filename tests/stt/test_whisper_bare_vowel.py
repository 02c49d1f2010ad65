"""A bare vowel from the plain decode ("Oh" for a low-pitched "stop") still gets the command hint's second opinion
(providers/stt/whisper_hint.py, `hint_wanted`), taken only if it opens with one of the hint's words (`hint_taken`);
everything else is asked and taken as before."""

from __future__ import annotations

from providers.stt.whisper_hint import (
    BARE_VOWEL_GATE,
    Hint,
    hint_taken,
    hint_wanted,
)


def test_a_bare_vowel_is_asked_again_past_the_hints_gate_and_the_number_rule() -> None:
    hint = Hint()
    # What tiny.en wrote for a tuning voice's low-pitched "stop": no-speech 0.52-0.64, and "oh" reads as zero.
    assert not hint.wanted("Oh", 0.58)
    assert hint_wanted(hint, " Oh", 0.58) and hint_wanted(hint, "Oh.", 0.2) and hint_wanted(hint, " uh", 0.69)
    # ... but not what the plain decode doubts more than that (the pool's noise sits mostly above).
    assert not hint_wanted(hint, " Oh", BARE_VOWEL_GATE)
    # A stricter hint keeps its own gate only where it is the looser one.
    assert hint_wanted(Hint(gate=0.9), "Oh", 0.8)


def test_other_text_is_asked_as_the_hint_says() -> None:
    hint = Hint()
    for text, no_speech in (("Way.", 0.2), ("Way.", 0.55), ("Nine.", 0.1), ("Oh two.", 0.1), ("Oh, okay.", 0.3),
                            (" ... ", 0.0), ("Go on.", 0.4), ("Okay.", 0.6)):
        assert hint_wanted(hint, text, no_speech) == hint.wanted(text, no_speech), text


def test_after_a_bare_vowel_only_the_hints_words_replace_it() -> None:
    hint = Hint()
    assert hint_taken(hint, " Oh", " Stop.") and hint_taken(hint, "Oh", "Wait.") and hint_taken(hint, "Oh", "Oh.")
    assert hint_taken(hint, "uh", "Hold on.") and hint_taken(hint, "Oh", "Stop now.")
    assert hint_taken(hint, "Oh", "Hold it.")
    assert not hint_taken(hint, "Oh", "")
    # A pool cough: plain "Oh", hinted "No." -- the word the hint leaves out because noise comes back as it.
    assert not hint_taken(hint, " Oh", " No.") and not hint_taken(hint, "Oh", "Go.")
    # Any other plain text: the hint's word and loop tests decide, as before.
    assert hint_taken(hint, "Way.", "Wait.") and hint_taken(hint, "Hanyong.", "No, hang on.")

"""The prosodic model's fit (app/offline/fit_prosody.py): labels from the recognizer's punctuation, the
logistic regression, the speaker folds and the operating points, on small literal data."""

from __future__ import annotations

import numpy as np

from app.offline.fit_prosody import Said, auc, boundary, fit_logistic, speaker_folds, threshold_for

WORDS = [Said("Chapter", 0, 400), Said("1,", 400, 900), Said("Mrs.", 1000, 1300), Said("Lind", 1300, 1600),
         Said("is", 1600, 1800), Said("surprised.", 1800, 2400), Said("She", 3000, 3200), Said("went", 3200, 3500)]


def test_a_pause_is_labelled_by_the_word_before_it() -> None:
    assert boundary(WORDS, 950) == "phrase"  # after "1,"
    assert boundary(WORDS, 1310) == "word"  # after "Mrs." (a title's full stop ends no sentence)
    assert boundary(WORDS, 2700) == "sentence"  # after "surprised."
    assert boundary(WORDS, 3300) == "word"
    assert boundary(WORDS, 100) is None  # nothing said before it


def test_the_fit_separates_what_is_separable_and_auc_scores_it() -> None:
    rng = np.random.default_rng(0)
    y = rng.random(400) < 0.3
    x = np.column_stack([np.where(y, 1.0, -1.0) + rng.normal(0, 0.5, 400), rng.normal(0, 1, 400)])
    model = fit_logistic(x, y, l2=1.0)
    p = np.array([model.p(row) for row in x])
    assert auc(p, y) > 0.97
    assert abs(model.weights[0]) > 5 * abs(model.weights[1])  # the noise column gets next to nothing
    assert auc(-p, y) < 0.03 and abs(auc(np.zeros(400), y) - 0.5) < 1e-9  # ties count half


def test_speakers_never_straddle_folds_and_thresholds_respect_their_error_rates() -> None:
    speakers = ["a", "b", "c", "a", "d", "b", "e", "c"]
    fold = speaker_folds(speakers, 3)
    for sp in set(speakers):
        assert len({int(f) for s, f in zip(speakers, fold, strict=True) if s == sp}) == 1
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    y = np.array([False] * 5 + [True] * 5)
    t = threshold_for(p, y, "complete", 0.0)  # no incomplete one (<= 0.5) may be called complete
    assert 0.5 < t <= 0.6
    t = threshold_for(p, y, "incomplete", 0.0)  # no complete one (>= 0.6) may be called incomplete
    assert 0.5 < t <= 0.6

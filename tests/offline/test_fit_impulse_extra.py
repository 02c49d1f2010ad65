"""fit_impulse --extra: another training set's noise joins the pool's, minus its voiced exclamations."""

from __future__ import annotations

from pathlib import Path

from app.offline.fit_impulse import extra_noise_clips


def test_extra_noise_clips_keep_noise_drop_grunts_and_overlap_and_load_from_their_own_root(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text(
        "path,kind,category,duration_s,speech_onset_s,source\n"
        "noise/cough_001.wav,noise,cough,1.2,,debian:scratch/1:Cough-male.wav\n"
        "noise/grunt_001.wav,noise,grunt,0.4,,debian:hedgewars-data/1:Ooff1.ogg\n"
        "noise/laughter_001.wav,noise,laughter,2.0,,debian:scratch/1:Laugh-female.wav\n"
        "speech/read_001_x.wav,speech,read,3.0,0.2,somewhere\n",
        encoding="utf-8",
    )
    (tmp_path / "dev_overlap.csv").write_text(
        "path,relation,dev_paths\nnoise/laughter_001.wav,identical,noise/laughter_01.wav\n", encoding="utf-8"
    )
    clips = extra_noise_clips(tmp_path)
    assert [c.category for c in clips] == ["cough"]
    assert Path(clips[0].path) == tmp_path.resolve() / "noise/cough_001.wav"
    assert Path("/anywhere") / clips[0].path == Path(clips[0].path)  # load_clip's root / path keeps it

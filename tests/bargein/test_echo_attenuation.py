"""Step 4c of the echo guard (EchoConfig.coherence_attenuation): the coherence may also cap the attenuation.

Off by default (it let echo under noise through: see echo_config), so the guard's outputs are pinned unchanged
by test_echo_fingerprint.py; on, the guard may only pass more of the caller leg, never report anything else.
"""

from __future__ import annotations

import dataclasses

from app.bargein.echo import EchoConfig
from tests.bargein.test_echo_fingerprint import CASES, EXPECTED, fingerprint


def test_off_by_default_the_guard_decides_as_pinned() -> None:
    assert EchoConfig().coherence_attenuation is False
    got = fingerprint(CASES["coherence_always"])
    assert got["out_energy"] == EXPECTED["coherence_always"]["out_energy"]


def test_on_it_passes_more_of_the_caller_and_reports_the_same() -> None:
    case = CASES["coherence_always"]
    off = fingerprint(case)
    on = fingerprint(dataclasses.replace(case, config=EchoConfig(coherence_always=True, coherence_attenuation=True)))
    # The caller talks near the echo's level from 2.5 s: frames the agent's audio cannot explain are no longer
    # turned down, so more energy comes out ...
    assert on["out_energy"] > off["out_energy"] * 1.05
    # ... and what the guard reports (the fraction the candidate check reads) and locks is unchanged.
    for key in ("fraction", "share", "locked", "trusted", "delay_sum"):
        assert on[key] == off[key], key


def test_no_attenuation_before_convergence_only_passes_more() -> None:
    """EchoConfig.suppress_unconverged off (tried, kept on): frames before the filter converges pass whole."""
    case = CASES["loud_echo_cuts"]
    off = fingerprint(case)
    whole = fingerprint(dataclasses.replace(case, config=EchoConfig(suppress_unconverged=False)))
    assert whole["out_energy"] > off["out_energy"]
    for key in ("fraction", "share", "locked", "delay_sum"):
        assert whole[key] == off[key], key

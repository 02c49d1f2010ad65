"""Presets by channel: one name (BARGEIN_PRESET) picks the barge-in thresholds that suit a kind of line.

Each preset lists only what differs from the field defaults in app/settings.py; a setting given in the
environment always wins over the preset. Why each value is what it is:

- `phone`: a handset on a carrier line, the default. Everything at its measured default; no echo guard: a
  handset returns little of the agent's voice, and the guard costs CPU and, with 100 calls, frame lag
  (measured: inbound-frame lag p99.9 31-36 ms with it, 2.5 ms without, in the 100-call hold).
- `speakerphone`: the agent's own voice comes back loudly (echo return loss to -6 dB) with a room tail:
  the echo guard is on, and the clear waits for the second look (`confirm`), so the echo that gets past
  the guard early in a reply is turned away before anything is sent, unless the guard vouches for the
  caller (ECHO_CLEAR_SHARE: it clears at once). The guard tests the caller leg's coherence with the agent's
  audio on every frame (`echo_coherence_always`), not only until its filter converges: on the pool a caller
  3 s into a reply got through 56/60 times instead of 46/60, echo-only calls still 0/108 (echo_eval
  --live-checks), for +65% of the guard's CPU on the calls that use this preset.
- `noisy`: a car, a cafe, a street: the second look always runs and the clear waits for it (`confirm`),
  so noise never causes a clear; a little slower to react.
- `browser`: the browser's own echo canceller already cleaned the microphone (getUserMedia), and the line
  is wideband and quiet: the echo guard is off (it would only cost CPU).
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "phone": {},
    "speakerphone": {"echo_guard": True, "bargein_policy": "confirm", "echo_coherence_always": True},
    "noisy": {"bargein_policy": "confirm", "bargein_second_look": True},
    "browser": {"echo_guard": False},
}

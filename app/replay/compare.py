"""Compare a replay's outcome with its baseline and say, in plain words, which decisions changed.

Tolerance depends on what the baseline is:

- `EXACT` when the baseline was itself produced on the virtual clock (`replay --update` writes
  `"baseline": "virtual"` in the header): the same build and settings give the same events at the same `t`,
  so any difference is a change (times are compared to the microsecond the format keeps).
- `REALTIME` when the baseline is a live recording (or the replay ran in real time with `--url`): times may
  move by one 20 ms frame (a frame's arrival decides, and real scheduling moves a decision by at most the
  frame it fell in), heard text by one word (the cut lands on the audio sample playing at the clear).
  Turn *ends* get one session timer tick more (TICK_S): an agent turn that played to the end is closed by
  the 50 ms timer, whose phase a real loop does not keep.

Decisions are paired in order, each baseline decision with the nearest unpaired new one within MATCH_S; what
is left over has appeared or vanished.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.replay.outcome import BargeIn, Outcome

MATCH_S = 1.0  # two decisions further apart than this are different decisions
TICK_S = 0.05  # app/routes/media.py TICK_S


@dataclass(frozen=True, slots=True)
class Tolerance:
    name: str
    time_s: float
    words: int


EXACT = Tolerance("exact", 1e-6, 0)
REALTIME = Tolerance("real time: 20 ms, one word", 0.020 + 1e-6, 1)


@dataclass(slots=True)
class Diff:
    """The differences between a baseline and a replay, each a line of plain words."""

    tolerance: Tolerance
    decisions: list[str]
    settings: list[str]

    @property
    def failed(self) -> bool:
        return bool(self.decisions)

    def render(self, title: str = "") -> str:
        out: list[str] = [title] if title else []
        if self.decisions:
            out.append(f"decisions that differ (tolerance: {self.tolerance.name}):")
            out += [f"  - {line}" for line in self.decisions]
        else:
            out.append(f"decisions identical (tolerance: {self.tolerance.name})")
        if self.settings:
            out.append("settings that differ from the recording (the replay used the current ones):")
            out += [f"  - {line}" for line in self.settings]
        return "\n".join(out)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:+.0f} ms"


def _pair(old: list[float], new: list[float]) -> tuple[list[tuple[int, int]], list[int], list[int]]:
    """Pair times in order: (pairs of indices, unpaired old, unpaired new)."""
    used: set[int] = set()
    pairs: list[tuple[int, int]] = []
    vanished: list[int] = []
    for i, t in enumerate(old):
        best: int | None = None
        for j, u in enumerate(new):
            if j in used or abs(u - t) > MATCH_S:
                continue
            if best is None or abs(u - t) < abs(new[best] - t):
                best = j
        if best is None:
            vanished.append(i)
        else:
            used.add(best)
            pairs.append((i, best))
    appeared = [j for j in range(len(new)) if j not in used]
    return pairs, vanished, appeared


def _turn(b: BargeIn) -> str:
    return f" (agent turn {b.turn_id})" if b.turn_id is not None else ""


_WORD = re.compile(r"\S+")


def word_distance(a: str, b: str) -> int:
    """How many words two heard texts differ by: words past their common word prefix, on the longer side."""
    wa, wb = _WORD.findall(a), _WORD.findall(b)
    common = 0
    for x, y in zip(wa, wb, strict=False):
        if x != y:
            break
        common += 1
    return max(len(wa), len(wb)) - common


def compare(baseline: Outcome, new: Outcome, tol: Tolerance) -> list[str]:
    """The decisions that moved, appeared or vanished, in plain words with times."""
    out: list[str] = []
    pairs, vanished, appeared = _pair([b.t for b in baseline.bargeins], [b.t for b in new.bargeins])
    for i, j in pairs:
        a, b = baseline.bargeins[i], new.bargeins[j]
        if abs(b.t - a.t) > tol.time_s:
            out.append(f"barge-in at {a.t:.3f} s{_turn(a)}: now at {b.t:.3f} s ({_ms(b.t - a.t)})")
        elif a.turn_id != b.turn_id:
            out.append(f"barge-in at {a.t:.3f} s: cut agent turn {a.turn_id}, now agent turn {b.turn_id}")
    out += [f"barge-in at {baseline.bargeins[i].t:.3f} s{_turn(baseline.bargeins[i])}: gone (the agent was not "
            f"interrupted)" for i in vanished]
    out += [f"new barge-in at {new.bargeins[j].t:.3f} s{_turn(new.bargeins[j])}: the agent is now interrupted "
            f"there" for j in appeared]
    pairs, vanished, appeared = _pair(baseline.clears, new.clears)
    for i, j in pairs:
        a_t, b_t = baseline.clears[i], new.clears[j]
        if abs(b_t - a_t) > tol.time_s:
            out.append(f"clear at {a_t:.3f} s: now at {b_t:.3f} s ({_ms(b_t - a_t)})")
    out += [f"clear at {baseline.clears[i]:.3f} s: no longer sent" for i in vanished]
    out += [f"new clear at {new.clears[j]:.3f} s" for j in appeared]
    out += _compare_heard(baseline, new, tol)
    out += _compare_turns(baseline, new, tol)
    if baseline.end_reason != new.end_reason:
        out.append(f"the stream ended with {baseline.end_reason!r}: now {new.end_reason!r}")
    return out


def _compare_heard(baseline: Outcome, new: Outcome, tol: Tolerance) -> list[str]:
    out: list[str] = []
    new_ids = {h.turn_id for h in new.heard}
    for a in baseline.heard:
        b = new.agent_turn(a.turn_id)
        if b is None:
            out.append(f"agent turn {a.turn_id} (heard {a.heard_text!r}): no longer ends in this stream")
            continue
        if a.interrupted != b.interrupted:
            was = "interrupted" if a.interrupted else "played to the end"
            now = "interrupted" if b.interrupted else "plays to the end"
            out.append(f"agent turn {a.turn_id} was {was}: now {now}")
        if tol.words == 0:
            changed = a.heard_text != b.heard_text or a.heard_chars != b.heard_chars
        else:
            changed = word_distance(a.heard_text, b.heard_text) > tol.words
        if changed:
            out.append(f"agent turn {a.turn_id} heard {_quote(a.heard_text)} (char {a.heard_chars}) -> "
                       f"{_quote(b.heard_text)} (char {b.heard_chars})")
    old_ids = {h.turn_id for h in baseline.heard}
    for b in new.heard:
        if b.turn_id not in old_ids:
            out.append(f"new agent turn {b.turn_id}: heard {_quote(b.heard_text)}")
    del new_ids
    return out


def _compare_turns(baseline: Outcome, new: Outcome, tol: Tolerance) -> list[str]:
    out: list[str] = []
    old_by_id = {t.turn_id: t for t in baseline.turns}
    new_by_id = {t.turn_id: t for t in new.turns}
    end_tol = tol.time_s if tol.words == 0 else tol.time_s + TICK_S
    for turn_id, a in old_by_id.items():
        b = new_by_id.get(turn_id)
        if b is None:
            out.append(f"turn {turn_id} ({a.role}, from {_t(a.start)}): gone")
            continue
        if a.role != b.role:
            out.append(f"turn {turn_id} was the {a.role}'s: now the {b.role}'s")
            continue
        if _moved(a.start, b.start, tol.time_s):
            out.append(f"turn {turn_id} ({a.role}) started at {_t(a.start)}: now at {_t(b.start)}"
                       f"{_delta(a.start, b.start)}")
        if _moved(a.end, b.end, end_tol):
            out.append(f"turn {turn_id} ({a.role}) ended at {_t(a.end)}: now at {_t(b.end)}{_delta(a.end, b.end)}")
    for turn_id, b in new_by_id.items():
        if turn_id not in old_by_id:
            out.append(f"new turn {turn_id} ({b.role}) from {_t(b.start)} to {_t(b.end)}")
    return out


def _moved(a: float | None, b: float | None, tol: float) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    return abs(a - b) > tol


def _t(t: float | None) -> str:
    return "-" if t is None else f"{t:.3f} s"


def _delta(a: float | None, b: float | None) -> str:
    return f" ({_ms(b - a)})" if a is not None and b is not None else ""


def _quote(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else "..." + text[-limit:])


def settings_diff(recorded: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """The settings that shape decisions (`current`'s names) whose value differs from the recording's.

    A recording's header lists every public setting; ports, URLs and paths do not change a call's decisions,
    so only the names in `current` (runner.DECISION_SETTINGS) are compared.
    """
    out = []
    for name, old in sorted((recorded or {}).items()):
        if name in current and current[name] != old:
            out.append(f"{name.upper()}: recorded {old!r}, now {current[name]!r}")
    return out


def diff(baseline: Outcome, new: Outcome, tol: Tolerance, recorded_settings: dict[str, Any] | None,
         current_settings: dict[str, Any]) -> Diff:
    return Diff(tol, compare(baseline, new, tol), settings_diff(recorded_settings, current_settings))

"""`bargein replay --url URL FILE...`: the caller leg over a real socket, in real time, against a running server.

What it does, per recording:

1. Serves the recorded LLM replies from a loopback OpenAI-compatible server (app/edge/llm_server.py) on
   `--llm-port` (default 8766). The server under test must have been started with
   `LLM_BASE_URL=http://127.0.0.1:<port>/v1` (printed at the start); request n gets the recording's reply n,
   its first token after the recorded first-token delay and the rest at the recorded mean pace (the loopback
   server paces evenly, so per-token jitter is not reproduced).
2. Places the call with the provider-edge emulator (app/edge/emulator.py) under the recorded call id, one
   emulated stream per recorded stream at its recorded open time; each sends the recorded caller audio on the
   stream's 20 ms grid and hangs up (`stop`) when the recorded caller left. The emulator's own playout model
   acknowledges marks, as the real edge would, for what this server sends.
3. Reads the outcome from the server's call record, `GET /calls/{id}` (`--admin-token`, or ADMIN_TOKEN from the
   environment, when the server has auth on), with times taken from the record's wall-clock stamps relative
   to the call's start, and compares it with the recording within the real-time tolerance (20 ms, one word).

The server's settings are its own; the diff cannot list them (the record does not carry them). Run the
server with RECORD_DIR to keep its full event recording of the replayed call.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
from typing import Any

import httpx

from app.audio import ulaw_to_pcm16
from app.edge.emulator import FRAME_SAMPLES, EmulatedCall
from app.edge.llm_server import ScriptedLlmServer
from app.record.format import RecordingError, read_recording
from app.replay.compare import REALTIME, Diff
from app.replay.compare import compare as compare_outcomes
from app.replay.llm import RecordedReplies
from app.replay.outcome import BargeIn, Heard, Outcome, TurnSpan, outcome_of
from app.replay.runner import leg_from_recording

DEFAULT_LLM_PORT = 8766


def outcome_from_record(record: dict[str, Any], t0_wall: float) -> Outcome:
    """A call record (GET /calls/{id}) as an Outcome, times relative to `t0_wall`."""
    out = Outcome(end_reason=record.get("end_reason"))
    for b in record.get("bargeins", []):
        decided = float(b["at"]) - float(b.get("total_ms", 0.0)) / 1000.0  # `at` is stamped once handling ended
        out.bargeins.append(BargeIn(round(decided - t0_wall, 6), b.get("turn_id")))
        out.clears.append(round(decided + float(b.get("clear_sent_ms", 0.0)) / 1000.0 - t0_wall, 6))
    for turn in record.get("turns", []):
        start = turn.get("started_at")
        end = turn.get("ended_at")
        out.turns.append(TurnSpan(int(turn["id"]), str(turn["role"]), None if start is None else start - t0_wall,
                                  None if end is None else end - t0_wall))
        if turn["role"] == "agent" and end is not None:
            text = str(turn.get("text") or "")
            heard = turn.get("heard_text")
            heard_text = text if heard is None else str(heard)
            chars = turn.get("heard_chars")
            out.heard.append(Heard(int(turn["id"]), text, heard_text, len(heard_text) if chars is None else chars,
                                   bool(turn.get("interrupted"))))
    return out


async def _replay_one(path: str, url: str, llm: ScriptedLlmServer, admin_token: str) -> Diff:
    rec = read_recording(path)
    leg = leg_from_recording(rec)
    replies = RecordedReplies.from_lines(rec.lines).replies
    texts = [r.text for r in replies] or ["Okay."]
    firsts = [r.tokens[0][0] for r in replies if r.tokens]
    gaps = [b[0] - a[0] for r in replies for a, b in zip(r.tokens, r.tokens[1:], strict=False)]
    llm.replies = texts
    llm.first_token_delay_s = statistics.median(firsts) if firsts else 0.0
    llm.token_delay_s = statistics.mean(gaps) if gaps else 0.02
    llm._completions = 0  # request n of this call gets reply n
    provider = leg.provider
    loop = asyncio.get_running_loop()
    # The recording's t = 0 on this loop's clock: first a guess, then pinned to when the first stream's `start`
    # actually went out, so later streams (a reconnect) open where they did relative to the first.
    origin = [loop.time()]

    async def stream(k: int) -> None:
        s = leg.streams[k]
        wait = origin[0] + s.open_at - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        payloads = [_payload(text) for _, text in s.frames]
        audio = b"".join(p for p in payloads if p is not None)
        last = s.hangup_at if s.hangup_at is not None else (s.frames[-1][0] if s.frames else s.open_at)
        async with EmulatedCall.start(provider, url, call_id=leg.call_id, answer=False) as call:  # type: ignore[arg-type]
            if k == 0 and call.started_at is not None:
                origin[0] = call.started_at - _start_t(s.frames)
            # The emulator's caller starts its 20 ms grid at `start` and fills it with silence until audio is
            # queued; the frames it already sent stand for the recording's first ones (silence too, the caller
            # had not spoken yet), so they are skipped: every later frame keeps its recorded slot.
            audio = audio[call.frames_sent * FRAME_SAMPLES:]
            if audio:
                await call.send_audio(ulaw_to_pcm16(audio))
            wait = origin[0] + last - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)

    for k in range(len(leg.streams)):  # streams of one call never overlap: a reconnect follows the end
        await stream(k)
    headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:
        record: dict[str, Any] = {}
        for _ in range(100):
            response = await client.get(f"{url.rstrip('/')}/calls/{leg.call_id}", headers=headers)
            response.raise_for_status()
            record = response.json()
            if not record.get("active"):
                break
            await asyncio.sleep(0.05)
    new = outcome_from_record(record, float(record["started_at"]) - _start_t(leg.streams[0].frames))
    return Diff(REALTIME, compare_outcomes(outcome_of(rec.lines), new, REALTIME), [])


def _start_t(frames: list[tuple[float, str]]) -> float:
    """When the stream's `start` went out, in the recording's time."""
    return next((t for t, text in frames if '"start"' in text), 0.0)


def _payload(text: str) -> bytes | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or obj.get("event") != "media":
        return None
    media = obj.get("media")
    payload = media.get("payload") if isinstance(media, dict) else None
    return base64.b64decode(payload) if isinstance(payload, str) else None


def run_live(args: argparse.Namespace) -> int:
    admin = getattr(args, "admin_token", None) or os.environ.get("ADMIN_TOKEN", "")
    port = getattr(args, "llm_port", None) or DEFAULT_LLM_PORT

    async def main() -> int:
        failed = unreadable = 0
        async with ScriptedLlmServer(["Okay."], port=port) as llm:
            print(f"LLM for the server under test: LLM_BASE_URL={llm.base_url}", file=sys.stderr)
            for name in args.files:
                try:
                    d = await _replay_one(name, args.url, llm, admin)
                except (RecordingError, OSError, httpx.HTTPError) as exc:
                    print(f"{name}: cannot replay: {exc}", file=sys.stderr)
                    unreadable += 1
                    continue
                failed += d.failed
                if d.failed or not args.quiet:
                    print(d.render(f"{name}: {'DIFFERENT decisions' if d.failed else 'same decisions'} (live)"))
        print(f"{len(args.files) - failed - unreadable} same, {failed} different, {unreadable} unreadable")
        return 2 if unreadable else (1 if failed else 0)

    return asyncio.run(main())

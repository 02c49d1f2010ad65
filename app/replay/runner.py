"""In-process replay: a recording's caller leg through the real per-stream loop, on a virtual clock.

The stream is served by the same code as a live call, `app.routes.media._pump`, with the same session, VAD,
Silero model, espeak-ng TTS and outbox; only the socket and the LLM are replaced:

- `MemorySocket` stands in for Starlette's WebSocket (the four things `_pump` uses: receive, send_text,
  client_state, close). Inbound frames are the recording's `ws_in` frames, each delivered at its recorded `t`
  after the stream opened, except the provider's acknowledgements, which `ReplayEdge` (app/replay/edge.py)
  generates from what this build sends.
- The LLM is `ReplayLlm` (app/replay/llm.py): the recorded replies at their recorded pace.

Everything runs on a `VirtualEventLoop` (app/replay/vloop.py) and the call's clock is that loop's time, so a
5-minute call replays in seconds and twice the same replay gives the same events at the same `t`.

The replay runs with the settings it is given (the current ones: what is under test), never the recorded ones;
compare.py reports where they differ. `require_token` is off: the recorded start's token was single-use.
A call that reconnected is one recording with one `stream` line per later stream (app/record/recorder.py):
each stream is replayed on its own socket from its recorded open time, against one registry, so a later
stream resumes the call (no second greeting, turns numbered on) as it did live.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from starlette.websockets import WebSocketState

from app.bargein.silero import SileroBatcher, shared_model
from app.bargein.vad import VadConfig
from app.call.admission import Slot, UnstartedStreams
from app.call.events import CallEvent, to_dict
from app.call.registry import CallRegistry
from app.call.session import CallDeps, CallSession
from app.clock import LoopClock
from app.metrics import Metrics
from app.record.format import Recording, RecordingError
from app.replay.edge import EdgeModel, ReplayEdge, estimate_latency, frame_event, is_ack
from app.replay.llm import RecordedReplies, ReplayLlm
from app.replay.tts import IsolatedEspeak
from app.replay.vloop import run_virtual
from app.settings import Settings
from app.stream_tokens import StreamTokens
from providers.llm.base import LlmClient
from providers.tts.base import Synthesis, TtsEngine

logger = logging.getLogger(__name__)

# After the last recorded frame, how long the replay waits for the stream to end by itself (a `stop`, the
# idle timeout) before the caller's socket is closed; virtual seconds, so it costs nothing.
END_GRACE_S = 1.0

# The settings that shape a call's decisions: what a replay's header records and its diff compares.
DECISION_SETTINGS = (
    "vad_energy_gate_dbfs", "vad_use_webrtc", "vad_webrtc_mode", "vad_silero_threshold", "vad_silero_release",
    "bargein_min_speech_ms", "turn_end_silence_ms", "playback_chunk_ms", "playback_lead_ms", "tts_engine",
    "tts_voice", "tts_rate_wpm", "tts_timeout_s", "llm_first_token_timeout_s", "llm_token_timeout_s",
    "llm_max_reply_chars", "max_queued_audio_s", "idle_timeout_s", "stream_start_timeout_s", "agent_greeting",
    "agent_fallback_text", "agent_system_prompt", "media_max_payload_bytes",
    "bargein_preset", "bargein_policy", "bargein_second_look", "bargein_backchannel_max_ms", "bargein_escalate_s",
    "bargein_doubt_max_ms", "bargein_cautious_s",
    "bargein_uninterruptible", "bargein_hard_silence_ms", "bargein_ack_fraction", "bargein_ack_text",
    "bargein_ack_min_ms", "echo_guard", "echo_reject_share", "vad_snr_db", "vad_floor_window_ms", "vad_pause_ms",
)


def decision_settings(settings: Settings) -> dict[str, Any]:
    data = settings.model_dump()
    return {name: data[name] for name in DECISION_SETTINGS if name in data}


class MemorySocket:
    """The part of starlette's WebSocket that `_pump` uses, over an in-memory queue."""

    client = None

    def __init__(self, on_send: Callable[[str], None]) -> None:
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._on_send = on_send
        self.client_state = WebSocketState.CONNECTED
        self.close_code: int | None = None
        self.close_reason = ""

    async def receive(self) -> dict[str, Any]:
        return await self._inbox.get()

    async def send_text(self, text: str) -> None:
        if self.client_state != WebSocketState.CONNECTED:
            raise RuntimeError("socket closed")
        self._on_send(text)

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.client_state = WebSocketState.DISCONNECTED
        self.close_code = code
        self.close_reason = reason or ""

    def push_text(self, text: str) -> None:
        if self.client_state == WebSocketState.CONNECTED:
            self._inbox.put_nowait({"type": "websocket.receive", "text": text})

    def push_disconnect(self, code: int = 1000) -> None:
        if self.client_state == WebSocketState.CONNECTED:
            self.client_state = WebSocketState.DISCONNECTED
            self._inbox.put_nowait({"type": "websocket.disconnect", "code": code})


@dataclass(slots=True)
class StreamLeg:
    """One media stream of the call as the caller's edge sent it (t from the call's first stream open)."""

    stream_id: str
    open_at: float  # when the edge opened this stream
    frames: list[tuple[float, str]]  # caller frames only: acknowledgements are generated
    hangup_at: float | None  # the caller's socket closes here (None: the stream ends by itself)
    latency_s: float = 0.0  # the edge's ack delay, estimated from the recording (app/replay/edge.py)


@dataclass(slots=True)
class CallLeg:
    """What a replay feeds: the call's streams (more than one when the call reconnected)."""

    provider: str
    call_id: str
    started_at: float  # wall clock of t = 0
    streams: list[StreamLeg]


def stream_segments(lines: Sequence[dict[str, Any]]) -> list[tuple[float, str | None, list[dict[str, Any]]]]:
    """A recording's lines cut at its `stream` lines: (open t, stream id, lines) per stream, in order."""
    segments: list[tuple[float, str | None, list[dict[str, Any]]]] = [(0.0, None, [])]
    for line in lines:
        if line.get("type") == "stream":
            segments.append((float(line.get("t", 0.0)), str(line.get("stream_id") or "") or None, []))
        else:
            segments[-1][2].append(line)
    return segments


def leg_from_recording(rec: Recording) -> CallLeg:
    """The caller's side of a recording: what its edge sent, stream by stream, and when the caller left."""
    header = rec.header
    provider = str(header.get("provider", ""))
    if "audio" in (header.get("redacted") or []):
        raise RecordingError("recorded with RECORD_REDACT=audio: the caller's audio is not in the file, so the "
                             "call cannot be replayed")
    streams: list[StreamLeg] = []
    # A baseline written by `replay --update` keeps the latency its replay used (estimating it again from the
    # replay's own acks could land a microsecond off, and an exact comparison would see it).
    kept = header.get("edge_latency_s")
    for i, (open_at, stream_id, lines) in enumerate(stream_segments(rec.lines)):
        frames = [(float(line["t"]), str(line.get("text", ""))) for line in lines if line.get("type") == "ws_in"]
        frames = [(t, text) for t, text in frames if not is_ack(provider, text)]
        if not frames:
            continue
        sid = stream_id or (str(header.get("stream_id")) if i == 0 and header.get("stream_id") else None)
        sid = sid or _stream_id_of(provider, frames) or ""
        ends = [line for line in lines if line.get("type") == "call_end"]
        end_reason = str(ends[-1].get("reason")) if ends else None
        sent_stop = any(frame_event(text) == "stop" for _, text in frames[-3:])
        # The caller (or the network) closed the socket: do the same at that moment. A recording cut short by
        # a crash has no call_end: close where it stops.
        hangup_at: float | None = None
        if end_reason in (None, "socket closed", "invalid utf-8") and not sent_stop:
            hangup_at = float(ends[-1]["t"]) if ends else float(lines[-1].get("t", 0.0))
        if isinstance(kept, list) and len(streams) < len(kept):
            latency = float(kept[len(streams)])
        else:
            latency = estimate_latency(provider, sid, lines)
        streams.append(StreamLeg(sid, open_at, frames, hangup_at, latency))
    return CallLeg(provider, str(header.get("call_id", "")), float(header.get("started_at", 0.0)), streams)


def _stream_id_of(provider: str, frames: Sequence[tuple[float, str]]) -> str | None:
    """The stream id a `start` frame names (for a recording whose header does not say)."""
    for _, text in frames:
        if frame_event(text) != "start":
            continue
        obj = json.loads(text)
        start = obj.get("start")
        key = "streamSid" if provider == "twilio" else "streamId"
        sid = start.get(key) if isinstance(start, dict) else None
        return str(sid or obj.get(key) or "")
    return None


@dataclass(slots=True)
class ReplayResult:
    header: dict[str, Any]  # for a recording of this run: the leg's ids, this run's settings, baseline virtual
    lines: list[dict[str, Any]]  # every event of the replayed stream, `t` from its open
    record: dict[str, Any] | None  # the call record as the replayed server kept it
    elapsed_s: float  # wall-clock seconds the replay took
    virtual_s: float = 0.0  # the call's length on the virtual clock
    acks: int = 0  # acknowledgements the edge model generated
    llm_requests: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def replay_tts(settings: Settings) -> TtsEngine:
    """The TTS a replay uses: the embedded engine, isolated so its output depends on this replay alone.

    A call recorded with a hosted engine (TTS_ENGINE=elevenlabs / openai) is replayed with espeak-ng too: a
    replay runs in CI with no keys and must never call (or bill) a vendor; the agent's words are the same, their
    audio is espeak's."""
    if settings.tts_engine != "espeak":
        logger.info("replay: TTS_ENGINE=%s is replayed with espeak-ng (no vendor calls)", settings.tts_engine)
    return IsolatedEspeak(voice=settings.tts_voice, rate_wpm=settings.tts_rate_wpm)


async def _fallback(tts: TtsEngine, text: str) -> list[Synthesis]:
    try:
        return [await tts.synthesize(text)]
    except Exception:
        return []


async def play_leg(
    leg: CallLeg,
    settings: Settings,
    llm: LlmClient,
    *,
    tts: TtsEngine | None = None,
    header: dict[str, Any] | None = None,
    render: Callable[[float, str, EdgeModel], str] | None = None,
) -> ReplayResult:
    """Serve `leg` through `_pump` on the running loop (a virtual one for a deterministic replay).

    Each stream of the leg opens at its recorded time on its own in-memory socket, against one registry, so a
    reconnect resumes its call as it did live. `render(t, frame, edge)` may rewrite each caller frame as it is
    sent (a scenario mixes in its clip and the agent's echo there); `edge.playout` knows what the caller heard.
    """
    wall_started = time.perf_counter()
    loop = asyncio.get_running_loop()
    clock = LoopClock(loop)
    tts = tts or replay_tts(settings)
    fallback = await _fallback(tts, settings.agent_fallback_text)
    t0 = loop.time()

    def wall() -> float:
        return leg.started_at + (loop.time() - t0)

    registry = CallRegistry(settings.call_records_max, settings.call_records_ttl_s, clock)
    lines: list[dict[str, Any]] = []
    streams_seen = [0]

    def observe(session: CallSession) -> None:
        streams_seen[0] += 1
        if streams_seen[0] > 1:  # as the recorder writes a reconnect: a `stream` line, then its events
            lines.append({"type": "stream", "t": round(session.opened_at - t0, 6), "stream_id": session.stream_id})

        def collect(event: CallEvent) -> None:
            line = to_dict(event)
            line["t"] = round(event.t - t0, 6)
            lines.append(line)

        session.events.subscribe(collect)

    deps = CallDeps(
        settings=settings, clock=clock, wall=wall, scorer=SileroBatcher(shared_model()),
        vad_config=VadConfig.from_settings(settings), tts=tts, llm=llm, registry=registry, metrics=Metrics(),
        tokens=StreamTokens.from_settings(settings, wall), require_token=False, fallback=fallback,
        observers=[observe],
    )
    acks = [0]

    async def one_stream(stream: StreamLeg) -> None:
        wait = t0 + stream.open_at - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        acks[0] += await _serve_stream(stream, leg.provider, deps, t0, render)

    await asyncio.gather(*(one_stream(stream) for stream in leg.streams))
    virtual_s = loop.time() - t0
    await tts.aclose()
    found = registry.get(leg.call_id)
    out_header = dict(header or {})
    out_header.update({"provider": leg.provider, "call_id": leg.call_id,
                       "stream_id": leg.streams[0].stream_id if leg.streams else "",
                       "started_at": leg.started_at, "settings": decision_settings(settings),
                       "edge_latency_s": [stream.latency_s for stream in leg.streams]})
    return ReplayResult(
        header=out_header, lines=lines, record=found.to_json() if found is not None else None,
        elapsed_s=time.perf_counter() - wall_started, virtual_s=virtual_s, acks=acks[0],
        llm_requests=len(getattr(llm, "requests", [])),
    )


async def _serve_stream(stream: StreamLeg, provider: str, deps: CallDeps, t0: float,
                        render: Callable[[float, str, EdgeModel], str] | None) -> int:
    """One stream: `_pump` on a MemorySocket fed the stream's frames at their times; returns the acks sent."""
    from app.routes.media import _pump

    loop = asyncio.get_running_loop()
    edge: ReplayEdge | None = None

    def sent(text: str) -> None:
        if edge is not None:
            edge.server_frame(text)

    socket = MemorySocket(sent)
    edge_model = EdgeModel(provider, stream.stream_id, keep_audio=render is not None)
    edge = ReplayEdge(edge_model, stream.latency_s, socket.push_text)
    slot = UnstartedStreams().admit("replay", 1, 1)
    assert isinstance(slot, Slot)
    pump = asyncio.create_task(_pump(cast(Any, socket), provider, deps, slot), name=f"replay-{stream.stream_id}")
    frames = stream.frames
    index = 0
    timer: list[asyncio.TimerHandle] = []

    def push_next() -> None:
        # One timer at a time, each frame's scheduling the next: frames keep their order whatever their `t`,
        # and a frame costs a timer callback rather than a task waking from a sleep.
        nonlocal index
        if index < len(frames):
            t, text = frames[index]
            index += 1
            socket.push_text(text if render is None else render(t, text, edge_model))
            if index < len(frames):
                timer[:] = [loop.call_at(max(loop.time(), t0 + frames[index][0]), push_next)]
                return
        if stream.hangup_at is not None:
            last = frames[-1][0] if frames else 0.0
            timer[:] = [loop.call_at(max(loop.time(), t0 + max(stream.hangup_at, last)), socket.push_disconnect)]

    if frames:
        timer[:] = [loop.call_at(max(loop.time(), t0 + frames[0][0]), push_next)]
    await pump
    for handle in timer:
        handle.cancel()
    edge.close()
    return edge.acks_sent


def replay_recording(rec: Recording, settings: Settings) -> ReplayResult:
    """Replay one recording in-process on a virtual clock with `settings`."""
    leg = leg_from_recording(rec)
    llm = ReplayLlm(RecordedReplies.from_lines(rec.lines), settings.llm_token_timeout_s)
    header = {k: v for k, v in rec.header.items() if k not in ("type", "format", "version")}
    return run_virtual(play_leg(leg, settings, llm, header=header))

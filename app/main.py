"""create_app(): the FastAPI factory. Builds Settings and every shared client once and wires the routes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psutil
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from app.bargein.silero import SileroBatcher, shared_model
from app.bargein.vad import VadConfig
from app.call.admission import UnstartedStreams
from app.call.demo_tools import demo_tools
from app.call.end_of_turn import EndOfTurn, SmartTurn
from app.call.prosody import ProsodyModel
from app.call.registry import CallRegistry
from app.call.session import CallDeps, CallSession
from app.call.tools import ToolRegistry
from app.clock import Clock, MonotonicClock
from app.drain import GOODBYE_S, Drain, DrainControl, Phase
from app.loopwatch import LoopWatch
from app.metrics import Metrics
from app.routes.embedded_llm import PREFIX as EMBEDDED_LLM_PREFIX
from app.routes.embedded_llm import embedded_llm_router
from app.routes.media import media_router
from app.routes.pcm import pcm_router
from app.routes.phone import phone_router
from app.routes.report import report_router
from app.routes.webhooks import webhook_router
from app.settings import Settings
from app.signatures import WebhookAuth
from app.store.writer import start_writer
from app.stream_tokens import StreamTokens
from app.telemetry.turngap import TurnGapMeter
from app.transcript import CallRecord
from providers.llm.openai import OpenAICompatibleLlm
from providers.stt import create_engine
from providers.stt.base import SttEngine
from providers.tts.base import Synthesis, TtsEngine
from providers.tts.cached import CachedTts, SynthesisCache, cached_tts
from providers.tts.elevenlabs import ElevenLabsTts
from providers.tts.espeak import EspeakTts
from providers.tts.openai_speech import OpenAiSpeechTts

logger = logging.getLogger(__name__)


def build_stt(settings: Settings) -> SttEngine | None:
    """The recognizer of STT_ENGINE (None: caller turns have no words)."""
    if settings.stt_engine == "none":
        return None
    return create_engine(
        settings.stt_engine,
        workers=settings.stt_workers,
        max_pending=settings.stt_max_pending,
        partial_interval_ms=settings.stt_partial_interval_ms,
        deepgram_api_key=settings.deepgram_api_key,
        deepgram_url=settings.deepgram_url,
        deepgram_model=settings.deepgram_model,
        endpointing_ms=settings.deepgram_endpointing_ms,
        utterance_end_ms=settings.deepgram_utterance_end_ms,
        keepalive_s=settings.deepgram_keepalive_s,
        whisper_window=settings.stt_whisper_window,
    )


def build_tts(settings: Settings) -> TtsEngine:
    if settings.tts_engine == "espeak":
        # The greeting, fallback and busy lines are the same for every call: synthesised once (TTS_CACHE_MAX_MB).
        return cached_tts(EspeakTts(voice=settings.tts_voice, rate_wpm=settings.tts_rate_wpm,
                                    processes=settings.tts_espeak_processes),
                          settings.tts_cache_max_mb)
    hosted: ElevenLabsTts | OpenAiSpeechTts
    if settings.tts_engine == "elevenlabs":
        hosted = ElevenLabsTts(settings.elevenlabs_api_key, settings.elevenlabs_voice_id,
                               model_id=settings.elevenlabs_model_id, url=settings.elevenlabs_url,
                               idle_timeout_s=settings.tts_timeout_s,
                               warm_connections=settings.elevenlabs_warm_connections)
    elif settings.tts_engine == "openai":
        hosted = OpenAiSpeechTts(settings.openai_tts_base_url or settings.llm_base_url,
                                 settings.openai_tts_api_key or settings.llm_api_key,
                                 model=settings.openai_tts_model, voice=settings.openai_tts_voice,
                                 read_timeout_s=settings.tts_timeout_s)
    else:
        raise ValueError(f"unknown TTS_ENGINE {settings.tts_engine!r} (available: espeak, elevenlabs, openai)")
    if settings.tts_cache_max_mb <= 0:
        return hosted
    # Cached too: a fixed line (greeting, busy line, goodbye) is paid for, and waited for, once.
    return CachedTts(hosted, hosted.identity, SynthesisCache(int(settings.tts_cache_max_mb * 1024 * 1024)))


def llm_base_url(settings: Settings) -> str:
    if settings.llm_base_url:
        return settings.llm_base_url
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}{EMBEDDED_LLM_PREFIX}"


LLM_PROBE_TIMEOUT_S = 2.0


async def probe_llm(settings: Settings, timeout_s: float = LLM_PROBE_TIMEOUT_S) -> bool:
    """GET {LLM_BASE_URL}/models once; log a WARNING if it cannot be reached (or refuses the key). Never raises.

    Any other answer, even a 404 from a server without that route, shows the URL is reachable.
    """
    url = f"{settings.llm_base_url.rstrip('/')}/models"
    headers = {"Authorization": f"Bearer {settings.llm_api_key}"} if settings.llm_api_key else {}
    try:
        async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
            response = await client.get(url, headers=headers)
    except (httpx.HTTPError, OSError) as exc:
        logger.warning("LLM_BASE_URL %s cannot be reached (%s: %s): agent turns will speak the fallback line "
                       "until it can", _no_secrets(settings.llm_base_url), type(exc).__name__, exc or "no detail")
        return False
    if response.status_code in (401, 403):
        logger.warning("LLM_BASE_URL %s refused LLM_API_KEY (GET /models: %s): agent turns will speak the "
                       "fallback line", _no_secrets(settings.llm_base_url), response.status_code)
        return False
    return True


def create_app(
    settings: Settings | None = None,
    clock: Clock | None = None,
    observers: list[Callable[[CallSession], None]] | None = None,
    drain: DrainControl | None = None,
    llm_key: str | None = None,
    tools: ToolRegistry | None = None,
) -> FastAPI:
    """`observers` are called with each call's session when its stream starts (see CallDeps.observers).

    `drain`: the process's drain (app/drain.py), signalled by `bargein serve`'s server; without one the app
    builds its own, which nothing signals. `llm_key`: the embedded LLM's key, the same in every worker of one
    `bargein serve` (a turn's request to the port may reach another worker); random when not given.
    `tools`: the tools the agent may call (app/call/tools.py); none when not given.
    """
    settings = settings or Settings()
    clock = clock or MonotonicClock()
    drain = drain or DrainControl(Drain(settings.drain_timeout_s), clock.now)
    live_sessions: weakref.WeakSet[CallSession] = weakref.WeakSet()  # started streams, for the drain goodbye
    goodbyes: set[asyncio.Task[None]] = set()

    def say_goodbye() -> None:
        for session in list(live_sessions):
            if not session.closed:
                task = asyncio.create_task(session.drain_goodbye(settings.agent_drain_goodbye_text, GOODBYE_S - 2))
                goodbyes.add(task)
                task.add_done_callback(goodbyes.discard)

    metrics = Metrics()
    registry = CallRegistry(settings.call_records_max, settings.call_records_ttl_s, clock)
    auth = WebhookAuth(settings)
    if not auth.insecure and not settings.admin_token:
        logger.warning("auth is on but ADMIN_TOKEN is not set: /calls, /metrics and /stats answer 401 to everyone")
    tokens = StreamTokens.from_settings(settings, time.time)  # wall time: replicas on other hosts agree on it
    state: dict[str, Any] = {"ready": False}
    fallback: list[Synthesis] = []
    # An idle process pays ~0.7% of a core for the 10 ms timer (measured: the wake-ups from epoll cost more than
    # the callback); a busy one, whose loop is awake anyway, almost nothing. LOOP_WATCH_MS=0 turns it off.
    loop_watch = LoopWatch(clock.now, settings.loop_watch_ms / 1000.0 or 1.0, on_stall=metrics.loop_stall_ms.observe)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tts = build_tts(settings)
        stt = build_stt(settings)
        start_stt = getattr(stt, "start", None)
        if start_stt is not None:  # the embedded model loads before the first call, off the event loop
            try:
                await start_stt()
            except Exception:
                logger.exception("the speech recognizer could not start: caller turns will have no words")
        llm = OpenAICompatibleLlm(
            llm_base_url(settings),
            settings.llm_model,
            # The embedded LLM answers only a request carrying this process's key (see the router below).
            api_key=settings.llm_api_key if settings.llm_base_url else embedded_llm_key,
            first_token_timeout_s=settings.llm_first_token_timeout_s,
            token_timeout_s=settings.llm_token_timeout_s,
        )
        # One Silero model for the process; one batcher per event loop, shared by every call on it.
        batcher = SileroBatcher(shared_model())
        # The end-of-turn model (TURN_END_MODEL), loaded once per process, off the loop; asked for, it must load.
        end_of_turn = EndOfTurn(await asyncio.to_thread(SmartTurn), settings.turn_model_max_pending) \
            if settings.turn_end_model == "smart_turn" else None
        if settings.turn_end_model == "prosody":  # numpy only, nothing to load (app/call/prosody.py)
            end_of_turn = EndOfTurn(ProsodyModel(), settings.turn_model_max_pending)
        try:
            fallback.append(await tts.synthesize(settings.agent_fallback_text))
        except Exception as exc:
            # A hosted TTS down at start must not leave its own failures silent: the line comes from the
            # embedded engine then (another voice, but words instead of dead air).
            if settings.tts_engine == "espeak":
                logger.exception("could not synthesise the fallback line; provider failures will end in silence")
            else:
                logger.warning("%s could not synthesise the fallback line (%s); espeak-ng speaks it instead",
                               settings.tts_engine, type(exc).__name__)
                with contextlib.suppress(Exception):
                    fallback.append(await EspeakTts(voice=settings.tts_voice).synthesize(settings.agent_fallback_text))
        # RECORD_DIR: every call to a file, written by the recorder's own thread (app/record/recorder.py).
        recorder = None
        if settings.record_dir:
            from app.record.recorder import Recorder
            from app.version import version

            recorder = Recorder.from_settings(settings, build=version())
            recorder.start()
        app.state.recorder = recorder
        # OTEL_EXPORTER_OTLP_ENDPOINT: a span per call, turn and barge-in, exported by the SDK's batch thread
        # (app/telemetry/tracing.py). Unset: the OpenTelemetry SDK is never imported.
        tracer = None
        if settings.otel_traces_url:
            from app.telemetry.tracing import CallTracer
            from app.version import version

            tracer = CallTracer.from_settings(settings, version())
        app.state.tracer = tracer
        # CALL_STORE_URL: call records and used stream tokens kept beyond this process (app/store/).
        writer = await start_writer(settings, metrics)
        if writer is not None:
            registry.writer = writer
            tokens.use_store(writer.store, writer.failed)
        state["deps"] = CallDeps(
            settings=settings,
            clock=clock,
            wall=time.time,
            scorer=batcher,
            vad_config=VadConfig.from_settings(settings),
            tts=tts,
            llm=llm,
            registry=registry,
            metrics=metrics,
            tokens=tokens,
            require_token=not auth.insecure,
            fallback=fallback,
            stt=stt,
            end_of_turn=end_of_turn,
            # The embedded agent has its demo tools; with a hosted LLM, only the tools the application gave.
            tools=tools if tools is not None else (ToolRegistry() if settings.llm_base_url else demo_tools()),
            observers=list(observers or []) + ([recorder.observe] if recorder is not None else [])
            + [live_sessions.add]
            + ([tracer.observe] if tracer is not None else [])
            + [TurnGapMeter(metrics.turn_gap_seconds.observe).observe]
            + ([writer.observe] if writer is not None else []),
        )
        state["batcher"] = batcher
        # Everything built so far lives as long as the process: move it out of the collector's sight, so a
        # full collection walks only per-call objects (measured: 35-42 ms pauses on the loop without this).
        gc.collect()
        gc.freeze()
        if settings.loop_watch_ms:
            loop_watch.start()
        state["ready"] = True
        # Off the critical path: readiness does not wait for a remote LLM to answer (at most LLM_PROBE_TIMEOUT_S).
        probe = asyncio.create_task(probe_llm(settings)) if settings.llm_base_url else None
        logger.info("bargein ready: LLM %s, TTS %s, event loop %s",
                    "embedded" if not settings.llm_base_url else "remote", settings.tts_engine,
                    type(asyncio.get_running_loop()).__module__)
        try:
            yield
        finally:
            state["ready"] = False
            if probe is not None:
                probe.cancel()
            await loop_watch.stop()
            await llm.aclose()
            await tts.aclose()
            if stt is not None:
                await stt.aclose()
            if end_of_turn is not None:
                end_of_turn.close()
            if recorder is not None:
                await asyncio.to_thread(recorder.stop)  # writes what is waiting and closes every file
            if tracer is not None:
                await asyncio.to_thread(tracer.shutdown)  # exports the spans still waiting
            if writer is not None:
                await writer.aclose()  # commits what is queued (a few seconds at most), then closes the store

    docs = settings.api_docs  # off by default: the schema maps the attack surface
    app = FastAPI(title="bargein", lifespan=lifespan, docs_url="/docs" if docs else None,
                  redoc_url="/redoc" if docs else None, openapi_url="/openapi.json" if docs else None)
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.drain = drain

    def has_capacity() -> bool:
        return registry.active < settings.max_calls

    def ended_cleanly(call_id: str) -> bool:
        record = registry.get(call_id)
        return record is not None and record.end_reason in ("stop", "idle timeout", "drain")

    app.include_router(
        webhook_router(settings, auth, tokens, has_capacity, call_ended_cleanly=ended_cleanly,
                       accepting=drain.admit)
    )
    # One count of streams without a valid start for every stream route (carriers, /pcm, /phone): the caps are
    # per process, not per route.
    unstarted = UnstartedStreams()
    app.include_router(media_router(lambda: state["deps"], auth, unstarted))
    # Random per process and known only to the LLM client built in lifespan(): a loopback address alone can be
    # forged through X-Forwarded-For behind a proxy trusted with FORWARDED_ALLOW_IPS='*'.
    embedded_llm_key = llm_key or secrets.token_urlsafe(32)
    # While draining, the server waits for these: calls up, and streams upgraded but not started yet.
    drain.attach(live=lambda: registry.active + unstarted.total, goodbye=say_goodbye)
    drain.on_change.append(lambda phase: metrics.draining.set(0 if phase is Phase.SERVING else 1))
    app.include_router(embedded_llm_router(settings.embedded_llm_token_delay_ms / 1000.0, embedded_llm_key))

    def require_admin(request: Request) -> None:
        if auth.insecure:
            return
        expected = settings.admin_token
        given = request.headers.get("authorization", "")
        if not expected or not secrets.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            raise HTTPException(status_code=401, detail="admin token required")

    app.include_router(pcm_router(lambda: state["deps"], tokens, require_admin, unstarted))
    if settings.phone_page:  # off: /phone, /phone/token and /phone/stream do not exist (404)
        app.include_router(phone_router(settings, auth, tokens, require_admin, lambda: state["deps"], unstarted))
    # GET /calls/{id}/report: the picture of a recorded call (404 while RECORD_DIR is empty)
    app.include_router(report_router(settings.record_dir, require_admin))

    @app.get("/healthz")
    async def healthz(probe: str = "ready") -> Response:
        """Readiness by default: 200 serving; 503 starting, or draining after SIGTERM (app/drain.py).

        `?probe=live` is liveness: 200 whenever the process answers, draining or not, so an orchestrator
        restarts a hung process but never kills one that drains its calls (Kubernetes: livenessProbe on
        /healthz?probe=live, readinessProbe on /healthz).
        """
        if probe == "live":
            return JSONResponse({"status": "alive", "drain": drain.phase.value, "active_calls": registry.active})
        if not drain.accepting:
            return JSONResponse({"status": "draining", "active_calls": registry.active}, status_code=503)
        if not state["ready"]:
            return JSONResponse({"status": "starting"}, status_code=503)
        return JSONResponse({"status": "ok", "active_calls": registry.active, "insecure": auth.insecure})

    # The token is checked as a dependency, so before the query: a stranger gets 401, never a 422 about `limit`.
    @app.get("/calls", dependencies=[Depends(require_admin)])
    async def list_calls(limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
        """Recent calls, newest first: a summary of each (GET /calls/{id} has the turns themselves)."""
        return {"calls": [_call_summary(record) for record in await registry.recent_shared(limit)]}

    @app.get("/calls/{call_id}")
    async def get_call(call_id: str, request: Request) -> dict[str, Any]:
        require_admin(request)
        record = await registry.lookup(call_id)  # held here, else the store (another replica's, or before a restart)
        if record is None:
            raise HTTPException(status_code=404, detail="unknown call")
        return record.to_json()

    @app.get("/metrics")
    async def get_metrics(request: Request) -> Response:
        require_admin(request)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/stats")
    async def get_stats(request: Request) -> dict[str, Any]:
        """Process figures for the benchmark: exact frame-lag percentiles, CPU seconds and RSS."""
        require_admin(request)
        proc = psutil.Process(os.getpid())
        cpu = proc.cpu_times()
        return {
            "active_calls": registry.active,
            "calls_total": registry.calls_total,
            "frame_lag_ms": metrics.frame_lag.summary(),
            "loop_stall_ms": loop_watch.summary(),
            "loop_held_ms": loop_watch.held_summary(),
            "silero_batches": _batch_stats(state.get("batcher")),
            "tts_cache": _tts_cache_stats(state.get("deps")),
            "cpu_s": cpu.user + cpu.system,
            "rss_bytes": proc.memory_info().rss,
            "event_loop": type(asyncio.get_running_loop()).__module__,
        }

    @app.post("/stats/reset")
    async def reset_stats(request: Request) -> dict[str, str]:
        require_admin(request)
        metrics.frame_lag.reset()
        loop_watch.reset()
        return {"status": "reset"}

    return app


def _call_summary(record: CallRecord) -> dict[str, Any]:
    return {"id": record.call_id, "provider": record.provider, "started_at": record.started_at,
            "ended_at": record.ended_at, "end_reason": record.end_reason, "active": record.ended_at is None,
            "turns": len(record.turns), "bargeins": len(record.bargeins)}


def _batch_stats(batcher: SileroBatcher | None) -> dict[str, float]:
    if batcher is None:
        return {}
    stats = batcher.stats
    return {"runs": stats.runs, "windows": stats.windows, "mean_batch": round(stats.mean_batch, 2),
            "max_batch": stats.max_batch, "model_cpu_s": round(stats.model_cpu_s, 3)}


def _tts_cache_stats(deps: CallDeps | None) -> dict[str, int]:
    """The fixed lines' cache (greeting, fallback): a burst of calls should show one miss per sentence."""
    tts = deps.tts if deps is not None else None
    return dataclasses.asdict(tts.cache.stats) if isinstance(tts, CachedTts) else {}


def _no_secrets(url: str) -> str:
    """A URL fit for a log line: no user:password@ and no query string (either may carry a key)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

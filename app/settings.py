"""Settings: the only module that reads environment variables."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")  # named by both logging and uvicorn
RECORD_REDACT_ITEMS = ("audio", "text")  # what RECORD_REDACT may leave out of a recording


class Settings(BaseSettings):
    """Every knob of the server, read from the environment (and an optional .env file)."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- serving -------------------------------------------------------------------------------
    host: str = "0.0.0.0"
    port: int = 8080
    public_url: str = Field(
        "",
        description=(
            "Public base URL the providers call (scheme, host, optional port and path prefix). Empty: derived "
            "per webhook from its Forwarded / X-Forwarded-* / Host headers; required when provider auth is on."
        ),
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines: text, or json (one JSON object per line, for log shippers)."
    )
    max_calls: int = Field(200, ge=1, description="Concurrent calls; the webhook refuses the call past this.")
    idle_timeout_s: float = Field(20.0, gt=0, description="End a stream that sends nothing for this long.")
    loop_watch_ms: float = Field(
        10.0, ge=0, le=1000, description="Event-loop stall watch interval (/stats, /metrics); 0 turns it off."
    )
    api_docs: bool = Field(False, description="Serve /docs and /openapi.json (off: they map the attack surface).")
    phone_page: bool = Field(
        False, description="Serve /phone: a browser softphone on the Twilio stream (admin token when auth is on)."
    )
    workers: int = Field(
        0, ge=0, le=256, description="Server processes on one port (`bargein serve`); 0 = the cores available."
    )
    drain_timeout_s: float = Field(
        300.0, ge=0, description="After SIGTERM, live calls go on this long, then hear the drain goodbye and end."
    )

    # --- hostile input bounds ----------------------------------------------------------------------
    # A provider frame is ~200-400 bytes (20 ms of mu-law in base64 inside JSON); these caps bound the work
    # one message can cause, far above anything a provider sends and far below uvicorn's 16 MiB default.
    ws_max_message_bytes: int = Field(
        65_536, ge=4_096, le=16 * 1024 * 1024, description="Largest inbound WebSocket message; larger closes 1009."
    )
    media_max_payload_bytes: int = Field(
        4_000, ge=160, le=48_000, description="Largest decoded audio in one media frame (4000 = 500 ms of mu-law)."
    )
    stream_start_timeout_s: float = Field(
        10.0, gt=0, description="A stream must send a valid start this soon after the upgrade; junk does not extend it."
    )
    max_unstarted_streams_per_address: int = Field(
        10, ge=1, description="Open streams from one client address that have not yet sent a valid start."
    )
    max_unstarted_streams: int = Field(
        100, ge=1, description="Open streams from all addresses that have not yet sent a valid start."
    )

    # --- security --------------------------------------------------------------------------------
    twilio_auth_token: str = ""
    twilio_webhook_keys: str = Field(
        "", description="Twilio webhook shared keys: key_id=secret,... (signature-settings header)."
    )
    plivo_auth_token: str = ""
    plivo_enforce_upgrade_signature: bool = Field(
        False, description="Refuse a Plivo stream upgrade whose V3 signature matches no candidate URL."
    )
    admin_token: str = Field("", description="Bearer token for /calls and /metrics when auth is on.")
    stream_token_secret: str = Field("", description="HMAC key for per-call stream tokens; random if empty.")
    stream_token_ttl_s: float = Field(60.0, gt=0, description="How long a per-call stream token stays valid.")

    # --- agent -----------------------------------------------------------------------------------
    agent_greeting: str = (
        "Hello, thanks for calling bargein. I am a demo voice agent, and you can interrupt me at any time. "
        "Just start talking while I speak and I will stop at once. How can I help you today?"
    )
    agent_fallback_text: str = "Sorry, I am having trouble right now. Please say that again."
    agent_system_prompt: str = "You are a concise, friendly phone agent. Answer in two or three short sentences."
    agent_state_in_prompt: bool = Field(
        True, description="Append the conversation state (app/call/conversation.py) to the system message."
    )
    # "More clearly": a caller who cut in with "sorry?" heard the sentence once already at full speed; 0.85 is
    # slower enough to hear (about 150 words a minute from 175) without sounding like a different voice.
    agent_clarify_pace: float = Field(
        0.85, ge=0.5, le=1.0,
        description="Speaking rate (x the voice's own) of a reply to a clarification after a cut; 1 = unchanged.",
    )
    agent_tool_holding_text: str = Field(
        "One moment, I'm pulling that up.",
        description="Said once per turn when a tool runs past TOOL_HOLDING_AFTER_MS.",
    )
    tool_holding_after_ms: int = Field(1000, ge=0, description="A tool running longer than this gets the holding line.")
    tool_timeout_s: float = Field(10.0, gt=0, description="A tool call still running after this fails (timed out).")

    llm_base_url: str = Field("", description="OpenAI-compatible base URL; empty = the embedded scripted LLM.")
    llm_api_key: str = ""
    llm_model: str = "scripted"
    llm_first_token_timeout_s: float = Field(5.0, gt=0)
    llm_token_timeout_s: float = Field(5.0, gt=0, description="Longest gap between two streamed tokens.")
    llm_max_reply_chars: int = Field(
        4_000, ge=100, description="An LLM reply is cut (and its stream closed) past this many characters."
    )
    max_queued_audio_s: float = Field(
        120.0, gt=0, description="Synthesised agent audio queued ahead of playback; synthesis waits past this."
    )
    embedded_llm_token_delay_ms: float = Field(25.0, ge=0, description="Pace of the embedded scripted LLM.")
    agent_busy_text: str = Field(
        "Sorry, all our agents are busy right now. Please call again in a few minutes. Goodbye.",
        description="Spoken by the answer webhook when max_calls is reached; the call then hangs up.",
    )
    agent_apology_text: str = Field(
        "Sorry, something went wrong on our side and we have to end this call. Please call again. Goodbye.",
        description="Spoken when the media stream ends without the agent ending the call (server fault).",
    )
    agent_drain_goodbye_text: str = Field(
        "Sorry, we have to end this call now for maintenance. Please call again. Goodbye.",
        min_length=1,
        description="Said to each call still up DRAIN_TIMEOUT_S after SIGTERM, before the call ends.",
    )

    tts_engine: Literal["espeak", "elevenlabs", "openai"] = Field(
        "espeak", description="Text-to-speech engine: espeak (embedded), elevenlabs (WebSocket streaming), "
                              "openai (an OpenAI-compatible /audio/speech)."
    )
    tts_voice: str = "en-us"
    tts_rate_wpm: int = Field(175, ge=80, le=450)
    tts_first_clause_chars: int = Field(
        20, ge=0, le=300,
        description="An LLM reply's first piece goes to TTS at a clause end (, ; :) once this long; 0 = sentences.",
    )
    tts_timeout_s: float = Field(5.0, gt=0, description="A sentence that takes longer to synthesise is abandoned.")
    # 8 MiB holds about 8 minutes of 8 kHz audio: every fixed line (greeting, fallback, busy, goodbye) many times.
    tts_cache_max_mb: float = Field(
        8.0, ge=0, description="Synthesised sentences kept for reuse (providers/tts/cached.py); 0 turns it off."
    )
    tts_espeak_processes: int = Field(
        0, ge=0, le=32, description="espeak-ng worker processes; 0 = one thread in this process "
                                    "(app/bench/tts_queue.py measures the queue)."
    )
    # Hosted TTS (providers/tts/elevenlabs.py, providers/tts/openai_speech.py); keys are secrets, never logged.
    elevenlabs_api_key: str = Field("", description="ElevenLabs API key (sent as the xi-api-key header).")
    elevenlabs_voice_id: str = Field("", description="ElevenLabs voice id (TTS_ENGINE=elevenlabs).")
    elevenlabs_model_id: str = Field("eleven_flash_v2_5", description="ElevenLabs model for stream-input.")
    elevenlabs_url: str = Field("wss://api.elevenlabs.io", description="ElevenLabs WebSocket base URL.")
    elevenlabs_warm_connections: int = Field(
        1, ge=0, le=16, description="ElevenLabs connections kept open ahead of need (no handshake per sentence)."
    )
    openai_tts_base_url: str = Field(
        "", description="OpenAI-compatible base URL for /audio/speech; empty = LLM_BASE_URL."
    )
    openai_tts_api_key: str = Field("", description="API key for OPENAI_TTS_BASE_URL; empty = LLM_API_KEY.")
    openai_tts_model: str = "tts-1"
    openai_tts_voice: str = "alloy"

    # --- speech recognition (providers/stt/) ---------------------------------------------------------
    stt_engine: Literal["whisper", "deepgram", "none"] = Field(
        "whisper", description="whisper: embedded faster-whisper tiny.en, offline; deepgram: hosted streaming; "
                               "none: caller turns have no words."
    )
    stt_preroll_ms: float = Field(
        500.0, ge=0, le=2000, description="Audio before the detector's onset sent to the recognizer (first words)."
    )
    stt_max_turn_s: float = Field(20.0, gt=1, le=30, description="The longest caller turn transcribed whole.")
    stt_timeout_s: float = Field(10.0, gt=0, description="A turn not transcribed this soon goes on without words.")
    turn_unfinished_wait_ms: float = Field(
        800.0, ge=0, le=5000,
        description="A caller turn whose words stop mid-clause ('... a table for') waits this much longer for more.",
    )
    # Turn taking (app/call/turn_taking.py): strict waits for the turn-end silence, then hears and answers;
    # progressive hears the turn at a short pause and prepares the reply, held, until the words' silence passes.
    turn_policy: Literal["strict", "progressive"] = Field(
        "strict", description="strict: answer after the turn-end silence; progressive: prepare the reply at a "
                              "short pause, speak it once the turn is over, cancel it if the caller goes on."
    )
    turn_speculate_silence_ms: float = Field(
        250.0, gt=0, le=5000, description="progressive: the pause at which the turn so far is heard and answered."
    )
    turn_complete_silence_ms: float = Field(
        450.0, gt=0, le=5000, description="progressive: silence that ends a turn whose words look complete."
    )
    turn_unfinished_silence_ms: float = Field(
        1500.0, gt=0, le=10_000, description="progressive: silence that ends a turn whose words stop mid-clause."
    )
    turn_draft_lead_ms: float = Field(
        600.0, ge=0, le=5000, description="progressive: how long before the turn's deadline its held reply starts."
    )
    # Off by default: on the report set's turns bench (28 calls a cell) 0.4 moved talk-over by nothing measurable
    # and raised strict's paused p95 (more turns wait the unfinished-clause extra); on the held-out pool it flagged
    # 18/78 cut sentences but also 13/80 whole ones (confidence alone: AUC 0.64).
    turn_unsure_confidence: float = Field(
        0.0, ge=0, le=1, description="Words whose last word the recognizer is less sure of than this count as "
                                     "unfinished (Whisper's word probability; 0 = off)."
    )
    turn_hear_early: bool = Field(
        False, description="strict: transcribe the caller's turn at the short pause (TURN_SPECULATE_SILENCE_MS), so "
                           "its words are in when the turn-end silence ends it: the answer comes a recognizer's time "
                           "sooner, and a caller who pauses mid-sentence is talked over more often (so off by default)."
    )
    # End-of-turn model (app/call/end_of_turn.py): asked at the short pause, it hears whether the caller's
    # voice finished; thresholds picked on the tuning pool at phone quality (python -m app.offline.eot_eval).
    turn_end_model: Literal["off", "smart_turn", "prosody"] = Field(
        "off", description="off: silence and words decide the turn's end; smart_turn: Smart Turn v3 is asked at "
                           "the pause too (weights from the pipecat-ai wheel: pip install --no-deps pipecat-ai); "
                           "prosody: the small pitch/energy/timing model fitted on the pool (app/call/prosody.py)."
    )
    turn_model_complete_at: float = Field(
        0.5, ge=0, le=1, description="End-of-turn model: P(complete) at or above this ends the turn (strict) or "
                                     "sets the short deadline (progressive)."
    )
    turn_model_incomplete_below: float = Field(
        0.5, ge=0, le=1, description="End-of-turn model: P(complete) below this waits TURN_UNFINISHED_SILENCE_MS; "
                                     "between the two thresholds the turn ends as without the model."
    )
    turn_model_complete_silence_ms: float = Field(
        300.0, gt=0, le=5000, description="progressive: silence that ends a turn the model and the words both "
                                          "call complete."
    )
    turn_model_max_pending: int = Field(
        4, ge=1, le=64, description="End-of-turn model: asks queued or running per process; past it, no verdict."
    )
    stt_join_resumed_s: float = Field(
        2.0, ge=0, le=10,
        description="A caller turn a stop opens is heard from a short utterance the agent resumed over this soon "
                    "before it (the caller's first words, split off by a pause); 0: from the stopping sound only.",
    )
    stt_wait_after_stop_s: float = Field(
        2.0, ge=0, description="After words like 'wait' stopped the agent, how long it waits for the caller."
    )
    stt_workers: int = Field(
        1, ge=1, le=16, description="Whisper transcriptions run at once (threads, one core each; see bench stt)."
    )
    stt_max_pending: int = Field(
        16, ge=1, description="Whisper transcriptions queued or running; past this a turn fails as busy."
    )
    stt_partial_interval_ms: float = Field(
        0.0, ge=0, description="Whisper partials every this much audio, on idle workers only; 0 = final only."
    )
    stt_whisper_window: Literal["short", "full"] = Field(
        "short", description="Whisper encoder window: short = the turn plus a margin (about 3x less CPU); full = 30 s."
    )
    deepgram_api_key: str = Field("", description="Deepgram API key (sent as `Authorization: Token ...`).")
    deepgram_url: str = Field("wss://api.deepgram.com/v1/listen", description="Deepgram live endpoint.")
    deepgram_model: str = "nova-3"
    deepgram_endpointing_ms: int = Field(300, ge=10, description="Pause that makes Deepgram send speech_final.")
    deepgram_utterance_end_ms: int = Field(1000, ge=1000, description="Word gap that sends UtteranceEnd.")
    deepgram_keepalive_s: float = Field(4.0, gt=0, lt=10, description="KeepAlive after this long without audio.")

    # --- playback ledger -------------------------------------------------------------------------
    playback_chunk_ms: int = Field(160, ge=20, le=1000, description="Audio per media message; one marker each.")
    # Measured: the server itself never let the edge run dry at 40 ms even with 100 calls (bargein bench, hold
    # mode, 0 underruns at 40/100/200/300 ms). The rest is for the network path to the provider: jitter and one
    # TCP retransmission (200 ms minimum RTO). A clear flushes the edge, so the lead costs no barge-in latency.
    playback_lead_ms: int = Field(300, ge=0, le=10_000, description="How far ahead of real time audio is sent.")

    # --- barge-in detector -----------------------------------------------------------------------
    vad_energy_gate_dbfs: float = Field(-55.0, description="Frames quieter than this are never speech.")
    vad_use_webrtc: bool = Field(True, description="Also require webrtcvad on a frame of each window.")
    vad_webrtc_mode: int = Field(1, ge=0, le=3, description="webrtcvad aggressiveness, 0 (lenient) to 3.")
    vad_silero_threshold: float = Field(0.9, gt=0, lt=1, description="Silero speech probability to count as speech.")
    vad_silero_release: float = Field(0.35, gt=0, lt=1, description="Probability under which speech is over.")
    bargein_min_speech_ms: int = Field(64, ge=0, description="Sustained speech needed before the agent stops.")
    turn_end_silence_ms: int = Field(700, ge=100, description="Silence that ends the caller's turn.")
    vad_snr_db: float = Field(
        10.0, ge=0, description="Speech must start this far above the line's noise floor; 0 turns the floor off."
    )
    vad_floor_window_ms: float = Field(1000.0, ge=80, description="How far back the noise floor looks.")
    vad_pause_ms: float = Field(250.0, gt=0, description="Silence after which an utterance counts as paused.")
    vad_hiss_for_digital_silence: bool = Field(
        False, description="Silero hears a window of digital silence (all samples 0) as a quiet line's hiss: faster "
                           "onsets after long digital silence, and more stops for noise after it (README).")
    # The slow onset path (app/bargein/onset.py; fitted by python -m app.offline.fit_onset on the pool).
    vad_onset_threshold: float = Field(
        0.0, ge=0, lt=1, description="A soft onset this sure for VAD_ONSET_WINDOWS windows starts speech; 0: off."
    )
    vad_onset_windows: int = Field(3, ge=2, description="32 ms windows the slow onset path needs in a row.")
    vad_onset_gate: float = Field(
        0.0, ge=0, le=1, description="The slow path's learned gate threshold (0: no gate; fitted: 0.81)."
    )
    vad_evidence_threshold: float = Field(
        0.8, gt=0, lt=1, description="Silero probability from which a window counts toward the caller's speech time."
    )
    # Silero at two window phases (app/bargein/phases.py): a second stream 16 ms off, run only while an onset is
    # possible and loud. Off: measured on the pool it hears more (quiet talkers 98.4 -> 99.0%, a synthetic
    # "stop" started at 13 of 16 window offsets, not 8) and sooner (p95 -25 to -40 ms), and no noise started it
    # on a quiet line, but under a hiss step it started on 3 more of 212 noise calls (dog, laughter, sipping:
    # Silero reads them at 0.9+ at one phase, as it reads "stop"). Turn it on where the second look stands
    # behind the detector.
    vad_second_phase: bool = Field(False, description="Silero also at a second window phase (on|off), while loud.")
    vad_second_phase_warmup_ms: float = Field(
        96.0, ge=0, le=1400, description="Audio the second phase's cold stream is warmed on when it starts."
    )
    # Near misses (app/bargein/near_miss.py): a short sound over the agent that came close to starting speech and
    # never did (a bare "stop" Silero holds at 0.6-0.87) is transcribed anyway, off the loop, and its stop or
    # cancellation words stop the agent as the late words do (app/call/interruption.py). Per call: one decode at a time,
    # NEAR_MISS_SPACING_S apart, not on a line with the agent's echo, not while the recognizer's pool is busy.
    near_miss_words: bool = Field(True, description="Transcribe near-miss sounds over the agent (on|off).")
    near_miss_threshold: float = Field(
        0.5, gt=0, lt=1, description="Silero probability at which a window (cheap layers passed) counts."
    )
    near_miss_min_windows: int = Field(2, ge=1, le=40, description="Counted windows a near miss needs.")
    near_miss_min_ms: float = Field(200.0, ge=0, description="A near miss lasts at least this long (ms).")
    near_miss_max_ms: float = Field(1200.0, ge=0, description="... and at most this long (ms).")
    near_miss_spacing_s: float = Field(
        2.0, ge=0, description="Per call, near-miss decodes start at least this many seconds apart."
    )

    # --- barge-in policy (app/bargein/detector.py; presets in app/bargein/presets.py) ------------------
    bargein_preset: Literal["phone", "speakerphone", "noisy", "browser"] = Field(
        "phone", description="Channel preset: sets the thresholds below that are not set explicitly."
    )
    bargein_policy: Literal["immediate", "confirm", "resume"] = Field(
        "resume", description="immediate: stop and end the turn; confirm: stop once the second look says speech; "
                              "resume: stop at once, resume if it was not the caller taking the turn."
    )
    bargein_second_look: bool = Field(True, description="Check each candidate's first window for impulsive noise.")
    bargein_first_look: bool = Field(
        True, description="resume: a candidate whose first 64 ms sound like a cough, sneeze or laugh clears only "
                          "once the second look says speech (app/bargein/first_look.py)."
    )
    bargein_backchannel_max_ms: float = Field(
        600.0, ge=0, description="Speech shorter than this that pauses is a backchannel: the agent resumes."
    )
    bargein_doubt_max_ms: float = Field(
        1000.0, ge=0, description="A sound the second look called noise is the caller after all past this long."
    )
    bargein_cautious_s: float = Field(
        3.0, ge=0, description="After a stop that was noise or echo, clear only once confirmed for this long."
    )
    bargein_escalate_s: float = Field(
        4.0, ge=0, description="A second short utterance this soon after a resume stops the agent."
    )
    bargein_uninterruptible: Literal["ignore", "defer"] = Field(
        "defer", description="Speech during a [[...]] span: ignore it, or act on it when the span ends."
    )
    bargein_hard_silence_ms: int = Field(
        300, ge=0, le=5000, description="After a barge-in the agent says nothing for at least this long."
    )
    bargein_go_on_without_words: bool = Field(
        True, description="A caller turn that stopped the agent mid-turn and held no words (a cough, a bark) or "
                          "only listener words ('mm-hmm') is not answered: the agent says the rest of its cut turn.",
    )
    bargein_go_on_at_pause_ms: float = Field(
        250.0, ge=0, le=5000,
        description="A caller turn that stopped the agent is heard at its first pause this long: if it holds no words "
                    "(BARGEIN_GO_ON_WITHOUT_WORDS) the agent goes on then, not after the turn-end silence (0: off).",
    )
    bargein_ack_fraction: float = Field(
        0.0, ge=0, le=1, description="Share of long interruptions the agent answers with BARGEIN_ACK_TEXT first."
    )
    bargein_ack_text: str = Field("Sorry, go ahead.", description="The acknowledgement line.")
    bargein_ack_min_ms: int = Field(1500, ge=0, description="An interruption this long (speech) is a long one.")
    dtmf_interrupts: bool = Field(True, description="A keypress (DTMF) while the agent talks stops it at once.")
    dtmf_interdigit_ms: int = Field(
        1500, ge=100, le=30_000, description="The caller's keys end their turn after this long with no new key."
    )
    dtmf_terminator: str = Field(
        "#", max_length=1, description="A key that ends the caller's keys at once (empty: none)."
    )
    echo_guard: bool = Field(
        False, description="Remove the agent's own voice from the caller's leg (on in the speakerphone preset)."
    )
    echo_reject_share: float = Field(
        0.75, ge=0, le=1, description="A candidate whose energy is more than this share residual echo is echo."
    )
    echo_coherence_always: bool = Field(
        False, description="Echo guard: test the caller leg's coherence with the agent's audio on every frame, not "
                           "only until the filter converges (a caller over a converged filter gets through; +65% "
                           "guard CPU)."
    )
    echo_clear_share: float = Field(
        0.5, ge=0, le=1, description="On an echo line, a candidate whose echo share (from a trusted guard) is under "
                                      "this clears at once, also under `confirm`; 0 = never (wait for the second look)."
    )

    # --- call records ----------------------------------------------------------------------------
    call_records_max: int = Field(1000, ge=1)
    call_records_ttl_s: float = Field(3600.0, gt=0)
    # The working directory, like ./.env: where `bargein serve` runs, next to its configuration, and what a
    # container mounts a volume on; an absolute path (four slashes) for anywhere else.
    call_store_url: str = Field(
        "sqlite:///./bargein-calls.db",
        description="Where call records and used stream tokens are kept: sqlite:///file.db (one host), "
                    "postgresql://user:password@host/db (several replicas), or memory:// (this process only).",
    )
    # Transcripts are personal data: a store that keeps them for ever is one nobody chose. 30 days covers a
    # month of disputes and reviews; 0 keeps everything (the store is then the team's to prune).
    call_store_retention_days: float = Field(
        30.0, ge=0, description="Days a call's record (turns, barge-ins) is kept in the store; 0 = for ever."
    )

    # --- call recordings (app/record/) ------------------------------------------------------------
    record_dir: str = Field(
        "", description="Write each call to RECORD_DIR/<call id>.jsonl.zst (format: app/record/format.py); empty = off."
    )
    record_redact: str = Field(
        "", description="What recordings leave out, comma-separated: audio (the caller's), text (transcripts, LLM "
                        "output and the agent's audio). Secrets are never written."
    )
    # Measured: a 5-minute call is about 3.5 MB (caller speech every 20 ms, the agent talking half the time),
    # so the default cap is over two hours of call.
    record_max_mb: float = Field(
        100.0, ge=0, description="A recording stops growing past this many MB (a line says so); 0 = no cap."
    )

    # --- OpenTelemetry traces (app/telemetry/) -------------------------------------------------------
    # The standard OTel names. Only these decide whether tracing is on; the SDK itself reads the rest of its own
    # variables (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT, _COMPRESSION, OTEL_BSP_*, OTEL_RESOURCE_ATTRIBUTES).
    otel_exporter_otlp_endpoint: str = Field(
        "", description="OTLP/HTTP base URL (traces go to <url>/v1/traces): a span per call, turn and barge-in; "
                        "empty = off, and nothing of the OpenTelemetry SDK is imported."
    )
    otel_exporter_otlp_traces_endpoint: str = Field(
        "", description="OTLP/HTTP traces URL used as it is (overrides OTEL_EXPORTER_OTLP_ENDPOINT for traces)."
    )
    otel_service_name: str = Field("bargein", min_length=1, description="service.name on every span.")

    @property
    def otel_traces_url(self) -> str:
        """Where spans go ("" = tracing off): the traces URL, else the base URL + /v1/traces (OTLP/HTTP spec)."""
        if self.otel_exporter_otlp_traces_endpoint:
            return self.otel_exporter_otlp_traces_endpoint
        base = self.otel_exporter_otlp_endpoint
        return f"{base.rstrip('/')}/v1/traces" if base else ""

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str) -> str:
        if not value.strip():
            return ""  # unset: app/public_url.py derives the base per request
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("PUBLIC_URL must be an absolute http(s) URL, e.g. https://agent.example.com")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _apply_preset(self) -> Self:
        # A preset fills in only what the environment did not set: one name instead of ten numbers, and any
        # one number can still be overridden.
        from app.bargein.presets import PRESETS

        for name, value in PRESETS[self.bargein_preset].items():
            if name not in self.model_fields_set:
                object.__setattr__(self, name, value)
        return self

    @property
    def worker_count(self) -> int:
        """WORKERS, with 0 resolved to the cores this process may run on."""
        return self.workers or available_cores()

    @model_validator(mode="after")
    def _call_store_url_is_known(self) -> Self:
        # A model validator, so the error never echoes the URL: it may hold a database password.
        from app.store import store_scheme

        object.__setattr__(self, "call_store_url", self.call_store_url.strip())
        store_scheme(self.call_store_url)  # ValueError names CALL_STORE_URL and the schemes it takes
        return self

    def token_secret_missing(self, workers: int | None = None) -> bool:
        """Auth is on, STREAM_TOKEN_SECRET is empty, and more than one process may serve a call's webhook and
        stream: the store is shared (PostgreSQL) or `workers` (default: WORKERS as set) is above one. Each
        process would sign with its own random key and refuse the others' tokens."""
        from app.store import is_shared

        workers = self.workers if workers is None else workers
        return (self.auth_enabled and not self.stream_token_secret
                and (is_shared(self.call_store_url) or workers > 1))

    @model_validator(mode="after")
    def _turn_model_thresholds_ordered(self) -> Self:
        # Checked at start: app/call/turn_taking.py would refuse them at each call's start.
        if self.turn_model_incomplete_below > self.turn_model_complete_at:
            raise ValueError("TURN_MODEL_INCOMPLETE_BELOW must not be above TURN_MODEL_COMPLETE_AT")
        return self

    @model_validator(mode="after")
    def _hosted_tts_configured(self) -> Self:
        # A model validator, so the error never echoes a key.
        if self.tts_engine == "elevenlabs" and not (self.elevenlabs_api_key and self.elevenlabs_voice_id):
            raise ValueError("TTS_ENGINE=elevenlabs needs ELEVENLABS_API_KEY and ELEVENLABS_VOICE_ID")
        if self.tts_engine == "openai" and not (self.openai_tts_base_url or self.llm_base_url):
            raise ValueError("TTS_ENGINE=openai needs OPENAI_TTS_BASE_URL (or LLM_BASE_URL)")
        return self

    @model_validator(mode="after")
    def _token_secret_set_when_replicated(self) -> Self:
        # WORKERS=0 (the cores available) is resolved by `bargein serve`, which checks
        # token_secret_missing(worker_count) itself; here only an explicit WORKERS counts.
        if self.token_secret_missing():
            raise ValueError(TOKEN_SECRET_REQUIRED)
        return self

    @model_validator(mode="after")
    def _public_url_set_when_signing(self) -> Self:
        # Signatures are computed over the URL the provider called; headers a client sends cannot stand in.
        if self.auth_enabled and not self.public_url:
            raise ValueError(_PUBLIC_URL_REQUIRED)
        return self

    @model_validator(mode="after")
    def _near_miss_bounds_ordered(self) -> Self:
        # Checked here, at start-up, not when the first call builds its tracker (app/bargein/near_miss.py).
        if self.near_miss_min_ms > self.near_miss_max_ms:
            raise ValueError("NEAR_MISS_MIN_MS must not exceed NEAR_MISS_MAX_MS")
        return self

    @field_validator("record_redact")
    @classmethod
    def _record_redact_is_known(cls, value: str) -> str:
        items = [item.strip().lower() for item in value.split(",") if item.strip()]
        unknown = [item for item in items if item not in RECORD_REDACT_ITEMS]
        if unknown:
            raise ValueError(
                f"RECORD_REDACT must be a comma-separated list of {', '.join(RECORD_REDACT_ITEMS)} "
                f"(unknown: {', '.join(unknown)})"
            )
        return ",".join(item for item in RECORD_REDACT_ITEMS if item in items)  # canonical order, no repeats

    @property
    def record_redact_items(self) -> frozenset[str]:
        """RECORD_REDACT as a set: {"audio"}, {"text"}, both or neither."""
        return frozenset(item for item in self.record_redact.split(",") if item)

    @field_validator("log_level")
    @classmethod
    def _log_level_is_known(cls, value: str) -> str:
        if value.upper() not in _LOG_LEVELS:
            raise ValueError(f"LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")
        return value

    @property
    def auth_enabled(self) -> bool:
        return bool(self.twilio_auth_token or self.plivo_auth_token or self.twilio_webhook_keys)

    @cached_property
    def public_ws_url(self) -> str:
        """The wss:// (or ws:// for a plain-http dev URL) form of PUBLIC_URL; only when it is set."""
        parts = urlsplit(self._configured_public_url())
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path}"

    def public_http(self, path: str) -> str:
        """PUBLIC_URL + `path`; only when PUBLIC_URL is set (always, with auth on)."""
        return f"{self._configured_public_url()}{path}"

    def public_ws(self, path: str) -> str:
        """The ws form of PUBLIC_URL + `path`; only when PUBLIC_URL is set (always, with auth on)."""
        return f"{self.public_ws_url}{path}"

    def _configured_public_url(self) -> str:
        # A relative URL in a signature check or the XML would be a silent bug: fail loudly instead.
        if not self.public_url:
            raise RuntimeError("PUBLIC_URL is unset: derive the base from the request (app/public_url.py)")
        return self.public_url


_PUBLIC_URL_REQUIRED = (
    "PUBLIC_URL must be set when TWILIO_AUTH_TOKEN, TWILIO_WEBHOOK_KEYS or PLIVO_AUTH_TOKEN is set "
    "(signatures are checked over it), e.g. https://agent.example.com"
)


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container's cpuset narrows)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


TOKEN_SECRET_REQUIRED = (
    "STREAM_TOKEN_SECRET must be set when provider auth is on and more than one replica may serve "
    "(CALL_STORE_URL is PostgreSQL, or WORKERS > 1): every replica must sign and check per-call stream tokens "
    "with the same key, e.g. STREAM_TOKEN_SECRET=$(openssl rand -hex 32)"
)


class SettingsError(ValueError):
    """A setting the server cannot start with, as one line naming its environment variable."""


def env_name(field: str) -> str:
    """The environment variable that sets `field` (pydantic-settings: the field name, case-insensitive)."""
    return field.upper()


# pydantic error type -> what the setting expects, for the types Settings uses.
_EXPECTS = {
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "int_type": "an integer",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "a boolean (true/false, 1/0, yes/no, on/off)",
    "bool_type": "a boolean (true/false, 1/0, yes/no, on/off)",
    "string_type": "a string",
    "finite_number": "a finite number",
}
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_BOUND_CTX = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}


def describe_error(error: Mapping[str, Any]) -> str:
    """One pydantic error as `NAME must be <what it expects>, got <value>`."""
    loc = error.get("loc") or ("?",)
    name = env_name(str(loc[0]))
    kind = str(error.get("type", ""))
    got = f", got {error['input']!r}" if "input" in error and kind != "missing" else ""
    ctx = error.get("ctx") or {}
    if kind in _EXPECTS:
        return f"{name} must be {_EXPECTS[kind]}{got}"
    if kind in _BOUNDS:
        bound = ctx.get(_BOUND_CTX[kind])
        return f"{name} must be {_BOUNDS[kind]} {f'{bound:g}' if isinstance(bound, float) else bound}{got}"
    if kind == "value_error" and not error.get("loc"):
        # A check across settings (a model validator): its message names the variables. Its input is every
        # setting, secrets included, so it is never echoed.
        return str(ctx.get("error", error.get("msg", "")))
    if kind == "literal_error":  # a Literal[...] field, e.g. LOG_FORMAT: "must be 'text' or 'json'"
        return f"{name} must be {ctx.get('expected', 'one of its allowed values')}{got}"
    if kind == "value_error":
        # A validator's own message; those in this module already name the variable.
        message = str(ctx.get("error", error.get("msg", "")))
        return f"{message if message.startswith(name) else f'{name}: {message}'}{got}"
    return f"{name}: {error.get('msg', 'invalid value')}{got}"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment with `overrides` on top (they win); SettingsError names the bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsError("; ".join(describe_error(e) for e in exc.errors())) from None

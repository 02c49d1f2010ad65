"""End to end over real sockets: the real app under uvicorn, the provider-edge emulator over a real WebSocket,
a loopback LLM streaming server-sent events, real recorded speech and noise from the corpus, in real time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import numpy as np
import pytest

from app.call.turn import split_sentences
from app.edge.emulator import EmulatedCall
from app.edge.llm_server import ScriptedLlmServer
from app.offline.corpus import Clip, load_clip, mains_hum, pink_noise, read_manifest, white_noise
from providers.tts.base import audio_ms_at, char_offset_at
from providers.tts.espeak import EspeakTts

REPLY = (
    "Sure, I can help with that. Your order left our warehouse yesterday afternoon and it is on the truck now. "
    "The driver usually arrives between nine and eleven in the morning. If nobody is home, the parcel goes to "
    "the pickup point on Main Street. You can also change the address until tonight. Is there anything else?"
)
TOKEN_DELAY_S = 0.12  # about 60 tokens: the stream would run for more than 7 s


def clip(category: str, index: int = 0) -> Clip:
    rows = [r for r in read_manifest() if r.category == category]
    return rows[index]


def pcm(row: Clip) -> np.ndarray:
    return load_clip(row)


async def get_record(url: str, call_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{url}/calls/{call_id}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data


async def reply_alignment(text: str) -> list[tuple[int, float, Any]]:
    """(turn char start, turn audio start ms, synthesis) for each sentence, as the server synthesises them."""
    tts = EspeakTts()
    segments: list[tuple[int, float, Any]] = []
    char, audio = 0, 0.0
    for sentence in split_sentences(text):
        synthesis = await tts.synthesize(sentence)
        segments.append((char, audio, synthesis))
        char += len(sentence) + 1
        audio += synthesis.duration_ms
    return segments


def turn_char_at(segments: list[tuple[int, float, Any]], audio_ms: float) -> int:
    for char, start, syn in segments:
        if audio_ms < start + syn.duration_ms:
            return char + char_offset_at(syn.words, len(syn.text), audio_ms - start, syn.duration_ms)
    char, _, syn = segments[-1]
    return char + len(syn.text)


def turn_audio_at(segments: list[tuple[int, float, Any]], char_offset: int) -> float:
    for char, start, syn in segments:
        if char_offset <= char + len(syn.text):
            return start + audio_ms_at(syn.words, max(0, char_offset - char), len(syn.text), syn.duration_ms)
    return segments[-1][1] + segments[-1][2].duration_ms


AGENT_AUDIO = ("media", "playAudio")  # the agent's audio as the edge receives it: Twilio, Plivo


def server_clear_time(event: dict[str, Any]) -> float:
    """When the server sent a barge-in's clear, on the emulator's clock (time.monotonic).

    The event records its wall-clock time (`at`, taken once the barge-in's last step is done) and each step's
    offset on the server's monotonic clock; the server runs in this process, so one reading of both clocks
    converts between them.
    """
    sent_wall = event["at"] - (event["total_ms"] - event["clear_sent_ms"]) / 1000.0
    return float(sent_wall - (time.time() - time.monotonic()))


def ack_lateness_s(call: EmulatedCall, t: float) -> float:
    """How far the server's view of playback could trail the emulator's at `t`, through no fault of the server.

    The server learns what played only from mark acknowledgements: its estimate runs on from the last one it
    has, and stops at the next mark. The emulator shares this process and its event loop with the test, so a
    busy CPU can delay its acks well after the audio before them played. Of the last two marks that had played
    by `t`, the most either was acknowledged late (counting one not yet acknowledged as late until `t`).
    """
    played = [m for m in call.marks if m.played_at is not None and m.played_at <= t and not m.cleared]
    lateness = [min(t, m.acked_at if m.acked_at is not None else t) - m.played_at for m in played[-2:]
                if m.played_at is not None]
    return max([0.0, *lateness])


def test_speech_over_a_streaming_reply_clears_closes_the_llm_and_cuts_at_the_heard_character(
    server_factory: Any
) -> None:
    # One call per provider (each wire's clear and marks are under test), both at once, each with its own server
    # and LLM; the cut's tolerance already allows for the emulator's acks running late on a busy loop.
    async def scenario(provider: str) -> None:
        async with ScriptedLlmServer([REPLY], token_delay_s=TOKEN_DELAY_S) as llm:
            # The strict stop sequence (clear, TTS, LLM, cut) on one frame: the `immediate` policy. The provisional
            # policies are tested in test_resume.py. Started from a thread: this loop runs the other call.
            srv = await asyncio.to_thread(server_factory, llm_base_url=llm.base_url, agent_greeting="Hello.",
                                          bargein_policy="immediate")
            async with EmulatedCall.start(provider, srv.url) as call:
                # The greeting plays out; then the caller says one word and falls silent: the agent replies.
                await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 10)
                await asyncio.sleep(0.3)
                greeting_bytes = call.received_samples
                await call.send_audio(pcm(clip("isolated_word", 0)))
                # Interrupt 2.5 s into the reply, in its second sentence, while the LLM is still streaming.
                await call.wait_until(lambda: call.played_samples - greeting_bytes > 2.5 * 8000, 20)
                speech = clip("read", 1)
                sent = await call.send_audio(pcm(speech)[: int(1.2 * 8000)])
                await call.wait_until(lambda: bool(call.clears), 5)
                clear_at = call.clears[0]
                await asyncio.sleep(0.4)  # time for any stray audio of the interrupted turn to arrive
                # The server records the barge-in once the LLM stream is closed and the turn cut: wait for that
                # to have happened (on a busy machine it can take longer than the sleep), not for a fixed time.
                record = await get_record(srv.url, call.call_id)
                for _ in range(100):
                    if record["bargeins"]:
                        break
                    await asyncio.sleep(0.05)
                    record = await get_record(srv.url, call.call_id)

            onset = sent[0] - 0.02 + speech.speech_onset_s
            assert clear_at > onset, "the clear came before the caller spoke"
            assert not call.violations, call.violations
            # No audio of the interrupted turn after the clear. Judged on the emulator's own timeline, not on when
            # this test gets to look: a next turn can only start once the caller's turn has ended, a turn-end
            # silence after their last frame, so any audio before that is the interrupted turn's.
            next_turn_earliest = sent[-1] + srv.settings.turn_end_silence_ms / 1000.0
            stray = [t - clear_at for t, kind in call.received_events
                     if kind in AGENT_AUDIO and clear_at < t < next_turn_earliest]
            assert stray == [], f"agent audio {stray} s after the clear"

            # The LLM saw its connection closed long before its stream would have ended... The request is the
            # one open at the clear: the caller's turn can end, and the agent's next turn open a request of its
            # own, before this test hangs up.
            reply_request = [r for r in llm.chat_requests if r.started_at < clear_at][-1]
            assert reply_request.disconnected and reply_request.disconnected_at is not None
            natural_end = reply_request.started_at + len(reply_request.reply.split()) * TOKEN_DELAY_S
            assert reply_request.disconnected_at < natural_end - 1.0
            assert reply_request.disconnected_at - clear_at < 0.5
            # ...and no token it sent after the clear reached the transcript.
            before = "".join(tok for tok, t in reply_request.tokens if t <= clear_at)
            turns = record["turns"]
            agent = [t for t in turns if t["role"] == "agent" and t["interrupted"]]
            assert len(agent) == 1, f"{turns}\n{record['bargeins']}"
            cut = agent[0]
            assert REPLY.startswith(cut["intended_text"])
            assert len(cut["intended_text"]) <= len(before)
            [event] = [b for b in record["bargeins"] if b["turn_id"] == cut["id"]]

            # The audio cut agrees with what the emulator had played when the server sent the clear, within 60 ms,
            # plus however late the emulator's own mark acknowledgements were (see ack_lateness_s).
            sent_clear_at = server_clear_time(event)
            assert sent_clear_at <= clear_at + 0.005, (sent_clear_at, clear_at)  # the two clocks agree
            position = call.position_at(sent_clear_at - 0.001)
            assert position is not None
            played_ms = (position + 1 - greeting_bytes) / 8.0
            late_ms = ack_lateness_s(call, sent_clear_at) * 1000.0
            assert -60.0 - late_ms <= cut["heard_audio_ms"] - played_ms <= 60.0, (
                cut["heard_audio_ms"], played_ms, late_ms)
            # The text cut is where that audio position falls in the reply's words.
            segments = await reply_alignment(cut["intended_text"])
            assert len(segments) >= 2, "the cut must fall in a multi-sentence reply"
            assert cut["heard_chars"] == len(cut["heard_text"])
            assert cut["text"] == cut["heard_text"] == REPLY[: cut["heard_chars"]]
            assert abs(turn_audio_at(segments, cut["heard_chars"]) - cut["heard_audio_ms"]) <= 60.0
            expected_chars = turn_char_at(segments, cut["heard_audio_ms"])
            assert abs(cut["heard_chars"] - expected_chars) <= 3

            assert event["cut_char_offset"] == cut["heard_chars"]
            assert event["clear_sent_ms"] <= event["tts_stopped_ms"] <= event["llm_closed_ms"] <= event["total_ms"]
            assert event["confidence"] >= srv.settings.vad_silero_threshold, provider

    async def named(provider: str) -> None:
        try:
            await scenario(provider)
        except AssertionError as exc:
            raise AssertionError(f"[{provider}] {exc}") from exc

    async def both() -> None:
        await asyncio.gather(named("twilio"), named("plivo"))

    asyncio.run(both())


def test_steady_noise_hiss_and_hum_never_stop_the_agent(server_factory: Any) -> None:
    greeting = " ".join(["This is a long announcement that keeps the agent talking for a while."] * 16)
    # Every noise at its full length, split between two calls at once (one per provider) so the test takes half
    # the time: whether a noise stops the agent is the detector's business, the same behind either wire.
    synthetic = [white_noise(2.0, -45.0, seed=7), pink_noise(2.0, -45.0, seed=8), mains_hum(2.0, -45.0, mains_hz=60)]
    noises = {
        "twilio": [*synthetic, pcm(clip("rain")), pcm(clip("wind"))],
        "plivo": [pcm(clip(category)) for category in ("engine", "vacuum_cleaner", "train")],
    }

    async def caller(provider: str, url: str) -> tuple[list[float], int, int, float]:
        async with EmulatedCall.start(provider, url) as call:
            await call.wait_until(lambda: call.played_samples > 2400, 10)
            await call.send_silence(1.0)
            for noise in noises[provider]:
                await call.send_audio(noise)
            played = call.played_samples
            return list(call.clears), played, len(call.violations), sum(len(n) for n in noises[provider]) / 8000

    async def scenario() -> None:
        srv = server_factory(agent_greeting=greeting)
        results = await asyncio.gather(caller("twilio", srv.url), caller("plivo", srv.url))
        for clears, played, violations, noise_s in results:
            assert clears == []
            assert played > (noise_s - 6.0) * 8000  # the agent kept talking through all of it
            assert violations == 0

    asyncio.run(scenario())


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
def test_bad_frames_are_ignored_and_other_calls_are_untouched(provider: str, server_factory: Any) -> None:
    greeting = "Welcome. " + " ".join(["I will keep talking until you interrupt me."] * 6)

    async def scenario() -> None:
        srv = server_factory(agent_greeting=greeting)
        async with (
            EmulatedCall.start(provider, srv.url) as bad,
            EmulatedCall.start(provider, srv.url) as good,
        ):
            await bad.wait_until(lambda: bad.played_samples > 4000, 10)
            await good.wait_until(lambda: good.played_samples > 4000, 10)
            other = "MZ" + "0" * 32 if provider == "twilio" else "00000000-0000-0000-0000-000000000000"
            sid_key = "streamSid" if provider == "twilio" else "streamId"
            media_other = (
                f'{{"event":"media","sequenceNumber":"900","{sid_key}":"{other}",'
                '"media":{"track":"inbound","chunk":"900","timestamp":"900","payload":"//7+/w=="}}'
            )
            bad_b64 = (
                f'{{"event":"media","sequenceNumber":"901","{sid_key}":"{bad.stream_id}",'
                '"media":{"track":"inbound","chunk":"901","timestamp":"901","payload":"@@not base64@@"}}'
            )
            for frame in ("{not json", '{"event":"bogus","x":1}', bad_b64, media_other, "[]"):
                await bad.send_raw(frame)
            await bad.send_raw(b"\x00\x01binary")
            speech = pcm(clip("read", 3))[: int(1.0 * 8000)]
            await asyncio.gather(bad.send_audio(speech), good.send_audio(speech))
            await bad.wait_until(lambda: bool(bad.clears), 5)
            await good.wait_until(lambda: bool(good.clears), 5)
            bad_record = await get_record(srv.url, bad.call_id)
            good_record = await get_record(srv.url, good.call_id)
        assert bad_record["invalid_frames"] == 6
        assert len(bad_record["bargeins"]) == 1
        assert good_record["invalid_frames"] == 0
        assert len(good_record["bargeins"]) == 1
        assert good_record["turns"][0]["interrupted"]

    asyncio.run(scenario())


def test_an_llm_that_stalls_mid_reply_gets_the_spoken_fallback_and_the_call_goes_on(server_factory: Any) -> None:
    async def scenario() -> None:
        async with ScriptedLlmServer([REPLY], token_delay_s=0.02, mode="stall_after=8") as llm:
            # a fallback line half the default's length: the test waits for it to play out
            srv = server_factory(llm_base_url=llm.base_url, agent_greeting="Hello.", llm_token_timeout_s=0.5,
                                 agent_fallback_text="Sorry, please say that again.")
            async with EmulatedCall.start("twilio", srv.url) as call:
                await call.wait_until(lambda: call.played_samples > 0 and call.buffered_samples == 0, 10)
                await call.send_audio(pcm(clip("isolated_word", 0)))
                record: dict[str, Any] = {}

                async def replied() -> bool:
                    nonlocal record
                    record = await get_record(srv.url, call.call_id)
                    return any(t["role"] == "agent" and t["fallback"] for t in record["turns"])

                for _ in range(100):
                    if await replied():
                        break
                    await asyncio.sleep(0.1)
                reply = [t for t in record["turns"] if t["role"] == "agent"][-1]
                assert reply["fallback"], record["turns"]
                await call.wait_until(lambda: call.buffered_samples == 0 and call.played_samples > 8000, 10)
                await asyncio.sleep(0.3)
                assert not call.closed
                record = await get_record(srv.url, call.call_id)
                assert record["active"]
                reply = [t for t in record["turns"] if t["role"] == "agent"][-1]
        assert srv.settings.agent_fallback_text in reply["text"]

    asyncio.run(scenario())


def test_a_stream_that_stops_sending_is_ended_by_the_timer_and_a_live_call_is_not(server_factory: Any) -> None:
    async def scenario() -> None:
        srv = server_factory(agent_greeting="Hello.", idle_timeout_s=1.0)
        async with (
            EmulatedCall.start("twilio", srv.url, idle_audio="none") as silent,
            EmulatedCall.start("plivo", srv.url) as live,  # keeps sending silence frames, as the real edge does
        ):
            await silent.wait_closed(4.0)
            assert silent.closed_by == "server" and silent.close_code == 1008
            await asyncio.sleep(0.5)  # the live call outlasts the idle timeout counted from its own start
            assert not live.closed
            silent_record = await get_record(srv.url, silent.call_id)
            live_record = await get_record(srv.url, live.call_id)
        assert silent_record["end_reason"] == "idle timeout"
        assert live_record["end_reason"] is None or live_record["end_reason"] == "socket closed"

    asyncio.run(scenario())

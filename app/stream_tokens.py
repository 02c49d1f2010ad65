"""Single-use per-call stream tokens: the answer webhook issues one, the media stream's `start` presents it.

The answer webhook, once its signature checks out, issues a token bound to the call id and the provider; it
travels in `<Parameter>` (Twilio) or `extraHeaders` (Plivo) and must be presented, once, on `start` before any
audio is bridged. This is what keeps strangers out on Plivo, whose signed upgrade URL is not settled.

Replays. A signature proves who sent a request, not that it is the first time: Twilio's has no nonce or time.
So each call gets one token ever (a webhook retry gets the same one back, a replay after the stream started
gets none). Issued calls are remembered for `replay_window_s`: the longest call plus the life of its record.
Provider signatures live in `app/signatures.py`.

Across replicas. With a call store (CALL_STORE_URL, app/store/), `claim` records the used token there too, in
one atomic insert, so a token used on one replica is refused on every other; `consume` is the same check
without the store (this process only). The upgrade path awaits the claim (one statement), never the frames.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from app.settings import Settings
from app.store.base import CallStore

logger = logging.getLogger(__name__)


# Token layout, all lowercase hex so it fits Plivo's extraHeaders ([A-Za-z0-9] only, 512 bytes at most,
# §2.4): 12 hex expiry (clock ms) | 16 hex random nonce | 32 hex truncated HMAC-SHA256 over provider + call id +
# both.
_EXP_HEX = 12
_NONCE_HEX = 16
_MAC_HEX = 32
TOKEN_LENGTH = _EXP_HEX + _NONCE_HEX + _MAC_HEX
_TOKEN_RE = re.compile(rf"[0-9a-f]{{{TOKEN_LENGTH}}}")

# The longest call to plan for: Twilio ends calls at its default time limit of 4 hours (14400 s; an account can
# have it changed, error 32015), and Plivo's `time_limit` defaults to the same. A signed answer webhook, or a
# Plivo nonce, replayed later than this plus how long a call's record is kept (`replay_window_s`) finds neither
# the call nor its conversation. A call that does outlive it is still guarded while its stream is live: the
# registry refuses a second stream for a live call whatever token it brings.
MAX_CALL_S = 4 * 3600.0
CLAIM_TIMEOUT_S = 2.0  # a store that cannot record a claim this soon is treated as failed (see `claim`)


def replay_window_s(settings: Settings) -> float:
    """How long issued call ids and Plivo nonces are remembered: the longest call, then its record's lifetime.

    Past this, the call is over and its record (with the conversation an attacker would want as LLM context) is
    gone, so forgetting cannot let a replay reach either.
    """
    return MAX_CALL_S + settings.call_records_ttl_s


class TokenRefused(Exception):
    """`StreamTokens.issue` will not give this call a token: `reason` is "consumed", "expired" or "full"."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"no stream token: {reason}")
        self.reason = reason


@dataclass(slots=True)
class _CallTokenState:
    token: str | None  # the token issued here; None when a replica issued it and it was only consumed here
    expiry_ms: int
    consumed: bool
    forget_at_ms: int


class StreamTokens:
    """One short-lived, single-use, HMAC-authenticated token per call, bound to the call id and its provider.

    `issue` gives a call its token and, asked again while that token is unused and unexpired, the same token
    (a provider retrying its answer webhook must still get a working answer); once the token was used or has
    expired it refuses, so a replayed answer webhook cannot mint a second stream for the call. `consume`
    accepts a call's first genuine token and nothing after it.

    Any replica holding the same secret can verify a token. The clock must be shared too: pass `time.time`
    when replicas run on different machines (a monotonic clock only agrees with itself on one host). What a
    process remembers (calls given or using a token) it keeps for `remember_s`; memory is bounded by the
    call rate times that window and by `max_calls`, and when full it refuses rather than forgets, since a
    forgotten call could be given a second token. Issuing is per process: a replayed webhook that reaches
    another replica gets a token there. With a store, `claim` still lets only one stream per call in, on any
    replica, since the use is recorded per call, not per token.
    """

    def __init__(
        self,
        secret: bytes,
        ttl_s: float,
        clock: Callable[[], float],
        *,
        remember_s: float = MAX_CALL_S,
        max_calls: int = 100_000,
        store: CallStore | None = None,
        on_store_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        if not secret:
            raise ValueError("StreamTokens needs a non-empty secret")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        self._secret = secret
        self._ttl_s = ttl_s
        self._clock = clock
        self._remember_ms = int(remember_s * 1000)
        self._max_calls = max_calls
        self._calls: dict[tuple[str, str], _CallTokenState] = {}
        self._forget: list[tuple[int, tuple[str, str]]] = []  # min-heap of (forget at ms, key) for _calls
        self._store = store
        self._on_store_error = on_store_error

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        clock: Callable[[], float],
        store: CallStore | None = None,
        on_store_error: Callable[[str, BaseException], None] | None = None,
    ) -> StreamTokens:
        """Tokens keyed by STREAM_TOKEN_SECRET, or by a random per-process key when it is empty."""
        secret = settings.stream_token_secret.encode() or secrets.token_bytes(32)
        return cls(secret, settings.stream_token_ttl_s, clock, remember_s=replay_window_s(settings), store=store,
                   on_store_error=on_store_error)

    def use_store(self, store: CallStore, on_error: Callable[[str, BaseException], None] | None = None) -> None:
        """Hold `claim` to the store from now on (set once the store is open, before any stream)."""
        self._store = store
        self._on_store_error = on_error

    def issue(self, provider: str, call_id: str) -> str:
        """The token for `provider`'s call `call_id`: new, or the same one again while it is unused and valid.

        Raises TokenRefused once the call's token was consumed or expired (a replayed answer webhook), or
        when the store is full.
        """
        now_ms = self._now_ms()
        self._forget_old(now_ms)
        key = (provider, call_id)
        state = self._calls.get(key)
        if state is not None:
            if state.consumed:
                raise TokenRefused("consumed")
            if now_ms >= state.expiry_ms:
                raise TokenRefused("expired")
            if state.token is not None:
                return state.token
        if len(self._calls) >= self._max_calls:
            logger.warning("stream token store full (%d calls remembered); refusing a call", len(self._calls))
            raise TokenRefused("full")
        expiry_ms = now_ms + int(self._ttl_s * 1000)
        if not 0 <= expiry_ms < 16**_EXP_HEX:
            raise ValueError("clock value out of range for a stream token")
        head = f"{expiry_ms:0{_EXP_HEX}x}{secrets.token_hex(_NONCE_HEX // 2)}"
        token = head + self._mac(provider, call_id, head)
        # Remembered until the token has expired and then for the whole window a call can last.
        self._remember(key, _CallTokenState(token, expiry_ms, False, expiry_ms + self._remember_ms))
        return token

    def consume(self, provider: str, call_id: str, token: str) -> bool:
        """True exactly once per call: for the first genuine, unexpired token issued for `provider`'s `call_id`.

        This process only: `claim` also asks the store, so other replicas are held to the same rule.
        """
        expiry_ms = self._genuine(provider, call_id, token)
        if expiry_ms is None:
            return False
        return self._mark_used((provider, call_id), expiry_ms)

    async def claim(self, provider: str, call_id: str, token: str) -> bool:
        """`consume`, held across replicas: the store records the use, and refuses a token another used.

        A store that fails (or takes longer than CLAIM_TIMEOUT_S) is counted and logged, and the claim falls
        back to this process's check: refusing every call while the store is down would be an outage, and
        what is lost is only the cross-replica half of the rule, for tokens that expire within
        STREAM_TOKEN_TTL_S of their webhook.
        """
        expiry_ms = self._genuine(provider, call_id, token)
        if expiry_ms is None:
            return False
        key = (provider, call_id)
        state = self._calls.get(key)
        if state is not None and state.consumed:
            return False
        if self._store is not None:
            now_s = self._clock()
            try:
                async with asyncio.timeout(CLAIM_TIMEOUT_S):
                    claimed = await self._store.claim_token(
                        provider, call_id, now_s, (expiry_ms + self._remember_ms) / 1000.0)
            except Exception as exc:
                if self._on_store_error is not None:
                    self._on_store_error("claim", exc)
                logger.warning("stream token claim not recorded in the call store (%s); checked in this process "
                               "only", type(exc).__name__)
                claimed = True
            if not claimed:
                self._mark_used(key, expiry_ms)  # remembered here too: the next try needs no round trip
                return False
        return self._mark_used(key, expiry_ms)

    def _genuine(self, provider: str, call_id: str, token: str) -> int | None:
        """The token's expiry (clock ms) if it is well formed, signed for this call and unexpired; else None."""
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            return None
        head, mac = token[: _EXP_HEX + _NONCE_HEX], token[_EXP_HEX + _NONCE_HEX :]
        if not hmac.compare_digest(mac, self._mac(provider, call_id, head)):
            return None
        expiry_ms = int(head[:_EXP_HEX], 16)
        now_ms = self._now_ms()
        self._forget_old(now_ms)
        if now_ms >= expiry_ms:
            return None
        return expiry_ms

    def _mark_used(self, key: tuple[str, str], expiry_ms: int) -> bool:
        """Record the call's token as used here; False if it already was (or the memory is full)."""
        state = self._calls.get(key)
        if state is not None:
            if state.consumed:
                return False  # one stream per call: this token, or any other minted for the call, was used
            # A genuine token that is not the one issued here came from a replica that answered a retry of
            # the webhook; the provider streams with whichever answer it kept, so either may open the call.
            state.consumed = True
            return True
        if len(self._calls) >= self._max_calls:
            # Refusing is safer than forgetting a call (which would make its token replayable).
            logger.warning("stream token store full (%d calls remembered); refusing a stream", len(self._calls))
            return False
        self._remember(key, _CallTokenState(None, expiry_ms, True, expiry_ms + self._remember_ms))
        return True

    @property
    def remembered(self) -> int:
        """How many calls (given a token here, or whose token was used here) are held (for tests and metrics)."""
        return len(self._calls)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _mac(self, provider: str, call_id: str, head: str) -> str:
        message = b"\x00".join(
            (
                b"bargein-stream-token",
                provider.encode("utf-8", "surrogatepass"),
                call_id.encode("utf-8", "surrogatepass"),
                head.encode(),
            )
        )
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:_MAC_HEX]

    def _remember(self, key: tuple[str, str], state: _CallTokenState) -> None:
        self._calls[key] = state
        heapq.heappush(self._forget, (state.forget_at_ms, key))

    def _forget_old(self, now_ms: int) -> None:
        while self._forget and self._forget[0][0] <= now_ms:
            _, key = heapq.heappop(self._forget)
            self._calls.pop(key, None)

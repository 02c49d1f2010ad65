"""Provider errors: vendor failures are mapped here, at the boundary, so the session decides what to do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class ProviderError(Exception):
    """A provider (LLM, TTS, STT) failed; `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ProviderTimeout(ProviderError):
    """A provider did not answer in time."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


@contextmanager
def map_vendor_errors(vendor: str) -> Iterator[None]:
    """Turn any non-cancellation exception raised inside into a ProviderError chained to the original."""
    try:
        yield
    except ProviderError:
        raise
    except TimeoutError as exc:
        raise ProviderTimeout(f"{vendor}: timed out") from exc
    except (OSError, ConnectionError) as exc:
        raise ProviderError(f"{vendor}: {type(exc).__name__}: {exc}", retryable=True) from exc
    except Exception as exc:
        raise ProviderError(f"{vendor}: {type(exc).__name__}: {exc}") from exc

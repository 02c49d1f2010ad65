"""LOG_FORMAT=json: JsonFormatter alone (one line of JSON per record, whatever the message holds), and the real
`bargein serve` in a subprocess writing nothing but JSON lines, uvicorn's own start-up lines included."""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from app.logformat import JsonFormatter, TextFormatter
from app.settings import SettingsError, load_settings
from tests.conftest import free_port
from tests.test_cli import serve_env, serving


def make_record(msg: str, *args: object, with_exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if with_exc:
        try:
            raise RuntimeError("provider went away\nsecond line of the error")
        except RuntimeError:
            exc_info = sys.exc_info()
    record = logging.getLogger("app.call.session").makeRecord(
        "app.call.session", logging.WARNING, __file__, 42, msg, args, exc_info, extra=extra or None
    )
    return record


def test_a_record_with_extras_and_an_exception_is_one_line_of_json() -> None:
    record = make_record("send failed: %s", "OSError", with_exc=True, call_sid="CA123", provider="twilio")
    out = JsonFormatter().format(record)
    assert len(out.splitlines()) == 1 and "\n" not in out
    data = json.loads(out)
    assert data["level"] == "WARNING"
    assert data["logger"] == "app.call.session"
    assert data["message"] == "send failed: OSError"
    assert data["call_sid"] == "CA123" and data["provider"] == "twilio"
    assert data["exc"].startswith("Traceback (most recent call last):")
    assert "RuntimeError: provider went away\nsecond line of the error" in data["exc"]
    when = datetime.fromisoformat(data["time"].replace("Z", "+00:00"))
    assert when.utcoffset() is not None and when.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert abs(when.timestamp() - record.created) < 0.001
    # Nothing of the LogRecord's own machinery leaks in as a key.
    assert set(data) == {"time", "level", "logger", "message", "call_sid", "provider", "exc"}


def test_newlines_and_control_characters_stay_on_one_physical_line() -> None:
    nasty = "line one\nline two\r\nthree\x00\x1b[31mred\x1c\x1d\x1e\x85\u2028\u2029\x7f end \udcff"
    record = make_record("caller said %r then %s", nasty, nasty, weird=nasty, blob=b"\n\x00", obj=object())
    out = JsonFormatter().format(record)
    assert len(out.splitlines()) == 1 and len(out.split("\n")) == 1
    assert out.isascii() and out.isprintable()
    data = json.loads(out)
    assert data["message"] == f"caller said {nasty!r} then {nasty}"
    assert data["weird"] == nasty
    assert data["blob"] == repr(b"\n\x00")  # a value JSON cannot hold is its repr, still one string


def test_extras_named_like_the_core_keys_do_not_replace_them() -> None:
    record = make_record("hello", level="spoofed", exc="spoofed")
    data = json.loads(JsonFormatter().format(record))
    assert data["level"] == "WARNING" and "exc" not in data
    assert data["extra_level"] == data["extra_exc"] == "spoofed"


def test_serve_with_log_format_json_writes_only_json_lines(tmp_path: Path) -> None:
    port = free_port()
    env = serve_env(LOG_FORMAT="json", PUBLIC_URL=f"http://127.0.0.1:{port}")
    log = tmp_path / "stderr.log"
    with serving(tmp_path, ["--port", str(port), "--host", "127.0.0.1"], env):
        deadline = time.monotonic() + 5
        while "Uvicorn running on" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = log.read_text().splitlines()
    assert lines
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}\n" + "\n".join(lines)) from None
    for data in records:
        assert {"time", "level", "logger", "message"} <= set(data), data
        assert "color_message" not in data
    by_logger = {(d["logger"], d["message"].split(" ")[0]) for d in records}
    assert ("uvicorn.error", "Started") in by_logger, records  # uvicorn's own lines, as JSON
    assert any(d["logger"] == "uvicorn.error" and "Uvicorn running on" in d["message"] for d in records), records
    assert any(d["logger"] == "app.main" and d["message"].startswith("bargein ready") for d in records), records


def test_an_unknown_log_format_is_one_line_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^LOG_FORMAT must be 'text' or 'json', got 'xml'$"):
        load_settings(log_format="xml", _env_file=None)


# --- the call's ids (app.logctx) in both formats ---------------------------------------------------------------


def test_json_lines_carry_the_call_ids_the_context_filter_stamps() -> None:
    record = make_record("agent turn %s: provider failed", 2, provider="twilio")
    record.__dict__.update(call_id="CA123", stream_id="MZ456")  # as ContextFilter leaves them
    data = json.loads(JsonFormatter().format(record))
    assert (data["call_id"], data["stream_id"], data["provider"]) == ("CA123", "MZ456", "twilio")


def test_text_lines_name_the_call_after_the_logger_and_only_when_there_is_one() -> None:
    record = make_record("agent turn %s: provider failed", 2)
    record.__dict__.update(call_id="CA123", stream_id="MZ456")
    line = TextFormatter().format(record)
    assert line.endswith(" WARNING app.call.session call=CA123 stream=MZ456: agent turn 2: provider failed")
    assert "call_context" not in json.loads(JsonFormatter().format(record))  # nothing left on the record
    plain = TextFormatter().format(make_record("bargein ready"))
    assert plain.endswith(" WARNING app.call.session: bargein ready")
    # A webhook's call_sid (extra=, a form field's raw text) names the call too, escaped to stay on one line.
    webhook = TextFormatter().format(make_record("answering", call_sid="CA1\nINFO forged line"))
    assert len(webhook.splitlines()) == 1 and "call=CA1\\nINFO forged line: answering" in webhook

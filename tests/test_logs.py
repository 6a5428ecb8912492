"""Logging: the combined access line, ap_escape_logitem, JSON lines, structlog configuration."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import structlog

from asyncmpm.logs import (
    AccessEntry,
    AccessLog,
    bind_process,
    configure_logging,
    escape_logitem,
    parse_level,
)

# The example line of Apache's log-format documentation.
APACHE_EXAMPLE = AccessEntry(
    remote_addr="127.0.0.1",
    time=971211336.25,  # 2000-10-10 20:55:36.25 UTC
    request_line="GET /apache_pb.gif HTTP/1.0",
    status=200,
    bytes_sent=2326,
    referer="http://www.example.com/start.html",
    user_agent="Mozilla/4.08 [en] (Win98; I ;Nav)",
    duration_us=1234,
    pid=4242,
    slot=3,
)
APACHE_EXAMPLE_LINE = (
    '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326 '
    '"http://www.example.com/start.html" "Mozilla/4.08 [en] (Win98; I ;Nav)"\n'
)
COMBINED = re.compile(
    r'(?P<host>\S+) - - \[(?P<time>[^]]+)\] "(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) '
    r'(?P<size>\d+|-) "(?P<referer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)"\n'
)


@pytest.fixture
def tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with TZ set by ``monkeypatch.setenv("TZ", ...)``; tzset() again after the test."""
    yield
    monkeypatch.undo()
    time.tzset()


def set_tz(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TZ", value)
    time.tzset()


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


# ---------------------------------------------------------------------------------- combined
@pytest.mark.usefixtures("tz")
@pytest.mark.parametrize(
    ("zone", "stamp"),
    [
        ("PDT+7", "[10/Oct/2000:13:55:36 -0700]"),  # POSIX TZ strings: no tzdata needed
        ("UTC0", "[10/Oct/2000:20:55:36 +0000]"),
        ("IST-5:30", "[11/Oct/2000:02:25:36 +0530]"),
        ("NST+3:30", "[10/Oct/2000:17:25:36 -0330]"),
    ],
)
def test_combined_timestamp(monkeypatch: pytest.MonkeyPatch, zone: str, stamp: str) -> None:
    set_tz(monkeypatch, zone)
    line = AccessLog("-").format(APACHE_EXAMPLE)
    assert line == APACHE_EXAMPLE_LINE.replace("[10/Oct/2000:13:55:36 -0700]", stamp)


@pytest.mark.usefixtures("tz")
def test_combined_line_exact_on_stdout(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    set_tz(monkeypatch, "PDT+7")
    log = AccessLog("-")
    log.log(APACHE_EXAMPLE)
    log.close()
    log.log(APACHE_EXAMPLE)  # after close: dropped, not an error
    assert capsys.readouterr().out == APACHE_EXAMPLE_LINE


@pytest.mark.usefixtures("tz")
@pytest.mark.parametrize(
    ("changes", "tail"),
    [
        ({"bytes_sent": 0, "status": 304}, '" 304 - "http'),
        ({"referer": "", "user_agent": ""}, '" 200 2326 "-" "-"\n'),
        ({"request_line": 'GET /"x" HTTP/1.1'}, '"GET /\\"x\\" HTTP/1.1" 200'),
    ],
    ids=["no-bytes", "no-headers", "quoted-request"],
)
def test_combined_fields(monkeypatch: pytest.MonkeyPatch, changes: dict[str, object],
                         tail: str) -> None:
    set_tz(monkeypatch, "PDT+7")
    entry = dataclasses.replace(APACHE_EXAMPLE, **changes)  # type: ignore[arg-type]
    assert tail in AccessLog("-").format(entry)


def test_timestamp_cache_follows_the_second() -> None:
    log = AccessLog("-")
    first = log.format(APACHE_EXAMPLE)
    same = log.format(dataclasses.replace(APACHE_EXAMPLE, time=APACHE_EXAMPLE.time + 0.7))
    later = log.format(dataclasses.replace(APACHE_EXAMPLE, time=APACHE_EXAMPLE.time + 61))
    earlier = log.format(dataclasses.replace(APACHE_EXAMPLE, time=APACHE_EXAMPLE.time - 1))
    assert first == same
    stamps = [COMBINED.fullmatch(line) for line in (first, later, earlier)]
    assert [m.group("time")[12:20] if m else None for m in stamps] == [
        time.strftime("%H:%M:%S", time.localtime(int(APACHE_EXAMPLE.time) + d))
        for d in (0, 61, -1)
    ]


# ---------------------------------------------------------------------------------- escaping
@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("GET / HTTP/1.1", "GET / HTTP/1.1"),
        ('say "hi"', 'say \\"hi\\"'),
        ("back\\slash", "back\\\\slash"),
        ("a\nb", "a\\nb"),
        ("\r\n", "\\r\\n"),
        ("\t\b\v", "\\t\\b\\v"),
        ("\x00\x01\x1f", "\\x00\\x01\\x1f"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("\x7f", "\\x7f"),
        ("caf\xe9", "caf\\xe9"),  # latin-1 decoded byte 0xe9
        ("\u20ac", "\\xe2\\x82\\xac"),  # wider than a byte: its UTF-8 bytes
        ("~ !#$%&'()*+,-./:;<=>?@[]^_`{|}", "~ !#$%&'()*+,-./:;<=>?@[]^_`{|}"),
    ],
)
def test_escape_logitem(raw: str, escaped: str) -> None:
    assert escape_logitem(raw) == escaped


@pytest.mark.parametrize(
    ("field", "group"),
    [("request_line", "request"), ("referer", "referer"), ("user_agent", "agent")],
)
def test_forged_values_stay_inside_one_field(field: str, group: str) -> None:
    forged = 'x" 200 1 "-" "y\n10.6.6.6 - - [01/Jan/2000:00:00:00 +0000] "GET /admin HTTP/1.0\\'
    entry = dataclasses.replace(APACHE_EXAMPLE, **{field: forged})  # type: ignore[arg-type]
    line = AccessLog("-").format(entry)
    assert line.count("\n") == 1
    match = COMBINED.fullmatch(line)
    assert match is not None
    assert match.group("status") == "200"
    assert match.group(group) == escape_logitem(forged)


# ---------------------------------------------------------------------------------- files, json
def test_json_lines_parse_back(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    entries = [
        APACHE_EXAMPLE,
        dataclasses.replace(APACHE_EXAMPLE, user_agent='evil"\n{"forged": 1}', bytes_sent=0,
                            referer="caf\xe9 \u20ac", slot=-1),
    ]
    with AccessLog(str(path), fmt="json") as log:
        for entry in entries:
            log.log(entry)
    lines = path.read_text("utf-8").splitlines()
    assert [AccessEntry(**json.loads(line)) for line in lines] == entries


def test_file_lines_are_flushed_and_reopen_follows_logrotate(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path))
    log.log(APACHE_EXAMPLE)
    assert path.read_text().count("\n") == 1  # on disk before close
    path.rename(tmp_path / "access.log.1")
    log.reopen()
    log.log(APACHE_EXAMPLE)
    log.log(APACHE_EXAMPLE)
    assert path.read_text().count("\n") == 2
    assert (tmp_path / "access.log.1").read_text().count("\n") == 1
    log.close()
    log.close()


def test_file_appends(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    path.write_text("old\n")
    with AccessLog(str(path)) as log:
        log.log(APACHE_EXAMPLE)
    assert path.read_text().startswith("old\n127.0.0.1 - - [")


def test_bad_access_log_format() -> None:
    with pytest.raises(ValueError, match="format"):
        AccessLog("-", fmt="common")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- error log
@pytest.mark.parametrize(
    ("name", "level"),
    [("debug", 10), ("info", 20), ("notice", 25), ("warn", 30), ("warning", 30),
     ("error", 40), ("crit", 50), ("alert", 50), ("emerg", 50), ("CRITICAL", 50),
     ("trace3", 10)],
)
def test_parse_level(name: str, level: int) -> None:
    assert parse_level(name) == level


@pytest.mark.parametrize("name", ["verbose", "trace9", ""])
def test_parse_level_rejects_unknown(name: str) -> None:
    with pytest.raises(ValueError, match="log level"):
        parse_level(name)


def test_json_error_log_carries_bound_process() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", level="info", stream=out)
    bind_process(pid=1234, slot=3)
    structlog.get_logger("asyncmpm.test").info("child ready", threads=25)
    record = json.loads(out.getvalue())
    assert record["event"] == "child ready"
    assert record["level"] == "info"
    assert (record["pid"], record["slot"], record["threads"]) == (1234, 3, 25)
    assert datetime.fromisoformat(record["timestamp"]).tzinfo is not None


def test_json_error_log_renders_exceptions() -> None:
    out = io.StringIO()
    configure_logging(fmt="json", level="info", stream=out)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger().exception("AH00052: child failed")
    record = json.loads(out.getvalue())
    assert record["level"] == "error"
    assert "RuntimeError: boom" in record["exception"]


def test_console_error_log_is_plain_text_when_not_a_tty() -> None:
    out = io.StringIO()
    configure_logging(fmt="console", level="info", stream=out)
    bind_process(pid=99, slot=0)
    structlog.get_logger().warning("AH00161: server reached MaxRequestWorkers")
    text = out.getvalue()
    assert text.count("\n") == 1
    assert "\x1b[" not in text
    assert "AH00161: server reached MaxRequestWorkers" in text
    assert "pid=99" in text
    assert "warning" in text


@pytest.mark.parametrize(
    ("level", "method", "emitted"),
    [
        ("debug", "debug", True),
        ("info", "debug", False),
        ("info", "info", True),
        ("notice", "info", False),
        ("notice", "warning", True),
        ("warn", "info", False),
        ("warn", "warning", True),
        ("error", "warning", False),
        ("error", "error", True),
        ("crit", "error", False),
        ("alert", "critical", True),
        ("emerg", "critical", True),
    ],
)
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_level_filtering(fmt: str, level: str, method: str, emitted: bool) -> None:
    out = io.StringIO()
    configure_logging(fmt="json" if fmt == "json" else "console", level=level, stream=out)
    getattr(structlog.get_logger(), method)("event")
    assert bool(out.getvalue()) is emitted


def test_bad_error_log_format() -> None:
    with pytest.raises(ValueError, match="format"):
        configure_logging(fmt="xml", level="info")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- LogFormat
FULL = dataclasses.replace(
    APACHE_EXAMPLE,
    method="GET",
    path="/apache_pb.gif",
    query="a=1&b=\"2\"",
    protocol="HTTP/1.0",
    server_name="www.example.com",
    local_port=8080,
    tid=777,
    duration_us=2_345_678,
    request_headers=((b"x-test", b"one"), (b"x-test", b"two"), (b"host", b"h")),
    response_headers=((b"Content-Type", b'text/"plain"\n'),),
)


@pytest.mark.usefixtures("tz")
@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("common", '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" '
                   "200 2326"),
        ("%h %>s %b %D %T %{ms}T %{us}T", "127.0.0.1 200 2326 2345678 2 2345 2345678"),
        ("%P %{pid}P %{tid}P", "4242 4242 777"),
        ("%{X-Test}i|%{Missing}i|%{content-type}o", 'one, two|-|text/\\"plain\\"\\n'),
        ("%v:%p %m %U%q %H %%", 'www.example.com:8080 GET /apache_pb.gif?a=1&b=\\"2\\" '
                                "HTTP/1.0 %"),
        ("%{sec}t %{msec}t %{%Y-%m-%d}t", "971211336 971211336250 2000-10-10"),
        ("[%{begin:%H:%M}t]", "[13:55]"),
    ],
)
def test_log_format_directives(monkeypatch: pytest.MonkeyPatch, fmt: str, expected: str) -> None:
    set_tz(monkeypatch, "PDT+7")
    assert AccessLog("-", log_format=fmt).format(FULL) == expected + "\n"


@pytest.mark.usefixtures("tz")
def test_log_format_combined_nickname_spelled_out_matches_fast_path(
        monkeypatch: pytest.MonkeyPatch) -> None:
    set_tz(monkeypatch, "PDT+7")
    spelled = '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-agent}i"'
    entry = dataclasses.replace(APACHE_EXAMPLE, request_headers=(
        (b"referer", APACHE_EXAMPLE.referer.encode()),
        (b"user-agent", APACHE_EXAMPLE.user_agent.encode())))
    assert AccessLog("-", log_format=spelled).format(entry) == APACHE_EXAMPLE_LINE


def test_log_format_escapes_every_network_value() -> None:
    evil = dataclasses.replace(FULL, path="/a\nb", query='x"\r', method="GET",
                               request_headers=((b"x", b"1\n127.0.0.1 - - forged"),))
    line = AccessLog("-", log_format="%U%q %{X}i").format(evil)
    assert line.count("\n") == 1
    assert line == '/a\\nb?x\\"\\r 1\\n127.0.0.1 - - forged\n'


def test_log_format_is_ignored_by_json_lines() -> None:
    record = json.loads(AccessLog("-", fmt="json", log_format="%h").format(FULL))
    assert record["path"] == "/apache_pb.gif"
    assert "request_headers" not in record  # no cookies or credentials in the log


@pytest.mark.parametrize("fmt", ["%h %Z", "%{x}", "100%"])
def test_bad_log_format_names_the_directive(fmt: str) -> None:
    from asyncmpm.config import Config
    from asyncmpm.errors import ConfigError

    with pytest.raises(ConfigError, match="LogFormat"):
        Config(access_log_format=fmt)

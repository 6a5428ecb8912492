"""External load tools: wrk (HTTP/1.1), h2load (HTTP/2 cleartext), slowhttptest (slowloris).

wrk's result comes out of a generated Lua `done()` callback as one JSON line. wrk keeps every
latency below `--timeout` in a histogram; the Lua side walks the slowest distinct values to count
responses over 5 s (exact while there are few of them, a lower bound past 64 distinct values) and
adds wrk's own timeout count (requests pending past `--timeout`). Requests still in flight when
wrk stops are invisible to it, so the blocking-I/O workload uses the built-in generator instead.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks.processes import run
from benchmarks.stats import Latency, LoadResult, summarize

SLOW_US = 5_000_000
WRK_TIMEOUT_S = 30
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"

_DONE = r"""
done = function(summary, latency, requests)
  local slow, exact, i = 0, true, #latency
  if latency.max > SLOW_US then
    local steps = 0
    while i > 0 do
      local value, count = latency(i)
      if value <= SLOW_US then break end
      slow = slow + count
      i = i - 1
      steps = steps + 1
      if steps >= 64 then exact = false; break end
    end
  end
  local e = summary.errors
  io.write(string.format('\nBENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50":%d,"p90":%d,' ..
    '"p99":%d,"max":%d,"mean":%.1f,"slow":%d,"exact":%s}\n',
    summary.duration, summary.requests, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, slow, tostring(exact)))
end
"""


@dataclass(frozen=True)
class Tools:
    """Which external tools this machine has (each is optional)."""

    wrk: str | None
    h2load: str | None
    slowhttptest: str | None
    py_spy: str | None

    @classmethod
    def detect(cls) -> Tools:
        return cls(shutil.which("wrk"), shutil.which("h2load"), shutil.which("slowhttptest"),
                   shutil.which("py-spy"))


def wrk_script(method: str = "GET", body_size: int = 0) -> str:
    lines = [f'wrk.method = "{method}"']
    if body_size:
        lines += [f'wrk.body = string.rep("x", {body_size})',
                  'wrk.headers["Content-Type"] = "application/octet-stream"']
    return "\n".join(lines) + _DONE.replace("SLOW_US", str(SLOW_US))


def run_wrk(wrk: str, url: str, *, connections: int, duration: float, keep_alive: bool = True,
            method: str = "GET", body_size: int = 0, threads: int = 2) -> LoadResult:
    threads = max(1, min(threads, connections))
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "bench.lua"
        script.write_text(wrk_script(method, body_size))
        command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
                   f"--timeout={WRK_TIMEOUT_S}s", "-s", str(script)]
        if not keep_alive:
            command += ["-H", "Connection: close"]
        done = run([*command, url], timeout=duration + WRK_TIMEOUT_S + 30)
    match = re.search(r"^BENCH_JSON (\{.*\})$", done.stdout, re.MULTILINE)
    if not match:
        raise RuntimeError(f"wrk gave no result: {done.stdout[-500:]} {done.stderr[-500:]}")
    data = json.loads(match.group(1))
    errors = {k: int(data[k]) for k in ("connect", "read", "write", "timeout", "status")}
    latency = Latency(data["p50"] / 1000, data["p90"] / 1000, data["p99"] / 1000,
                      data["max"] / 1000, data["mean"] / 1000)
    note = "" if data["exact"] else "over-5 s count is a lower bound"
    return LoadResult("wrk", int(data["requests"]), data["duration_us"] / 1e6, int(data["bytes"]),
                      latency, errors, int(data["slow"]) + errors["timeout"], note)


def speaks_h2c(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether the server answers an HTTP/2 prior-knowledge preface with a SETTINGS frame."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_H2_PREFACE)
            data = b""
            while len(data) < 9:
                chunk = sock.recv(9 - len(data))
                if not chunk:
                    return False
                data += chunk
    except OSError:
        return False
    return data[3] == 0x4


def run_h2load(h2load: str, url: str, *, clients: int, streams: int, duration: float,
               warm_up: float) -> LoadResult:
    with tempfile.TemporaryDirectory(prefix="bench-h2load-") as tmp:
        log = Path(tmp) / "requests.tsv"
        command = [h2load, "-t1", f"-c{clients}", f"-m{streams}", f"-D{max(1, round(duration))}",
                   f"--warm-up-time={max(1, round(warm_up))}", f"--log-file={log}", url]
        done = run(command, timeout=duration + warm_up + 60)
        rows = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    out = done.stdout
    finished = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    counts = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if not (finished and counts and codes):
        raise RuntimeError(f"h2load gave no result: {out[-500:]} {done.stderr[-500:]}")
    seconds = float(finished.group(1))
    done_n, failed, errored, timeouts = (int(counts.group(i)) for i in (3, 5, 6, 7))
    status_errors = int(codes.group(3)) + int(codes.group(4))
    latencies = [int(r[2]) / 1e6 for r in rows if len(r) >= 3 and r[2].isdigit()]
    errors = {"connect": max(0, failed - errored - timeouts - status_errors), "read": errored,
              "write": 0, "timeout": timeouts, "status": status_errors}
    body = int(done_n * len(b"Hello, world!"))
    result = summarize("h2load", latencies, seconds, body, errors,
                       sum(1 for x in latencies if x > SLOW_US / 1e6) + timeouts)
    result.requests = done_n  # the log also holds warm-up requests; h2load's count does not
    return result


def slowhttptest_command(tool: str, url: str, *, connections: int, duration: float) -> list[str]:
    """slowloris: `connections` sockets, each sending one more header line every 5 s."""
    return [tool, "-H", "-c", str(connections), "-r", "200", "-i", "5", "-x", "24", "-p", "3",
            "-t", "GET", "-l", str(max(1, round(duration))), "-u", url]

"""One row per directive: the single declaration the CLI, the docs and validation all read.

Names, defaults and ranges are Apache httpd 2.4's (see ``shared/reference/apache-mpm.md`` §1).
A default of ``None`` in :class:`~asyncmpm.config.model.Config` means "the MPM's own default",
taken from ``defaults`` here, because prefork and worker disagree on most of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["DIRECTIVES", "DIRECTIVES_BY_FIELD", "Directive", "Kind"]

Kind = Literal["int", "seconds", "bool", "text"]


@dataclass(frozen=True, slots=True)
class Directive:
    """How one Apache directive maps onto a :class:`Config` field and a CLI flag."""

    name: str
    field: str
    kind: Kind
    prefork: int | float | bool | str | None
    worker: int | float | bool | str | None
    help: str
    minimum: float | None = None
    scope: Literal["core", "prefork", "worker", "both"] = "core"

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    def default(self, mpm: str) -> int | float | bool | str | None:
        return self.prefork if mpm == "prefork" else self.worker


DIRECTIVES: tuple[Directive, ...] = (
    Directive("StartServers", "start_servers", "int", 5, 3,
              "child processes created at startup", scope="both"),
    Directive("MinSpareServers", "min_spare_servers", "int", 5, None,
              "minimum idle child processes (prefork)", scope="prefork"),
    Directive("MaxSpareServers", "max_spare_servers", "int", 10, None,
              "maximum idle child processes (prefork)", scope="prefork"),
    Directive("MinSpareThreads", "min_spare_threads", "int", None, 75,
              "minimum idle threads over all children (worker)", scope="worker"),
    Directive("MaxSpareThreads", "max_spare_threads", "int", None, 250,
              "maximum idle threads over all children (worker)", scope="worker"),
    Directive("ThreadsPerChild", "threads_per_child", "int", 1, 25,
              "threads in each child process (worker; always 1 under prefork)", scope="worker"),
    Directive("ThreadLimit", "thread_limit", "int", 1, 64,
              "upper bound for ThreadsPerChild (worker)", scope="worker"),
    Directive("ServerLimit", "server_limit", "int", 256, 16,
              "upper bound for the number of child processes", scope="both"),
    Directive("MaxRequestWorkers", "max_request_workers", "int", 256, 400,
              "requests served at once: processes (prefork) or threads (worker)", scope="both"),
    Directive("MaxConnectionsPerChild", "max_connections_per_child", "int", 0, 0,
              "requests a child serves before it retires; 0 = never (the unit is the request, "
              "because keep-alive connections live in the front loop)", scope="both"),
    Directive("ListenBacklog", "listen_backlog", "int", 511, 511,
              "length of the kernel's queue of pending connections", minimum=1),
    Directive("GracefulShutdownTimeout", "graceful_shutdown_timeout", "seconds", 0, 0,
              "seconds a stop waits for in-flight requests; 0 = wait for them", minimum=0),
    Directive("Timeout", "timeout", "seconds", 60, 60,
              "seconds for one I/O step and for a request in a child (then 504)", minimum=0.001),
    Directive("KeepAlive", "keep_alive", "bool", True, True,
              "allow persistent connections"),
    Directive("KeepAliveTimeout", "keep_alive_timeout", "seconds", 5, 5,
              "seconds an idle persistent connection waits for its next request; 0 disables",
              minimum=0),
    Directive("MaxKeepAliveRequests", "max_keep_alive_requests", "int", 100, 100,
              "requests on one connection; 0 = unlimited", minimum=0),
    Directive("LimitRequestLine", "limit_request_line", "int", 8190, 8190,
              "longest request line in bytes (else 414)", minimum=1),
    Directive("LimitRequestFields", "limit_request_fields", "int", 100, 100,
              "most header fields in a request (else 431); 0 = unlimited", minimum=0),
    Directive("LimitRequestFieldSize", "limit_request_field_size", "int", 8190, 8190,
              "longest header field in bytes (else 431)", minimum=1),
    Directive("LimitRequestBody", "limit_request_body", "int", 0, 0,
              "largest request body in bytes (else 413); 0 = unlimited", minimum=0),
    Directive("H2MaxSessionStreams", "h2_max_session_streams", "int", 100, 100,
              "HTTP/2 streams open at once on one connection", minimum=1),
    Directive("H2WindowSize", "h2_window_size", "int", 65535, 65535,
              "HTTP/2 flow-control window per stream: request body bytes buffered ahead of "
              "the child", minimum=1),
    Directive("H2MaxHeaderListSize", "h2_max_header_list_size", "int", 65536, 65536,
              "largest decoded HTTP/2 header list in bytes (HPACK bombs end in GOAWAY)",
              minimum=1024),
)

DIRECTIVES_BY_FIELD: dict[str, Directive] = {d.field: d for d in DIRECTIVES}

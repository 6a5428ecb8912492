"""The typed configuration object and the MPM limits Apache derives from it."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field

from asyncmpm.config.directives import DIRECTIVES
from asyncmpm.errors import ConfigError

__all__ = ["MPM", "Backend", "Config", "ListenAddress", "MPMLimits", "RequestReadTimeout"]


class MPM(enum.StrEnum):
    PREFORK = "prefork"
    WORKER = "worker"


class Backend(enum.StrEnum):
    ASYNCIO = "asyncio"
    TRIO = "trio"


@dataclass(frozen=True, slots=True)
class ListenAddress:
    host: str
    port: int
    scheme: str | None = None  # "https" / "http"; None: https exactly when a certificate is set

    @classmethod
    def parse(cls, text: str, directive: str = "Listen", protocol: str | None = None,
              ) -> ListenAddress:
        """Accept ``PORT``, ``HOST:PORT`` and ``[V6]:PORT`` as Apache's Listen does, with its
        optional protocol (``Listen 443 https``), or an ``https://`` / ``http://`` prefix."""
        scheme = protocol.lower() if protocol else None
        for prefix in ("https://", "http://"):
            if text.lower().startswith(prefix):
                scheme, text = prefix[:-3], text[len(prefix):]
        if scheme not in (None, "http", "https"):
            raise ConfigError(directive, f"protocol {protocol!r} is not http or https")
        host, sep, port_text = text.rpartition(":")
        if not sep:
            host, port_text = "0.0.0.0", text
        host = host.strip("[]") or "0.0.0.0"
        try:
            port = int(port_text)
        except ValueError:
            raise ConfigError(directive, f"{text!r} is not HOST:PORT") from None
        if not 0 <= port <= 65535:
            raise ConfigError(directive, f"port {port} is out of range 0-65535")
        return cls(host, port, scheme)

    def __str__(self) -> str:
        address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return f"{self.scheme}://{address}" if self.scheme else address


@dataclass(frozen=True, slots=True)
class RequestReadTimeout:
    """mod_reqtimeout's ``header=20-40,MinRate=500 body=20,MinRate=500`` (its defaults)."""

    header_timeout: float = 20.0
    header_max: float = 40.0
    header_min_rate: float = 500.0
    body_timeout: float = 20.0
    body_max: float = 0.0
    body_min_rate: float = 500.0

    @classmethod
    def parse(cls, text: str) -> RequestReadTimeout:
        """Parse mod_reqtimeout syntax; a stage not named keeps its default."""
        values: dict[str, float] = {}
        for part in text.split():
            stage, sep, rest = part.partition("=")
            stage = stage.lower()
            if not sep or stage not in ("header", "body"):
                raise ConfigError(
                    "RequestReadTimeout", f"expected header=... or body=..., not {part!r}"
                )
            timeout_text, _, rate_text = rest.partition(",")
            try:
                low, _, high = timeout_text.partition("-")
                values[f"{stage}_timeout"] = float(low)
                values[f"{stage}_max"] = float(high) if high else 0.0
                if rate_text:
                    key, _, rate = rate_text.partition("=")
                    if key.lower() != "minrate":
                        raise ValueError(key)
                    values[f"{stage}_min_rate"] = float(rate)
            except ValueError:
                raise ConfigError("RequestReadTimeout", f"cannot parse {part!r}") from None
        return dataclasses.replace(cls(), **values)


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the server needs, validated at the edge (CLI or config file).

    MPM directives left at ``None`` take the chosen MPM's Apache default.
    """

    mpm: MPM = MPM.PREFORK
    backend: Backend = Backend.ASYNCIO
    use_uvloop: bool | None = None  # None: when installed
    listen: tuple[ListenAddress, ...] = (ListenAddress("127.0.0.1", 8080),)
    app: str | None = None  # "module:callable" or "path/file.py[:callable]"; None = demo app
    chdir: str | None = None
    preload: bool = True
    root_path: str = ""
    server_name: str | None = None

    start_servers: int | None = None
    min_spare_servers: int | None = None
    max_spare_servers: int | None = None
    min_spare_threads: int | None = None
    max_spare_threads: int | None = None
    threads_per_child: int | None = None
    thread_limit: int | None = None
    server_limit: int | None = None
    max_request_workers: int | None = None
    max_connections_per_child: int = 0
    listen_backlog: int = 511
    graceful_shutdown_timeout: float = 0.0
    timeout: float = 60.0
    keep_alive: bool = True
    keep_alive_timeout: float = 5.0
    max_keep_alive_requests: int = 100
    limit_request_line: int = 8190
    limit_request_fields: int = 100
    limit_request_field_size: int = 8190
    limit_request_body: int = 0
    request_read_timeout: RequestReadTimeout = field(default_factory=RequestReadTimeout)
    max_queued_requests: int = 1024
    child_boot_timeout: float = 30.0

    http2: bool = True  # h2 over TLS (ALPN), h2c with prior knowledge and by Upgrade
    # Plaintext HTTP/1.1 connections are handed to the slots once a head is read (the event
    # MPM's design, with processes); off: the front loop relays every byte (as TLS and h2).
    handoff: bool = True
    h2_max_session_streams: int = 100
    h2_window_size: int = 65535
    h2_max_header_list_size: int = 65536
    certfile: str | None = None
    keyfile: str | None = None
    ca_certs: str | None = None  # client certificates signed by these are asked for
    verify_client: str = "require"  # with ca_certs: "require" or "optional"
    tls_handshake_timeout: float = 10.0

    status_path: str | None = None
    metrics_path: str | None = None
    status_allow: tuple[str, ...] = ()
    access_log: str | None = None
    access_log_format: str = "combined"  # an Apache LogFormat string or nickname
    error_log: str | None = None  # a file that takes over stderr, as httpd's ErrorLog
    log_format: str = "console"
    log_level: str = "info"
    proctitle: bool = True
    pid_file: str | None = None

    def __post_init__(self) -> None:
        for d in DIRECTIVES:
            value = getattr(self, d.field)
            if d.minimum is not None and value is not None and value < d.minimum:
                raise ConfigError(d.name, f"must be at least {d.minimum:g}, not {value}")
        if self.max_queued_requests < 0:
            raise ConfigError("MaxQueuedRequests", "must be at least 0")
        if self.status_path is not None and not self.status_path.startswith("/"):
            raise ConfigError("StatusPath", "must start with '/'")
        if self.access_log_format != "combined":
            from asyncmpm.logformat import compile_format

            compile_format(self.access_log_format, str)  # raises ConfigError("LogFormat")
        if self.keyfile and not self.certfile:
            raise ConfigError("SSLCertificateKeyFile", "needs SSLCertificateFile (--certfile)")
        if self.ca_certs and not self.certfile:
            raise ConfigError("SSLCACertificateFile", "needs SSLCertificateFile (--certfile)")
        if self.verify_client not in ("require", "optional"):
            raise ConfigError("SSLVerifyClient", "must be require or optional")
        if not self.certfile and any(a.scheme == "https" for a in self.listen):
            raise ConfigError("Listen", "an https listener needs SSLCertificateFile (--certfile)")
        if self.tls_handshake_timeout <= 0:
            raise ConfigError("TLSHandshakeTimeout", "must be more than 0")
        if self.metrics_path is not None and not self.metrics_path.startswith("/"):
            raise ConfigError("MetricsPath", "must start with '/'")
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ConfigError("RootPath", "must start with '/' and not end with '/'")

    def tls(self, address: ListenAddress) -> bool:
        """Whether this listener speaks TLS."""
        return address.scheme == "https" or (address.scheme is None and bool(self.certfile))

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def directive(self, name: str) -> int:
        """The value of an MPM directive, with the MPM default filled in (no adjustment)."""
        value = getattr(self, name)
        if value is None:
            for d in DIRECTIVES:
                if d.field == name:
                    value = d.default(self.mpm.value)
        return int(value) if value is not None else 0

    def limits(self) -> tuple[MPMLimits, list[str]]:
        """Apache's startup adjustments: the effective limits and one warning per change."""
        from asyncmpm.config.adjust import resolve_limits

        return resolve_limits(self)


@dataclass(frozen=True, slots=True)
class MPMLimits:
    """The effective MPM numbers after Apache's startup adjustments.

    Spare thresholds are in the unit the MPM counts idle servers in: processes for prefork,
    threads for worker. ``process_limit`` is the number of process slots in the scoreboard.
    """

    mpm: MPM
    start_servers: int
    min_spare: int
    max_spare: int
    max_request_workers: int
    server_limit: int
    thread_limit: int
    threads_per_child: int
    process_limit: int
    max_connections_per_child: int

    @property
    def total_slots(self) -> int:
        return self.process_limit * self.threads_per_child

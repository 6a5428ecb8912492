"""The command line, generated from the directive table: argv -> :class:`Config`.

Every MPM directive is a flag spelled as Apache's name in kebab case; ``--help`` shows the
Apache name and each MPM's default. A bad value exits with status 2 and names the flag.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from asyncmpm.config.directives import DIRECTIVES, Directive
from asyncmpm.config.model import MPM, Backend, Config, ListenAddress, RequestReadTimeout
from asyncmpm.errors import ConfigError

__all__ = ["Command", "build_parser", "describe_directives", "parse_args", "parse_command"]

SIGNAL_COMMANDS = ("start", "stop", "restart", "graceful", "graceful-stop")
# Config fields whose argparse destination has another name.
_DEST = {"use_uvloop": "uvloop"}

_LEVELS = ("debug", "info", "notice", "warn", "error", "crit", "alert", "emerg")
# Config errors about options that are not directives name these flags.
_EXTRA_FLAGS = {
    "RequestReadTimeout": "--request-read-timeout",
    "MaxQueuedRequests": "--max-queued-requests",
    "StatusPath": "--status-path",
    "MetricsPath": "--metrics-path",
    "LogFormat": "--access-log-format",
    "ErrorLog": "--error-log",
    "RootPath": "--root-path",
    "Listen": "--listen",
    "SSLCertificateFile": "--certfile",
    "SSLCertificateKeyFile": "--keyfile",
    "SSLCACertificateFile": "--ca-certs",
    "SSLVerifyClient": "--verify-client",
    "TLSHandshakeTimeout": "--tls-handshake-timeout",
    "Protocols": "--http2",
}


def _default_text(d: Directive) -> str:
    def show(value: object) -> str:
        if isinstance(value, bool):
            return "On" if value else "Off"
        return f"{value:g}" if isinstance(value, float) else str(value)

    if d.scope == "prefork":
        return f"prefork {show(d.prefork)}"
    if d.scope == "worker":
        return f"worker {show(d.worker)}"
    if d.prefork == d.worker:
        return show(d.prefork)
    return f"prefork {show(d.prefork)}, worker {show(d.worker)}"


def _number(kind: str, minimum: float | None) -> Any:
    def convert(text: str) -> int | float:
        value: int | float
        if kind == "seconds":
            value = float(text[:-2]) / 1000 if text.endswith("ms") else float(text)
        else:
            value = int(text)
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g}, not {text}")
        return value

    convert.__name__ = "int" if kind == "int" else "seconds"
    return convert


def _listen(text: str) -> ListenAddress:
    try:
        return ListenAddress.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _rrt(text: str) -> RequestReadTimeout:
    try:
        return RequestReadTimeout.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncmpm",
        usage="python -m asyncmpm [--mpm prefork|worker] [--listen HOST:PORT]... [options] [APP]",
        description="Serve a WSGI application with Apache httpd's prefork or worker MPM "
        "semantics on an anyio front loop.",
    )
    parser.add_argument(
        "app", metavar="APP", nargs="?", default=None,
        help="module:callable or path/to/file.py[:callable]; the callable defaults to "
        "'application', then 'app'. Omitted: a built-in demo app.",
    )
    parser.add_argument("--mpm", choices=[m.value for m in MPM], default="prefork",
                        help="multi-processing module [default: prefork, as in Apache]")
    parser.add_argument("--backend", choices=[b.value for b in Backend], default="asyncio",
                        help="event loop of the front loop [default: asyncio]")
    parser.add_argument("--uvloop", action=argparse.BooleanOptionalAction, default=None,
                        help="use uvloop with asyncio [default: when installed]")
    parser.add_argument("--listen", action="append", type=_listen, metavar="HOST:PORT",
                        help="Listen: address to serve (repeatable; port 0 = any free port; "
                        "https:// or http:// in front picks TLS or not) "
                        "[default: 127.0.0.1:8080]")
    parser.add_argument("--chdir", metavar="DIR", help="change to DIR before loading the app")
    parser.add_argument("--no-preload", dest="preload", action="store_false",
                        help="import the app in each child instead of once before forking")
    parser.add_argument("--root-path", default="", metavar="PATH",
                        help="SCRIPT_NAME the app is mounted at (e.g. /app)")
    parser.add_argument("--server-name", metavar="NAME",
                        help="ServerName: name used in the status page and for SERVER_NAME "
                        "when a request has no Host")

    group = parser.add_argument_group("Apache MPM directives")
    for d in DIRECTIVES:
        text = f"{d.name}: {d.help} [default: {_default_text(d)}]"
        if d.kind == "bool":
            group.add_argument(d.flag, dest=d.field, action=argparse.BooleanOptionalAction,
                               default=None, help=text)
        else:
            group.add_argument(d.flag, dest=d.field, type=_number(d.kind, d.minimum),
                               default=None, metavar="N" if d.kind == "int" else "SECONDS",
                               help=text)
    group.add_argument(
        "--request-read-timeout", type=_rrt, default=None, metavar="SPEC",
        help="RequestReadTimeout (mod_reqtimeout) [default: header=20-40,MinRate=500 "
        "body=20,MinRate=500]",
    )
    group.add_argument("--max-queued-requests", type=_number("int", 0), default=None,
                       metavar="N", help="requests that may wait for a free slot before 503 "
                       "[default: 1024]")
    group.add_argument("--handoff", action=argparse.BooleanOptionalAction, default=None,
                       help="hand plaintext HTTP/1.1 connections to the slots, which read and "
                       "answer on the client socket themselves (as the event MPM); off: the "
                       "front loop relays every byte [default: on]")

    net = parser.add_argument_group("TLS and HTTP/2")
    net.add_argument("--http2", action=argparse.BooleanOptionalAction, default=True,
                     help="Protocols h2 h2c: HTTP/2 over TLS (ALPN), in cleartext with prior "
                     "knowledge and by Upgrade: h2c [default: on]")
    net.add_argument("--certfile", metavar="FILE",
                     help="SSLCertificateFile: PEM certificate (chain); every --listen without "
                     "http:// then speaks TLS")
    net.add_argument("--keyfile", metavar="FILE",
                     help="SSLCertificateKeyFile: PEM private key [default: in --certfile]")
    net.add_argument("--ca-certs", metavar="FILE",
                     help="SSLCACertificateFile: ask for client certificates signed by these")
    net.add_argument("--verify-client", choices=["require", "optional"], default="require",
                     help="SSLVerifyClient with --ca-certs [default: require]")
    net.add_argument("--tls-handshake-timeout", type=_number("seconds", 0.001), default=10.0,
                     metavar="SECONDS", help="seconds a TLS handshake may take [default: 10]")

    ops = parser.add_argument_group("status and logs")
    ops.add_argument("--status-path", metavar="PATH",
                     help="serve mod_status at PATH (e.g. /server-status) [default: off]")
    ops.add_argument("--metrics-path", metavar="PATH",
                     help="serve Prometheus metrics at PATH (e.g. /metrics), same clients as "
                     "the status page [default: off]")
    ops.add_argument("--status-allow", action="append", type=_cidr, default=None,
                     metavar="CIDR", help="also allow these clients on the status page "
                     "(repeatable) [default: loopback only]")
    ops.add_argument("--access-log", metavar="FILE|-",
                     help="access log in Apache's combined format ('-' = stdout)")
    ops.add_argument("--access-log-format", default="combined", metavar="FORMAT",
                     help="Apache LogFormat string or nickname (common, combined, "
                     "vhost_combined) [default: combined]")
    ops.add_argument("--error-log", metavar="FILE",
                     help="error log file: takes over stderr of the server and its children, "
                     "reopened on every restart [default: stderr]")
    ops.add_argument("--log-format", choices=["console", "json"], default="console",
                     help="error log format [default: console]")
    ops.add_argument("--log-level", choices=_LEVELS, default="info",
                     help="LogLevel, with Apache's level names [default: info]")
    ops.add_argument("--no-proctitle", dest="proctitle", action="store_false",
                     help="do not set process titles")
    ops.add_argument("--pid-file", metavar="PATH",
                     help="PidFile: written once serving, removed on stop; used by -k")
    conf = parser.add_argument_group("configuration file")
    conf.add_argument("--config", "-f", dest="config_file", metavar="FILE",
                      help="read an httpd.conf-style file (MPM sections, Listen, Timeout, "
                      "KeepAlive*, LimitRequest*, CustomLog, PidFile, WSGIScriptAlias, "
                      "Include, IfModule, IfDefine, Define); flags given here override it")
    conf.add_argument("-D", dest="defines", action="append", default=None, metavar="NAME",
                      help="define NAME for <IfDefine NAME> (repeatable)")
    conf.add_argument("--strict-config", action="store_true",
                      help="make unknown directives errors instead of notices")
    ctl = parser.add_argument_group("control (apachectl)")
    ctl.add_argument("-k", dest="signal_command", choices=SIGNAL_COMMANDS,
                     help="start (in the background), stop (TERM), restart (HUP), graceful "
                     "(USR1) or graceful-stop (WINCH) the server named by --pid-file; the "
                     "options are validated first")
    ctl.add_argument("-t", dest="configtest", action="store_true",
                     help="check the configuration, print 'Syntax OK' and exit")
    from asyncmpm.front.context import VERSION

    parser.add_argument("--version", action="version", version=f"asyncmpm {VERSION}")
    return parser


@dataclass(frozen=True, slots=True)
class Command:
    """What the command line asks for besides serving."""

    signal_command: str | None = None
    configtest: bool = False
    notices: tuple[str, ...] = ()  # from the config file: deprecated or ignored directives


def parse_args(argv: Sequence[str] | None = None) -> Config:
    """Parse argv into a Config; exits with status 2 and the flag's name on a bad value."""
    return parse_command(argv)[0]


def parse_command(argv: Sequence[str] | None = None) -> tuple[Config, Command]:
    """Parse argv into a Config and a Command (``-k``, ``-t``)."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    values: dict[str, Any] = {
        "mpm": MPM(ns.mpm),
        "backend": Backend(ns.backend),
        "use_uvloop": ns.uvloop,
        "app": ns.app,
        "chdir": ns.chdir,
        "preload": ns.preload,
        "root_path": ns.root_path,
        "server_name": ns.server_name,
        "status_path": ns.status_path,
        "metrics_path": ns.metrics_path,
        "status_allow": tuple(ns.status_allow or ()),
        "access_log": ns.access_log,
        "access_log_format": ns.access_log_format,
        "error_log": ns.error_log,
        "log_format": ns.log_format,
        "log_level": ns.log_level,
        "proctitle": ns.proctitle,
        "pid_file": ns.pid_file,
        "http2": ns.http2,
        "certfile": ns.certfile,
        "keyfile": ns.keyfile,
        "ca_certs": ns.ca_certs,
        "verify_client": ns.verify_client,
        "tls_handshake_timeout": ns.tls_handshake_timeout,
    }
    if ns.listen:
        values["listen"] = tuple(ns.listen)
    if ns.request_read_timeout is not None:
        values["request_read_timeout"] = ns.request_read_timeout
    if ns.max_queued_requests is not None:
        values["max_queued_requests"] = ns.max_queued_requests
    if ns.handoff is not None:
        values["handoff"] = ns.handoff
    for d in DIRECTIVES:
        value = getattr(ns, d.field)
        if value is not None:
            values[d.field] = value
    if ns.config_file:
        from asyncmpm.config.apache_file import load_config

        # The file is read first; options given on the command line override it.
        explicit = {k: v for k, v in values.items() if v != parser.get_default(_DEST.get(k, k))}
        notices: list[str] = []
        try:
            base = load_config(ns.config_file, Config(mpm=MPM(ns.mpm)),
                               defines=set(ns.defines or ()), strict=ns.strict_config,
                               notices=notices)
        except ConfigError as exc:
            parser.exit(2, f"asyncmpm: error: {exc}\n")
        try:
            return base.replace(**explicit), Command(ns.signal_command, ns.configtest,
                                                     tuple(notices))
        except ConfigError as exc:
            parser.error(str(exc))
    try:
        return Config(**values), Command(ns.signal_command, ns.configtest)
    except ConfigError as exc:
        flag = next((d.flag for d in DIRECTIVES if d.name == exc.directive),
                    _EXTRA_FLAGS.get(exc.directive, exc.directive))
        parser.error(f"argument {flag}: {exc.message}")


def describe_directives() -> str:
    """A Markdown table of every directive, for docs/directives.md."""
    rows = [
        "| Directive | Flag | prefork default | worker default | Meaning |",
        "|---|---|---|---|---|",
    ]
    for d in DIRECTIVES:
        def show(value: object) -> str:
            if value is None:
                return "-"
            if isinstance(value, bool):
                return "On" if value else "Off"
            return f"{value:g}" if isinstance(value, float) else str(value)

        prefork = show(d.prefork) if d.scope != "worker" else "-"
        worker = show(d.worker) if d.scope != "prefork" else "-"
        rows.append(f"| `{d.name}` | `{d.flag}` | {prefork} | {worker} | {d.help} |")
    return "\n".join(rows) + "\n"

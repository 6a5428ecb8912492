"""The servers under test, each configured for the same capacity: 150 requests at once.

A server is described by a `ServerSpec`; `serve()` starts it on a free 127.0.0.1 port in its own
process group, waits until it answers, and stops the whole tree on exit. Apache gets a
self-contained httpd.conf in a temporary directory (no Debian apache2.conf, no env vars), so
every directive that shapes the comparison is visible in the report.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import tls as tlsmod
from benchmarks.processes import clean_env, free_port, spawn, stop

ROOT = Path(__file__).resolve().parents[1]
APP_FILE = Path(__file__).resolve().parent / "app.py"
APACHE_MODULES = Path("/usr/lib/apache2/modules")

# Directives shared by asyncmpm and Apache (Apache's defaults, Timeout as asyncmpm's).
COMMON_HTTPD = {"Timeout": "60", "KeepAlive": "On", "MaxKeepAliveRequests": "100",
                "KeepAliveTimeout": "5", "ListenBacklog": "511"}
MPM_DIRECTIVES: dict[str, dict[str, str]] = {
    "prefork": {"StartServers": "5", "MinSpareServers": "5", "MaxSpareServers": "10",
                "ServerLimit": "150", "MaxRequestWorkers": "150"},
    "worker": {"StartServers": "3", "MinSpareThreads": "75", "MaxSpareThreads": "250",
               "ThreadsPerChild": "25", "ServerLimit": "6", "MaxRequestWorkers": "150"},
}
MPM_DIRECTIVES["event"] = MPM_DIRECTIVES["worker"]
REQTIMEOUT = "header=20-40,MinRate=500 body=20,MinRate=500"
GUNICORN_SYNC_WORKERS = 5  # gunicorn's 2 x cores + 1; 150 sync processes would thrash 2 cores
GRANIAN_WORKERS = os.cpu_count() or 2  # one per core, granian's own advice
# WSGI calls run on a worker's blocking threads: enough of them for 150 requests at once.
GRANIAN_BLOCKING_THREADS = math.ceil(150 / GRANIAN_WORKERS)
TLS_FAMILIES = ("asyncmpm", "apache", "granian")


@dataclass(frozen=True)
class ServerSpec:
    name: str
    family: str  # asyncmpm, apache, gunicorn, waitress, uvicorn, granian
    mpm: str
    loop: str = ""
    capacity: str = ""
    hello_only: bool = False  # a ceiling (uvicorn's raw ASGI hello), not a WSGI peer
    status_path: str | None = None
    workloads: tuple[str, ...] = ()  # the throughput workloads it takes part in; () = all
    relay: bool = False  # asyncmpm with --no-handoff: the front relays every byte (the old path)

    def tls_reason(self) -> str | None:
        """Why this server does not run the TLS workload here, or None."""
        if self.family not in TLS_FAMILIES:
            return "no TLS configuration here (TLS compares asyncmpm, Apache mod_ssl, granian)"
        if self.family == "apache" and not (APACHE_MODULES / "mod_ssl.so").exists():
            return f"{APACHE_MODULES / 'mod_ssl.so'} is missing"
        return tlsmod.available()

    @property
    def is_asyncmpm(self) -> bool:
        return self.family == "asyncmpm"

    def skip_reason(self) -> str | None:
        """Why this server cannot run here, or None."""
        if self.family == "apache":
            if not shutil.which("apache2"):
                return "apache2 is not installed"
            for mod in (f"mod_mpm_{self.mpm}.so", "mod_wsgi.so", "mod_status.so"):
                if not (APACHE_MODULES / mod).exists():
                    return f"{APACHE_MODULES / mod} is missing (libapache2-mod-wsgi-py3?)"
            return None
        module = {"asyncmpm": "asyncmpm", "gunicorn": "gunicorn", "waitress": "waitress",
                  "uvicorn": "uvicorn", "granian": "granian"}[self.family]
        try:
            importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            return f"{module} is not installed"
        if self.loop == "uvloop" or self.family == "uvicorn":
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                importlib.metadata.version("uvloop")
                return None
            return "uvloop is not installed"
        return None


def _asyncmpm(mpm: str, loop: str, *, relay: bool = False) -> ServerSpec:
    cap = "MaxRequestWorkers 150 processes" if mpm == "prefork" else "6 children x 25 threads"
    if relay:
        return ServerSpec(f"asyncmpm-{mpm}-{loop}-relay", "asyncmpm", mpm, loop,
                          f"{cap}, --no-handoff", status_path="/server-status",
                          workloads=("hello-ka", "hello-close", "stream", "upload"), relay=True)
    return ServerSpec(f"asyncmpm-{mpm}-{loop}", "asyncmpm", mpm, loop, cap,
                      status_path="/server-status")


SERVERS: tuple[ServerSpec, ...] = (
    *(_asyncmpm(mpm, loop) for mpm in ("prefork", "worker")
      for loop in ("uvloop", "asyncio", "trio")),
    # The request path before the handoff (every byte relayed by the front), for before/after.
    *(_asyncmpm(mpm, "uvloop", relay=True) for mpm in ("prefork", "worker")),
    ServerSpec("apache-prefork", "apache", "prefork", capacity="MaxRequestWorkers 150 processes",
               status_path="/server-status"),
    ServerSpec("apache-worker", "apache", "worker", capacity="6 children x 25 threads",
               status_path="/server-status"),
    ServerSpec("apache-event", "apache", "event", capacity="6 children x 25 threads",
               status_path="/server-status"),
    ServerSpec("gunicorn-sync", "gunicorn", "sync",
               capacity=f"{GUNICORN_SYNC_WORKERS} processes (2 x cores + 1)"),
    ServerSpec("gunicorn-gthread", "gunicorn", "gthread", capacity="6 workers x 25 threads"),
    ServerSpec("waitress", "waitress", "threads", capacity="1 process x 150 threads"),
    ServerSpec("granian", "granian", "wsgi",
               capacity=f"{GRANIAN_WORKERS} workers (the cores) x {GRANIAN_BLOCKING_THREADS} "
                        "blocking threads",
               workloads=("hello-ka", "hello-close", "hello-tls", "stream", "upload",
                          "blocking")),
    ServerSpec("uvicorn-asgi", "uvicorn", "asgi", "uvloop", "1 process, raw ASGI hello",
               hello_only=True),
)


def by_name(name: str) -> ServerSpec:
    for spec in SERVERS:
        if spec.name == name:
            return spec
    raise KeyError(name)


def _kebab(directive: str) -> str:
    out = "".join(f"-{c.lower()}" if c.isupper() else c for c in directive).lstrip("-")
    return "--" + out


def asyncmpm_command(spec: ServerSpec, port: int,
                     tls: tlsmod.TlsFiles | None = None) -> list[str]:
    loop = {"uvloop": ["--backend", "asyncio", "--uvloop"],
            "asyncio": ["--backend", "asyncio", "--no-uvloop"],
            "trio": ["--backend", "trio", "--no-uvloop"]}[spec.loop]
    listen = (["--listen", f"https://127.0.0.1:{port}", "--certfile", str(tls.cert),
               "--keyfile", str(tls.key)] if tls else ["--listen", f"127.0.0.1:{port}"])
    command = [sys.executable, "-m", "asyncmpm", "--mpm", spec.mpm, *loop,
               *(["--no-handoff"] if spec.relay else []),
               *listen, "--status-path", "/server-status",
               "--log-level", "warn", "--request-read-timeout", REQTIMEOUT]
    directives = {**COMMON_HTTPD, **MPM_DIRECTIVES[spec.mpm]}
    directives.pop("KeepAlive")
    for name, value in directives.items():
        command += [_kebab(name), value]
    return [*command, f"{APP_FILE}:application"]


def apache_config(spec: ServerSpec, port: int, workdir: Path,
                  tls: tlsmod.TlsFiles | None = None) -> str:
    mods = [(f"mpm_{spec.mpm}_module", f"mod_mpm_{spec.mpm}.so"),
            ("authz_core_module", "mod_authz_core.so"), ("status_module", "mod_status.so"),
            ("reqtimeout_module", "mod_reqtimeout.so"), ("wsgi_module", "mod_wsgi.so")]
    has_h2 = (APACHE_MODULES / "mod_http2.so").exists()
    if has_h2:
        mods.append(("http2_module", "mod_http2.so"))
    ssl: list[str] = []
    if tls:  # Debian's ssl.conf defaults: a shared-memory session cache, no cipher tuning
        mods += [("socache_shmcb_module", "mod_socache_shmcb.so"), ("ssl_module", "mod_ssl.so")]
        ssl = ["SSLEngine on", f"SSLCertificateFile {tls.cert}",
               f"SSLCertificateKeyFile {tls.key}",
               f"SSLSessionCache shmcb:{workdir}/ssl_scache(512000)", "SSLSessionCacheTimeout 300"]
    directives = {**COMMON_HTTPD, **MPM_DIRECTIVES[spec.mpm]}
    lines = [
        f"ServerRoot {workdir}", f"DefaultRuntimeDir {workdir}", f"PidFile {workdir}/httpd.pid",
        f"Mutex file:{workdir} default", f"Listen 127.0.0.1:{port}", "ServerName 127.0.0.1",
        "User www-data", "Group www-data", f"ErrorLog {workdir}/error.log", "LogLevel warn",
        *(f"LoadModule {name} {APACHE_MODULES / so}" for name, so in mods),
        *(f"{k} {v}" for k, v in directives.items()),
        f"RequestReadTimeout {REQTIMEOUT}",
        *([f"Protocols {'h2' if tls else 'h2c'} http/1.1"] if has_h2 else []), *ssl,
        f"WSGIScriptAlias / {workdir}/app.py", "WSGIApplicationGroup %{GLOBAL}",
        f"<Directory {workdir}>", "  Require all granted", "</Directory>",
        "<Location /server-status>", "  SetHandler server-status", "</Location>",
    ]
    return "\n".join(lines) + "\n"


def granian_command(port: int, tls: tlsmod.TlsFiles | None = None) -> list[str]:
    ssl = (["--ssl-certificate", str(tls.cert), "--ssl-keyfile", str(tls.key)] if tls else [])
    return [sys.executable, "-m", "granian", "--interface", "wsgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(GRANIAN_WORKERS),
            "--blocking-threads", str(GRANIAN_BLOCKING_THREADS), "--backlog", "511",
            "--no-ws", "--log-level", "warning", "--no-access-log", *ssl,
            "benchmarks.app:application"]


def command_for(spec: ServerSpec, port: int, workdir: Path,
                tls: tlsmod.TlsFiles | None = None) -> tuple[list[str], str | None]:
    """The command line (and for Apache the config file text) that starts `spec`."""
    host = f"127.0.0.1:{port}"
    if spec.family == "asyncmpm":
        return asyncmpm_command(spec, port, tls), None
    if spec.family == "granian":
        return granian_command(port, tls), None
    if spec.family == "apache":
        conf = apache_config(spec, port, workdir, tls)
        return [shutil.which("apache2") or "/usr/sbin/apache2", "-DFOREGROUND", "-f",
                str(workdir / "httpd.conf")], conf
    if tls:
        raise ValueError(f"{spec.name}: {spec.tls_reason()}")
    if spec.family == "gunicorn":
        workers = (["--workers", str(GUNICORN_SYNC_WORKERS)] if spec.mpm == "sync"
                   else ["--workers", "6", "--threads", "25"])
        return [sys.executable, "-m", "gunicorn", "--bind", host, "--worker-class", spec.mpm,
                *workers, "--keep-alive", "5", "--timeout", "60", "--backlog", "511",
                "--preload", "--log-level", "warning", "benchmarks.app:application"], None
    if spec.family == "waitress":
        return [sys.executable, "-m", "waitress", f"--listen={host}", "--threads=150",
                "--connection-limit=1000", "--channel-timeout=60", "--backlog=511",
                "benchmarks.app:application"], None
    return [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--lifespan", "off",
            "--log-level", "warning", "--timeout-keep-alive", "5",
            "benchmarks.app:asgi_hello"], None


def _run_text(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip()


def version_of(spec: ServerSpec) -> str:
    if spec.family == "apache":
        apache = _run_text(["apache2", "-v"]).splitlines()[:1]
        wsgi = _run_text(["dpkg-query", "-W", "-f", "${Version}",
                          "libapache2-mod-wsgi-py3"])
        return f"{apache[0] if apache else 'Apache'}; mod_wsgi {wsgi or '?'} (embedded)"
    if spec.family == "asyncmpm":
        sha = _run_text(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
        dirty = _run_text(["git", "-C", str(ROOT), "status", "--porcelain", "--", "asyncmpm"])
        return (f"asyncmpm {importlib.metadata.version('asyncmpm')} (git {sha or '?'}"
                f"{' + uncommitted changes' if dirty else ''}), Python {sys.version.split()[0]}")
    extra = ""
    if spec.family == "uvicorn":
        extra = f", uvloop {importlib.metadata.version('uvloop')}"
    return f"{spec.family} {importlib.metadata.version(spec.family)}{extra}"


@dataclass
class RunningServer:
    spec: ServerSpec
    port: int
    proc: subprocess.Popen[bytes]
    command: list[str]
    config: str | None
    log: Path
    started_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    tls: tlsmod.TlsFiles | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, path: str = "/hello") -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"


def _answers(url: str) -> bool:
    context = tlsmod.client_context() if url.startswith("https:") else None
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


@contextlib.contextmanager
def serve(spec: ServerSpec, log_dir: Path, *, timeout: float = 30.0,
          tls: bool = False) -> Iterator[RunningServer]:
    """Start `spec` on a free port; yields once GET /hello answers 200; stops the tree on exit.

    With `tls`, it serves HTTPS only, with a self-signed certificate made in its temp dir."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # Apache's children run as www-data and read app.py from here
        shutil.copy(APP_FILE, workdir / "app.py")
        port = free_port()
        files = tlsmod.make_cert(workdir) if tls else None
        command, config = command_for(spec, port, workdir, files)
        if config is not None:
            (workdir / "httpd.conf").write_text(config)
        log = log_dir / f"{spec.name}{'-tls' if tls else ''}.log"
        env = clean_env({"PYTHONPATH": str(ROOT)}) if spec.family != "apache" else clean_env()
        started = time.monotonic()
        proc = spawn(command, log, cwd=ROOT, env=env)
        server = RunningServer(spec, port, proc, command, config, log, tls=files)
        try:
            while not _answers(server.url()):
                if proc.poll() is not None or time.monotonic() - started > timeout:
                    error_log = workdir / "error.log"
                    tail = error_log.read_text()[-2000:] if error_log.exists() else ""
                    raise RuntimeError(f"{spec.name} did not start (exit {proc.poll()}); "
                                       f"{log.read_text()[-2000:]}{tail}")
                time.sleep(0.1)
            server.started_s = time.monotonic() - started
            yield server
        finally:
            stop(proc)
            error_log = workdir / "error.log"
            if error_log.exists():
                with log.open("a") as out:
                    out.write(error_log.read_text())

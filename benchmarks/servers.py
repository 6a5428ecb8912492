"""The servers under test, each configured for the same capacity: 150 requests at once.

A server is described by a `ServerSpec`; `serve()` starts it on a free 127.0.0.1 port in its own
process group, waits until it answers, and stops the whole tree on exit. Apache gets a
self-contained httpd.conf in a temporary directory (no Debian apache2.conf, no env vars), so
every directive that shapes the comparison is visible in the report.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

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


@dataclass(frozen=True)
class ServerSpec:
    name: str
    family: str  # asyncmpm, apache, gunicorn, waitress, uvicorn
    mpm: str
    loop: str = ""
    capacity: str = ""
    hello_only: bool = False  # a ceiling (uvicorn's raw ASGI hello), not a WSGI peer
    status_path: str | None = None

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
                  "uvicorn": "uvicorn"}[self.family]
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


def _asyncmpm(mpm: str, loop: str) -> ServerSpec:
    cap = "MaxRequestWorkers 150 processes" if mpm == "prefork" else "6 children x 25 threads"
    return ServerSpec(f"asyncmpm-{mpm}-{loop}", "asyncmpm", mpm, loop, cap,
                      status_path="/server-status")


SERVERS: tuple[ServerSpec, ...] = (
    *(_asyncmpm(mpm, loop) for mpm in ("prefork", "worker")
      for loop in ("uvloop", "asyncio", "trio")),
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


def asyncmpm_command(spec: ServerSpec, port: int) -> list[str]:
    loop = {"uvloop": ["--backend", "asyncio", "--uvloop"],
            "asyncio": ["--backend", "asyncio", "--no-uvloop"],
            "trio": ["--backend", "trio", "--no-uvloop"]}[spec.loop]
    command = [sys.executable, "-m", "asyncmpm", "--mpm", spec.mpm, *loop,
               "--listen", f"127.0.0.1:{port}", "--status-path", "/server-status",
               "--log-level", "warn", "--request-read-timeout", REQTIMEOUT]
    directives = {**COMMON_HTTPD, **MPM_DIRECTIVES[spec.mpm]}
    directives.pop("KeepAlive")
    for name, value in directives.items():
        command += [_kebab(name), value]
    return [*command, f"{APP_FILE}:application"]


def apache_config(spec: ServerSpec, port: int, workdir: Path) -> str:
    mods = [(f"mpm_{spec.mpm}_module", f"mod_mpm_{spec.mpm}.so"),
            ("authz_core_module", "mod_authz_core.so"), ("status_module", "mod_status.so"),
            ("reqtimeout_module", "mod_reqtimeout.so"), ("wsgi_module", "mod_wsgi.so")]
    has_h2 = (APACHE_MODULES / "mod_http2.so").exists()
    if has_h2:
        mods.append(("http2_module", "mod_http2.so"))
    directives = {**COMMON_HTTPD, **MPM_DIRECTIVES[spec.mpm]}
    lines = [
        f"ServerRoot {workdir}", f"DefaultRuntimeDir {workdir}", f"PidFile {workdir}/httpd.pid",
        f"Mutex file:{workdir} default", f"Listen 127.0.0.1:{port}", "ServerName 127.0.0.1",
        "User www-data", "Group www-data", f"ErrorLog {workdir}/error.log", "LogLevel warn",
        *(f"LoadModule {name} {APACHE_MODULES / so}" for name, so in mods),
        *(f"{k} {v}" for k, v in directives.items()),
        f"RequestReadTimeout {REQTIMEOUT}",
        *(["Protocols h2c http/1.1"] if has_h2 else []),
        f"WSGIScriptAlias / {workdir}/app.py", "WSGIApplicationGroup %{GLOBAL}",
        f"<Directory {workdir}>", "  Require all granted", "</Directory>",
        "<Location /server-status>", "  SetHandler server-status", "</Location>",
    ]
    return "\n".join(lines) + "\n"


def command_for(spec: ServerSpec, port: int, workdir: Path) -> tuple[list[str], str | None]:
    """The command line (and for Apache the config file text) that starts `spec`."""
    host = f"127.0.0.1:{port}"
    if spec.family == "asyncmpm":
        return asyncmpm_command(spec, port), None
    if spec.family == "apache":
        conf = apache_config(spec, port, workdir)
        return [shutil.which("apache2") or "/usr/sbin/apache2", "-DFOREGROUND", "-f",
                str(workdir / "httpd.conf")], conf
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

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url(self, path: str = "/hello") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == 200
    except OSError:
        return False


@contextlib.contextmanager
def serve(spec: ServerSpec, log_dir: Path, *, timeout: float = 30.0) -> Iterator[RunningServer]:
    """Start `spec` on a free port; yields once GET /hello answers 200; stops the tree on exit."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-") as tmp:
        workdir = Path(tmp)
        workdir.chmod(0o755)  # Apache's children run as www-data and read app.py from here
        shutil.copy(APP_FILE, workdir / "app.py")
        port = free_port()
        command, config = command_for(spec, port, workdir)
        if config is not None:
            (workdir / "httpd.conf").write_text(config)
        log = log_dir / f"{spec.name}.log"
        env = clean_env({"PYTHONPATH": str(ROOT)}) if spec.family != "apache" else clean_env()
        started = time.monotonic()
        proc = spawn(command, log, cwd=ROOT, env=env)
        server = RunningServer(spec, port, proc, command, config, log)
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

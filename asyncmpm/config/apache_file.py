"""httpd.conf syntax: read an administrator's Apache configuration into a :class:`Config`.

Theory of operation
-------------------
:func:`read_directives` turns a file into a flat list of :class:`Line` (directive, arguments,
file, line number), evaluating what httpd evaluates while reading: comments, backslash line
continuation, quoted arguments, ``Define``/``${VAR}``, ``<IfModule [!]name>``,
``<IfDefine [!]NAME>``, and ``Include``/``IncludeOptional`` with globs relative to
``ServerRoot``. Other sections (``<Directory>``, ``<VirtualHost>``…) are read for the
directives asyncmpm understands; their scope is not modelled. :func:`apply` then maps each
directive onto the Config, and every error names the directive and ``file:line``.

``<IfModule mpm_prefork_module>`` is true when the chosen MPM is prefork (likewise worker;
event's blocks are never read). The modules asyncmpm implements itself (status, log_config,
reqtimeout, wsgi, mime, …) count as loaded.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncmpm.config.directives import DIRECTIVES
from asyncmpm.config.model import MPM, Config, ListenAddress, RequestReadTimeout
from asyncmpm.errors import ConfigError
from asyncmpm.logformat import compile_format

__all__ = ["Line", "apply", "load_config", "read_directives"]

_LOADED_MODULES = {
    "status_module", "mod_status.c", "log_config_module", "mod_log_config.c",
    "reqtimeout_module", "mod_reqtimeout.c", "wsgi_module", "mod_wsgi.c", "mpm_common",
}
_MPM_MODULES = {
    MPM.PREFORK: {"mpm_prefork_module", "prefork.c", "mod_mpm_prefork.c"},
    MPM.WORKER: {"mpm_worker_module", "worker.c", "mod_mpm_worker.c"},
}
_VAR = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
_ALIASES = {"maxclients": ("MaxRequestWorkers", "AH00545"),
            "maxrequestsperchild": ("MaxConnectionsPerChild", "AH00324")}


@dataclass(frozen=True, slots=True)
class Line:
    name: str
    args: tuple[str, ...]
    path: str
    line: int

    def error(self, message: str) -> ConfigError:
        return ConfigError(self.name, message, path=self.path, line=self.line)


def _logical_lines(path: Path) -> list[tuple[int, str]]:
    """Lines with continuations joined, comments and blanks dropped."""
    out: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8", errors="replace")
                                 .splitlines(), 1):
        text = raw.rstrip()
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        text = (pending + text).strip()
        pending = ""
        if text and not text.startswith("#"):
            out.append((start, text))
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def read_directives(path: str | Path, *, mpm: MPM, defines: set[str] | None = None,
                    server_root: str | None = None,
                    notices: list[str] | None = None) -> list[Line]:
    """Every directive that applies, in file order, with sections evaluated."""
    state = _Reader(mpm, set(defines or ()), server_root,
                    notices if notices is not None else [])
    state.read(Path(path))
    return state.lines


class _Reader:
    def __init__(self, mpm: MPM, defines: set[str], server_root: str | None,
                 notices: list[str]) -> None:
        self.notices = notices
        self.mpm = mpm
        self.defines = defines
        self.variables: dict[str, str] = {}
        self.server_root = server_root
        self.lines: list[Line] = []
        self.depth = 0

    def expand(self, text: str, where: Line) -> str:
        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in self.variables:
                return self.variables[name]
            if name in os.environ:
                return os.environ[name]
            # httpd warns (AH00111) and keeps the text as written.
            self.notices.append(f"AH00111: Config variable ${{{name}}} is not defined "
                                f"({where.path}:{where.line})")
            return match.group(0)

        return _VAR.sub(value, text)

    def read(self, path: Path) -> None:
        self.depth += 1
        if self.depth > 32:
            raise ConfigError("Include", "includes nest more than 32 deep (a loop?)",
                              path=str(path), line=1)
        try:
            lines = _logical_lines(path)
        except OSError as exc:
            raise ConfigError("Include", f"cannot read {path}: {exc.strerror}") from None
        # A stack of (section name, active?) for the sections we are inside.
        stack: list[tuple[str, bool, int]] = []
        for number, text in lines:
            where = Line("", (), str(path), number)
            active = all(a for _, a, _ in stack)
            if text.startswith("</"):
                name = text[2:].rstrip(">").strip().lower()
                if not stack or stack[-1][0] != name:
                    raise ConfigError(f"</{name}>", "closes a section that is not open",
                                      path=str(path), line=number)
                stack.pop()
                continue
            if text.startswith("<"):
                if not text.endswith(">"):
                    raise ConfigError(text.split()[0], "section header must end with '>'",
                                      path=str(path), line=number)
                head = text[1:-1].strip()
                name, _, arg = head.partition(" ")
                lname = name.lower()
                arg = self.expand(arg.strip().strip('"'), where) if active else arg
                if lname == "ifmodule":
                    on = self._module_loaded(arg)
                elif lname == "ifdefine":
                    negate = arg.startswith("!")
                    on = (arg.lstrip("!") in self.defines) != negate
                else:
                    on = True
                if active and lname == "location":
                    self._location = arg
                stack.append((lname, on, number))
                continue
            if not active:
                continue
            try:
                parts = shlex.split(self.expand(text, Line(text.split()[0], (), str(path),
                                                            number)), posix=True)
            except ValueError as exc:
                raise ConfigError(text.split()[0], f"cannot parse arguments: {exc}",
                                  path=str(path), line=number) from None
            line = Line(parts[0], tuple(parts[1:]), str(path), number)
            lname = line.name.lower()
            if lname == "define":
                if not line.args:
                    raise line.error("needs a name")
                self.defines.add(line.args[0])
                if len(line.args) > 1:
                    self.variables[line.args[0]] = line.args[1]
            elif lname == "undefine":
                for name in line.args:
                    self.defines.discard(name)
                    self.variables.pop(name, None)
            elif lname == "serverroot":
                if len(line.args) != 1:
                    raise line.error("takes one directory")
                self.server_root = line.args[0]
                self.lines.append(line)
            elif lname in ("include", "includeoptional"):
                self._include(line, optional=lname == "includeoptional", base=path.parent)
            elif lname == "sethandler" and stack and stack[-1][0] == "location" and \
                    line.args and line.args[0].lower() == "server-status":
                self.lines.append(Line("StatusPath", (self._location,), line.path, line.line))
            else:
                self.lines.append(line)
        if stack:
            name, _, number = stack[-1]
            raise ConfigError(f"<{name}>", "section is never closed", path=str(path),
                              line=number)
        self.depth -= 1

    _location = "/"

    def _module_loaded(self, arg: str) -> bool:
        negate = arg.startswith("!")
        name = arg.lstrip("!").strip()
        loaded = name in _LOADED_MODULES or name in _MPM_MODULES.get(self.mpm, set())
        return loaded != negate

    def _include(self, line: Line, *, optional: bool, base: Path) -> None:
        if len(line.args) != 1:
            raise line.error("takes one path or wildcard")
        pattern = line.args[0]
        root = Path(self.server_root) if self.server_root else base
        full = pattern if os.path.isabs(pattern) else str(root / pattern)
        matches = sorted(glob.glob(full))
        if not matches and not optional and not glob.has_magic(full):
            raise line.error(f"file not found: {full}")
        for match in matches:
            if os.path.isfile(match):
                self.read(Path(match))


# ------------------------------------------------------------------------------- applying
_BY_NAME = {d.name.lower(): d for d in DIRECTIVES}
_TLS_FILES = {"sslcertificatefile": "certfile", "sslcertificatekeyfile": "keyfile",
              "sslcacertificatefile": "ca_certs"}
_IGNORED_QUIETLY = {"sslengine", "loadmodule", "user", "group", "mutex", "defaultruntimedir",
                    "extendedstatus", "hostnamelookups", "errorlogformat",
                    "servertokens", "serversignature", "traceenable", "accessfilename",
                    "adddefaultcharset", "typesconfig", "addtype", "documentroot"}


def _number(line: Line, kind: str) -> int | float:
    if len(line.args) != 1:
        raise line.error("takes one argument")
    text = line.args[0]
    try:
        if kind == "seconds":
            return float(text[:-2]) / 1000 if text.lower().endswith("ms") else float(text)
        return int(text)
    except ValueError:
        raise line.error(f"{text!r} is not a number") from None


def _flag(line: Line) -> bool:
    if len(line.args) != 1 or line.args[0].lower() not in ("on", "off"):
        raise line.error("must be On or Off")
    return line.args[0].lower() == "on"


def apply(config: Config, lines: list[Line], *, strict: bool = False,
          notices: list[str] | None = None) -> Config:
    """Apply directives to ``config``; unknown ones are noted once (errors when ``strict``)."""
    notes = notices if notices is not None else []
    values: dict[str, Any] = {}
    listen: list[ListenAddress] = []
    seen_unknown: set[str] = set()
    formats: dict[str, str] = {}  # LogFormat nicknames
    root: str | None = None  # ServerRoot: where relative file names start, as in httpd

    def file_name(arg: str) -> str:
        return arg if root is None or os.path.isabs(arg) else os.path.join(root, arg)

    for line in lines:
        lname = line.name.lower()
        if lname in _ALIASES:
            real, code = _ALIASES[lname]
            notes.append(f"{code}: {line.name} is deprecated, use {real} instead "
                         f"({line.path}:{line.line})")
            line = dataclasses.replace(line, name=real)
            lname = real.lower()
        directive = _BY_NAME.get(lname)
        try:
            if directive is not None:
                if directive.kind == "bool":
                    values[directive.field] = _flag(line)
                else:
                    values[directive.field] = _number(line, directive.kind)
            elif lname == "listen":
                if not line.args or len(line.args) > 2:
                    raise line.error("takes an address and an optional protocol")
                address = ListenAddress.parse(
                    line.args[0], protocol=line.args[1] if len(line.args) == 2 else None)
                if address.scheme is None:  # httpd: https on port 443, else http
                    address = dataclasses.replace(
                        address, scheme="https" if address.port == 443 else "http")
                listen.append(address)
            elif lname == "protocols":
                names = {a.lower() for a in line.args}
                if "http/1.1" not in names:
                    raise line.error("asyncmpm always speaks http/1.1; list it")
                values["http2"] = bool(names & {"h2", "h2c"})
            elif lname in _TLS_FILES:
                if len(line.args) != 1:
                    raise line.error("takes one file name")
                values[_TLS_FILES[lname]] = file_name(line.args[0])
            elif lname == "sslverifyclient":
                mode = line.args[0].lower() if len(line.args) == 1 else ""
                if mode not in ("require", "optional", "none"):
                    raise line.error("must be none, optional or require")
                if mode != "none":
                    values["verify_client"] = mode
            elif lname == "servername":
                values["server_name"] = line.args[0].split(":")[0] if line.args else None
            elif lname == "serverroot":
                root = line.args[0] if line.args else None
            elif lname == "pidfile":
                values["pid_file"] = file_name(line.args[0])
            elif lname == "errorlog":
                if len(line.args) != 1:
                    raise line.error("takes one file name")
                target = line.args[0]
                if target.startswith("|") or target.lower().startswith("syslog"):
                    notes.append(f"ErrorLog {target} ({line.path}:{line.line}): piped logs and "
                                 "syslog are not implemented; the error log stays on stderr")
                else:
                    values["error_log"] = file_name(target)
            elif lname == "loglevel":
                values["log_level"] = line.args[0].lower().split(":")[-1] if line.args else "info"
            elif lname == "logformat":
                if not line.args or len(line.args) > 2:
                    raise line.error("takes a format and an optional nickname")
                compile_format(line.args[0], str)
                if len(line.args) == 2:
                    formats[line.args[1]] = line.args[0]
                else:
                    values["access_log_format"] = line.args[0]
            elif lname == "customlog":
                if len(line.args) < 1:
                    raise line.error("needs a file")
                if line.args[0].startswith("|"):
                    notes.append(f"CustomLog {line.args[0]} ({line.path}:{line.line}): piped "
                                 "logs are not implemented; the access log is not written")
                    continue
                values["access_log"] = ("-" if line.args[0] == "/dev/stdout"
                                        else file_name(line.args[0]))
                if len(line.args) > 1:
                    values["access_log_format"] = formats.get(line.args[1], line.args[1])
            elif lname == "requestreadtimeout":
                values["request_read_timeout"] = RequestReadTimeout.parse(" ".join(line.args))
            elif lname == "statuspath":
                values["status_path"] = line.args[0]
            elif lname == "wsgiscriptalias":
                if len(line.args) != 2:
                    raise line.error("takes a URL path and a script file")
                mount, script = line.args
                values["root_path"] = "" if mount == "/" else mount.rstrip("/")
                values["app"] = script
            elif lname in _IGNORED_QUIETLY:
                continue
            elif lname not in seen_unknown:
                seen_unknown.add(lname)
                if strict:
                    raise line.error("is not a directive asyncmpm implements")
                notes.append(f"{line.name} ({line.path}:{line.line}) is not implemented by "
                             "asyncmpm and is ignored")
        except ConfigError as exc:
            if exc.path is None:
                raise line.error(exc.message) from None
            raise
    if listen:
        values["listen"] = tuple(listen)
    try:
        return config.replace(**values)
    except ConfigError as exc:
        origin = next((ln for ln in reversed(lines) if ln.name.lower() == exc.directive.lower()),
                      None)
        if origin is not None:
            raise origin.error(exc.message) from None
        raise


def load_config(path: str | Path, base: Config | None = None, *, defines: set[str] | None = None,
                strict: bool = False, notices: list[str] | None = None) -> Config:
    """Read an httpd.conf-style file on top of ``base`` (its MPM picks the IfModule blocks)."""
    config = base or Config()
    lines = read_directives(path, mpm=config.mpm, defines=defines, notices=notices)
    return apply(config, lines, strict=strict, notices=notices)

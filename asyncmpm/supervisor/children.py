"""Effects: the zygote process, child records, and the signals that reach children."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog

from asyncmpm.errors import AppLoadError, ChildBootError
from asyncmpm.lifecycle import IllegalTransition
from asyncmpm.supervisor.child_state import (
    DOOMED_PHASES,
    RETIRING_PHASES,
    ChildEvent,
    ChildPhase,
    ZygoteEvent,
    ZygotePhase,
    child_transition,
    zygote_transition,
)

if TYPE_CHECKING:
    from asyncmpm.dispatch.slot import SlotHandle

__all__ = ["Child", "ZygoteClient", "claim_subreaper", "describe_exit", "reap_orphan",
           "release_subreaper", "signal_child"]

# The zygote is a fresh interpreter: it must find this package even when it is not installed.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_log = structlog.get_logger("asyncmpm.supervisor")
_SERVING = ChildPhase.SERVING  # read per request: a global costs less than an enum member


@dataclass(eq=False)
class Child:
    """One child process as the supervisor sees it. Its lifecycle is
    :mod:`asyncmpm.supervisor.child_state`: every change goes through :meth:`fire`."""

    index: int
    generation: int
    threads: int
    thread_limit: int = 0  # ThreadLimit: the stride of this child's shared slot records
    pid: int = 0
    slots: list[SlotHandle] = field(default_factory=list)
    phase: ChildPhase = ChildPhase.STARTING
    why: str = ""  # why it was told to stop: the lifecycle log says it
    abandoned: bool = False  # a slot was given up mid-request (it may still be running)
    served: int = 0
    conn_limit: int = 0  # this child's MaxConnectionsPerChild (policy.connection_limit)
    replaces: int = 0  # pid of the retiring child this one was started for
    replaced: bool = False  # a replacement was started for this (retiring) child
    busy: int = 0
    ready: int = 0
    spawned_at: float = 0.0
    ready_at: float = 0.0
    zygote: ZygoteClient | None = None
    pidfd: int = -1  # from the zygote at fork: signals always reach this process, never a reuse
    forked: anyio.Event = field(default_factory=anyio.Event)
    exited: anyio.Event = field(default_factory=anyio.Event)
    exit_code: int | None = None

    def fire(self, event: ChildEvent) -> ChildPhase:
        """Apply ``event`` (see the table in :mod:`~asyncmpm.supervisor.child_state`); the
        new phase. An illegal one is our bug: it is logged, and the child, whose state is
        unknown now, is given no more work and killed (the policy replaces it)."""
        try:
            self.phase = child_transition(self.phase, event)
        except IllegalTransition as exc:
            _log.error(f"internal error: {exc}; killing the child",
                       slot=self.index, pid=self.pid, gen=self.generation,
                       phase=exc.state.name, child_event=exc.event.name)
            if self.phase is not ChildPhase.EXITED:
                self.phase = ChildPhase.DOOMED
                self.why = "illegal child transition"
                signal_child(self, signal.SIGKILL)
        return self.phase

    @property
    def accepting(self) -> bool:
        """Its slots may be handed requests."""
        return self.phase is _SERVING

    @property
    def retiring(self) -> bool:
        """Graceful: it finishes its in-flight requests, then exits."""
        return self.phase in RETIRING_PHASES

    @property
    def doomed(self) -> bool:
        """It is killed once its other threads are done (hung, abandoned, broken)."""
        return self.phase in DOOMED_PHASES


def describe_exit(code: int) -> str:
    """Exit code as ``waitstatus_to_exitcode`` gives it (negative = killed by that signal)."""
    if code >= 0:
        return f"exit status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = str(-code)
    return f"exit signal {name} ({-code})"


def signal_child(child: Child, sig: int) -> None:
    """Send ``sig`` to a child that has not been reaped, whoever its parent is by now."""
    if child.pidfd >= 0 and child.exit_code is None:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(child.pidfd, sig)


async def reap_orphan(child: Child) -> int | None:
    """Wait for a child whose zygote has died (it is ours now: we are its subreaper) to exit,
    and reap it. Only its own pid is waited for: ``waitpid(-1)`` would steal the status of
    processes the event loop waits for. None if it was reaped elsewhere (by its zygote,
    which died before it could report the exit)."""
    while True:
        await anyio.wait_readable(child.pidfd)
        try:
            pid, status = os.waitpid(child.pid, os.WNOHANG)  # noqa: ASYNC222 (never blocks)
        except ChildProcessError:
            return None
        if pid:
            return os.waitstatus_to_exitcode(status)
        await anyio.sleep(0.01)  # exited, but still being handed over to us


_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_subreaper_claims = 0
_subreaper_before = False


def _prctl(option: int, arg: Any) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def claim_subreaper() -> None:
    """Make this process the child subreaper, so children whose zygote dies are reparented
    here (to be reaped and signalled by us) instead of to init. Counted, and undone by the
    last :func:`release_subreaper`: an embedding program gets its flag back."""
    global _subreaper_claims, _subreaper_before
    if _subreaper_claims == 0:
        current = ctypes.c_int(0)
        _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(current))
        _subreaper_before = bool(current.value)
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _subreaper_claims += 1


def release_subreaper() -> None:
    global _subreaper_claims
    _subreaper_claims -= 1
    if _subreaper_claims == 0 and not _subreaper_before:
        _prctl(_PR_SET_CHILD_SUBREAPER, 0)


class ZygoteClient:
    """Start the zygote, ask it to fork children, hear about their exits."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.process: anyio.abc.Process | None = None
        self.sock: socket.socket | None = None
        self.phase = ZygotePhase.RUNNING

    def fire(self, event: ZygoteEvent) -> None:
        self.phase = zygote_transition(self.phase, event)

    @property
    def closing(self) -> bool:
        """aclose() asked it to exit: its end is no surprise."""
        return self.phase in (ZygotePhase.CLOSING, ZygotePhase.CLOSED)

    @property
    def gone(self) -> bool:
        """Its control socket hung up: it cannot fork any more."""
        return self.phase in (ZygotePhase.GONE, ZygotePhase.CLOSED)

    async def start(self) -> None:
        """Start the zygote and wait until it has imported the app (or failed to)."""
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(os.environ)
        paths = [_PACKAGE_ROOT, *(p for p in sys.path if p)]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        try:
            self.process = await anyio.open_process(
                [sys.executable, "-m", "asyncmpm.child.zygote", str(child.fileno()),
                 json.dumps(self.settings)],
                pass_fds=[child.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=None,
                stderr=None,
                env=env,
            )
        finally:
            child.close()
        parent.setblocking(False)
        self.sock = parent
        with anyio.fail_after(self.settings.get("boot_timeout", 60)):
            first = await self.receive()
        if first is None:
            raise ChildBootError("the zygote exited before it was ready")
        if first["op"] == "error":
            raise AppLoadError(first["message"])

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    async def wait_exit(self) -> int:
        """The zygote's exit code (negative: killed by that signal), once it is reaped;
        from then on, every child it left is reparented to us."""
        assert self.process is not None
        return await self.process.wait()

    async def receive(self) -> dict[str, Any] | None:
        """The next message from the zygote; None once it has gone (or been closed here:
        an old generation's reader may still be looping when its zygote is let go).
        A "spawned" message carries the child's pidfd as ``pidfd``."""
        while True:
            sock = self.sock
            if sock is None:
                self.fire(ZygoteEvent.HANGUP)
                return None
            try:
                data, fds, _, _ = socket.recv_fds(sock, 65536, 1)
            except BlockingIOError:
                try:
                    await anyio.wait_readable(sock)
                except (OSError, anyio.ClosedResourceError):
                    self.fire(ZygoteEvent.HANGUP)
                    return None
                continue
            except OSError:
                self.fire(ZygoteEvent.HANGUP)
                return None
            if not data:
                for fd in fds:
                    os.close(fd)
                self.fire(ZygoteEvent.HANGUP)
                return None
            message: dict[str, Any] = json.loads(data)
            if fds:
                message["pidfd"] = fds[0]
            return message

    async def _send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        sock = self.sock
        if sock is None:
            raise ChildBootError("the zygote is not running")
        payload = json.dumps(message).encode()
        while True:
            try:
                if fds:
                    socket.send_fds(sock, [payload], fds)
                else:
                    sock.send(payload)
                return
            except BlockingIOError:
                await anyio.wait_writable(sock)
            except OSError as exc:
                raise ChildBootError(f"the zygote is gone: {exc}") from exc

    async def spawn(self, slot: int, generation: int, fds: list[int]) -> None:
        await self._send({"op": "spawn", "slot": slot, "gen": generation}, fds)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Ask the zygote to stop its children and exit; force it after ``timeout``."""
        self.fire(ZygoteEvent.CLOSE)
        with anyio.CancelScope(shield=True):
            if self.sock is not None:
                with contextlib.suppress(ChildBootError):
                    await self._send({"op": "exit"})
            if self.process is not None:
                with anyio.move_on_after(timeout):
                    await self.process.wait()
                if self.process.returncode is None:
                    self.process.kill()
                    await self.process.wait()
                await self.process.aclose()
            if self.sock is not None:
                sock, self.sock = self.sock, None
                anyio.notify_closing(sock)  # wakes a reader waiting on it, on every backend
                sock.close()

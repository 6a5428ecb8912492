"""``Server``: the task group that owns the listeners, the connections and the supervisor.

Structured concurrency throughout: :meth:`Server.serve` owns every task it starts, returns
only when all of them (and every child process) are gone, and reports readiness through
``task_status`` with the bound addresses, so ``await tg.start(server.serve)`` is all an
embedding program needs. Stopping is graceful: stop accepting, close idle keep-alive
connections, let in-flight requests finish (bounded by GracefulShutdownTimeout, 0 = wait),
then stop the children.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import structlog

from asyncmpm.child.app_loader import spec_for
from asyncmpm.config.model import MPM, Config, ListenAddress
from asyncmpm.dispatch.dispatcher import Dispatcher
from asyncmpm.errors import AsyncMPMError, ConfigError
from asyncmpm.front.connection import Connection
from asyncmpm.front.context import VERSION, FrontContext
from asyncmpm.front.handoff import HandoffFront
from asyncmpm.logs import ErrorLog
from asyncmpm.streams import ByteStream, accept, accept_raw, open_tls, wrap_socket
from asyncmpm.supervisor.scoreboard import Scoreboard, ScoreboardSnapshot
from asyncmpm.supervisor.supervisor import Supervisor
from asyncmpm.tls import make_ssl_context

__all__ = ["Server"]

_ACCEPT_RETRY = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_ACCEPT_BACKOFF = 0.1  # seconds between accept attempts while out of resources (as trio's)


class Server:
    """An asyncmpm server for one WSGI app.

    ``app`` is a module-level WSGI callable or an import spec (``"module:callable"``,
    ``"path/app.py:app"``); children import it by name, so it must be importable.
    Directives may be passed as keywords (``max_request_workers=50``) on top of ``config``.
    """

    def __init__(
        self,
        app: str | Callable[..., Iterable[bytes]] | None = None,
        config: Config | None = None,
        *,
        reload: Callable[[], Config] | None = None,
        **directives: Any,
    ) -> None:
        config = config or Config()
        if directives:
            config = config.replace(**directives)
        self.config = config
        self._reload = reload  # re-reads the configuration on restarts (CLI: argv + file)
        self.app_spec = spec_for(app) if app is not None else config.app
        self.limits, self.warnings = config.limits()
        self.scoreboard = Scoreboard(
            config.mpm.value, self.limits.server_limit, self.limits.threads_per_child
        )
        self.dispatcher = Dispatcher(config.max_queued_requests)
        self.supervisor = Supervisor(
            config, self.limits, self.scoreboard, self.dispatcher, self.app_spec
        )
        self.addresses: list[tuple[str, int]] = []
        self.log = structlog.get_logger("asyncmpm.server")
        self._ctx: FrontContext | None = None
        self._error_log: ErrorLog | None = None
        self._ssl_context: ssl.SSLContext | None = None
        self._listener_addresses: list[ListenAddress] = []
        self._stop: anyio.Event | None = None
        self._stop_requested = False
        self._connections: set[Connection] = set()
        self._handoff: HandoffFront | None = None
        self._drained: anyio.Event | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._accept_scope: anyio.CancelScope | None = None

    # ------------------------------------------------------------------ public API
    def stop(self) -> None:
        """Begin a graceful stop (safe to call from the event loop's thread, even before
        serving has started: the server then stops as soon as it is up)."""
        self._stop_requested = True
        if self._stop is not None:
            self._stop.set()

    async def graceful_restart(self) -> bool:
        """Re-read the configuration and re-import the app into a new generation of
        children, losing no request (SIGUSR1). Returns False, with the old generation and
        configuration still serving, if either fails."""
        return await self._restart(hard=False)

    async def restart(self) -> bool:
        """httpd's SIGHUP: a new generation at once; old children are terminated."""
        return await self._restart(hard=True)

    async def _restart(self, *, hard: bool) -> bool:
        old = self.config
        if self._reload is not None:
            try:
                self._apply_config(self._reload())
            except (AsyncMPMError, SystemExit) as exc:
                self.log.error("AH00526: configuration error on restart; the running "
                               "generation keeps serving", error=str(exc))
                return False
        self._reopen_logs()
        ok = await self.supervisor.graceful_restart(hard=hard)
        if not ok and self.config is not old:
            self._apply_config(old)
        return ok

    def _apply_config(self, new: Config) -> None:
        """Adopt a re-read configuration, keeping what httpd keeps across restarts."""
        old = self.config
        if new.listen != old.listen or new.mpm != old.mpm:
            self.log.warning("Listen and the MPM change only with a stop and start; "
                             "keeping the running ones")
        limits, warnings = new.limits()
        for warning in warnings:
            self.log.warning(warning)
        if (limits.server_limit, limits.thread_limit) != (self.limits.server_limit,
                                                          self.limits.thread_limit):
            self.log.warning("AH00179: changing ServerLimit or ThreadLimit during a restart "
                             "is not allowed; the running values are kept")
            limits = dataclasses.replace(
                limits, server_limit=self.limits.server_limit,
                thread_limit=self.limits.thread_limit,
                process_limit=min(limits.process_limit, self.limits.server_limit),
                threads_per_child=min(limits.threads_per_child, self.limits.threads_per_child))
        new = new.replace(listen=old.listen, mpm=old.mpm)
        self.config = new
        self.limits = limits
        self.dispatcher.max_queued = new.max_queued_requests
        self.supervisor.reconfigure(new, limits, new.app if self._reload else self.app_spec)
        if self._ctx is not None:
            self._ctx.apply(new, limits)

    def _reopen_logs(self) -> None:
        """Every restart reopens the log files, so logrotate works as it does with httpd."""
        if self._ctx is not None and self._ctx.access_log is not None:
            self._ctx.access_log.reopen()
        wanted = self.config.error_log
        try:
            if self._error_log is not None and self._error_log.path == wanted:
                self._error_log.reopen()
            else:
                self._close_error_log()  # stderr is the original one again
                self._error_log = ErrorLog(wanted) if wanted else None
        except ConfigError as exc:
            self.log.error("the error log could not be reopened; logging where it was",
                           error=str(exc))

    def status(self) -> ScoreboardSnapshot:
        """The scoreboard as mod_status sees it."""
        self.scoreboard.queued_requests = self.dispatcher.queued
        if self._ctx is not None:
            self._ctx.sync_handoffs()
        return self.scoreboard.snapshot()

    async def wait_status(
        self, predicate: Callable[[ScoreboardSnapshot], bool], timeout: float | None = None
    ) -> ScoreboardSnapshot:
        """Wait until the scoreboard satisfies ``predicate``; raises TimeoutError after
        ``timeout`` seconds. For embedding programs and tests: no polling needed."""
        with anyio.fail_after(timeout):
            while True:
                snapshot = self.status()
                if predicate(snapshot):
                    return snapshot
                await self.scoreboard.wait_changed()

    async def __aenter__(self) -> Server:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        try:
            await self._tg.start(self.serve)
        except BaseException as exc:
            await self._tg.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self.stop()
        assert self._tg is not None
        try:
            return await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            self._tg = None

    # ------------------------------------------------------------------ serving
    async def serve(
        self,
        *,
        task_status: anyio.abc.TaskStatus[list[tuple[str, int]]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until :meth:`stop`; ``task_status.started`` gets the bound addresses."""
        try:
            await self._serve(task_status)
        except BaseExceptionGroup as group:
            own = _first_own_error(group)
            if own is not None:
                raise own from None
            raise

    async def _serve(self, task_status: anyio.abc.TaskStatus[list[tuple[str, int]]]) -> None:
        config = self.config
        self._stop = anyio.Event()
        if self._stop_requested:
            self._stop.set()
        self._drained = anyio.Event()
        self._accept_scope = anyio.CancelScope()
        self._error_log = ErrorLog(config.error_log) if config.error_log else None
        for warning in self.warnings:
            self.log.warning(warning)
        try:
            self._ssl_context = make_ssl_context(config)  # a bad certificate stops us here
            listeners = await self._bind()
        except BaseException:
            self._close_error_log()
            raise
        try:
            self._ctx = FrontContext(
                config, self.limits, self.scoreboard, self.dispatcher, self.supervisor,
                _backend_name(),
            )
            async with anyio.create_task_group() as tg:
                await tg.start(self.supervisor.run)
                async with anyio.create_task_group() as conn_tg:
                    self._handoff = self._handoff_front(conn_tg)
                    for listener, address in zip(listeners, self._listener_addresses,
                                                 strict=True):
                        conn_tg.start_soon(self._accept_loop, listener, conn_tg,
                                           config.tls(address))
                    self.log.info(
                        f"{'AH00163' if config.mpm is MPM.PREFORK else 'AH00292'}: "
                        f"asyncmpm/{VERSION} ({config.mpm.value}) configured -- "
                        "resuming normal operations",
                        listen=[f"{h}:{p}" for h, p in self.addresses],
                        backend=self._ctx.backend,
                        app=self.app_spec or "demo",
                    )
                    self._write_pid_file()
                    task_status.started(list(self.addresses))
                    try:
                        await self._stop.wait()
                        stop_began = time.monotonic()
                        await self._drain(listeners)
                    finally:
                        self._close_handoff_front()
                    conn_tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True):
                    killed, left = await self.supervisor.stop_children()
                tg.cancel_scope.cancel()
            took = f"{time.monotonic() - stop_began:.1f}s"
            if left:
                self.log.error("shutdown complete, but some children did not exit",
                               took=took, killed=killed, left=left)
            elif killed:
                self.log.warning(f"shutdown complete: every child has exited, {len(killed)} "
                                 "only when killed with SIGKILL", took=took, killed=killed)
            else:
                self.log.info("shutdown complete: every child has exited", took=took)
        finally:
            self._close_handoff_front()
            self._remove_pid_file()
            with anyio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()
            if self._ctx is not None and self._ctx.access_log is not None:
                self._ctx.access_log.close()
            self._close_error_log()

    def _close_handoff_front(self) -> None:
        if self._handoff is not None:
            self._handoff.close()
            self._handoff = None

    def _handoff_front(self, tg: anyio.abc.TaskGroup) -> HandoffFront | None:
        """The callback-driven front for plaintext HTTP/1.1 (on trio, one task drives it)."""
        assert self._ctx is not None
        if not self.config.handoff:
            return None

        def to_task(sock: socket.socket, remote: tuple[Any, ...], local: tuple[Any, ...],
                    initial: bytes) -> None:
            tg.start_soon(self._handle_raw, sock, remote, local, initial)

        loop = None
        if self._ctx.backend != "trio":
            import asyncio

            loop = asyncio.get_running_loop()
        front = HandoffFront(self._ctx, loop, to_task, self._check_drained, tg.start_soon)
        if loop is None:
            tg.start_soon(front.drive)
        return front

    def _close_error_log(self) -> None:
        if self._error_log is not None:
            self._error_log.close()
            self._error_log = None

    def _write_pid_file(self) -> None:
        path = self.config.pid_file
        if path:
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, path)  # -k never reads a half-written file

    def _remove_pid_file(self) -> None:
        path = self.config.pid_file
        if path:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    async def _bind(self) -> list[anyio.abc.SocketListener]:
        listeners: list[anyio.abc.SocketListener] = []
        try:
            for address in self.config.listen:
                multi = await anyio.create_tcp_listener(
                    local_host=address.host,
                    local_port=address.port,
                    backlog=self.config.listen_backlog,
                )
                for listener in multi.listeners:
                    assert isinstance(listener, anyio.abc.SocketListener)
                    listeners.append(listener)
                    self._listener_addresses.append(address)
                    bound = listener.extra(anyio.abc.SocketAttribute.local_address)
                    assert isinstance(bound, tuple)
                    self.addresses.append((str(bound[0]), int(bound[1])))
        except BaseException:
            for listener in listeners:
                await listener.aclose()
            raise
        return listeners

    async def _accept_loop(
        self, listener: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup, tls: bool
    ) -> None:
        assert self._accept_scope is not None
        with self._accept_scope:
            front = self._handoff
            if front is None or tls:
                await self._accept_forever(listener, tg, tls)
                return
            # Plaintext: the callback front accepts, a batch per wake-up of its epoll set.
            raw = listener.extra(anyio.abc.SocketAttribute.raw_socket)
            front.listen(raw)
            try:
                await anyio.sleep_forever()
            finally:
                front.unlisten(raw)

    async def _accept_forever(
        self, listener: anyio.abc.SocketListener, tg: anyio.abc.TaskGroup, tls: bool
    ) -> None:
        backing_off_since: float | None = None
        while True:
            try:
                if tls:
                    raw, remote, local = await accept_raw(listener)
                    tg.start_soon(self._handle_tls, raw, remote, local)
                else:
                    stream, remote, local = await accept(listener)
                    tg.start_soon(self._handle, stream, remote, local)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            except OSError as exc:
                if exc.errno not in _ACCEPT_RETRY:
                    self.log.warning("accept failed", error=str(exc))
                    continue
                # Out of descriptors or memory: back off instead of spinning or giving up
                # (connections wait in the kernel backlog meanwhile). Logged once per episode,
                # not ten times a second.
                if backing_off_since is None:
                    backing_off_since = time.monotonic()
                    self.log.error("AH00050: accept failed, backing off and retrying",
                                   error=str(exc), errno=errno.errorcode.get(exc.errno or 0))
                await anyio.sleep(_ACCEPT_BACKOFF)
                continue
            if backing_off_since is not None:
                self.log.info("accepting connections again",
                              after=f"{time.monotonic() - backing_off_since:.1f}s")
                backing_off_since = None

    async def _handle_tls(self, raw: socket.socket | anyio.abc.SocketStream,
                          remote: tuple[str, int], local: tuple[str, int]) -> None:
        """The handshake runs in the connection's own task: a slow or failed one costs
        only this connection."""
        assert self._ssl_context is not None
        try:
            stream = await open_tls(raw, self._ssl_context, self.config.tls_handshake_timeout)
        except (TimeoutError, OSError, ssl.SSLError, anyio.BrokenResourceError,
                anyio.EndOfStream) as exc:
            self.log.debug("TLS handshake failed", client=remote[0], error=repr(exc))
            return
        await self._handle(stream, remote, local)

    async def _handle_raw(self, sock: socket.socket, remote: tuple[str, int],
                          local: tuple[str, int], initial: bytes) -> None:
        """A connection the callback front passes on (status page, HTTP/2), with the bytes
        it already read."""
        await self._handle(await wrap_socket(sock), remote, local, initial)

    async def _handle(self, stream: ByteStream, remote: tuple[str, int],
                      local: tuple[str, int], initial: bytes = b"") -> None:
        assert self._ctx is not None
        conn = Connection(stream, self._ctx, remote, local, initial)
        self._connections.add(conn)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)
            self._check_drained()

    def _check_drained(self) -> None:
        if (self._ctx is not None and self._ctx.stopping and not self._connections
                and not self._handoff and self._drained is not None):
            self._drained.set()

    async def _drain(self, listeners: list[anyio.abc.SocketListener]) -> None:
        """Graceful stop: no new connections, idle ones closed, in-flight ones finish."""
        assert self._ctx is not None
        assert self._drained is not None
        self._ctx.stopping = True
        assert self._accept_scope is not None
        self._accept_scope.cancel()  # stop accepting before the sockets close under it
        if self._handoff is not None:
            self._handoff.stop_accepting()
        for listener in listeners:
            await listener.aclose()
        # Slots serving handed-off connections close them after the current request.
        self.supervisor.records.close_all()
        for conn in list(self._connections):
            conn.close_if_idle()
        if self._handoff is not None:
            self._handoff.stop_idle()
        if not self._connections and not self._handoff:
            return
        timeout = self.config.graceful_shutdown_timeout or math.inf
        with anyio.move_on_after(timeout) as scope:
            await self._drained.wait()
        if scope.cancelled_caught:
            self.log.warning(
                "GracefulShutdownTimeout expired, closing connections",
                remaining=len(self._connections),
            )


def _backend_name() -> str:
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "trio"
    return "asyncio+uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def _first_own_error(group: BaseExceptionGroup[Any]) -> AsyncMPMError | None:
    for exc in group.exceptions:
        if isinstance(exc, AsyncMPMError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            found = _first_own_error(exc)
            if found is not None:
                return found
    return None

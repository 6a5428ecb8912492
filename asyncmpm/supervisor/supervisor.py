"""The supervisor carries out what the policy decides; it decides nothing itself.

Once a second (httpd's ``ap_wait_or_timeout``) it takes a scoreboard snapshot, asks
:func:`asyncmpm.supervisor.policy.maintain` what to do, and does it: spawn children through the
zygote, retire one gracefully. It also reacts to events the policy cannot see coming: a child
exits (slots marked dead, exit cause logged, a boot failure stops the server), a request hangs
past ``Timeout`` (the child is killed and the policy refills the slot), a child reaches
``MaxConnectionsPerChild`` (it is retired after its in-flight requests, and replaced at once),
the zygote dies (its children keep serving and are reaped here, a new zygote is started).

Generations are carried from the start (generation 0), so graceful restarts can add one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import signal
import socket
import time
from typing import Any

import anyio
import anyio.abc
import structlog

from asyncmpm._version import SERVER_HEADER
from asyncmpm.config.model import Config, MPMLimits
from asyncmpm.dispatch.dispatcher import Dispatcher
from asyncmpm.dispatch.slot import SlotClosed, SlotHandle
from asyncmpm.dispatch.slot_state import SlotEvent, SlotPhase
from asyncmpm.errors import ChildBootError
from asyncmpm.ipc.frames import FrameType, encode
from asyncmpm.ipc.slot_records import RETURN, SlotRecords
from asyncmpm.protocol.http1 import HTTP1Limits
from asyncmpm.streams import wrap_socket
from asyncmpm.supervisor.actions import Action, Log, Retire, Spawn
from asyncmpm.supervisor.child_state import (
    DOOMED_PHASES,
    RETIRING_PHASES,
    ChildEvent,
    ChildPhase,
)
from asyncmpm.supervisor.children import (
    Child,
    ZygoteClient,
    claim_subreaper,
    describe_exit,
    reap_orphan,
    release_subreaper,
    signal_child,
)
from asyncmpm.supervisor.policy import (
    PolicyMemo,
    after_graceful_restart,
    connection_limit,
    maintain,
    replacement,
    startup,
)
from asyncmpm.supervisor.scoreboard import Scoreboard, SlotState

__all__ = ["Supervisor", "direct_settings"]

_STOP = encode(FrameType.STOP)
APEXIT_CHILDFATAL = 15
_QUIET_SIGNALS = {-signal.SIGTERM, -signal.SIGKILL, -signal.SIGHUP, -signal.SIGUSR1}
STOP_GRACE = 3.0  # seconds a child has to exit after STOP before it is killed
_KILL_WAIT = 5.0  # seconds to wait for SIGKILLed children to be reaped
_MCPC = "MaxConnectionsPerChild"
# Per request (slot_done): an enum member read costs a descriptor call on Python 3.11.
_DONE, _DISCARD, _IDLE = SlotEvent.DONE, SlotEvent.DISCARD, SlotPhase.IDLE


def http1_limits(config: Config) -> HTTP1Limits:
    """The HTTP/1.1 limits of a configuration: one object for the front and the slots."""
    return HTTP1Limits(
        request_line=config.limit_request_line,
        fields=config.limit_request_fields,
        field_size=config.limit_request_field_size,
        body=config.limit_request_body,
        keep_alive=config.keep_alive and config.keep_alive_timeout > 0,
        max_keep_alive_requests=config.max_keep_alive_requests,
        keep_alive_timeout=config.keep_alive_timeout,
        server_header=SERVER_HEADER.encode(),
    )


def direct_settings(config: Config, limits: MPMLimits) -> dict[str, Any] | None:
    """What a slot needs to serve handed-off HTTP/1.1 connections itself (None: handoff
    off). Plain JSON: it travels to the zygote on its command line."""
    if not config.handoff:
        return None
    rrt = config.request_read_timeout
    http1 = dataclasses.asdict(http1_limits(config))
    http1["server_header"] = SERVER_HEADER  # JSON has no bytes
    return {
        "http1": http1,
        "timeout": config.timeout,
        "body_timeout": rrt.body_timeout,
        "body_max": rrt.body_max,
        "body_min_rate": rrt.body_min_rate,
        "server_name": config.server_name or "",
        "front_paths": [path for path in (config.status_path, config.metrics_path) if path],
        "thread_limit": limits.thread_limit,
        "record_slots": limits.process_limit * limits.thread_limit,
        "access_log": config.access_log,
        "access_log_json": config.log_format == "json",
        "access_log_format": config.access_log_format,
    }


class Supervisor:
    def __init__(
        self,
        config: Config,
        limits: MPMLimits,
        scoreboard: Scoreboard,
        dispatcher: Dispatcher,
        app_spec: str | None,
    ) -> None:
        self.config = config
        self.limits = limits
        self.scoreboard = scoreboard
        self.dispatcher = dispatcher
        self.children: dict[int, Child] = {}
        self.by_pid: dict[int, Child] = {}
        self.memo = PolicyMemo()
        self.generation = 0
        self.reaped_since_tick = False
        self.log = structlog.get_logger("asyncmpm.supervisor")
        self.settings: dict[str, Any] = {
                "app": app_spec,
                "chdir": config.chdir,
                "preload": config.preload,
                "mpm": config.mpm.value,
                "root_path": config.root_path,
                "log_format": config.log_format,
                "log_level": config.log_level,
                "proctitle": config.proctitle,
                "boot_timeout": config.child_boot_timeout,
                "direct": direct_settings(config, limits),
            }
        # What each slot is doing, written by the slots themselves (see ipc.slot_records).
        self.records = SlotRecords(limits.process_limit * limits.thread_limit)
        self.zygote = ZygoteClient(self.settings)
        self._old_zygotes: set[ZygoteClient] = set()
        self.restarts = 0
        self.spawns = 0
        self.crashes = 0
        self.retirements = 0
        self.timeouts = 0
        self.spawn_to_ready: list[float] = []
        self.stopping = False
        self._serving = False  # the first children were ready: a zygote death is survivable
        self._signal_respawns = 0
        self._tg: anyio.abc.TaskGroup | None = None
        self._fatal: BaseException | None = None
        self._fatal_event = anyio.Event()

    # ------------------------------------------------------------------ lifecycle
    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
                  ) -> None:
        """Start the zygote and StartServers children, then keep the spare servers right.

        Returns ``started`` once the first children are ready to serve. Raises
        :class:`ChildBootError` (or :class:`AppLoadError`) when children cannot boot.
        """
        claim_subreaper()  # children outlive a dying zygote: they are reparented to us
        try:
            await self.zygote.start()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._zygote_messages, self.zygote)
                first = startup(self.scoreboard.snapshot(), self.limits, self.limits.start_servers)
                if first is not None:
                    await self._execute([first])
                with anyio.fail_after(self.config.child_boot_timeout):
                    while not self._fatal and not any(c.ready for c in self.children.values()):
                        await self._wait_progress()
                self._raise_fatal()
                task_status.started()
                self._serving = True
                tg.start_soon(self._maintenance)
                await self._fatal_event.wait()
                self._raise_fatal()
        finally:
            self._tg = None
            for old in list(self._old_zygotes):
                await old.aclose()
            await self.zygote.aclose()
            with anyio.CancelScope(shield=True):
                await self._reap_leftovers()
                # Children that exited during the shutdown were not reported to a reader any
                # more: close what is left of their channels here.
                for child in {*self.children.values(), *self.by_pid.values()}:
                    for slot in child.slots:
                        await slot.aclose()
            release_subreaper()

    async def _reap_leftovers(self) -> None:
        """After every zygote has gone: children not seen to exit (orphans of a dead zygote
        when the stop was cut short; children a zygote reaped at its exit without a report)
        are killed and reaped here, so none is left running or as a zombie."""
        for child in {*self.children.values(), *self.by_pid.values()}:
            if child.pidfd < 0:
                continue
            if child.exit_code is None and child.pid:
                signal_child(child, signal.SIGKILL)
                with anyio.move_on_after(_KILL_WAIT):
                    await reap_orphan(child)
            os.close(child.pidfd)
            child.pidfd = -1

    async def _wait_progress(self) -> None:
        with anyio.move_on_after(0.05):
            await self._fatal_event.wait()

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    def fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._fatal_event.set()

    async def _maintenance(self) -> None:
        # httpd's ap_wait_or_timeout returns at once when it reaped a child, and the loop goes
        # round again without maintenance; maintenance follows every wait that slept its full
        # second. Reaps happen in other tasks here, so they never postpone a tick: skipping the
        # tick instead would let one death per second starve the pool to nothing.
        while True:
            await anyio.sleep(1.0)
            if not self.reaped_since_tick:  # a quiet tick ends a run of AH10393 respawns
                self._signal_respawns = 0
            self.reaped_since_tick = False
            if self.stopping or self.zygote.gone:  # no zygote to fork from: wait for the new one
                continue
            actions, self.memo = maintain(self.scoreboard.snapshot(), self.limits, self.memo)
            await self._execute(actions)

    async def _execute(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Spawn):
                for index in action.slots:
                    if not await self.try_spawn(index):
                        break  # httpd stops at the first failed fork
            elif isinstance(action, Retire):
                child = self.children.get(action.slot)
                if child is not None:
                    self.retire(child, "idle")
            elif isinstance(action, Log):
                getattr(self.log, action.level if action.level != "notice" else "info")(
                    f"{action.code}: {action.message}"
                )

    # ------------------------------------------------------------------ spawning
    async def try_spawn(self, index: int, replaces: int = 0) -> bool:
        """Spawn, logging a failure instead of raising: out of fds or memory, or a zygote
        that died under the request, are all survivable (maintenance tries again)."""
        if self.stopping or self.zygote.gone:  # a new zygote is on its way
            return False
        if index in self.children:
            return True  # filled meanwhile (a replacement or a respawn got there first)
        try:
            await self.spawn(index, replaces)
        except (OSError, TimeoutError, ChildBootError) as exc:  # the last: the zygote died
            self.log.error("AH00159: fork: Unable to fork new process", slot=index,
                           error=str(exc))
            return False
        return True

    async def spawn(self, index: int, replaces: int = 0) -> None:
        tpc = self.limits.threads_per_child
        child = Child(index=index, generation=self.generation, threads=tpc,
                      thread_limit=self.limits.thread_limit,
                      spawned_at=time.monotonic(), replaces=replaces,
                      conn_limit=connection_limit(self.limits.max_connections_per_child,
                                                  random.random()))
        self.children[index] = child
        proc = self.scoreboard.processes[index]
        proc.generation = self.generation
        proc.quiescing = False
        for thread, ws in enumerate(proc.threads):
            ws.state = SlotState.STARTING
            self.records.reset(index * self.limits.thread_limit + thread)
        ours: list[socket.socket] = []
        theirs: list[socket.socket] = []
        try:
            for _ in range(tpc):
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                ours.append(a)
                theirs.append(b)
            for thread, sock in enumerate(ours):
                fd = sock.fileno()
                child.slots.append(SlotHandle(child, thread, await wrap_socket(sock), fd,
                                              on_illegal=self.slot_corrupted))
            child.zygote = self.zygote
            await self.zygote.spawn(index, self.generation,
                                    [*(s.fileno() for s in theirs), self.records.fd])
            with anyio.fail_after(self.config.child_boot_timeout):
                await child.forked.wait()  # like fork(): the pid is known when we return
            if not child.pid:
                raise ChildBootError("the zygote died before it forked the child")
        except BaseException:
            for ws in proc.threads:
                ws.state = SlotState.DEAD
            del self.children[index]
            for s in ours[len(child.slots):]:
                s.close()
            for slot in child.slots:
                await slot.aclose()
            self.scoreboard.changed()
            raise
        finally:
            for s in theirs:
                s.close()
        self.spawns += 1
        if self.stopping:  # forked while the server stops: it goes as soon as it is ready
            self.retire(child, "shutdown")
        assert self._tg is not None
        for slot in child.slots:
            self._tg.start_soon(self._await_ready, slot)

    async def _await_ready(self, slot: SlotHandle) -> None:
        child = slot.child
        try:
            with anyio.fail_after(self.config.child_boot_timeout):
                kind, payload = await slot.recv()
        except (SlotClosed, TimeoutError) as exc:
            if not slot.closed or slot.broken:
                self.log.error("child did not become ready", slot=child.index, pid=child.pid,
                               why=str(exc) or "timeout")
                await self.kill(child, signal.SIGKILL)
            return
        if kind == FrameType.BOOT_ERROR:
            message = payload.decode("utf-8", "replace")
            if child.generation == 0:
                self.fail(ChildBootError(f"child could not load the application:\n{message}"))
            else:  # a restart's new code is broken: the previous generation keeps serving
                self.log.error("child of the new generation could not load the application",
                               slot=child.index, gen=child.generation, traceback=message)
            return
        if kind != FrameType.READY or child.exit_code is not None:
            return  # a retiring child is still marked ready below, then told to STOP
        _, _, tid_text = payload.decode().partition(",")
        slot.fire(SlotEvent.READY)
        ws = self.scoreboard.processes[child.index].threads[slot.thread]
        ws.state = SlotState.READY
        ws.tid = int(tid_text or 0)
        ws.last_used = time.time()
        child.ready += 1
        self.scoreboard.changed()
        if child.ready == 1:
            child.ready_at = time.monotonic()
            self.spawn_to_ready.append(child.ready_at - child.spawned_at)
            del self.spawn_to_ready[:-100]
        if child.fire(ChildEvent.READY) is ChildPhase.SERVING:
            self.dispatcher.offer(slot)
        else:
            await self._stop_slot(slot)

    # ------------------------------------------------------------------ zygote events
    async def _zygote_messages(self, zygote: ZygoteClient) -> None:
        while True:
            message = await zygote.receive()
            if message is None:
                await self._zygote_gone(zygote)
                return
            op = message["op"]
            if op == "spawned":
                child = self.children.get(message["slot"])
                pidfd: int = message.get("pidfd", -1)
                if (child is None or child.generation != message["gen"] or child.pid
                        or child.zygote is not zygote):
                    # Forked for a spawn given up meanwhile (boot timeout): its channels are
                    # closed, so it exits at once; keep it on record to be reaped.
                    stray = Child(index=message["slot"], generation=message["gen"], threads=0,
                                  pid=message["pid"], pidfd=pidfd, zygote=zygote,
                                  why="spawn given up")
                    stray.fire(ChildEvent.FORKED)
                    stray.fire(ChildEvent.RETIRE)
                    self.by_pid[stray.pid] = stray
                else:
                    child.pid = message["pid"]
                    child.pidfd = pidfd
                    child.fire(ChildEvent.FORKED)
                    child.forked.set()
                    self.by_pid[child.pid] = child
                    self.scoreboard.processes[child.index].pid = child.pid
                    extra = {"replaces": child.replaces} if child.replaces else {}
                    self.log.info("child started", pid=child.pid, slot=child.index,
                                  gen=child.generation, **extra)
            elif op == "exited":
                await self._on_exit(message["pid"], message["code"])

    async def _zygote_gone(self, zygote: ZygoteClient) -> None:
        """The zygote's control socket hung up. Its children keep serving: once it is reaped
        they are ours (we are their subreaper), and each is reaped here when it exits. The
        current generation gets a new zygote; children it forks join the same pool."""
        code = await zygote.wait_exit()  # from here on its children are reparented to us
        for child in list(self.children.values()):
            if child.zygote is zygote and not child.pid:
                child.forked.set()  # spawn() sees no pid: the fork never happened
        orphans = [c for c in {*self.children.values(), *self.by_pid.values()}
                   if c.zygote is zygote and c.pid and c.exit_code is None]
        if self._tg is not None:
            for child in orphans:
                self._tg.start_soon(self._reap_orphan, child)
        if zygote.closing:
            return
        if not self._serving:
            self.fail(ChildBootError(f"the zygote exited unexpectedly ({describe_exit(code)})"))
            return
        current = zygote is self.zygote and not self.stopping
        self.log.error(f"zygote pid {zygote.pid} {describe_exit(code)}; {len(orphans)} "
                       "children keep serving" + (", starting a new zygote" if current else ""),
                       pid=zygote.pid, gen=self.generation, children=[c.pid for c in orphans])
        if current:
            await self._replace_zygote(zygote)

    async def _replace_zygote(self, dead: ZygoteClient) -> None:
        """Start a zygote for the current generation in place of one that died. If it cannot
        start (the app no longer imports), try again every 10 s (httpd's wait after a failed
        fork); the children already running keep serving meanwhile."""
        while self.zygote is dead and not self.stopping:
            new = ZygoteClient(self.settings)
            try:
                await new.start()
            except Exception as exc:
                await new.aclose()
                self.log.error("a new zygote could not be started; retrying in 10 s",
                               error=str(exc))
                await anyio.sleep(10)
                continue
            if self.zygote is not dead or self.stopping or self._tg is None:
                await new.aclose()  # a restart or the stop got there first
                return
            self.zygote = new
            self._tg.start_soon(self._zygote_messages, new)
            self._old_zygotes.add(dead)
            self._tg.start_soon(self._close_zygote_when_idle, dead, self.generation)
            self.log.info(f"zygote pid {new.pid} started, replacing pid {dead.pid}",
                          pid=new.pid, gen=self.generation)

    async def _reap_orphan(self, child: Child) -> None:
        code = await reap_orphan(child)
        if child.exit_code is None:
            await self._on_exit(child.pid, code)

    async def _on_exit(self, pid: int, status: int | None) -> None:
        """A child exited (reported by its zygote, or reaped here if that zygote died);
        ``status`` None: its zygote reaped it and died before it could say how it ended."""
        child = self.by_pid.pop(pid, None)
        if child is None:
            self.log.info(f"AH00167: long lost child came home! (pid {pid})")
            return
        planned = child.doomed or child.retiring  # told to go: a non-zero exit is no crash
        code = child.exit_code = status if status is not None else 0
        if child.pidfd >= 0:
            os.close(child.pidfd)
            child.pidfd = -1
        child.fire(ChildEvent.EXIT)
        self.reaped_since_tick = True
        self.dispatcher.discard_child(child)
        if self.children.get(child.index) is child:
            del self.children[child.index]
            proc = self.scoreboard.processes[child.index]
            proc.pid = 0
            proc.quiescing = False
            now = time.time()
            for ws in proc.threads:
                ws.state = SlotState.DEAD
                ws.my_access_count = ws.my_bytes_served = 0
                ws.conn_count = ws.conn_bytes = 0
                ws.times = (0.0, 0.0, 0.0, 0.0)
                ws.last_used = now  # as httpd stamps a slot it reaps
                ws.request = ws.client = ""
        self.scoreboard.changed()
        for slot in child.slots:
            await slot.aclose()
        cause = describe_exit(code) if status is not None else "exit status unknown"
        fields = {"pid": pid, "slot": child.index, "gen": child.generation, "served": child.served}
        if code == APEXIT_CHILDFATAL and child.generation == self.generation == 0:
            self.log.error(f"AH00166: child pid {pid} exit signal fatal error, shutting down",
                           **fields)
            self.fail(ChildBootError(f"child pid {pid} could not start (exit status 15)"))
        elif code < 0 and code not in _QUIET_SIGNALS:
            self.crashes += 1
            self.log.warning(f"AH00052: child pid {pid} {cause}", **fields)
        elif code > 0 and not planned:
            self.crashes += 1
            self.log.warning(f"child pid {pid} {cause}", **fields)
        else:
            self.log.info("child stopped", cause=cause, why=child.why, **fields)
        child.exited.set()
        if child.why == _MCPC and not child.replaced:
            self._spawn_task(self._replace, child)  # no free slot at retirement: its own now
        if (
            code < 0
            and self.limits.threads_per_child > 1
            and child.generation == self.generation
            and not self.stopping
            and self._signal_respawns < 3
            and child.index not in self.children
        ):
            # httpd >= 2.4.54 (worker/event): a child killed by a signal is respawned at once,
            # up to 3 in a row without a quiet tick; prefork waits for maintenance.
            self._signal_respawns += 1
            self.log.info(f"AH10393: respawning child in slot {child.index} killed by a signal")
            self._spawn_task(self.try_spawn, child.index)  # not here: we are the zygote reader

    # ------------------------------------------------------------------ retiring / killing
    def retire(self, child: Child, why: str) -> None:
        """Stop giving the child work; it exits once its in-flight requests are done."""
        if child.retiring or child.phase is ChildPhase.EXITED:
            return
        child.fire(ChildEvent.RETIRE)
        child.why = why
        self.retirements += 1
        self.scoreboard.processes[child.index].quiescing = True
        self.log.info("retiring child", pid=child.pid, slot=child.index,
                      gen=child.generation, why=why)
        if why == _MCPC:
            self._spawn_task(self._replace, child)
        for slot in self.dispatcher.discard_child(child):
            self._spawn_task(self._stop_slot, slot)
        for slot in child.slots:
            # A slot serving a handed-off connection closes it after the current request.
            self.records.request_wind_down(slot.record, RETURN)
            if slot.held:
                ws = self.scoreboard.processes[child.index].threads[slot.thread]
                ws.state = SlotState.GRACEFUL
        self.scoreboard.changed()

    async def _replace(self, old: Child) -> None:
        """Start a child in place of one retiring after MaxConnectionsPerChild, at once
        rather than at the next tick: the retirement is planned, and under load the pool
        would otherwise shrink by one child per retirement until maintenance notices."""
        if old.replaced or self.stopping or old.generation != self.generation:
            return
        spawn = replacement(self.scoreboard.snapshot(), self.limits)
        if spawn is None:
            return  # every slot is taken: its own slot is refilled when it has exited
        old.replaced = True
        await self.try_spawn(spawn.slots[0], replaces=old.pid)

    async def _stop_slot(self, slot: SlotHandle) -> None:
        if slot.closed:
            return
        slot.fire(SlotEvent.STOP)
        ws = self.scoreboard.processes[slot.child.index].threads[slot.thread]
        ws.state = SlotState.GRACEFUL
        with contextlib.suppress(SlotClosed):
            await slot.send(_STOP)

    def slot_done(self, slot: SlotHandle, *, reusable: bool) -> None:
        """A request finished with this slot; return it to the pool or wind it down."""
        child = slot.child
        child.busy -= 1
        child.served += 1
        if not reusable:
            slot.fire(_DISCARD)
            child.abandoned = True
        limit = child.conn_limit
        if limit > 0 and child.served >= limit and not child.retiring:
            self.retire(child, _MCPC)
        elif limit < 0 and self.limits.threads_per_child > 1 and not child.retiring:
            self.retire(child, _MCPC)  # httpd: worker retires at once
        # After retire(), which marks the slots still held.
        after = slot.fire(_DONE) if reusable else slot.phase
        phase = child.phase
        if phase in DOOMED_PHASES:
            if child.busy <= 0:
                self._spawn_task(self.kill, child, signal.SIGKILL)
            return
        if phase in RETIRING_PHASES:
            if not slot.closed:
                self._spawn_task(self._stop_slot, slot)
            return
        if reusable:
            ws = self.scoreboard.processes[child.index].threads[slot.thread]
            ws.state = SlotState.READY
            if after is _IDLE:
                self.dispatcher.offer(slot)

    def slot_lost(self, slot: SlotHandle) -> None:
        """A slot's channel hung up mid-request, or its child broke the slot protocol: none
        of the child's other slots may take work (a dying child's exit report can trail the
        hang-up), and a child that broke the protocol is killed."""
        child = slot.child
        child.fire(ChildEvent.LOSE)
        idle = self.dispatcher.discard_child(child)
        if not slot.broken or child.phase is ChildPhase.EXITED:
            return
        # It broke the slot protocol but may well be alive: kill it (worker: once its other
        # threads are done, as for a hung request; slot_done sends the SIGKILL), so the
        # policy replaces it instead of a dead-but-busy slot lingering until shutdown.
        child.fire(ChildEvent.DOOM)
        child.why = "child broke the slot protocol"
        self.scoreboard.processes[child.index].quiescing = True
        self.log.error("child broke the slot protocol; killing it", pid=child.pid,
                       slot=child.index)
        for other in idle:
            self._spawn_task(self._stop_slot, other)

    def slot_hung(self, slot: SlotHandle) -> None:
        """A request ran past Timeout: replace the child (after its other threads finish)."""
        self.timeouts += 1
        self.log.error("request exceeded Timeout; killing its child", pid=slot.child.pid,
                       slot=slot.child.index, timeout=self.config.timeout)
        self._doom(slot, "request exceeded Timeout")

    def slot_abandoned(self, slot: SlotHandle) -> None:
        """A request was given up with no word to its child (its task was cancelled), which
        may still be running it: replace the child, or the slot would stay busy for good."""
        self.log.warning("request abandoned mid-flight; replacing its child",
                         pid=slot.child.pid, slot=slot.child.index)
        self._doom(slot, "request abandoned")

    def slot_corrupted(self, slot: SlotHandle) -> None:
        """A slot refused an illegal transition (our bug, logged by the slot, which is BROKEN
        now): its child's state is not to be trusted either, so it is replaced as if it had
        broken the slot protocol (killed once its other requests are done)."""
        child = slot.child
        if child.phase is ChildPhase.EXITED:
            return
        self._doom_child(child, "illegal slot transition", 0)

    def _doom(self, slot: SlotHandle, why: str) -> None:
        slot.fire(SlotEvent.DOOM)
        if slot.child.phase is not ChildPhase.EXITED:  # too late: nothing to replace
            self._doom_child(slot.child, why, 1)

    def _doom_child(self, child: Child, why: str, held: int) -> None:
        """No more work for the child; kill it once its ``child.busy - held`` other requests
        are done (``slot_done`` sends the SIGKILL for the last of them)."""
        child.fire(ChildEvent.DOOM)
        child.why = why
        self.scoreboard.processes[child.index].quiescing = True
        for idle in self.dispatcher.discard_child(child):
            self._spawn_task(self._stop_slot, idle)
        if child.busy <= held:
            self._spawn_task(self.kill, child, signal.SIGKILL)

    async def kill(self, child: Child, sig: int) -> None:
        signal_child(child, sig)

    def _spawn_task(self, func: Any, *args: Any) -> None:
        if self._tg is not None:
            self._tg.start_soon(func, *args)

    # ------------------------------------------------------------------ restarts
    def reconfigure(self, config: Config, limits: MPMLimits, app_spec: str | None) -> None:
        """New directives for the next generation (the zygote settings included)."""
        self.config = config
        self.limits = limits
        self.settings.update(app=app_spec, chdir=config.chdir, preload=config.preload,
                             root_path=config.root_path, log_format=config.log_format,
                             log_level=config.log_level, proctitle=config.proctitle,
                             boot_timeout=config.child_boot_timeout,
                             direct=direct_settings(config, limits))

    async def graceful_restart(self, *, hard: bool = False) -> bool:
        """httpd's SIGUSR1, without losing a request: a new zygote re-imports the app, the new
        generation's children are ready before the old ones stop taking work, and old
        children finish what they have in flight. Returns False (and keeps the old
        generation serving) if the new code cannot be loaded.

        ``hard`` is httpd's SIGHUP: old children are terminated at once (their in-flight
        requests fail) and the scoreboard's totals start again from zero."""
        if self.stopping or self._tg is None:
            return False
        new_gen = self.generation + 1
        zygote = ZygoteClient(self.settings)
        try:
            await zygote.start()
        except Exception as exc:
            self.log.error("AH00016: graceful restart failed: the application could not be "
                           f"loaded; generation {self.generation} keeps serving", error=str(exc))
            await zygote.aclose()
            return False
        old_zygote, old_gen = self.zygote, self.generation
        self.zygote = zygote
        self.generation = self.scoreboard.generation = new_gen
        self._tg.start_soon(self._zygote_messages, zygote)
        self.memo = after_graceful_restart(self.memo)
        self.restarts += 1
        self.log.info("AH00171: Graceful restart requested, doing restart" if not hard else
                      "AH00170: SIGHUP received.  Attempting to restart", gen=new_gen)
        first = startup(self.scoreboard.snapshot(), self.limits, self.limits.start_servers)
        if first is not None:
            await self._execute([first])
        try:
            await self.scoreboard_wait(
                lambda: any(c.ready and c.generation == new_gen for c in self.children.values()),
                self.config.child_boot_timeout,
            )
        except TimeoutError:
            self.log.error("graceful restart failed: no child of the new generation became "
                           f"ready; generation {old_gen} keeps serving")
            for child in list(self.children.values()):
                if child.generation == new_gen:
                    self.retire(child, "failed restart")
            self.zygote, self.generation = old_zygote, old_gen
            self.scoreboard.generation = old_gen
            self._old_zygotes.add(zygote)
            self._tg.start_soon(self._close_zygote_when_idle, zygote, new_gen)
            return False
        for child in list(self.children.values()):
            if child.generation < new_gen:
                self.retire(child, "restart" if hard else "graceful restart")
                if hard:
                    await self.kill(child, signal.SIGTERM)
        if hard:
            # httpd re-creates the scoreboard on SIGHUP: totals and every slot's counts go.
            sb = self.scoreboard
            sb.total_accesses = sb.total_bytes = 0
            sb.total_duration = 0.0
            sb.restart_time = time.time()
            for proc in sb.processes:
                for ws in proc.threads:
                    ws.access_count = ws.bytes_served = 0
                    ws.duration = 0.0
        self._old_zygotes.add(old_zygote)
        self._tg.start_soon(self._close_zygote_when_idle, old_zygote, old_gen)
        return True

    async def scoreboard_wait(self, predicate: Any, timeout: float) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                await self.scoreboard.wait_changed()

    async def _close_zygote_when_idle(self, zygote: ZygoteClient, generation: int) -> None:
        """An old generation's zygote goes once the last of its children has exited."""
        await self.scoreboard_wait(
            lambda: not any(c.zygote is zygote for c in {*self.children.values(),
                                                          *self.by_pid.values()}),
            math.inf,
        )
        self._old_zygotes.discard(zygote)
        await zygote.aclose()
        self.log.debug("old generation gone", gen=generation)

    # ------------------------------------------------------------------ stopping
    def _live(self) -> list[Child]:
        """Children not yet reaped, including any forked during the stop."""
        return [c for c in {*self.children.values(), *self.by_pid.values()}
                if c.exit_code is None]

    async def stop_children(self, grace: float = STOP_GRACE) -> tuple[list[int], list[int]]:
        """Stop every child and return (pids killed with SIGKILL, pids that never exited).

        Each child is told to STOP and exits once idle (the front loop has already drained
        the connections). A child that has not exited after ``grace`` seconds cannot, or will
        not (SIGSTOPped, wedged in C code): it is killed, as httpd's reclaim does at the end.
        A child forked during the stop is retired as soon as it exists (see :meth:`spawn`).
        """
        self.stopping = True
        for child in self._live():
            self.retire(child, "shutdown")
            if child.abandoned:
                # Still running a request nobody waits for (GracefulShutdownTimeout passed):
                # httpd sends SIGTERM at this point.
                await self.kill(child, signal.SIGTERM)
        with anyio.move_on_after(grace):
            await self.scoreboard_wait(lambda: not self._live(), math.inf)
        killed: list[int] = []
        for child in self._live():
            if child.pid:
                self.log.warning(f"AH00046: child process {child.pid} still did not exit, "
                                 "sending a SIGKILL", pid=child.pid, slot=child.index,
                                 state=_process_state(child.pid), grace=grace)
                killed.append(child.pid)
                await self.kill(child, signal.SIGKILL)
        with anyio.move_on_after(_KILL_WAIT):
            await self.scoreboard_wait(lambda: not self._live(), math.inf)
        left = [c.pid for c in self._live() if c.pid]
        for pid in left:
            self.log.error(f"AH00047: could not make child process {pid} exit, attempting to "
                           "continue anyway")
        return killed, left


def _process_state(pid: int) -> str:
    """What a process is doing, for the log ("stopped" says why it did not exit)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            code = f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return "unknown"
    return {"R": "running", "S": "sleeping", "D": "disk sleep", "T": "stopped",
            "t": "tracing stop", "Z": "zombie"}.get(code, code)

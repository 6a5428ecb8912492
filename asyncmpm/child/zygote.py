"""The zygote: imports the app once, then forks children on request.

Why a zygote: forking the front loop's process would copy a running event loop and its threads
(unsafe); spawning a fresh interpreter per child would re-import the app (slow, and no shared
pages). The zygote is a single-threaded process started once by the supervisor. It preloads
the app, so each ``fork()`` gives a child that is ready in milliseconds and shares the app's
memory copy-on-write.

Control protocol (a SOCK_SEQPACKET socketpair, one JSON object per packet; never network data):

- supervisor -> zygote: ``{"op": "spawn", "slot": N, "gen": G}`` with the child's slot-channel
  fds attached (SCM_RIGHTS); ``{"op": "exit"}``.
- zygote -> supervisor: ``{"op": "ready"}`` or ``{"op": "error", "message": ...}`` once, then
  per child ``{"op": "spawned", ...}`` with a pidfd of the child attached (opened before the
  child can be reaped, so it can never name a reused pid) and ``{"op": "exited", "pid": P,
  "code": ...}``. The supervisor signals children through their pidfds.

Children outlive the zygote: if it dies, they are reparented to the supervisor (a child
subreaper), keep serving, and the supervisor reaps them. A child stops on EOF on its slot
channels, so it also stops when the supervisor disappears, even after SIGKILL. If the
supervisor disappears (EOF on the control socket), the zygote terminates its children
(SIGKILL after a grace) and exits, so nothing is orphaned.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

import structlog

from asyncmpm.child.app_loader import load_app
from asyncmpm.child.connection import DirectSettings, HandoffServer
from asyncmpm.child.wsgi import ChannelClosed, ChildChannel, SlotServer
from asyncmpm.ipc.frames import FrameType, encode
from asyncmpm.ipc.slot_records import SlotRecords
from asyncmpm.logs import AccessLog, bind_process, configure_logging

__all__ = ["APEXIT_CHILDFATAL", "main"]

APEXIT_CHILDFATAL = 15  # httpd's exit code for "do not respawn me, stop the server"
_MAX_FDS = 250
_SHUTDOWN_GRACE = 5.0  # seconds children get after SIGTERM before SIGKILL


def _set_title(enabled: bool, title: str) -> None:
    if not enabled:
        return
    try:
        import setproctitle
    except ImportError:  # pragma: no cover - declared dependency
        return
    setproctitle.setproctitle(title)


class Zygote:
    def __init__(self, ctl: socket.socket, settings: dict[str, Any]) -> None:
        self.ctl = ctl
        self.settings = settings
        self.app: Any = None
        self.children: dict[int, tuple[int, int]] = {}  # pid -> (slot, generation)
        self.log = structlog.get_logger("asyncmpm.zygote")

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        with contextlib.suppress(OSError):
            if fds:
                socket.send_fds(self.ctl, [json.dumps(message).encode()], fds)
            else:
                self.ctl.send(json.dumps(message).encode())

    def run(self) -> int:
        settings = self.settings
        # No PR_SET_PDEATHSIG here: it follows the parent *thread*, and trio starts processes
        # from a worker thread that exits when idle. EOF on the control socket is our cue.
        _set_title(settings["proctitle"], f"asyncmpm: zygote [{settings['mpm']}]")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if settings["preload"]:
            try:
                self.app = load_app(settings["app"], settings["chdir"])
            except BaseException:
                self.send({"op": "error", "message": traceback.format_exc()})
                return 1
        elif settings["chdir"]:
            os.chdir(settings["chdir"])
        # Move everything imported so far out of the collector's reach: a child's collections
        # then never write to (and so never copy) the pages it shares with the zygote.
        gc.collect()
        gc.freeze()
        self.send({"op": "ready"})

        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        os.set_blocking(wake_r, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        selector = selectors.DefaultSelector()
        selector.register(self.ctl, selectors.EVENT_READ, "ctl")
        selector.register(wake_r, selectors.EVENT_READ, "chld")
        try:
            while True:
                for key, _ in selector.select():
                    if key.data == "chld":
                        with contextlib.suppress(BlockingIOError):
                            os.read(wake_r, 4096)
                        self.reap()
                        continue
                    try:
                        msg, fds, _, _ = socket.recv_fds(self.ctl, 65536, _MAX_FDS)
                    except OSError:
                        msg, fds = b"", []
                    if not msg:
                        return self.shutdown()
                    request = json.loads(msg)
                    op = request["op"]
                    if op == "spawn":
                        self.spawn(request["slot"], request["gen"], fds, selector, wake_r, wake_w)
                    elif op == "exit":
                        return self.shutdown()
                self.reap()
        finally:
            signal.set_wakeup_fd(-1)
            selector.close()
            os.close(wake_r)
            os.close(wake_w)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot, gen = self.children.pop(pid, (-1, -1))
            code = os.waitstatus_to_exitcode(status)
            self.send({"op": "exited", "pid": pid, "slot": slot, "gen": gen, "code": code})

    def shutdown(self) -> int:
        """Terminate the children; SIGKILL those that do not go (a SIGSTOPped child never
        acts on SIGTERM), so the zygote never waits forever."""
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + _SHUTDOWN_GRACE
        while self.children and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 0
            if pid:
                self.children.pop(pid, None)
            else:
                time.sleep(0.02)
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.children.pop(pid, None)
        return 0

    def spawn(
        self,
        slot: int,
        gen: int,
        fds: list[int],
        selector: selectors.BaseSelector,
        wake_r: int,
        wake_w: int,
    ) -> None:
        pid = os.fork()
        if pid:
            for fd in fds:
                os.close(fd)
            self.children[pid] = (slot, gen)
            pidfd = os.pidfd_open(pid)  # not reaped yet, so this is surely our child
            try:
                self.send({"op": "spawned", "slot": slot, "gen": gen, "pid": pid}, [pidfd])
            finally:
                os.close(pidfd)
            return
        # In the child: drop everything that belongs to the zygote.
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            selector.close()
            os.close(wake_r)
            os.close(wake_w)
            self.ctl.close()
            code = run_child(self.settings, self.app, slot, gen, fds)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def run_child(settings: dict[str, Any], app: Any, slot: int, gen: int, fds: list[int]) -> int:
    """Serve this child's slots until told to stop (STOP, or EOF when the supervisor is gone;
    no PR_SET_PDEATHSIG: a child must outlive its zygote); returns the exit code."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _set_title(settings["proctitle"], f"asyncmpm: child slot {slot} gen {gen}")
    structlog.contextvars.clear_contextvars()  # drop the zygote's role=zygote
    bind_process(pid=os.getpid(), slot=slot, gen=gen)
    log = structlog.get_logger("asyncmpm.child").bind(pid=os.getpid(), slot=slot)
    *channel_fds, records_fd = fds  # the slot channels, then the shared slot records
    socks = [socket.socket(fileno=fd) for fd in channel_fds]
    channels = [ChildChannel(s) for s in socks]
    if app is None:
        try:
            app = load_app(settings["app"], None)
        except BaseException:
            message = traceback.format_exc()
            log.error("AH00016: failed to load the WSGI application", traceback=message)
            with contextlib.suppress(OSError):
                channels[0].send(encode(FrameType.BOOT_ERROR, message.encode("utf-8", "replace")))
            return APEXIT_CHILDFATAL
    multithread = settings["mpm"] == "worker"
    root_path = settings["root_path"]
    servers = [
        SlotServer(ch, app, root_path=root_path, multithread=multithread, slot=slot,
                   log=log.bind(thread=i))
        for i, ch in enumerate(channels)
    ]
    direct = settings.get("direct")
    if direct is None:
        os.close(records_fd)
    else:
        _enable_handoff(servers, direct, settings, slot, records_fd)
    if len(servers) == 1:
        _serve(servers[0])
    else:
        threads = [
            threading.Thread(target=_serve, args=(srv,), name=f"slot-{slot}-{i}", daemon=True)
            for i, srv in enumerate(servers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for s in socks:
        s.close()
    return 0


def _enable_handoff(servers: list[SlotServer], direct: dict[str, Any],
                    settings: dict[str, Any], slot: int, records_fd: int) -> None:
    """Let these slots serve handed-off HTTP/1.1 connections themselves."""
    records = SlotRecords(direct["record_slots"], fd=records_fd)
    direct_settings = DirectSettings.from_settings(settings)
    for thread, server in enumerate(servers):
        access_log = None
        if direct["access_log"]:
            access_log = AccessLog(direct["access_log"],
                                   fmt="json" if direct["access_log_json"] else "combined",
                                   log_format=direct["access_log_format"])
        server.on_handoff = HandoffServer(server, direct_settings, records,
                                          slot * direct["thread_limit"] + thread, access_log)


def _serve(server: SlotServer) -> None:
    """Serve one slot until it is stopped or the front closes its channel."""
    with contextlib.suppress(ChannelClosed, ConnectionResetError):
        server.serve()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    ctl_fd = int(args[0])
    settings = json.loads(args[1])
    configure_logging(fmt=settings["log_format"], level=settings["log_level"])
    bind_process(pid=os.getpid(), role="zygote")
    ctl = socket.socket(fileno=ctl_fd)
    ctl.setblocking(True)
    try:
        return Zygote(ctl, settings).run()
    finally:
        ctl.close()



if __name__ == "__main__":
    sys.exit(main())

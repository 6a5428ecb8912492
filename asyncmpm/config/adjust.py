"""Apache's start-up adjustments of inconsistent MPM directives (reference §1.2).

httpd does not reject a MaxRequestWorkers above ServerLimit or a ThreadsPerChild above
ThreadLimit: it clamps them and logs a warning naming the directive. We do the same, so an
administrator's httpd.conf behaves identically here. One bucket (``nb = 1``) throughout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asyncmpm.config.model import Config, MPMLimits

__all__ = ["resolve_limits"]

PREFORK_MAX_SERVER_LIMIT = 200000
WORKER_MAX_SERVER_LIMIT = 20000
WORKER_MAX_THREAD_LIMIT = 20000


def resolve_limits(config: Config) -> tuple[MPMLimits, list[str]]:
    from asyncmpm.config.model import MPM

    if config.mpm is MPM.PREFORK:
        return _prefork(config)
    return _worker(config)


def _prefork(config: Config) -> tuple[MPMLimits, list[str]]:
    from asyncmpm.config.model import MPMLimits

    warnings: list[str] = []
    server_limit = config.directive("server_limit")
    mrw = config.directive("max_request_workers")
    start = config.directive("start_servers")
    min_spare = config.directive("min_spare_servers")
    max_spare = config.directive("max_spare_servers")

    if server_limit > PREFORK_MAX_SERVER_LIMIT:
        warnings.append(
            f"AH00175: WARNING: ServerLimit of {server_limit} exceeds compile-time limit of "
            f"{PREFORK_MAX_SERVER_LIMIT} servers, decreasing to {PREFORK_MAX_SERVER_LIMIT}."
        )
        server_limit = PREFORK_MAX_SERVER_LIMIT
    elif server_limit < 1:
        warnings.append(
            f"AH00177: WARNING: ServerLimit of {server_limit} not allowed, increasing to 1."
        )
        server_limit = 1
    if mrw > server_limit:
        warnings.append(
            f"AH00180: WARNING: MaxRequestWorkers of {mrw} exceeds ServerLimit value of "
            f"{server_limit} servers, decreasing MaxRequestWorkers to {server_limit}. "
            "To increase, please see the ServerLimit directive."
        )
        mrw = server_limit
    elif mrw < 1:
        warnings.append(
            f"AH00182: WARNING: MaxRequestWorkers of {mrw} not allowed, increasing to 1."
        )
        mrw = 1
    if start < 1:
        warnings.append(f"AH00184: WARNING: StartServers of {start} not allowed, increasing to 1.")
        start = 1
    if min_spare < 1:
        warnings.append(
            f"AH00186: WARNING: MinSpareServers of {min_spare} not allowed, increasing to 1 "
            "to avoid almost certain server failure. Please read the documentation."
        )
        min_spare = 1
    # Silent run-time adjustments (prefork_run).
    max_spare = max(max_spare, min_spare + 1)
    start = min(start, mrw)
    return (
        MPMLimits(
            mpm=config.mpm,
            start_servers=start,
            min_spare=min_spare,
            max_spare=max_spare,
            max_request_workers=mrw,
            server_limit=server_limit,
            thread_limit=1,
            threads_per_child=1,
            process_limit=mrw,
            max_connections_per_child=config.max_connections_per_child,
        ),
        warnings,
    )


def _worker(config: Config) -> tuple[MPMLimits, list[str]]:
    from asyncmpm.config.model import MPMLimits

    warnings: list[str] = []
    server_limit = config.directive("server_limit")
    thread_limit = config.directive("thread_limit")
    tpc = config.directive("threads_per_child")
    mrw = config.directive("max_request_workers")
    start = config.directive("start_servers")
    min_spare = config.directive("min_spare_threads")
    max_spare = config.directive("max_spare_threads")

    if server_limit > WORKER_MAX_SERVER_LIMIT:
        warnings.append(
            f"AH00300: WARNING: ServerLimit of {server_limit} exceeds compile-time limit of "
            f"{WORKER_MAX_SERVER_LIMIT} servers, decreasing to {WORKER_MAX_SERVER_LIMIT}."
        )
        server_limit = WORKER_MAX_SERVER_LIMIT
    elif server_limit < 1:
        warnings.append(
            f"AH00302: WARNING: ServerLimit of {server_limit} not allowed, increasing to 1."
        )
        server_limit = 1
    if thread_limit > WORKER_MAX_THREAD_LIMIT:
        warnings.append(
            f"AH00305: WARNING: ThreadLimit of {thread_limit} exceeds compile-time limit of "
            f"{WORKER_MAX_THREAD_LIMIT} threads, decreasing to {WORKER_MAX_THREAD_LIMIT}."
        )
        thread_limit = WORKER_MAX_THREAD_LIMIT
    elif thread_limit < 1:
        warnings.append(
            f"AH00307: WARNING: ThreadLimit of {thread_limit} not allowed, increasing to 1."
        )
        thread_limit = 1
    if tpc > thread_limit:
        warnings.append(
            f"AH00310: WARNING: ThreadsPerChild of {tpc} exceeds ThreadLimit of "
            f"{thread_limit} threads, decreasing to {thread_limit}. "
            "To increase, please see the ThreadLimit directive."
        )
        tpc = thread_limit
    elif tpc < 1:
        warnings.append(
            f"AH00312: WARNING: ThreadsPerChild of {tpc} not allowed, increasing to 1."
        )
        tpc = 1
    if mrw < tpc:
        warnings.append(
            f"AH00314: WARNING: MaxRequestWorkers of {mrw} is less than ThreadsPerChild of "
            f"{tpc}, increasing to {tpc}. MaxRequestWorkers must be at least as large as the "
            "number of threads in a single server."
        )
        mrw = tpc
    process_limit = mrw // tpc
    if mrw % tpc:
        new_mrw = process_limit * tpc
        warnings.append(
            f"AH00316: WARNING: MaxRequestWorkers of {mrw} is not an integer multiple of "
            f"ThreadsPerChild of {tpc}, decreasing to nearest multiple {new_mrw}, "
            f"for a maximum of {process_limit} servers."
        )
        mrw = new_mrw
    if process_limit > server_limit:
        warnings.append(
            f"AH00318: WARNING: MaxRequestWorkers of {mrw} would require {process_limit} "
            f"servers and would exceed ServerLimit of {server_limit}, decreasing to "
            f"{server_limit * tpc}. To increase, please see the ServerLimit directive."
        )
        # httpd's quirk: max_workers keeps the larger value for the MaxRequestWorkers test.
        process_limit = server_limit
    if start < 1:
        warnings.append(f"AH00320: WARNING: StartServers of {start} not allowed, increasing to 1.")
        start = 1
    if min_spare < 1:
        warnings.append(
            f"AH00322: WARNING: MinSpareThreads of {min_spare} not allowed, increasing to 1 "
            "to avoid almost certain server failure. Please read the documentation."
        )
        min_spare = 1
    # Silent run-time adjustments (worker_run).
    start = min(start, process_limit)
    max_spare = max(max_spare, min_spare + tpc + 1)
    return (
        MPMLimits(
            mpm=config.mpm,
            start_servers=start,
            min_spare=min_spare,
            max_spare=max_spare,
            max_request_workers=mrw,
            server_limit=server_limit,
            thread_limit=thread_limit,
            threads_per_child=tpc,
            process_limit=process_limit,
            max_connections_per_child=config.max_connections_per_child,
        ),
        warnings,
    )

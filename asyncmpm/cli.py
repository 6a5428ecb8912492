"""The command line: argv -> Config, logging set up once, then serve until a stop signal."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import structlog

from asyncmpm import control
from asyncmpm.config.argv import parse_command
from asyncmpm.config.model import Config
from asyncmpm.errors import AppLoadError, ChildBootError, ConfigError
from asyncmpm.front.runner import run_server
from asyncmpm.front.server import Server
from asyncmpm.logs import configure_logging

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    config, command = parse_command(args)  # a bad option exits 2 before any signal is sent
    if command.configtest:
        return control.configtest([*command.notices, *config.limits()[1]])
    if command.signal_command == "start":
        return control.start_detached(args, config.pid_file, config.error_log)
    if command.signal_command is not None:
        return control.signal_server(command.signal_command, config.pid_file)
    configure_logging(fmt="json" if config.log_format == "json" else "console",
                      level=config.log_level)
    if config.proctitle:
        import setproctitle

        setproctitle.setproctitle(f"asyncmpm: main [{config.mpm.value}]")
    log = structlog.get_logger("asyncmpm")
    for notice in command.notices:
        log.info(notice)
    try:
        def reload() -> Config:
            return parse_command(args)[0]  # argv and --config file, read again

        run_server(Server(config.app, config, reload=reload))
    except ConfigError as exc:  # found only at start, e.g. an ErrorLog that cannot be opened
        log.critical(str(exc))
        return 1
    except AppLoadError as exc:
        log.critical("AH00016: could not load the WSGI application", error=str(exc))
        return 1
    except ChildBootError as exc:
        log.critical("AH00016: children could not start, shutting down", error=str(exc))
        return 1
    except OSError as exc:
        log.critical("AH00072: make_sock: could not bind to address", error=str(exc))
        return 1
    except KeyboardInterrupt:  # pragma: no cover - signals are handled in the loop
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

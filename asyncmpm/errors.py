"""Every error asyncmpm raises on purpose.

::

    AsyncMPMError
    ├── ConfigError            bad directive value (names the directive, and file:line if any)
    ├── AppLoadError           the WSGI application could not be imported
    ├── ChildBootError         a child failed before it could serve (stops the server)
    └── ProtocolError          the peer broke HTTP; carries the status to answer with
"""

from __future__ import annotations

__all__ = ["AppLoadError", "AsyncMPMError", "ChildBootError", "ConfigError", "ProtocolError"]


class AsyncMPMError(Exception):
    """Root of asyncmpm's own exceptions."""


class ConfigError(AsyncMPMError):
    """A directive has a value asyncmpm cannot use."""

    def __init__(
        self, directive: str, message: str, *, path: str | None = None, line: int | None = None
    ) -> None:
        self.directive = directive
        self.message = message
        self.path = path
        self.line = line
        where = f"{path}:{line}: " if path is not None and line is not None else ""
        super().__init__(f"{where}{directive}: {message}")


class AppLoadError(AsyncMPMError):
    """The application spec does not name an importable WSGI callable."""


class ChildBootError(AsyncMPMError):
    """A child process died or failed before it became ready to serve."""


class ProtocolError(AsyncMPMError):
    """The client sent something HTTP does not allow; ``status`` is what to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status

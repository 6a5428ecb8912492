"""What the policy may ask the supervisor to do. Plain data: deciding is separate from doing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["Action", "Log", "Retire", "Spawn"]


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start one child in each of these process slots."""

    slots: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Retire:
    """Gracefully stop the child in this process slot (it finishes in-flight requests)."""

    slot: int


@dataclass(frozen=True, slots=True)
class Log:
    """An Apache-worded lifecycle message, e.g. ``AH00161`` "server reached MaxRequestWorkers"."""

    level: Literal["debug", "info", "notice", "warning", "error"]
    code: str
    message: str


Action = Spawn | Retire | Log

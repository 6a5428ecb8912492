"""What the lifecycle tables share: one way to apply an event, one error for an illegal one.

A lifecycle (a slot's, a child's, the zygote's) is an enum of states plus a table
``{state: {event: next state}}``, as h11's ``_state.py`` keeps its
``EVENT_TRIGGERED_TRANSITIONS``. A pair missing from the table is a bug of ours, never a
peer's: :func:`advance` refuses it instead of guessing, and the owner of the state logs it and
gives up the object (see ``SlotHandle.fire`` and ``Child.fire``). Sans-IO: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

from asyncmpm.errors import AsyncMPMError

__all__ = ["IllegalTransition", "advance", "render_table"]

S = TypeVar("S", bound=Enum)
E = TypeVar("E", bound=Enum)


class IllegalTransition(AsyncMPMError):
    """An event that the lifecycle's table does not allow in the current state (an internal
    error: the state is left as it was)."""

    def __init__(self, lifecycle: str, state: Enum, event: Enum) -> None:
        super().__init__(f"{lifecycle}: can't handle event {event.name} in state {state.name}")
        self.lifecycle = lifecycle
        self.state = state
        self.event = event


def advance(lifecycle: str, table: Mapping[S, Mapping[E, S]], state: S, event: E) -> S:
    """The state ``event`` leads to from ``state``; raises :class:`IllegalTransition`."""
    try:
        return table[state][event]
    except KeyError:
        raise IllegalTransition(lifecycle, state, event) from None


def render_table(table: Mapping[S, Mapping[E, S]], events: type[E]) -> str:
    """The table as Markdown, one row per state and one column per event ("·": refused);
    docs/design/lifecycles.md carries this text, and a test keeps the two the same."""
    names = [event.name for event in events]
    lines = ["| state | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for state, row in table.items():
        cells = [row[event].name if event in row else "·" for event in events]
        lines.append(f"| **{state.name}** | " + " | ".join(cells) + " |")
    return "\n".join(lines)

"""The architecture, checked: sans-IO layers import no I/O, children never import the front."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "asyncmpm"

FORBIDDEN = {
    "protocol": {"anyio", "trio", "asyncio", "socket", "os", "asyncmpm.front",
                 "asyncmpm.dispatch", "asyncmpm.child"},
    "ipc/frames.py": {"anyio", "trio", "asyncio", "socket", "os"},
    "ipc/messages.py": {"anyio", "trio", "asyncio", "socket", "os"},
    "ipc/handoff.py": {"anyio", "trio", "asyncio", "socket", "os"},
    "supervisor/policy.py": {"anyio", "trio", "asyncio", "socket", "os", "time",
                             "asyncmpm.front", "asyncmpm.dispatch"},
    # The lifecycle tables: enums and dicts, nothing else.
    "lifecycle.py": {"anyio", "trio", "asyncio", "socket", "os", "time"},
    "dispatch/slot_state.py": {"anyio", "trio", "asyncio", "socket", "os", "time"},
    "supervisor/child_state.py": {"anyio", "trio", "asyncio", "socket", "os", "time"},
    "child": {"anyio", "trio", "asyncio", "asyncmpm.front", "asyncmpm.dispatch",
              "asyncmpm.supervisor"},
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("where", sorted(FORBIDDEN))
def test_layer_imports(where: str) -> None:
    target = PACKAGE / where
    files = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert files
    for path in files:
        for name in imports_of(path):
            for banned in FORBIDDEN[where]:
                where_from = f"{path.relative_to(PACKAGE)} imports {name}"
                assert name != banned, where_from
                assert not name.startswith(banned + "."), where_from

"""Turn an application spec into a WSGI callable, the way mod_wsgi and gunicorn users expect."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from asyncmpm.errors import AppLoadError

__all__ = ["load_app", "spec_for"]

DEMO = "asyncmpm.demo:application"
_DEFAULT_NAMES = ("application", "app")


def load_app(spec: str | None, chdir: str | None = None) -> Any:
    """Import ``module:callable`` or ``path/to/file.py[:callable]`` (default ``application``,
    then ``app``, as mod_wsgi names it). ``None`` means the built-in demo app."""
    if chdir:
        os.chdir(chdir)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    spec = spec or DEMO
    target, _, attr = spec.partition(":")
    if target.endswith(".py") or os.sep in target:
        path = Path(target).resolve()
        if not path.is_file():
            raise AppLoadError(f"{spec}: no such file {path}")
        name = "_asyncmpm_app_" + path.stem
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise AppLoadError(f"{spec}: cannot load {path}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        sys.path.insert(0, str(path.parent))
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name and target.startswith(exc.name):
                raise AppLoadError(f"{spec}: no module named {exc.name!r}") from exc
            raise
    names = (attr,) if attr else _DEFAULT_NAMES
    obj: Any = module
    for name in names:
        try:
            obj = module
            for part in name.split("."):
                obj = getattr(obj, part)
            break
        except AttributeError:
            continue
    else:
        wanted = " or ".join(repr(n) for n in names)
        raise AppLoadError(f"{spec}: module {module.__name__!r} has no {wanted}")
    if not callable(obj):
        raise AppLoadError(f"{spec}: {obj!r} is not callable")
    return obj


def spec_for(app: Any) -> str:
    """The import spec of a module-level callable, so a separate process can import it."""
    if isinstance(app, str):
        return app
    module_name = getattr(app, "__module__", None)
    qualname = getattr(app, "__qualname__", None) or getattr(
        type(app), "__qualname__", None
    )
    if module_name is None or qualname is None or "<" in qualname:
        raise AppLoadError(
            f"{app!r} is not a module-level callable; pass it as 'module:callable'"
        )
    if module_name == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None)
        if main_file is None:
            raise AppLoadError("cannot re-import an app defined in an interactive __main__")
        return f"{Path(main_file).resolve()}:{qualname}"
    if not hasattr(app, "__qualname__"):
        # An instance: find the module-level name bound to it.
        module = sys.modules[module_name]
        for name, value in vars(module).items():
            if value is app:
                return f"{module_name}:{name}"
        raise AppLoadError(f"{app!r} is not bound to a name in {module_name}")
    return f"{module_name}:{qualname}"

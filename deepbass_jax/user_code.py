"""What a user brings by import path ("package.module:name"): a network (model.architecture) or an acquisition
score (policy)."""

from __future__ import annotations

import importlib


def is_import_path(name: str) -> bool:
    """Whether a config value names the user's code ("package.module:name") rather than a registry entry."""
    return ":" in name


def resolve(path: str, field: str):
    """The object at "package.module:name"; ValueError in one line naming `field` when it cannot be had."""
    module_name, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except ImportError as error:
        raise ValueError(f"{field}={path!r}: cannot import {module_name!r} ({error}); check the module path and that "
                         "its package is importable (on PYTHONPATH or installed).") from error
    except AttributeError as error:
        raise ValueError(f"{field}={path!r}: module {module_name!r} has no {name!r}.") from error

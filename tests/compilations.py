"""Counting XLA compilations through jax.monitoring, by function name.

    with count_compilations() as compiled:
        step(...)
    assert compiled["batch_step"] == 1  # the jitted function's __name__; eager ops count under theirs ("add")
    assert compiled.total() == 1  # every compilation in the block, whatever the function

JAX records BACKEND_COMPILE_EVENT once per compilation of a jitted computation (a cache hit records nothing) with
fun_name="jit(<name>)". One listener, registered once at import, feeds every open counter, so no block has to
unregister one (not every jax this project supports can do that publicly).
"""

from __future__ import annotations

import collections
import contextlib
import re
from typing import Iterator

import jax

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"

_open_counters: dict[int, collections.Counter] = {}  # by id: equal counters are still distinct blocks


def _function_name(fun_name: str) -> str:
    """"jit(batch_step)" -> "batch_step"; other names as they are."""
    match = re.fullmatch(r"jit\((.*)\)", fun_name)
    return match.group(1) if match else fun_name


def _on_event_duration(event: str, duration_secs: float, fun_name: str = "", **_) -> None:
    del duration_secs
    if event == BACKEND_COMPILE_EVENT:
        for counter in list(_open_counters.values()):
            counter[_function_name(fun_name)] += 1


jax.monitoring.register_event_duration_secs_listener(_on_event_duration)


@contextlib.contextmanager
def count_compilations() -> Iterator[collections.Counter]:
    """Compilations inside the block, {function name: count}; it fills as the block runs and stops at its end."""
    counter = collections.Counter()
    _open_counters[id(counter)] = counter
    try:
        yield counter
    finally:
        del _open_counters[id(counter)]

"""The compilation counter of tests/compilations.py: one count per compilation, none for a cache hit."""

import jax
import jax.numpy as jnp

from tests.compilations import count_compilations


def test_counts_one_per_compilation_and_none_for_a_cache_hit():
    @jax.jit
    def double_plus_one(x):
        return 2 * x + 1

    x3, x4 = jnp.ones(3), jnp.ones(4)  # made outside the blocks: their eager ops compile too
    with count_compilations() as first:
        double_plus_one(x3)
    with count_compilations() as same_shape:
        double_plus_one(x3)
    with count_compilations() as new_shape:
        double_plus_one(x4)
    assert first == new_shape == {"double_plus_one": 1}
    assert same_shape.total() == 0


def test_a_jitted_callee_compiles_inside_its_caller_only():
    @jax.jit
    def inner(x):
        return x + 1

    @jax.jit
    def outer(x):
        return inner(x) * 3

    x = jnp.ones(5)
    with count_compilations() as compiled:
        outer(x)
    assert compiled == {"outer": 1}


def test_nested_blocks_both_count_and_a_closed_block_stops():
    @jax.jit
    def square(x):
        return x * x

    x6, x7 = jnp.ones(6), jnp.ones(7)
    with count_compilations() as outer:
        with count_compilations() as inner:
            square(x6)
        square(x7)
    assert inner == {"square": 1} and outer == {"square": 2}

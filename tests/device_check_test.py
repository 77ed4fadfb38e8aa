"""experiments/device_check.py: the paper CNN against the CPU's reference numbers for every kernel choice, the
kernel choices the micro-benchmark times, and the steps a row's projection counts."""

import jax
import jax.numpy as jnp
import pytest

from deepbass_jax import layers, models
from experiments import device_check
from experiments.configs import mnist


@pytest.mark.parametrize("kernels, exact", [("cpu_tuned", False), ("xla", False), ("block_diagonal_2", True)])
def test_reference_check_passes_on_the_cpu_for_every_kernel_choice(kernels, exact):
    """The default kernels of each backend as they run; the alternatives as the campaign checks them (float32),
    here blocks of two seeds: the reference's four seeds make two groups (one block of all seeds, the same code,
    is tested against XLA in layers_test)."""
    check = device_check.check_reference(kernels, exact=exact)
    assert check["passed"], check
    assert check["rtol"] == (device_check.EXACT_RTOL if exact else device_check.REFERENCE_RTOL)
    assert set(check["relative_errors"]) == {"logits", "dropout_logits", "grad_norms", "grad_first"}


def test_reference_check_fails_for_a_different_network(monkeypatch):
    """A network that computes something else (here: another initialization) fails the check."""
    original = models.init_params
    monkeypatch.setattr(models, "init_params",
                        lambda module, key, shape: original(module, jax.random.fold_in(key, 1), shape))
    assert not device_check.check_reference("cpu_tuned")["passed"]


def test_reference_check_fails_for_seed_blocks_that_mix_seeds(monkeypatch):
    """Blocks of two seeds that put each seed's images beside the next seed's kernel fail the check: its gradient is
    taken for four seeds at once, which see different images."""
    stack = layers._stack_seeds
    monkeypatch.setattr(layers, "_stack_seeds", lambda a: stack(jnp.roll(a, 1, axis=0)))
    assert not device_check.check_reference("block_diagonal_2", exact=True)["passed"]


def test_steps_per_epoch_of_the_headline_row():
    config = mnist.get_config("all_data_max_entropy")
    # at most 300 labels x 20 + 59,700 pseudo-labels per epoch; the initial fit: 100 labels x 20 = 2,000 views
    assert device_check._steps_per_epoch(config, 60000) == (-(-(300 * 20 + 59700) // 256), 8)


def test_kernel_candidates_by_flag_seed_axis_seeds_and_backend():
    """Seed blocks are timed only where they can differ and may win: seeds at once under vmap on an accelerator;
    one choice per size of block above one seed."""
    blocks = ("block_diagonal", "block_diagonal_5", "block_diagonal_2")  # 10, 5 and 2 seeds per block
    assert device_check.kernel_candidates("fastest", "vmap", 10, "gpu") == ("xla",) + blocks
    assert device_check.kernel_candidates("fastest", "vmap", 10, "tpu") == ("xla",) + blocks
    assert device_check.kernel_candidates("fastest", "vmap", 4, "gpu") == ("xla", "block_diagonal", "block_diagonal_2")
    assert device_check.kernel_candidates("fastest", "vmap", 3, "gpu") == ("xla", "block_diagonal")
    assert device_check.kernel_candidates("fastest", "vmap", 2, "gpu") == ("xla", "block_diagonal")
    assert device_check.kernel_candidates("fastest", "map", 10, "gpu") == ("xla",)
    assert device_check.kernel_candidates("fastest", "vmap", 1, "gpu") == ("xla",)
    assert device_check.kernel_candidates("fastest", "vmap", 10, "cpu") == ("cpu_tuned",)
    assert device_check.kernel_candidates("auto", "vmap", 10, "gpu") == ("xla",)
    assert device_check.kernel_candidates("block_diagonal", "map", 1, "cpu") == ("block_diagonal",)

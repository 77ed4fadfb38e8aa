"""Pool inference sharded across devices gives exactly the single-device result.

CPU has one device unless XLA is told otherwise before JAX starts, so when fewer than 4 devices are visible the
4-device tests run in one subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4, and each checks
there that it passed.
"""

import functools
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from deepbass_jax import algorithm, driver as driver_lib, models, uncertainty
from deepbass_jax.workdir import runfolder
from experiments.configs import yinyang

DEVICES = 4
FOUR_DEVICE_TESTS = ("test_sharded_pool_stats_equal_one_device_bitwise",
                     "test_driver_with_sharded_pool_inference_equals_one_device")


@functools.cache
def _four_device_run() -> subprocess.CompletedProcess:
    """FOUR_DEVICE_TESTS in one subprocess with 4 CPU devices (one start of Python, pytest and JAX for both)."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={DEVICES}")
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
               *(f"{__file__}::{name}" for name in FOUR_DEVICE_TESTS)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def _needs_four_devices(test_name: str) -> bool:
    """True when this process has 4 devices; otherwise checks that `test_name` passed in the 4-device subprocess."""
    if jax.device_count() >= DEVICES:
        return True
    result = _four_device_run()
    assert re.search(rf"^PASSED \S*::{test_name}$", result.stdout, re.MULTILINE), \
        f"{test_name} failed with {DEVICES} devices:\n{result.stdout}\n{result.stderr}"
    return False


def test_sharded_pool_stats_equal_one_device_bitwise():
    if not _needs_four_devices("test_sharded_pool_stats_equal_one_device_bitwise"):
        return
    module = models.build(models.default_config(), 10)
    apply_fn = models.make_apply(module)
    params = algorithm.stack([models.init_params(module, jax.random.key(0), (28, 28, 1))])  # one seed
    pool = np.asarray(jax.random.uniform(jax.random.key(1), (45, 28, 28, 1)))  # 2 steps, the last one padded
    keys = jax.random.key(3)[None]
    mesh = uncertainty.pool_mesh(DEVICES)
    assert mesh is not None and mesh.size == DEVICES
    single = algorithm.pool_stats(apply_fn, params, pool, keys, 5, 8, shared=True, seed_axis="map")
    sharded = algorithm.pool_stats(apply_fn, params, pool, keys, 5, 8, shared=True, seed_axis="map", mesh=mesh)
    assert single.entropy.shape == (1, 45)
    for name, a, b in zip(uncertainty.UncertaintyStats._fields, single, sharded):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert np.any(single.mutual_information > 0)  # dropout acts
    # The chunk really was spread over the devices.
    chunk = jax.device_put(pool[:32], jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("pool")))
    assert len({shard.device for shard in chunk.addressable_shards}) == DEVICES


def test_driver_with_sharded_pool_inference_equals_one_device(tmp_path):
    if not _needs_four_devices("test_driver_with_sharded_pool_inference_equals_one_device"):
        return
    summaries, logs = [], []
    for devices in (1, DEVICES):
        config = yinyang.get_config("active_semi_supervised")
        config.data.num_per_class = 60
        config.initial_epochs, config.initial_patience = 30, 0
        config.iterations, config.mc_passes_labeled, config.chunk_size = 4, 8, 16
        config.pool_devices, config.figures = devices, False
        workdir = tmp_path / f"devices_{devices}"
        summaries.append(driver_lib.run(config, workdir))
        logs.append((workdir / runfolder.ORACLE_LOG).read_text())
    assert logs[0] == logs[1]
    final = [{k: v for k, v in s["final"].items() if k not in ("seconds", "phase_seconds")} for s in summaries]
    assert final[0] == final[1]


def test_pool_mesh_refuses_more_devices_than_there_are():
    with pytest.raises(ValueError, match="devices"):
        uncertainty.pool_mesh(jax.device_count() + 1)
    assert uncertainty.pool_mesh(1) is None

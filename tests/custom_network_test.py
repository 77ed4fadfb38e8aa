"""Your network by import path: `model.architecture="package.module:Class"` with `model.kwargs`; the loop,
the seed axis and exact resume work for it, and a module that breaks the contract is refused in one line."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from deepbass_jax import config as config_lib, driver as driver_lib, models
from deepbass_jax.layers import HashDropout
from deepbass_jax.workdir import checkpoint, runfolder
from tests.helpers import toy_config

HERE = "tests.custom_network_test"


class TinyNet(nn.Module):
    """The README's example shape: a width of its own, project dropout with row_offset for several processes."""

    num_classes: int
    width: int = 8
    rate: float = 0.3
    row_offset: int = 0

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = nn.relu(nn.Dense(self.width)(x.reshape(x.shape[0], -1)))
        x = HashDropout(self.rate, self.row_offset)(x, deterministic=deterministic)
        return nn.Dense(self.num_classes)(x)


class FlaxDropoutNet(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        x = nn.Dropout(0.5)(nn.relu(nn.Dense(8)(x)), deterministic=deterministic)
        return nn.Dense(self.num_classes)(x)


class NoDropoutNet(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        return nn.Dense(self.num_classes)(x)


class WrongOutputNet(nn.Module):
    num_classes: int

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        return nn.Dropout(0.5)(nn.Dense(self.num_classes + 1)(x), deterministic=deterministic)


def _config(**overrides):
    return toy_config(initial_epochs=20, iterations=4, **{"model.architecture": f"{HERE}:TinyNet",
                                                          "model.kwargs": '{"width": 16}', **overrides})


def test_mc_passes_differ_between_keys_and_the_deterministic_call_does_not():
    module = models.build(_config().model, 2)
    assert type(module).__name__ == "TinyNet" and module.width == 16 and module.num_classes == 2  # imported by path
    apply = models.make_apply(module)
    params = models.init_params(module, jax.random.key(0), (2,))
    x = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    assert not np.array_equal(apply(params, x, jax.random.key(1)), apply(params, x, jax.random.key(2)))
    np.testing.assert_array_equal(apply(params, x), apply(params, x))
    np.testing.assert_array_equal(apply(params, x, jax.random.key(1)), apply(params, x, jax.random.key(1)))


def _files(workdir):
    return {"checkpoint": checkpoint.load(workdir / runfolder.CHECKPOINT)["train_state"],
            "oracle_log": (workdir / runfolder.ORACLE_LOG).read_bytes(),
            "metrics": [{k: v for k, v in line.items() if k not in ("seconds", "phase_seconds")}
                        for line in checkpoint.read_jsonl(workdir / runfolder.METRICS)]}


def test_your_network_runs_the_loop_and_resumes_bit_for_bit(tmp_path):
    config = _config()
    whole = driver_lib.Driver(config, tmp_path / "whole").run()
    assert whole["test_accuracy"] > 0.5
    stopped = driver_lib.Driver(config, tmp_path / "resumed")
    assert stopped.run(should_stop=lambda: stopped.iteration >= 2) is None
    driver_lib.Driver(config, tmp_path / "resumed").run()
    expected, resumed = _files(tmp_path / "whole"), _files(tmp_path / "resumed")
    assert resumed["oracle_log"] == expected["oracle_log"] and resumed["metrics"] == expected["metrics"]
    jax.tree_util.tree_map(np.testing.assert_array_equal, resumed["checkpoint"], expected["checkpoint"])


def test_flax_dropout_and_the_seed_axis(tmp_path):
    config = toy_config(num_seeds=2, iterations=1, initial_epochs=10,
                        **{"model.architecture": f"{HERE}:FlaxDropoutNet"})
    summaries = driver_lib.Driver(config, tmp_path).run()
    assert len(summaries) == 2 and all(s["labels"] == 10 for s in summaries)  # 8 initial + 2 in iteration 1


@pytest.mark.parametrize("architecture, kwargs, message", [
    ("no_such_package.nets:Net", "{}", r"cannot import 'no_such_package\.nets' \(No module named 'no_such_package'\)"),
    (f"{HERE}:Missing", "{}", r"has no 'Missing'"),
    (f"{HERE}:_config", "{}", r"not a flax linen Module class"),
    (f"{HERE}:TinyNet", "{width: 3}", r"model\.kwargs='\{width: 3\}' is not JSON"),
    (f"{HERE}:TinyNet", "[3]", r"must be a JSON object"),
])
def test_refused_before_any_data_is_read(architecture, kwargs, message):
    with pytest.raises(ValueError, match=message):
        config_lib.validate(_config(**{"model.architecture": architecture, "model.kwargs": kwargs}))


@pytest.mark.parametrize("name, processes, message", [
    ("NoDropoutNet", 1, r"has no dropout: two MC-dropout passes gave the same outputs"),
    ("WrongOutputNet", 1, r"gives outputs of shape \(3,\) per batch of 2, but the data have 2 classes"),
    ("FlaxDropoutNet", 2, r"uses flax's nn\.Dropout, whose masks do not follow a row's place .* 2 processes"),
    ("TinyNet", 1, None),
    ("TinyNet", 2, None),
    ("NoDropoutNet", 1, r"model\.kwargs='\{\"width\": 3\}': .*unexpected keyword argument 'width'"),
])
def test_contract_checked_with_the_data(name, processes, message):
    kwargs = '{"width": 3}' if "kwargs" in (message or "") else "{}"
    model = _config(**{"model.architecture": f"{HERE}:{name}", "model.kwargs": kwargs}).model
    if message is None:
        models.check_network(model, (2,), 2, processes)
    else:
        with pytest.raises(ValueError, match=message):
            models.check_network(model, (2,), 2, processes)


def test_a_refused_network_leaves_no_workdir(tmp_path):
    with pytest.raises(ValueError, match="has no dropout"):
        driver_lib.Driver(_config(**{"model.architecture": f"{HERE}:NoDropoutNet", "model.kwargs": "{}"}),
                          tmp_path / "run")
    assert not (tmp_path / "run").exists()

"""When to stop: each metrics line holds the stop-set kappa between consecutive networks (stabilizing predictions),
and config.stop_when_stable ends a run once it stayed high for 3 iterations, saying why."""

import numpy as np

from deepbass_jax import driver as driver_lib, metrics
from deepbass_jax.workdir import checkpoint, runfolder
from tests.helpers import toy_config


def test_stop_set_kappa_in_every_line_and_an_early_stop(tmp_path, caplog):
    config = toy_config(iterations=8, stop_set_size=100)
    whole = driver_lib.Driver(config, tmp_path / "whole")
    whole.run()
    lines = checkpoint.read_jsonl(tmp_path / "whole" / runfolder.METRICS)[1:]
    kappas = [line["stop_set_kappa"] for line in lines]
    assert len(kappas) == 8 and all(-1 <= k <= 1 for k in kappas)
    assert min(kappas) < 1  # the networks change: their predictions are not all the same
    threshold = float(np.sort(kappas)[2])  # 6 of the 8 iterations reach it: 3 in a row somewhere
    stop_at = next((i + 1 for i in range(2, 8) if min(kappas[i - 2: i + 1]) >= threshold), None)
    assert stop_at is not None
    config = toy_config(iterations=8, stop_set_size=100, stop_when_stable=threshold)
    summary = driver_lib.Driver(config, tmp_path / "early").run()
    early = checkpoint.read_jsonl(tmp_path / "early" / runfolder.METRICS)[1:]
    assert [line["stop_set_kappa"] for line in early] == kappas[: len(early)]  # the same run, cut short
    assert len(early) == stop_at and summary["iterations"] == stop_at
    assert "stop_when_stable" in caplog.text and f"Stopping after iteration {stop_at} of 8" in caplog.text


def test_stable_reads_the_last_three_lines_of_every_seed(tmp_path):
    for name, kappas in (("a", [0.5, 0.99, 0.995, 1.0]), ("b", [0.99, 0.2, 0.999, 0.991])):
        (tmp_path / name).mkdir()
        checkpoint.rewrite_jsonl(tmp_path / name / runfolder.METRICS, [{"iteration": 0}] + [
            {"iteration": i + 1, "stop_set_kappa": k} for i, k in enumerate(kappas)])
    assert "3 consecutive iterations" in metrics.stable([tmp_path / "a"], 0.99)
    assert metrics.stable([tmp_path / "a", tmp_path / "b"], 0.99) == ""  # seed b dipped to 0.2
    assert metrics.stable([tmp_path / "a"], 0.0) == ""  # off

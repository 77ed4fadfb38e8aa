"""studies/batchbald_mnist.py: the report from synthetic records (labels to reach 90 / 95 %, the figure, the README's
rows beside Kirsch et al.'s published numbers), and the study end to end on a tiny MNIST setting."""

import json

import numpy as np
import pytest

from deepbass_jax.workdir import checkpoint
from experiments.configs import mnist
from studies import batchbald_mnist as study


def _record(policy: str, seed: int, accuracies: list[float]) -> dict:
    """A study record of `policy` whose network after 20 + 10 t labels had accuracies[t] (%)."""
    preset = study.PRESETS[policy]
    config = json.loads(mnist.get_config(preset).to_json_best_effort())
    config["seed"] = seed
    metrics = [{"iteration": t, "labels": 20 + 10 * t, "test_accuracy": a / 100} for t, a in enumerate(accuracies)]
    return {"row": mnist.row(preset), "preset": preset, "seed": seed, "dataset": "mnist", "scale": "cpu",
            "test_accuracy": accuracies[-1], "config": config, "metrics": metrics,
            "command": f"python -m experiments.main --config=experiments/configs/mnist.py:{preset} "
                       f"--config.seed={seed}",
            "device": "CPU (cpu)", "commit": "abc1234", "seconds": 1800.0}


def _ramp(start: float, step: float, length: int = 29) -> list[float]:
    return [min(start + step * t, 99.0) for t in range(length)]


def _steps(to_90: int, to_95=None, length: int = 29) -> list[float]:
    """Accuracies (%) of networks after 20, 30, ... labels: 50 at 20 labels, 80 below `to_90` labels, 92 from it,
    96 from `to_95` (None: never)."""
    labels = 20 + 10 * np.arange(length)
    return [50.0 if n == 20 else 96.0 if to_95 is not None and n >= to_95 else 92.0 if n >= to_90 else 80.0
            for n in labels]


def test_published_numbers_are_kirsch_et_als_table_1_one_acquisition_short_of_their_runs():
    """Table 1 as their notebook prints it equals the nearest-rank quartiles of their runs' labels trained on, less
    one acquisition of 10 (their get_marks); the runs are 6 per policy, 20 labels first, 10 per acquisition."""
    paper = study.published()
    for policy in study.PRESETS:
        labels, runs = study.published_curves(policy)
        assert runs.shape[0] == 6 and labels[0] == 20 and set(np.diff(labels)) == {10}
        for threshold in study.THRESHOLDS:
            reached = [study.labels_to_reach(labels, run, threshold) for run in runs]
            marks = np.array([np.inf if r is None else r - 10 for r in reached])
            quartiles = np.percentile(marks, (25, 50, 75), method="nearest")
            assert [None if np.isinf(q) else int(q) for q in quartiles] == paper["table_1"][policy][str(threshold)]
    assert paper["table_1"]["batchbald"] == {"90": [70, 90, 110], "95": [190, 200, 230]}
    assert paper["table_1"]["bald"] == {"90": [120, 120, 170], "95": [250, 250, None]}


def _write_records(outdir, curves):
    """OUTDIR/runs/PRESET/seed_S.json for each (policy, seed): accuracies of `curves`."""
    for (policy, seed), accuracies in curves.items():
        path = outdir / "runs" / study.PRESETS[policy] / f"seed_{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(path, _record(policy, seed, accuracies))


def test_report_from_synthetic_records(tmp_path):
    curves = {("batchbald", 0): _steps(100, 200), ("batchbald", 1): _steps(120),
              ("bald", 0): _steps(140, 250), ("bald", 1): _steps(160, 260)}
    _write_records(tmp_path, curves)
    table = study.write_report(tmp_path)
    assert json.loads((tmp_path / "table.json").read_text()) == table
    batchbald, bald = table["batchbald"]["labels_to_reach"], table["bald"]["labels_to_reach"]
    assert batchbald["90"]["per_seed"] == {"0": 100, "1": 120} and batchbald["90"]["mean"] == 110.0
    assert batchbald["95"]["per_seed"] == {"0": 200, "1": None} and batchbald["95"]["reached"] == 1
    assert bald["90"]["per_seed"] == {"0": 140, "1": 160} and bald["95"]["per_seed"] == {"0": 250, "1": 260}
    assert table["batchbald"]["accuracy_at"]["20"] == [50.0, 50.0]
    theirs = table["batchbald"]["kirsch"]
    assert theirs["labels_to_reach"]["90"]["per_run"] == [120, 80, 100, 80, 120, 110]  # Table 1's + 10
    assert theirs["accuracy_at"]["300"] is None and theirs["accuracy_at"]["20"] > 60
    readme = (tmp_path / "README.md").read_text()
    assert "| BatchBALD | 90 % | s0: 100, s1: 120 | 110.00 (14.14) | 70 / 90 / 110 | 101.67 (18.35) |" in readme
    assert "| BatchBALD | 95 % | s0: 200, s1: - | 200.00, 1 of 2 reached | 190 / 200 / 230 |" in readme
    assert "| BALD | 95 % | s0: 250, s1: 260 | 255.00 (7.07) | 250 / 250 / not reached | " in readme
    assert "90 % s0: -40; 90 % s1: -40; 95 % s0: -50; 95 % s1: -" in readme
    assert "| 20 | 50.00 (0.00) | 65.98 | 50.00 (0.00) | 66.31 |" in readme  # ours and Kirsch et al.'s mean
    assert "2.0 hours of runs in all" in readme and "Table 1" in readme
    assert (tmp_path / study.FIGURE).stat().st_size > 20_000
    drawn = study.plot(study.load_records(tmp_path), tmp_path / "again.png")
    assert drawn == ["BALD, this code (2 runs)", "BALD, Kirsch et al.: median of 6 runs (58,956-image pool)",
                     "BatchBALD, this code (2 runs)",
                     "BatchBALD, Kirsch et al.: median of 6 runs (58,956-image pool)"]


def test_runs_of_two_lengths_never_share_a_curve(tmp_path):
    for seed, length in ((0, 29), (1, 3)):
        path = tmp_path / "runs" / study.PRESETS["bald"] / f"seed_{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(path, _record("bald", seed, _ramp(60.0, 2.0, length)))
    drawn = study.plot(study.load_records(tmp_path), tmp_path / "f.png")
    assert drawn[:2] == ["BALD, this code (1 run, 2 acquisitions)", "BALD, this code (1 run, 28 acquisitions)"]


def test_report_refuses_an_empty_outdir(tmp_path):
    with pytest.raises(ValueError, match="holds no runs"):
        study.write_report(tmp_path)


@pytest.mark.slow  # about 30 s on 2 cores: two tiny runs of the CNN
def test_the_study_end_to_end_on_a_tiny_setting(tmp_path, monkeypatch, mnist_dir):
    """Both presets on a 300-image pool, 2 acquisitions of 10, 2 epochs: the records, the pairing of the policies
    on one seed (the same initial labels and network) and the report."""
    monkeypatch.setattr(mnist, "CPU_POOL_SIZE", 300)
    tiny = {"iterations": 2, "initial_epochs": 2, "retrain_epochs": 2, "mc_passes_pool": 4, "batch_passes": 8,
            "batch_candidates": 40, "test_size": 500, "chunk_size": 64}
    for policy in study.PRESETS:
        preset = study.PRESETS[policy].removeprefix(mnist.CPU_PREFIX)
        monkeypatch.setitem(mnist.TABLE, preset, mnist.Preset(mnist.TABLE[preset].row,
                                                              {**mnist.TABLE[preset].overrides, **tiny}))
    study.run(tmp_path / "out", [0], str(mnist_dir), tmp_path / "work")
    records = study.load_records(tmp_path / "out")
    assert [(r["preset"], r["seed"]) for r in records] == [("cpu_bald_mnist", 0), ("cpu_batchbald_mnist", 0)]
    for record in records:
        assert [m["labels"] for m in record["metrics"]] == [20, 30, 40]
        assert record["config"]["pool_size"] == 300 and record["config"]["retrain_epochs"] == 2
    bald, batchbald = records
    assert bald["metrics"][0]["test_accuracy"] == batchbald["metrics"][0]["test_accuracy"]  # one initial fit
    logs = [checkpoint.read_jsonl(tmp_path / "work" / "mnist" / r["preset"] / "seeds_0_0" / "oracle_log.jsonl")
            for r in records]
    initial = [[entry for entry in log if entry["iteration"] == 0] for log in logs]
    assert len(initial[0]) == 20 and initial[0] == initial[1]  # the same initial labels
    table = study.write_report(tmp_path / "out")
    assert table["batchbald"]["seeds"] == [0]
    assert table["bald"]["accuracy_at"]["20"] == [100 * bald["metrics"][0]["test_accuracy"]]
    assert (tmp_path / "out" / study.FIGURE).exists() and "s0:" in (tmp_path / "out" / "README.md").read_text()


def test_batch_diversity_counts_distinct_classes_per_acquisition(tmp_path):
    curves = {("batchbald", 0): _steps(100, 200), ("bald", 0): _steps(140, 250)}
    _write_records(tmp_path, curves)
    logs = {"batchbald": [(0, 0), (0, 1), (1, 3), (1, 4), (1, 5), (2, 6), (2, 6)],  # 3 and 1 classes
            "bald": [(1, 7), (1, 7), (2, 8), (2, 8)]}
    for policy, entries in logs.items():
        path = tmp_path / "oracle_logs" / study.PRESETS[policy] / "seed_0.jsonl"
        path.parent.mkdir(parents=True)
        path.write_text("".join(json.dumps({"iteration": t, "label": c, "index": i, "id": i}) + "\n"
                                for i, (t, c) in enumerate(entries)))
    assert study.batch_diversity(tmp_path) == {"bald": {0: 1.0}, "batchbald": {0: 2.0}}
    table = study.write_report(tmp_path)
    assert table["batchbald"]["batch_diversity"] == {"0": 2.0}
    assert "- BatchBALD: s0: 2.00; mean 2.00" in (tmp_path / "README.md").read_text()

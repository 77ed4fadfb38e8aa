"""experiments/campaign.py and campaign_results.py: the smoke check, the choices the micro-benchmark makes, and the
whole cycle of accelerator jobs on the CPU (jobs that stop part-way, merges, continuation) giving the results of
one uninterrupted job."""

import json
import pathlib
import tarfile

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from deepbass_jax import algorithm, data, driver as driver_lib
from experiments import campaign, campaign_results, device_check
from experiments.configs import mnist
from tests.compilations import count_compilations


def _campaign(outdir: pathlib.Path, **flag_values) -> dict:
    """campaign.campaign with these flags set (the others at their defaults, run folders beside `outdir`), in this
    process; the flags are restored afterwards, and no other flag (another module's, absl's logging) is touched."""
    defaults = {"workroot": str(outdir.parent / f"{outdir.name}_workroot")}
    with flagsaver.flagsaver(outdir=str(outdir), **{**defaults, **flag_values}):
        _mark_flags_parsed()
        return campaign.campaign(outdir, flags.FLAGS.budget_s, smoke_only=flags.FLAGS.smoke)


def _mark_flags_parsed():
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _job(tmp_path: pathlib.Path, name: str, results: pathlib.Path, mnist_dir, **extra) -> pathlib.Path:
    outdir = tmp_path / name
    _campaign(outdir, rows=["all_data_max_entropy"], seeds_per_row=2, max_seeds=2, pool_size=320, iterations=5,
              initial_epochs=1, test_size=100, chunk_size=64, seed_axis="map", smoke_iterations=0, budget_s=900.0,
              data_dir=str(mnist_dir), results=str(results), workroot=str(tmp_path / "work"), **extra)
    return outdir


def _records(results: pathlib.Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / "mnist" / "runs" / "all_data_max_entropy").glob("*"))]


def _without_timings(lines):
    return [{k: v for k, v in line.items() if k not in ("seconds", "phase_seconds")} for line in lines]


def test_smoke_check_reports_device_check_timings_and_projection(tmp_path, mnist_dir):
    """--smoke on tiny settings: the device, the reference check, the micro-benchmark of both seed axes, a few
    real iterations with per-phase times and the projection of a 10-seed row; no row is run."""
    outdir = tmp_path / "smoke"
    report = _campaign(outdir, smoke=True, max_seeds=1, seed_axis="map", pool_size=320, iterations=5,
                       initial_epochs=1, test_size=100, chunk_size=64, smoke_iterations=2, data_dir=str(mnist_dir),
                       results=str(tmp_path / "results"), workroot=str(tmp_path / "work"))
    assert json.loads((outdir / "campaign.json").read_text())["smoke"] == json.loads(json.dumps(report["smoke"]))
    assert report["device"]["backend"] == "cpu" and report["reference"]["passed"]
    # Given one seed axis, only it is timed (auto times both and takes the faster: vmap is slow to compile here).
    assert [(t["seed_axis"], t["seeds"]) for t in report["device_function_seconds"]] == [("map", 1)]
    [timing] = report["device_function_seconds"]  # steps timed as the epochs take them; on the CPU not one a call
    assert timing["steps_per_call"] == 16 and timing["step_seconds"] > 0 and timing["single_step_seconds"] is None
    assert report["seed_axis"] == "map"
    smoke = report["smoke"]
    assert smoke["seeds"] == 1 and smoke["iterations"] == 2 and len(smoke["test_accuracy"]) == 1
    assert set(smoke["phase_seconds"]) == {"pool_inference", "labeled_inference", "acquisition_and_pseudo_labels",
                                           "epoch", "accuracy", "metrics", "iteration_total"}
    assert smoke["projected_10_seed_row_seconds"] > 0
    assert report["jobs"] == [] and not (outdir / "rows.json").exists()


def _passing_check(kernels, exact=False):
    """check_reference's verdict without running the network (device_check_test runs it)."""
    return {"kernels": kernels, "precision": "float32" if exact else "default", "relative_errors": {},
            "rtol": device_check.EXACT_RTOL if exact else device_check.REFERENCE_RTOL, "passed": True}


def _measured_elsewhere(monkeypatch):
    """The reference check passes and the micro-benchmark reports fixed small times, without running the network:
    for tests of what the campaign does with rows (device_check_test and the smoke test run both for real)."""
    monkeypatch.setattr(campaign, "check_reference", _passing_check)

    def device_functions(config, dataset, num_seeds, seed_axis, single_step=True):
        return {"seeds": num_seeds, "seed_axis": seed_axis, "kernels": config.model.kernels,
                "chunk_size": config.chunk_size, "chunk_seconds": 0.001 * num_seeds, "step_seconds": 0.001 * num_seeds,
                "steps_per_call": config.train.steps_per_call, "single_step_seconds": None}

    monkeypatch.setattr(campaign, "time_device_functions", device_functions)


def _smoke_with_two_kernel_choices(tmp_path, mnist_dir, monkeypatch, check, training_step, device_functions,
                                   candidates=("cpu_tuned", "block_diagonal"), **flag_values):
    """The smoke check with `candidates` (default: cpu_tuned and block_diagonal) to choose from, as on an
    accelerator under vmap, and these fakes for the reference check and the micro-benchmark; returns its report."""
    device = campaign.device_facts()
    monkeypatch.setattr(campaign, "device_facts", lambda: {**device, "backend": "gpu"})
    monkeypatch.setattr(campaign, "check_reference", check)
    monkeypatch.setattr(campaign, "kernel_candidates", lambda *args: candidates)
    monkeypatch.setattr(campaign, "time_training_step", training_step)
    monkeypatch.setattr(campaign, "time_device_functions", device_functions)
    return _campaign(tmp_path / "smoke", smoke=True, max_seeds=2, seed_axis="vmap", smoke_iterations=0,
                     chunk_size=64, data_dir=str(mnist_dir), results=str(tmp_path / "results"), **flag_values)


@pytest.mark.parametrize("faster", ["cpu_tuned", "block_diagonal"])
def test_the_micro_benchmark_chooses_the_kernels_that_train_the_seeds_faster(tmp_path, mnist_dir, monkeypatch,
                                                                              faster):
    """With two kernel choices to time (as on an accelerator under vmap), both pass the reference check, the
    training step of --max_seeds seeds is timed with each, and the faster one is used and projected with."""
    per_seed = {"cpu_tuned": 0.004, "block_diagonal": 0.003 if faster == "block_diagonal" else 0.005}

    def training_step(config, dataset, num_seeds, seed_axis, single_step=True):
        seconds = per_seed[config.model.kernels] * num_seeds
        return {"step_seconds": seconds, "steps_per_call": 16,
                "single_step_seconds": 2 * seconds if single_step else None}

    def device_functions(config, dataset, num_seeds, seed_axis, single_step=True):
        return {"seeds": num_seeds, "seed_axis": seed_axis, "kernels": config.model.kernels,
                "chunk_size": config.chunk_size, "chunk_seconds": 0.001 * num_seeds,
                **training_step(config, dataset, num_seeds, seed_axis, single_step)}

    report = _smoke_with_two_kernel_choices(tmp_path, mnist_dir, monkeypatch, _passing_check, training_step,
                                            device_functions)
    checks = report["reference"]["checks"]  # the alternative in float32 throughout
    assert [(c["kernels"], c["precision"]) for c in checks] == [("cpu_tuned", "default"), ("block_diagonal", "float32")]
    assert report["reference"]["passed"] and all(check["passed"] for check in report["reference"]["checks"])
    assert report["kernels_step_seconds"] == {"cpu_tuned": 0.008, "block_diagonal": 2 * per_seed["block_diagonal"]}
    assert report["kernels"] == faster
    one, two = report["device_function_seconds"]
    assert (one["kernels"], two["kernels"]) == ("cpu_tuned", faster)
    assert two["step_seconds"] == 2 * per_seed[faster]
    # One step a call is timed for the default kernels and the seeds the job trains alone (a compilation less for
    # each other timing): none is reported for the alternative or for one seed.
    assert one["single_step_seconds"] is None
    assert two["single_step_seconds"] == (4 * per_seed[faster] if faster == "cpu_tuned" else None)
    config = mnist.get_config("all_data_max_entropy")
    iteration_steps, fit_steps = device_check._steps_per_epoch(config, 60000)
    steps = iteration_steps * config.iterations + fit_steps * config.initial_epochs
    chunks = -(-60000 // 64) * config.iterations
    assert report["projected_from_device_functions"]["2"]["row"] == pytest.approx(
        steps * 2 * per_seed[faster] + chunks * 0.002)


@pytest.mark.parametrize("failure", ["wrong numbers", "check raises", "training raises"])
def test_an_alternative_kernel_choice_that_fails_is_not_used(tmp_path, mnist_dir, monkeypatch, failure):
    """However fast, an alternative whose numbers differ from the CPU's, or that raises (say, an API the device's
    jax lacks), is not used: the job goes on with the default kernels and notes the error."""
    def check(kernels, exact=False):
        if kernels == "block_diagonal" and failure == "check raises":
            raise AttributeError("custom_vmap")
        result = _passing_check(kernels, exact)
        return {**result, "passed": False} if kernels == "block_diagonal" and failure == "wrong numbers" else result

    def training_step(config, dataset, num_seeds, seed_axis, single_step=True):
        assert failure == "training raises", "an alternative that failed its check was timed"
        raise RuntimeError("no kernel for this convolution")

    def device_functions(config, dataset, num_seeds, seed_axis, single_step=True):
        assert config.model.kernels == "cpu_tuned"
        return {"seeds": num_seeds, "seed_axis": seed_axis, "kernels": config.model.kernels, "chunk_size": 64,
                "chunk_seconds": 0.001, "step_seconds": 0.01, "steps_per_call": 16, "single_step_seconds": 0.01}

    report = _smoke_with_two_kernel_choices(tmp_path, mnist_dir, monkeypatch, check, training_step, device_functions)
    assert report["reference"]["passed"] and report["kernels"] == "cpu_tuned"
    assert report["reference"]["checks"][1]["passed"] == (failure == "training raises")
    expected_errors = {"check raises": "AttributeError('custom_vmap')",
                       "training raises": "RuntimeError('no kernel for this convolution')"}
    assert report.get("kernel_errors") == ({"block_diagonal": expected_errors[failure]}
                                           if failure in expected_errors else None)
    if failure == "training raises":
        assert report["kernels_step_seconds"] == {"cpu_tuned": 0.01}


@pytest.mark.parametrize("record", ["this device", "another jax", "another seed count", "--kernels=measure"])
def test_a_kernel_choice_recorded_on_this_device_is_the_only_one_checked_and_timed_again(tmp_path, mnist_dir,
                                                                                         monkeypatch, record):
    """An earlier job on this device kind and jax version timed three kernel choices for as many seeds: this job
    checks and times only its fastest beside the default. A record from another jax version or for another number
    of seeds, or --kernels=measure, has every choice checked and timed."""
    device = campaign.device_facts()
    bench = tmp_path / "results" / "bench"
    bench.mkdir(parents=True)
    (bench / "campaign_gpu_20261127T000000Z_abc1234.json").write_text(json.dumps({
        "device": {**device, "backend": "gpu", "jax": "0.0.1" if record == "another jax" else device["jax"]},
        "seed_axis": "vmap", "kernels": "block_diagonal_2", "started_utc": "2026-11-27T00:00:00Z", "commit": "abc1234",
        "kernels_step_seconds": {"cpu_tuned": 0.02, "block_diagonal": 0.03, "block_diagonal_2": 0.01},
        "device_function_seconds": [{"seeds": 1}, {"seeds": 3 if record == "another seed count" else 2}]}))
    checked, timed = [], []

    def check(kernels, exact=False):
        checked.append(kernels)
        return _passing_check(kernels, exact)

    def training_step(config, dataset, num_seeds, seed_axis, single_step=True):
        timed.append(config.model.kernels)
        return {"step_seconds": 0.001, "steps_per_call": 16, "single_step_seconds": None}

    def device_functions(config, dataset, num_seeds, seed_axis, single_step=True):
        return {"seeds": num_seeds, "seed_axis": seed_axis, "kernels": config.model.kernels, "chunk_size": 64,
                "chunk_seconds": 0.001, "step_seconds": 0.004, "steps_per_call": 16, "single_step_seconds": None}

    report = _smoke_with_two_kernel_choices(
        tmp_path, mnist_dir, monkeypatch, check, training_step, device_functions,
        candidates=("cpu_tuned", "block_diagonal", "block_diagonal_2"),
        **({"kernels": "measure"} if record == "--kernels=measure" else {}))
    if record == "this device":
        assert checked == ["cpu_tuned", "block_diagonal_2"] and timed == ["block_diagonal_2"]
        assert report["kernels_recorded"]["started_utc"] == "2026-11-27T00:00:00Z"
    else:
        assert checked == ["cpu_tuned", "block_diagonal", "block_diagonal_2"]
        assert timed == ["block_diagonal", "block_diagonal_2"] and "kernels_recorded" not in report
    assert report["kernels"] == timed[0]  # the first alternative timed: all take 1 ms against the default's 4


@pytest.mark.slow  # about 105 s on 2 CPU cores: pytest -m slow
def test_three_jobs_with_merges_equal_one_uninterrupted_job(tmp_path, mnist_dir):
    """Jobs limited to 2 iterations each: the first fits and runs iterations 1-2, the second 3-4, the third
    5 and finishes; each is merged before the next starts, which continues from the merged snapshot. The
    records equal those of one job run to the end, bit for bit (seed axis map)."""
    results, reference = tmp_path / "results", tmp_path / "reference"
    for number, expect_pending in ((1, True), (2, True), (3, False)):
        job = _job(tmp_path, f"job{number}", results, mnist_dir, max_iterations=2)
        assert (job / campaign.PENDING).exists() == expect_pending
        assert (job / "rows.json").exists() == (not expect_pending)
        if not expect_pending:  # a finished row of a shrunken setting never enters the paper's table by default
            with pytest.raises(ValueError, match="not the paper's setting"):
                campaign.merge(job, results)
        campaign.merge(job, results, allow_reduced=True)
        assert campaign.pending_path(results).exists() == expect_pending
        report = json.loads((job / "campaign.json").read_text())
        assert report["jobs"][0]["iteration"] == min(2 * number, 5)
    assert len(list(job.iterdir())) <= 8
    # Nothing is left to do: a fourth job runs no row.
    assert json.loads((_job(tmp_path, "job4", results, mnist_dir) / "campaign.json").read_text())["jobs"] == []

    campaign.merge(_job(tmp_path, "uninterrupted", reference, mnist_dir), reference, allow_reduced=True)
    split, whole = _records(results), _records(reference)
    assert [r["seed"] for r in split] == [r["seed"] for r in whole] == [0, 1]
    for ours, expected in zip(split, whole):
        assert ours["scale"] == "reduced"
        assert len(ours["metrics"]) == 6
        assert _without_timings(ours["metrics"]) == _without_timings(expected["metrics"])
        assert ours["test_accuracy"] == expected["test_accuracy"]
    table = json.loads((results / "mnist" / "table.json").read_text())
    assert table["all_data_max_entropy_300"]["scale"] == "reduced"
    assert table["all_data_max_entropy_300"]["mean"] == pytest.approx(np.mean([r["test_accuracy"] for r in whole]),
                                                                      abs=0.01)


def test_the_run_takes_the_training_programs_the_micro_benchmark_compiled(tmp_path, mnist_dir):
    """The micro-benchmark's training steps get what the run's epochs give them (its pools, int32 targets, the
    augmentation): the run that follows compiles no training step. Epochs of 4 steps (100 labels, no upsampling,
    batches of 32), 3 a call, use both programs; a pool of 336 samples, which no other test has, makes them new to
    this process."""
    _mark_flags_parsed()
    with flagsaver.flagsaver(pool_size=336, initial_epochs=1, test_size=100, data_dir=str(mnist_dir)):
        config = campaign.run_config("supervised_100", 0, 2, "map")
    config.train.upsample, config.train.batch_size, config.train.steps_per_call = 1, 32, 3
    dataset = data.load(config.data)
    steps = algorithm.seeds_train_steps.__name__
    with count_compilations() as compiled:
        timing = device_check.time_training_step(config, dataset, 2, "map")
    assert compiled[steps] == 2 and timing["single_step_seconds"] > 0
    with count_compilations() as compiled:
        driver = driver_lib.Driver(config, tmp_path / "run")
        driver.initial_fit()
    assert not driver.shared_pool and driver.num_pool == 336
    assert compiled[steps] == 0, "the run compiled a training step of its own"


def test_seeds_that_fit_shrinks_the_block_to_the_time_left():
    """A supervised row must finish; a row with iterations must get through its fit and 3 iterations."""
    def projection(config, seeds):  # 10 s of fit and 2 s per iteration per seed
        return {"initial_fit": 10.0 * seeds, "iteration": 2.0 * seeds}

    supervised, iterated = mnist.get_config("supervised_600"), mnist.get_config("all_data_max_entropy")
    margin = campaign.START_MARGIN_S
    assert campaign.seeds_that_fit(supervised, 10, margin + 100.0, projection) == 10
    assert campaign.seeds_that_fit(supervised, 10, margin + 45.0, projection) == 4
    assert campaign.seeds_that_fit(supervised, 5, margin + 1000.0, projection) == 5
    assert campaign.seeds_that_fit(supervised, 10, margin + 9.0, projection) == 0
    assert campaign.seeds_that_fit(iterated, 10, margin + 160.0, projection) == 10  # 100 + 3 x 20
    assert campaign.seeds_that_fit(iterated, 10, margin + 159.0, projection) == 9
    assert campaign.seeds_that_fit(iterated, 10, margin + 15.0, projection) == 0


def test_phase_summary_leaves_out_the_compiling_iteration_and_averages_each_phase_where_it_is_timed():
    """A resumed row mixes lines from before a phase was split off ("accuracy" from "metrics") with newer ones."""
    lines = [{"iteration": 0},  # the initial model: no phases
             {"iteration": 1, "phase_seconds": {"epoch": 9.0, "metrics": 9.0}},  # compiles
             {"iteration": 2, "phase_seconds": {"epoch": 1.0, "metrics": 0.5}},
             {"iteration": 3, "phase_seconds": {"epoch": 3.0, "accuracy": 0.25, "metrics": 0.25}}]
    assert campaign.phase_summary(lines) == {"epoch": 2.0, "metrics": 0.375, "accuracy": 0.25, "iteration_total": 2.5}
    assert campaign.phase_summary(lines[:2]) == {"epoch": 9.0, "metrics": 9.0, "iteration_total": 18.0}
    assert campaign.phase_summary(lines[:1]) == {}


def test_a_row_in_several_blocks_of_one_job_keeps_every_seed(tmp_path, mnist_dir, monkeypatch):
    """With --max_seeds below the row's seeds, one job runs the row block after block: rows.json, runs.tar.gz
    and the merged records hold every seed, each equal to a run of its seed alone."""
    _measured_elsewhere(monkeypatch)
    results = tmp_path / "results"
    outdir = tmp_path / "job"
    _campaign(outdir, rows=["supervised_100"], seeds_per_row=3, max_seeds=2, pool_size=320, initial_epochs=2,
              test_size=100, chunk_size=64, seed_axis="map", smoke_iterations=0, budget_s=900.0,
              data_dir=str(mnist_dir), results=str(results), workroot=str(tmp_path / "work"))
    report = json.loads((outdir / "campaign.json").read_text())
    assert [job["seeds"] for job in report["jobs"]] == [[0, 1], [2]]
    rows = json.loads((outdir / "rows.json").read_text())
    assert rows["supervised_100"]["seeds"] == [0, 1, 2]
    assert [r["seed"] for r in rows["supervised_100"]["results"]] == [0, 1, 2]
    with tarfile.open(outdir / "runs.tar.gz") as archive:
        names = set(archive.getnames())
    for seed in range(3):
        assert {f"supervised_100/seed_{seed}/{name}" for name in ("metrics.jsonl", "summary.json")} <= names
    campaign.merge(outdir, results, allow_reduced=True)
    records = {p.name: json.loads(p.read_text()) for p in (results / "mnist" / "runs" / "supervised_100").glob("*")}
    assert sorted(records) == ["seed_0.json", "seed_1.json", "seed_2.json"]
    # A job whose rows.json did not come back merges from runs.tar.gz and campaign.json to the same records.
    (outdir / "rows.json").unlink()
    rebuilt = tmp_path / "rebuilt"
    campaign.merge(outdir, rebuilt, allow_reduced=True)
    assert {p.name: json.loads(p.read_text()) for p in (rebuilt / "mnist" / "runs" / "supervised_100").glob("*")} \
        == records
    # Seed 1 ran second in the first block and seed 2 alone in the second: as the campaign sets them up, they equal
    # seeds 1 and 2 of one run of the two (a block of two seeds, whose programs the job compiled).
    with flagsaver.flagsaver(pool_size=320, initial_epochs=2, test_size=100, chunk_size=64, data_dir=str(mnist_dir)):
        together = driver_lib.Driver(campaign.run_config("supervised_100", 1, 2, "map"), tmp_path / "together").run()
    assert [s["test_accuracy"] for s in together] == [r["test_accuracy"] for r in rows["supervised_100"]["results"][1:]]


def _data_root(tmp_path: pathlib.Path, mnist_dir, fashion_mnist_dir) -> pathlib.Path:
    root = tmp_path / "data"
    root.mkdir()
    (root / "mnist").symlink_to(mnist_dir)
    (root / "fashion_mnist").symlink_to(fashion_mnist_dir)
    return root


def test_fashion_mnist_rows_run_and_merge_into_their_own_results(tmp_path, mnist_dir, fashion_mnist_dir, monkeypatch):
    """A DATASET:PRESET row runs on that data set (from --data_root) and merges into results/DATASET; a later
    job finds its seeds there and has nothing left to do."""
    _measured_elsewhere(monkeypatch)
    results, root = tmp_path / "results", _data_root(tmp_path, mnist_dir, fashion_mnist_dir)
    settings = dict(rows=["supervised_100", "fashion_mnist:supervised_100"], seeds_per_row=1, max_seeds=1,
                    pool_size=320, initial_epochs=2, test_size=100, chunk_size=64, seed_axis="map",
                    smoke_iterations=0, budget_s=900.0, data_root=str(root), results=str(results),
                    workroot=str(tmp_path / "work"))
    report = _campaign(tmp_path / "job", **settings)
    assert [job["row"] for job in report["jobs"]] == ["supervised_100", "fashion_mnist:supervised_100"]
    campaign.merge(tmp_path / "job", results, allow_reduced=True)
    mnist_record, fashion_record = (json.loads((results / name / "runs" / "supervised_100" / "seed_0.json").read_text())
                                    for name in ("mnist", "fashion_mnist"))
    assert (mnist_record["dataset"], fashion_record["dataset"]) == ("mnist", "fashion_mnist")
    assert fashion_record["config"]["data"]["name"] == "fashion_mnist"
    assert fashion_record["config"]["data"]["data_dir"] == str(root / "fashion_mnist")
    # The same seed and setting on the two data sets: the same labels are bought, but other images are learnt.
    assert mnist_record["test_accuracy"] != fashion_record["test_accuracy"]
    table = json.loads((results / "fashion_mnist" / "table.json").read_text())
    assert table["supervised_100"]["scale"] == "reduced"
    assert table["supervised_100"]["per_seed"] == [pytest.approx(fashion_record["test_accuracy"])]
    assert "supervised_100" in json.loads((results / "mnist" / "table.json").read_text())
    again = _campaign(tmp_path / "again", **{**settings, "workroot": str(tmp_path / "work2")})
    assert again["jobs"] == [] and "reference" not in again  # it stopped before checking or timing anything
    assert json.loads((tmp_path / "again" / "campaign.json").read_text())["jobs"] == []


def test_rows_and_data_folders_are_checked_before_any_work(tmp_path, mnist_dir, fashion_mnist_dir):
    """A misspelt data set or preset anywhere in --rows, or a data folder that is not there, stops the job
    before the reference check or any row."""
    root = _data_root(tmp_path, mnist_dir, fashion_mnist_dir)
    common = dict(seeds_per_row=1, max_seeds=1, smoke_iterations=0, budget_s=900.0, results=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="names the data set 'fashion'"):
        _campaign(tmp_path / "a", rows=["supervised_100", "fashion:supervised_100"], data_root=str(root), **common)
    with pytest.raises(ValueError, match="unknown mnist preset 'supervised_7'"):
        _campaign(tmp_path / "b", rows=["fashion_mnist:supervised_7"], data_root=str(root), **common)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        _campaign(tmp_path / "c", rows=["supervised_100", "fashion_mnist:supervised_100"], data_dir=str(mnist_dir),
                  data_root=str(tmp_path / "nowhere"), **common)
    with pytest.raises(ValueError, match="row 'plus_1000': config.budget=1000 exceeds the pool of 320 samples"):
        _campaign(tmp_path / "d", rows=["supervised_100", "plus_1000"], data_dir=str(mnist_dir), pool_size=320,
                  **common)
    assert not any((tmp_path / job / "campaign.json").exists() for job in "abcd")  # nothing ran


def test_a_pending_row_stashed_before_rows_named_data_sets_continues_on_mnist(tmp_path):
    """results/mnist/pending.tar.gz of earlier jobs names its row "preset" (an MNIST preset)."""
    folder = tmp_path / "stash"
    folder.mkdir()
    (folder / campaign.PENDING_ROW).write_text(json.dumps({"preset": "semi_supervised_100", "seed": 0,
                                                           "num_seeds": 10, "seed_axis": "vmap"}))
    with tarfile.open(tmp_path / campaign.PENDING, "w:gz") as archive:
        archive.add(folder, arcname=".")
    with flagsaver.flagsaver(data_dir=None, data_root=None):
        _mark_flags_parsed()
        config, workdir = campaign._unstash_pending(tmp_path / campaign.PENDING, tmp_path / "work")
    assert (campaign.row_name(config), config.data.name, config.num_seeds) == ("semi_supervised_100", "mnist", 10)
    assert (workdir / campaign.PENDING_ROW).exists()


def test_status_reports_done_pending_and_remaining_rows_with_projected_device_time(tmp_path):
    """--status: seeds recorded at paper scale, the pending row's seeds and iteration, the seeds not started, and
    device seconds projected from the newest accelerator job's micro-benchmark (a CPU job's is ignored)."""
    results = tmp_path / "results"
    with flagsaver.flagsaver(data_dir=None, data_root=None, pool_size=0, iterations=0, initial_epochs=0, test_size=0,
                             chunk_size=0):
        _mark_flags_parsed()
        supervised = campaign.row_config("supervised_100")
        for seed in (0, 1):  # at paper scale; seed 2 of a smaller setting does not count
            path = results / "mnist" / "runs" / "supervised_100" / f"seed_{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"seed": seed,
                                        "config": {f: supervised[f] for f in campaign_results.SCALE_FIELDS}}))
        (results / "mnist" / "runs" / "supervised_100" / "seed_2.json").write_text(json.dumps(
            {"seed": 2, "config": {**{f: supervised[f] for f in campaign_results.SCALE_FIELDS}, "pool_size": 320}}))
        stash = tmp_path / "stash"
        (stash / "seed_0").mkdir(parents=True)
        (stash / campaign.PENDING_ROW).write_text(json.dumps({"row": "fashion_mnist:all_data_max_entropy", "seed": 0,
                                                              "num_seeds": 2, "seed_axis": "vmap"}))
        (stash / "seed_0" / "metrics.jsonl").write_text("".join(json.dumps({"iteration": i}) + "\n" for i in range(6)))
        with tarfile.open(results / "mnist" / campaign.PENDING, "w:gz") as archive:
            archive.add(stash, arcname=".")
        (results / "bench").mkdir()
        timings = [{"seeds": seeds, "seed_axis": "vmap", "chunk_size": 1000, "chunk_seconds": chunk,
                    "step_seconds": step} for seeds, chunk, step in ((1, 0.01, 0.001), (2, 0.015, 0.0015))]
        for name, backend, started, scale in (("new", "gpu", "2026-11-02", 1), ("old", "gpu", "2026-11-01", 9),
                                              ("cpu", "cpu", "2026-11-03", 9)):
            (results / "bench" / f"campaign_{name}.json").write_text(json.dumps({
                "device": {"backend": backend, "description": name}, "commit": name, "started_utc": started,
                "seed_axis": "vmap", "device_function_seconds": [
                    {**t, "chunk_seconds": scale * t["chunk_seconds"]} for t in timings]}))
        report = campaign.status(results, ["supervised_100", "fashion_mnist:all_data_max_entropy"], seeds_per_row=3,
                                 max_seeds=2)
    assert report["timings"]["device"] == "new"
    first, second = report["rows"]
    assert (first["seeds_done"], first["pending"], first["seeds_to_start"]) == ([0, 1], None, [2])
    assert (second["seeds_done"], second["pending"], second["seeds_to_start"]) == \
        ([], {"seeds": [0, 1], "iteration": 5}, [2])
    # By hand: a fit of 100 epochs x 8 steps (100 labels x 20 / 256); an iteration of 60 chunks of 1,000 and
    # ceil((300 x 20 + 59,700) / 256) = 257 steps; one seed 10 ms a chunk and 1 ms a step, two 15 and 1.5 ms.
    assert first["projected_seconds"] == pytest.approx(100 * 8 * 0.001)
    one_seed_row = 100 * 8 * 0.001 + 200 * (60 * 0.01 + 257 * 0.001)
    assert second["projected_seconds"] == pytest.approx((200 - 5) * (60 * 0.015 + 257 * 0.0015) + one_seed_row)
    assert report["projected_seconds"] == pytest.approx(first["projected_seconds"] + second["projected_seconds"])


def test_deepbass_plus_rows_follow_the_pending_row_and_table_3s_own_row():
    """Issue 29's queue: the best combinations for 300 labels and for semi-supervised only with 100 labels right
    after the pending row; the 1,000-label one right after Table 3's own row, never before it."""
    order = list(campaign.ROW_ORDER)
    pending = order.index("semi_supervised_100")
    assert order[pending + 1:pending + 3] == ["plus_300", "plus_aligned_semi_supervised_100"]
    assert order.index("plus_1000") == order.index("all_data_max_entropy_1000") + 1
    for preset in ("plus_300", "plus_aligned_semi_supervised_100", "plus_1000"):
        assert mnist.get_config(preset).restart_epochs > 0  # the combination, not an addition alone

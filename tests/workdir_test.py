"""The run folder: one run at a time, a refused run leaves it as it was, the pinned config, and the checkpoint of
all seeds (train states, labels, oracle state) round trip."""

import json

import jax
import numpy as np
import pytest

from deepbass_jax import algorithm, config as config_lib, models
from deepbass_jax.workdir import checkpoint, guard, runfolder


def test_a_second_claim_on_a_locked_workdir_is_refused_and_release_frees_it(tmp_path):
    lock = guard.claim(tmp_path, leader=True)
    with pytest.raises(guard.WorkdirBusy):
        guard.claim(tmp_path, leader=True)
    lock.release()
    guard.claim(tmp_path, leader=True).release()


def test_other_processes_never_touch_the_workdir(tmp_path):
    workdir = tmp_path / "run"
    lock = guard.claim(workdir, leader=False)
    assert lock.held and not workdir.exists()
    lock.release(remove=True)


def test_a_refused_run_leaves_no_folder_it_made_and_keeps_one_that_was_there(tmp_path):
    made = tmp_path / "made"
    lock = guard.claim(made, leader=True)
    guard.release_refused(lock, made, created=True)
    assert not made.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    guard.release_refused(guard.claim(kept, leader=True), kept, created=False)
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]


def test_pinned_config_refuses_another_config_and_accepts_resumable_changes(tmp_path):
    config = json.loads(config_lib.default_config().to_json_best_effort())
    runfolder.pin_config_file(tmp_path, config)
    runfolder.check_config_file(tmp_path, config)
    resumable = json.loads(json.dumps(config))
    resumable["oracle_wait_seconds"] = 60.0
    runfolder.check_config_file(tmp_path, resumable)
    changed = json.loads(json.dumps(config))
    changed["budget"] = 1
    with pytest.raises(ValueError, match=r"different config \(fields \['budget'\] differ\)"):
        runfolder.check_config_file(tmp_path, changed)


def test_seed_folders():
    assert runfolder.seed_folder("/w", 3, 1).as_posix() == "/w"
    assert runfolder.seed_folder("/w", 3, 2).as_posix() == "/w/seed_3"


def test_checkpoint_of_all_seeds_round_trips_and_cuts_later_metrics_lines(tmp_path):
    config = config_lib.default_config()
    module = models.ToyMLP(num_classes=2)
    apply_fn = models.make_apply(module)
    states = algorithm.stack([algorithm.initial_train_state(module, apply_fn, jax.random.key(s), (2,), config.train)
                              for s in (0, 1)])
    seeds = [{"ground_truth": np.array([s, -1, 1], np.int32), "pseudo": np.array([-1, 0, -1], np.int32),
              "oracle": {"asked": [s]}} for s in (0, 1)]
    folders = [runfolder.seed_folder(tmp_path, s, 2) for s in (0, 1)]
    for folder in folders:
        folder.mkdir()
        checkpoint.rewrite_jsonl(folder / runfolder.METRICS, [{"iteration": i} for i in range(4)])
    runfolder.save_run(tmp_path, 2, states, seeds)
    fresh = algorithm.stack([algorithm.initial_train_state(module, apply_fn, jax.random.key(9), (2,), config.train)
                             for _ in (0, 1)])
    iteration, restored, saved = runfolder.restore_run(tmp_path, fresh, folders)
    assert iteration == 2
    for a, b in zip(jax.tree_util.tree_leaves(restored.params), jax.tree_util.tree_leaves(states.params)):
        np.testing.assert_array_equal(a, b)
    assert jax.random.key_data(restored.dropout_key).tolist() == jax.random.key_data(states.dropout_key).tolist()
    for mine, back in zip(seeds, saved):
        np.testing.assert_array_equal(back["ground_truth"], mine["ground_truth"])
        np.testing.assert_array_equal(back["pseudo"], mine["pseudo"])
        assert back["oracle"] == mine["oracle"]
    for folder in folders:  # lines of iterations after the checkpoint run again
        assert [m["iteration"] for m in checkpoint.read_jsonl(folder / runfolder.METRICS)] == [0, 1, 2]


def test_no_checkpoint_is_a_fresh_run(tmp_path):
    assert runfolder.restore_run(tmp_path, None, [tmp_path]) is None

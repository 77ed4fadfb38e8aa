"""Two recipes of the README: features from any backbone as `x` [N, D] with the MLP head, and TensorBoard events
beside metrics.jsonl."""

import numpy as np

from deepbass_jax import driver as driver_lib
from deepbass_jax.workdir import checkpoint, runfolder
from tests.helpers import toy_config


def test_precomputed_features_run_with_the_mlp_head(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 3
    centres = rng.normal(0, 1, (3, 64))
    features = (centres[labels] + rng.normal(0, 0.7, (300, 64))).astype(np.float32)  # a backbone's embeddings
    np.savez(tmp_path / "features.npz", x=features, y=labels, x_test=features[:60], y_test=labels[:60])
    config = toy_config(initial_per_class=3, budget=15, initial_epochs=20, iterations=2, acquire_every=1,
                        acquire_count=3, tensorboard=True, **{"model.architecture": "mlp"})
    config.data.name, config.data.path = "npz", str(tmp_path / "features.npz")
    summary = driver_lib.run(config, tmp_path / "run")
    assert summary["labels"] == 15 and summary["test_accuracy"] > 0.8
    scalars = _scalars(tmp_path / "run" / runfolder.TENSORBOARD)
    lines = checkpoint.read_jsonl(tmp_path / "run" / runfolder.METRICS)
    for line in lines[1:]:  # the iterations' lines (the initial line is metrics.jsonl's alone)
        assert scalars[("test_accuracy", line["iteration"])] == np.float32(line["test_accuracy"])
        assert scalars[("labels", line["iteration"])] == line["labels"]
        assert ("phase_seconds/epoch", line["iteration"]) in scalars


def _scalars(logdir) -> dict:
    """{(tag, step): value} of every scalar in the TFRecord event files of `logdir` (read without TensorFlow)."""
    from tensorboardX.proto import event_pb2

    found = {}
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            length = int.from_bytes(data[at: at + 8], "little")
            event = event_pb2.Event.FromString(data[at + 12: at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                found[(value.tag, event.step)] = value.simple_value
    return found

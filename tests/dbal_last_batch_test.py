"""studies/dbal_last_batch.py: the batches it compares, and its fresh networks."""

from deepbass_jax import data, models
from experiments.configs import mnist
from studies import dbal_last_batch as study


def test_the_batches_it_compares():
    assert study.batch_sizes(130, False, 128) == [128, 2]
    assert study.batch_sizes(130, True, 128) == [65, 65]
    assert study.batch_sizes(260, True, 128) == [87, 87, 86]
    assert study.batch_sizes(120, False, 128) == study.batch_sizes(120, True, 128) == [120]


def test_one_batch_is_the_same_network_either_way_and_another_key_another(mnist_dir):
    """Under 128 labels even batches change nothing: the same key gives the same accuracy."""
    config, dataset = mnist.get_config("dbal_max_entropy"), data.load_idx_dir("mnist", mnist_dir)
    apply_fn = models.make_apply(models.build(config.model, 10))
    plain = study.fresh_accuracy(dataset, apply_fn, 20, False, 0, config.train)
    assert plain == study.fresh_accuracy(dataset, apply_fn, 20, True, 0, config.train) and 0.1 < plain < 1.0
    assert plain != study.fresh_accuracy(dataset, apply_fn, 20, False, 1, config.train)

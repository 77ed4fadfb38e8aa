"""studies/curves.py: labels to reach an accuracy, the accuracy at a label count, and their summaries."""

import numpy as np
import pytest

from studies import curves


def test_labels_to_reach_is_the_first_network_at_or_above_the_threshold():
    labels, accuracy = np.array([20, 30, 40, 50]), np.array([80.0, 90.0, 89.0, 95.5])
    assert curves.labels_to_reach(labels, accuracy, 90) == 30  # reached exactly, a later dip does not matter
    assert curves.labels_to_reach(labels, accuracy, 95) == 50
    assert curves.labels_to_reach(labels, accuracy, 96) is None
    assert curves.accuracy_at(labels, accuracy, 40) == 89.0 and curves.accuracy_at(labels, accuracy, 300) is None
    assert curves.reached_summary([100, None, 120]) == {"mean": 110.0, "std": pytest.approx(14.142, abs=1e-3),
                                                        "reached": 2, "runs": 3}
    assert curves.reached_cell(curves.reached_summary([None])) == "not reached"
    assert curves.reached_cell(curves.reached_summary([100, None, 120])) == "110.00 (14.14), 2 of 3 reached"


def test_curve_reads_labels_and_accuracy_in_percent_from_metrics_lines():
    labels, accuracy = curves.curve([{"labels": 20, "test_accuracy": 0.5}, {"labels": 30, "test_accuracy": 0.625}])
    assert labels.tolist() == [20, 30] and accuracy.tolist() == [50.0, 62.5]


def test_scale_and_held_out_words_follow_the_records_configs():
    cpu = {"config": {"pool_size": 6000, "test_size": 0}}
    paper = {"config": {"pool_size": 0, "test_size": 2000}}
    assert curves.scale_words([cpu]) == "CPU scale (6,000-image pool)"
    assert curves.scale_words([paper]) == "paper scale"
    assert curves.held_out_words([cpu]) == "the 10,000 test images"
    assert curves.held_out_words([paper]) == "the first 2000 test images"

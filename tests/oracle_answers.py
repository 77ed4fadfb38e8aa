"""Test helper: a person answering a FileOracle round with the true labels."""

import csv


def answer_round(folder, hidden) -> int:
    """Writes answers.csv for the queries.csv in `folder` with labels from `hidden` [N]; returns their number."""
    with open(folder / "queries.csv") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["label"] = int(hidden[int(row["id"])])
    with open(folder / "answers.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "image", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)

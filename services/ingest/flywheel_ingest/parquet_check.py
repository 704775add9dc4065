"""Parquet validation. The footer sits at the end, so the object is spooled to a local file first (in chunks),
then read one record batch at a time by the shared dataset reader (`flywheel.datareader`): memory stays
bounded by the batch, not the object."""

from __future__ import annotations

from pathlib import Path

from flywheel.datareader import Rules, Stats, non_empty, parquet_batches


def validate_parquet(path: Path, rules: Rules, batch_rows: int = 65_536) -> Stats:
    stats = Stats(rules)
    for _ in parquet_batches(path, rules, stats, batch_rows):
        pass
    return non_empty(stats)

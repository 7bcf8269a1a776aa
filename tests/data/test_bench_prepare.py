import numpy as np
import polars as pl
import pytest

from goalrank.data.bench import Measurement, format_table, measure_prepare, parse_sizes
from goalrank.errors import ConfigError, DataError
from goalrank.io import read_json


def test_parse_sizes():
    assert parse_sizes("1000,20000") == [1000, 20000]
    with pytest.raises(ConfigError, match="--sizes='1e6'"):
        parse_sizes("1e6")
    with pytest.raises(ConfigError, match="positive"):
        parse_sizes("0")


def test_format_table():
    table = format_table([Measurement("simulated 1,000", 1000, 160, 2.345, 512.4)])
    assert table.splitlines()[2] == "| simulated 1,000 | 1,000 | 160 | 2.3 | 512 |"


def test_measure_prepare_runs_a_child_and_reads_its_manifest(tmp_path):
    """60 users each see all 60 items once: the default 20-core keeps all 3,600 interactions."""
    users, items = np.divmod(np.arange(3600), 60)
    rng = np.random.default_rng(0)
    pl.DataFrame({"user": users, "item": items, "timestamp": rng.permutation(3600),
                  "label": rng.integers(0, 2, 3600).astype(np.int8)}).write_csv(tmp_path / "log.csv")
    row = measure_prepare("tiny", "generic", tmp_path / "log.csv", tmp_path / "prepared")
    dropped = read_json(tmp_path / "prepared" / "manifest.json")["lists"]["straddling_dropped"]
    assert (row.interactions, row.lists + dropped) == (3600, 600)  # 10 lists of 6 per user
    assert row.wall_s > 0 and row.peak_rss_mib > 50  # importing torch alone takes more
    with pytest.raises(DataError, match="exit code 2"):
        measure_prepare("missing", "generic", tmp_path / "nothing.csv", tmp_path / "never")

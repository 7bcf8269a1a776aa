import numpy as np
import polars as pl
import pytest

from goalrank.cli import main
from goalrank.config import from_dict, load_values
from goalrank.data.bench import BenchPrepareConfig, Measurement, format_table, industry_shape, measure_prepare
from goalrank.errors import ConfigError, DataError
from goalrank.io import read_json


def test_sizes_and_child_prepare_values_come_from_the_config():
    values = load_values(overrides=["sizes=1000,20000", "prepare.kcore=5", "prepare.retriever.epochs=2"])
    config = from_dict(BenchPrepareConfig, values)
    assert config.sizes == (1000, 20000) and config.prepare == {"kcore": "5", "retriever": {"epochs": "2"}}
    with pytest.raises(ConfigError, match=r"sizes='1e6': expected int"):
        from_dict(BenchPrepareConfig, {"sizes": "1e6"})
    with pytest.raises(ConfigError, match="sizes"):
        from_dict(BenchPrepareConfig, {"sizes": "0"})


def test_bench_prepare_bad_size_exits_2_before_any_work(tmp_path, capsys):
    assert main(["bench", "prepare", "--sizes", "0", "--workdir", str(tmp_path / "w")]) == 2
    assert "sizes" in capsys.readouterr().err and not (tmp_path / "w").exists()


def test_format_table():
    table = format_table([Measurement("simulated 1,000", 12, 40, 1000, 160, 2.345, 512.4, "hnsw", 0.98765)])
    assert table.splitlines()[2] == "| simulated 1,000 | 12 | 40 | 1,000 | 160 | hnsw (0.9877) | 2.3 | 512 |"


def test_industry_shape_scales_users_and_items_like_industry_01b():
    config = industry_shape(100_000_000)
    interactions = config.n_users * config.sessions_per_user * config.list_len
    assert abs(interactions - 1e8) < 100 and abs(config.n_users - 1.11e6) < 0.01e6
    assert abs(config.n_items - 0.303e6) < 0.002e6 and config.logging_pool == 200
    assert industry_shape(1000).n_items == 1000  # small logs keep a catalogue the pool can cover


def test_measure_prepare_runs_a_child_and_reads_its_manifest(tmp_path):
    """60 users each see all 60 items once: the default 20-core keeps all 3,600 interactions."""
    users, items = np.divmod(np.arange(3600), 60)
    rng = np.random.default_rng(0)
    pl.DataFrame({"user": users, "item": items, "timestamp": rng.permutation(3600),
                  "label": rng.integers(0, 2, 3600).astype(np.int8)}).write_csv(tmp_path / "log.csv")
    row = measure_prepare("tiny", "generic", tmp_path / "log.csv", tmp_path / "prepared",
                          ["--set=retriever.search=hnsw", "--set=retriever.hnsw_ef_search=60",
                           "--set=candidates=retrieved"])
    dropped = read_json(tmp_path / "prepared" / "manifest.json")["lists"]["straddling_dropped"]
    # 10 lists of 6 per user
    assert (row.users, row.items, row.interactions, row.lists + dropped) == (60, 60, 3600, 600)
    assert (row.search, row.recall) == ("hnsw", 1.0)  # the flags reached the child; a full search is exact
    assert row.wall_s > 0 and row.peak_rss_mib > 50  # importing torch alone takes more
    with pytest.raises(DataError, match="exit code 2"):
        measure_prepare("missing", "generic", tmp_path / "nothing.csv", tmp_path / "never")

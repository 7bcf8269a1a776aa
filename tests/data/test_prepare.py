import numpy as np
import polars as pl
import pytest
from synthetic_logs import synthetic_log

from builders import reference_lists
from goalrank.cli import main
from goalrank.config import from_dict
from goalrank.data.prepare import PrepareConfig, format_stats, prepare
from goalrank.data.storage import SPLITS, PreparedDataset
from goalrank.errors import ArtifactError, ConfigError
from goalrank.io import target_lock
from goalrank.simulate import SimConfig, simulate

SMALL = {"kcore": 5, "list_len": 3, "n_candidates": 10, "history_len": 5, "candidates": "retrieved",
         "retriever": {"dim": 4, "epochs": 2, "batch_size": 64}}


def config(path, **values) -> PrepareConfig:
    return from_dict(PrepareConfig, {"source": "generic", "input": str(path), **SMALL, **values})


@pytest.fixture(scope="module")
def log_frame():
    return synthetic_log(n_users=24, n_items=40, per_user=30, time_span=200)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, log_frame):
    root = tmp_path_factory.mktemp("prepared")
    log_frame.write_csv(root / "log.csv")
    return prepare(config(root / "log.csv"), root / "data")


def test_no_future_leak_on_any_valid_or_test_list(prepared, log_frame):
    time_of = {(u, i): t for u, i, t in log_frame.select("user", "item", "timestamp").iter_rows()}
    cuts = prepared.manifest["cuts"]
    for name in ("valid", "test"):
        arrays = prepared.split(name).arrays
        assert arrays["timestamps"].min() >= cuts["t_valid"]  # the retriever saw only t < t_valid
        for user, start, history, candidates, exposed in zip(
                arrays["users"], arrays["timestamps"], arrays["history"], arrays["candidates"], arrays["exposed"]):
            raw_user = prepared.user_raw_ids[user]
            context = [time_of[raw_user, prepared.item_raw_ids[i]] for i in history if i > 0]
            assert all(t < start for t in context)
            listed = [time_of[raw_user, prepared.item_raw_ids[i]] for i in candidates[exposed]]
            assert min(listed) == start and (name == "valid" or start >= cuts["t_test"])


def test_samples_equal_the_reference_lists(prepared, log_frame):
    """Every sample is one of the reference per-user lists, with its context and labels, in ids."""
    reference = {(u, tuple(items)): (labels, history)
                 for u, items, labels, history, _ in reference_lists(log_frame, 3, 5)}
    raw_items = prepared.item_raw_ids
    seen = 0
    for name in SPLITS:
        arrays = prepared.split(name).arrays
        for user, history, candidates, labels, exposed in zip(
                arrays["users"], arrays["history"], arrays["candidates"], arrays["labels"], arrays["exposed"]):
            key = (prepared.user_raw_ids[user], tuple(raw_items[candidates[exposed]]))
            expected_labels, expected_history = reference[key]
            assert labels[exposed].tolist() == expected_labels and labels.sum() == sum(expected_labels)
            assert [raw_items[i] if i else 0 for i in history] == expected_history
            assert len(set(candidates.tolist())) == len(candidates) and candidates.min() >= 1
            seen += 1
    stats = prepared.manifest["stats"]
    assert seen == stats["total"]["lists"] == len(reference) - prepared.manifest["lists"]["straddling_dropped"]
    assert stats["total"]["interactions"] == log_frame.height  # 5-core keeps everything here
    assert sum(stats[name]["interactions"] for name in SPLITS) == log_frame.height
    test_exposed = prepared.split("test").arrays["exposed"]
    assert len(np.unique(test_exposed)) == 10  # exposed items land on every position


def test_prepare_is_bit_reproducible_for_a_seed(prepared, tmp_path):
    source = prepared.manifest["config"]["input"]
    again = prepare(config(source), tmp_path / "again")
    other = prepare(config(source, seed=1), tmp_path / "other")
    assert again.manifest["checksums"] == prepared.manifest["checksums"]
    candidates = "test/candidates.npy"
    assert other.manifest["checksums"][candidates] != prepared.manifest["checksums"][candidates]
    assert list(prepared.manifest["source_checksums"]) == [source]


def test_hnsw_search_with_a_wide_search_gives_the_exact_candidates_and_records_its_recall(prepared, tmp_path):
    source = prepared.manifest["config"]["input"]
    wide = {**SMALL["retriever"], "search": "hnsw", "hnsw_ef_search": 40}
    dataset = prepare(config(source, retriever=wide), tmp_path / "hnsw")
    retriever = dataset.manifest["retriever"]
    assert prepared.manifest["retriever"]["search"] == "exact"
    assert (retriever["search"], retriever["recall_at_k"], retriever["recall_users"]) == ("hnsw", 1.0, 24)
    assert dataset.manifest["checksums"] == prepared.manifest["checksums"]
    assert format_stats(dataset.manifest).endswith(
        "candidates: HNSW search, recall@10 1.0000 against exact search on 24 users")


def test_format_stats_renders_the_manifest_table(prepared):
    manifest = {**prepared.manifest, "stats": {
        name: {"users": 1, "items": 2, "interactions": 3000, "lists": 4} for name in (*SPLITS, "total")}}
    table = format_stats(manifest).splitlines()
    assert table[0] == "| split | users | items | interactions | lists |"
    assert table[2:6] == [f"| {n} | 1 | 2 | 3,000 | 4 |" for n in (*SPLITS, "total")]
    with pytest.raises(ArtifactError, match="manifest lacks"):
        format_stats({"n_users": 3})


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    world = SimConfig(n_users=30, n_items=40, n_categories=4, sessions_per_user=8, list_len=4, time_span=1000)
    return simulate(world, tmp_path_factory.mktemp("sim") / "world")


def test_simulator_source_records_its_folder_and_takes_its_session_length(tmp_path, simulated):
    values = {key: value for key, value in SMALL.items() if key != "list_len"}
    prepared = from_dict(PrepareConfig, {"source": "simulator", "input": str(simulated), **values})
    assert prepared.list_len == 4  # the simulator's sessions, not the paper's L = 6
    dataset = prepare(prepared, tmp_path / "data")
    assert dataset.manifest["simulator"] == str(simulated.resolve()) and dataset.list_len == 4
    assert from_dict(PrepareConfig, {"source": "generic", "input": "log.csv"}).list_len == 6


def test_a_list_length_other_than_the_simulators_sessions_is_rejected_before_any_work(simulated):
    with pytest.raises(ConfigError, match=r"list_len=3: expected 0 or 4, the session length of the simulator"):
        config(simulated, source="simulator")
    assert config(simulated, source="simulator", list_len=4).list_len == 4


@pytest.mark.parametrize("values", [{"list_len": 10}, {"test_fraction": 1.0}, {"kcore": 0}, {"source": "csv"}])
def test_config_validation(values):
    with pytest.raises(ConfigError):
        config("log.csv", **values)


SMALL_FLAGS = ("kcore=5", "list_len=3", "n_candidates=10", "history_len=5", "retriever.epochs=1",
               "candidates=retrieved")


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def prepare_argv(input_path, out, *overrides):
    return ["prepare", "--source", "generic", "--input", str(input_path), "--out", str(out),
            *[f"--set={value}" for value in (*SMALL_FLAGS, *overrides)]]


def test_cli_prepare_then_stats_print_the_table(tmp_path, capsys, log_frame):
    log_frame.write_csv(tmp_path / "log.csv")
    code, out, _ = run_cli(capsys, *prepare_argv(tmp_path / "log.csv", tmp_path / "data"))
    assert code == 0
    code, stats_out, _ = run_cli(capsys, "stats", str(tmp_path / "data"))
    assert code == 0 and stats_out == format_stats(PreparedDataset(tmp_path / "data").manifest) + "\n"
    assert out.startswith(stats_out)


@pytest.mark.parametrize("write_log, overrides, message", [
    (False, (), "log.csv: file not found"),
    (True, ("kcore=1000",), "no interactions left after 1000-core filtering"),
    (True, ("n_candidates=100",), "fewer than n_candidates=100"),
    (True, ("list_len=10",), "n_candidates=10: expected more than list_len=10"),
])
def test_cli_bad_input_exits_2_with_one_error_line_and_no_folder(
        tmp_path, capsys, log_frame, write_log, overrides, message):
    if write_log:
        log_frame.write_csv(tmp_path / "log.csv")
    code, _, err = run_cli(capsys, *prepare_argv(tmp_path / "log.csv", tmp_path / "out", *overrides))
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_cli_wrong_separator_and_existing_output(tmp_path, capsys):
    path = tmp_path / "ratings.csv"
    path.write_text("1::1193::5::978300760\n")
    code, _, err = run_cli(capsys, "prepare", "--source", "movielens", "--input", str(path),
                           "--out", str(tmp_path / "o"))
    assert code == 2 and err == [f"error: {path}: expected 4 fields UserID,MovieID,Rating,Timestamp "
                                 "separated by ','; first line is '1::1193::5::978300760' (wrong separator "
                                 "or format?)"]
    assert not (tmp_path / "o").exists()
    (tmp_path / "o").mkdir()
    with pytest.raises(ArtifactError, match="already exists"):
        prepare(config(path), tmp_path / "o")


def test_the_k_core_filter_drops_simulator_sessions_whole(tmp_path):
    """A sharp logger leaves rarely shown items; dropping them alone would cut later lists across sessions."""
    world = simulate(SimConfig(n_users=300, n_items=150, production_exploration=0.02), tmp_path / "w")
    dataset = prepare(from_dict(PrepareConfig, {"source": "simulator", "input": str(world), "kcore": 20,
                                                "retriever": {"epochs": 1}}), tmp_path / "d")
    assert dataset.manifest["kcore"]["interactions_dropped"] > 0  # the trap is armed
    log = pl.read_parquet(world / "interactions.parquet")
    sessions = {(u, t): i for u, t, i in zip(log["user"].to_list(), log["timestamp"].to_list(),
                                             log["item"].to_list())}
    starts = log.group_by("user").agg(pl.col("timestamp").sort()).to_dict(as_series=False)
    session_starts = {(u, ts[k]) for u, ts in zip(starts["user"], starts["timestamp"]) for k in range(0, len(ts), 6)}
    raw_users, raw_items = np.asarray(dataset.user_raw_ids), np.asarray(dataset.item_raw_ids)
    for name in SPLITS:
        arrays = dataset.split(name).arrays
        for row in range(len(dataset.split(name))):
            user, start = int(raw_users[arrays["users"][row]]), int(arrays["timestamps"][row])
            assert (user, start) in session_starts  # every list starts a logged session ...
            shown = raw_items[arrays["candidates"][row][arrays["exposed"][row]]].tolist()
            assert shown == [sessions[(user, start + k)] for k in range(6)]  # ... and is exactly that session


def test_prepare_never_writes_over_its_own_input(tmp_path, simulated, capsys):
    argv = ["prepare", "--source", "simulator", "--input", str(simulated), "--out", str(simulated), "--overwrite"]
    assert main(argv) == 2
    assert "holds the input" in capsys.readouterr().err
    assert (simulated / "interactions.parquet").is_file()


def test_a_second_prepare_of_one_folder_fails_before_any_work(tmp_path, log_frame, monkeypatch):
    def work(*args, **kwargs):
        raise AssertionError("the second prepare started its work")

    log_frame.write_csv(tmp_path / "log.csv")
    monkeypatch.setattr("goalrank.data.prepare.load_log", work)
    with target_lock(tmp_path / "data"):  # as a first `prepare` of the folder, still working, holds it
        with pytest.raises(ArtifactError, match="data is being written by another process"):
            prepare(config(tmp_path / "log.csv"), tmp_path / "data")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]

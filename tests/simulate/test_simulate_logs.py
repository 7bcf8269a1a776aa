"""The written folder: log schema and counts, timestamps, the logging policy, reproducibility, loading."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from goalrank.cli import main
from goalrank.errors import ArtifactError, ConfigError
from goalrank.io import read_json, sha256_file
from goalrank.simulate import SimConfig, Simulator, World, simulate
from goalrank.simulate.folder import SimulatorFolder

FILES = SimulatorFolder(Path())
INTERACTIONS, MANIFEST, WORLD = FILES.interactions.name, FILES.manifest.name, FILES.world.name

SMALL = dict(n_users=30, n_items=40, n_categories=4, sessions_per_user=5, list_len=4, time_span=1000)


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return simulate(SimConfig(**SMALL, chunk_users=7), tmp_path_factory.mktemp("sim") / "small")


def _frame(folder: Path) -> dict[str, np.ndarray]:
    table = pq.read_table(folder / INTERACTIONS)
    return {name: table[name].to_numpy() for name in table.column_names}


def test_logs_have_schema_counts_and_session_timestamps(small_folder: Path) -> None:
    schema = pq.read_schema(small_folder / INTERACTIONS)
    assert [(f.name, str(f.type)) for f in schema] == [
        ("user", "int64"), ("item", "int64"), ("timestamp", "int64"), ("label", "int8")]
    logs = _frame(small_folder)
    sessions, length = SMALL["sessions_per_user"], SMALL["list_len"]
    assert len(logs["user"]) == SMALL["n_users"] * sessions * length
    assert np.array_equal(np.bincount(logs["user"]), np.full(SMALL["n_users"], sessions * length))
    assert logs["item"].min() >= 0 and logs["item"].max() < SMALL["n_items"]
    assert set(np.unique(logs["label"])) <= {0, 1}
    times = logs["timestamp"].reshape(SMALL["n_users"], sessions, length)
    assert times.min() >= 0 and times.max() < SMALL["time_span"]
    assert np.array_equal(np.diff(times, axis=2), np.ones((SMALL["n_users"], sessions, length - 1)))
    assert (np.diff(times.reshape(SMALL["n_users"], -1), axis=1) > 0).all()
    items = logs["item"].reshape(-1, length)
    assert all(len(set(row)) == length for row in items.tolist())
    counts = read_json(small_folder / MANIFEST)["counts"]
    assert counts["interactions"] == len(logs["user"]) and counts["positives"] == int(logs["label"].sum())
    assert counts["min_item_exposures"] == np.bincount(logs["item"], minlength=SMALL["n_items"]).min()


def test_sessions_spread_over_the_global_time_range(small_folder: Path) -> None:
    first_starts = _frame(small_folder)["timestamp"].reshape(SMALL["n_users"], -1)[:, 0]
    assert first_starts.min() < SMALL["time_span"] // 4 < first_starts.max()


def test_labels_follow_the_true_click_probabilities(tmp_path: Path) -> None:
    config = SimConfig(n_users=200, n_items=50, sessions_per_user=10)
    logs = _frame(simulate(config, tmp_path / "sim"))
    sim = Simulator.load(tmp_path / "sim")
    users = torch.arange(config.n_users)
    lists = torch.tensor(logs["item"]).view(config.n_users, config.sessions_per_user, config.list_len)
    probs = sim.click_probs(users, lists).flatten().numpy()
    labels = logs["label"].astype(np.float64)
    tolerance = 4 * np.sqrt((probs * (1 - probs)).sum())
    assert abs(labels.sum() - probs.sum()) < tolerance
    first_labels, first_probs = labels.reshape(-1, config.list_len)[:, 0], probs.reshape(-1, config.list_len)[:, 0]
    assert abs(first_labels.sum() - first_probs.sum()) < 4 * np.sqrt((first_probs * (1 - first_probs)).sum())


def test_popularity_logging_policy_is_plackett_luce_over_its_logits(tmp_path: Path) -> None:
    """First shown item ~ softmax((a + popularity · b) / temperature) over the whole catalogue."""
    config = SimConfig(n_users=1, n_items=5, n_categories=2, sessions_per_user=20000, list_len=2,
                       time_span=40000, logging_policy="popularity", logging_temperature=1.5,
                       logging_popularity=0.5)
    logs = _frame(simulate(config, tmp_path / "sim"))
    sim = Simulator.load(tmp_path / "sim")
    affinity = sim.affinity(torch.tensor([0]), torch.arange(config.n_items)[None])[0]
    logits = (affinity + config.logging_popularity * sim.world.item_bias) / config.logging_temperature
    expected = torch.softmax(logits, 0).numpy()
    observed = np.bincount(logs["item"][:: config.list_len], minlength=config.n_items) / config.sessions_per_user
    np.testing.assert_allclose(observed, expected, atol=4 * np.sqrt(0.25 / config.sessions_per_user))


def test_default_config_keeps_every_item_above_a_20_core(tmp_path: Path) -> None:
    counts = read_json(simulate(SimConfig(), tmp_path / "sim") / MANIFEST)["counts"]
    assert counts["interactions"] == 120_000 and counts["min_item_exposures"] >= 20


def test_output_is_bit_for_bit_reproducible_and_independent_of_chunking(small_folder: Path, tmp_path: Path) -> None:
    again = simulate(SimConfig(**SMALL, chunk_users=7), tmp_path / "again")
    for name in (INTERACTIONS, WORLD):
        assert sha256_file(again / name) == sha256_file(small_folder / name)
    one_chunk = simulate(SimConfig(**SMALL, chunk_users=1000), tmp_path / "one")
    assert pq.read_table(one_chunk / INTERACTIONS).equals(pq.read_table(small_folder / INTERACTIONS))
    other_seed = simulate(SimConfig(**SMALL, seed=1), tmp_path / "other")
    assert not np.array_equal(_frame(other_seed)["item"], _frame(small_folder)["item"])


def test_load_round_trip_gives_the_same_world(small_folder: Path) -> None:
    loaded = Simulator.load(small_folder)
    drawn = Simulator.from_config(SimConfig(**SMALL))
    for name in World.__dataclass_fields__:
        assert torch.equal(getattr(loaded.world, name), getattr(drawn.world, name)), name
    assert read_json(small_folder / MANIFEST)["checksums"][WORLD] == sha256_file(small_folder / WORLD)


def _copy(folder: Path, to: Path) -> Path:
    to.mkdir()
    for name in (MANIFEST, WORLD, INTERACTIONS):
        (to / name).write_bytes((folder / name).read_bytes())
    return to


def test_corrupted_world_raises_artifact_error(small_folder: Path, tmp_path: Path) -> None:
    folder = _copy(small_folder, tmp_path / "bad")
    data = bytearray((folder / WORLD).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / WORLD).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="world.npz: checksum mismatch"):
        Simulator.load(folder)
    (folder / WORLD).write_bytes(bytes(data[: len(data) // 3]))
    with pytest.raises(ArtifactError, match="world.npz: unreadable"):
        Simulator.load(folder, verify=False)


def test_world_with_missing_or_misshapen_array_raises_artifact_error(small_folder: Path, tmp_path: Path) -> None:
    world = Simulator.load(small_folder).world
    arrays = {name: getattr(world, name).numpy() for name in World.__dataclass_fields__}
    path = tmp_path / WORLD
    np.savez(path, **{name: a for name, a in arrays.items() if name != "interaction"})
    with pytest.raises(ArtifactError, match="missing array.*interaction"):
        World.load(path)
    np.savez(path, **{**arrays, "item_bias": arrays["item_bias"][:-1]})
    with pytest.raises(ArtifactError, match="'item_bias' has shape"):
        World.load(path)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("user_embedding.npy", b"not an array")
    with pytest.raises(ArtifactError, match=str(path)):
        World.load(path)


def test_missing_folder_or_manifest_raises_artifact_error(small_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        Simulator.load(tmp_path / "absent")
    folder = _copy(small_folder, tmp_path / "copy")
    (folder / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match="manifest.json"):
        Simulator.load(folder)


def test_cli_simulate_writes_folder_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    overrides = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]
    assert main(["simulate", "--out", str(out), *overrides]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([INTERACTIONS, MANIFEST, WORLD])
    assert read_json(out / MANIFEST)["config"]["n_users"] == SMALL["n_users"]
    assert main(["simulate", "--out", str(out), *overrides]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["simulate", "--out", str(out), "--overwrite", *overrides, "--set", "seed=3"]) == 0
    assert read_json(out / MANIFEST)["seed"] == 3
    assert main(["simulate", "--out", str(tmp_path / "bad"), "--set", "list_len=0"]) == 2
    assert "list_len" in capsys.readouterr().err


def test_pooled_logging_shows_distinct_items_of_a_fixed_per_user_pool(tmp_path: Path) -> None:
    """With ``logging_pool`` each user's sessions draw from one small pool; chunking changes nothing."""
    pooled = dict(SMALL, n_items=400, logging_pool=12)
    folder = simulate(SimConfig(**pooled, chunk_users=7), tmp_path / "pooled")
    logs = _frame(folder)
    lists = logs["item"].reshape(-1, SMALL["list_len"])
    assert all(len(set(row)) == SMALL["list_len"] for row in lists.tolist())
    per_user = [np.unique(logs["item"][logs["user"] == u]).size for u in range(SMALL["n_users"])]
    assert max(per_user) <= 12 and len(np.unique(logs["item"])) > 12
    one_chunk = simulate(SimConfig(**pooled, chunk_users=1000), tmp_path / "one")
    assert pq.read_table(one_chunk / INTERACTIONS).equals(pq.read_table(folder / INTERACTIONS))


@pytest.mark.parametrize("pool", [3, 401])
def test_logging_pool_outside_its_range_is_rejected(pool: int) -> None:
    with pytest.raises(ConfigError, match="logging_pool"):
        SimConfig(**dict(SMALL, n_items=400, logging_pool=pool))

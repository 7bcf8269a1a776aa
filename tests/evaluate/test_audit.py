"""`goalrank audit`: the reference panel's figures against hand-computed values, its JSON, the
complete labels of simulator data, and `prepare`'s warning about shortcuts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import PairwiseReward, all_lists, make_batch
from goalrank.cli import main
from goalrank.data.storage import SPLITS, PreparedDataset, SplitSource, write_prepared
from goalrank.evaluate.audit import AuditConfig, RewardBeam, audit
from goalrank.evaluate.protocol import TrueReward, evaluate_ranker
from goalrank.experiments.evaluation import EvaluateConfig, evaluate_run, format_metrics
from goalrank.groups.auxiliary import RewardBeamPolicy
from goalrank.runs.load import load_reward_model
from goalrank.simulate import SimConfig, Simulator, simulate


def _split(candidates: list[list[int]], exposed: list[list[int]], labels: list[list[int]],
           history: list[list[int]]) -> dict[str, np.ndarray]:
    size = len(candidates)
    return {"users": np.arange(size), "timestamps": np.arange(size), "history": np.array(history),
            "history_labels": np.ones((size, len(history[0])), dtype=np.int8) * (np.array(history) > 0),
            "candidates": np.array(candidates), "labels": np.array(labels, dtype=np.int8), "exposed": np.array(exposed)}


@pytest.fixture
def hand_made(tmp_path: Path) -> Path:
    """Train: item 1 exposed (positive) among 1,2,3; item 4 exposed (negative) among 4,1,5.
    Test: candidates 2,4,1, item 1 exposed and positive, item 4 in the user's history."""
    train = _split([[1, 2, 3], [4, 1, 5]], [[0], [0]], [[1, 0, 0], [0, 0, 0]], [[0, 0], [0, 0]])
    test = _split([[2, 4, 1]], [[2]], [[0, 0, 1]], [[4, 0]])
    arrays = {"train": train, "valid": test, "test": test}
    splits = {name: SplitSource(len(arrays[name]["users"]), [arrays[name]]) for name in SPLITS}
    manifest = {"n_users": 3, "n_items": 5, "list_len": 1, "n_candidates": 3, "history_len": 2, "seed": 0}
    return write_prepared(tmp_path / "data", splits, np.arange(3), np.arange(-1, 5), manifest)


def test_panel_matches_hand_computed_metrics(hand_made: Path) -> None:
    rows = {row["ranker"]: row for row in audit(AuditConfig(data=str(hand_made)))}
    assert list(rows) == ["random", "popularity", "exposure_rate", "not_in_history", "exposed_first", "logged"]
    keys = ("H@1", "NDCG@1", "MAP@1", "F1@1", "AUC")
    # popularity (training positives): item 1 has one, the others none -> item 1 first; AUC 1
    assert [rows["popularity"][k] for k in keys] == [1.0, 1.0, 1.0, 1.0, 1.0]
    # exposure rate: item 4 1/1, item 1 1/2, item 2 0/1 -> item 4 first; AUC: 0.5 beats 0, loses to 1
    assert [rows["exposure_rate"][k] for k in keys] == [0.0, 0.0, 0.0, 0.0, 0.5]
    # not in history: items 2 and 1 tie at 1, item 4 is 0 -> the earlier slot (item 2) first; AUC (½ + 1) / 2
    assert [rows["not_in_history"][k] for k in keys] == [0.0, 0.0, 0.0, 0.0, 0.75]
    assert [rows["exposed_first"][k] for k in keys] == [1.0, 1.0, 1.0, 1.0, 1.0]
    assert [rows["logged"][k] for k in keys] == [1.0, 1.0, 1.0, 1.0, 1.0]  # the list shown, item 1
    assert 0.0 <= rows["random"]["AUC"] <= 1.0 and "true_reward" not in rows["random"]


def test_cli_writes_the_table_and_json_with_evaluate_keys(hand_made: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "audit.json"
    assert main(["audit", str(hand_made), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| popularity | 1.0000 | 1.0000 | 1.0000 | 1.0000 | 1.0000 |" in printed
    rows = json.loads(out.read_text())
    assert [row["ranker"] for row in rows][:2] == ["random", "popularity"]
    assert {"H@1", "NDCG@1", "MAP@1", "F1@1", "AUC"} <= set(rows[0])
    assert main(["audit", str(hand_made), "--split", "dev"]) == 2


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    world = simulate(SimConfig(n_users=40, n_items=40, sessions_per_user=6, list_len=3, time_span=1000), root / "w")
    assert main(["prepare", "--source", "simulator", "--input", str(world), "--out", str(root / "d"),
                 "--set", "kcore=2", "--set", "n_candidates=8", "--set", "history_len=4",
                 "--set", "retriever.epochs=1"]) == 0
    return root / "d"


def test_complete_labels_are_reproducible_and_follow_the_first_slot_probability(simulated: Path) -> None:
    dataset = PreparedDataset(simulated)
    simulator = Simulator.load(Path(dataset.manifest["simulator"]))
    batch = dataset.split("test").batch(slice(0, 64))
    first, second = (TrueReward(simulator, dataset, beam_width=4).complete_labels(batch) for _ in range(2))
    assert torch.equal(first, second) and set(first.unique().tolist()) <= {0.0, 1.0}
    users, candidates = TrueReward(simulator, dataset, 4).raw(batch)
    probs = simulator.click_probs(users, candidates[..., None])[..., 0]
    assert abs(first.mean().item() - probs.mean().item()) < 4 * (probs.var().item() / first.numel()) ** 0.5 + 0.02
    other = TrueReward(simulator, dataset, 4)
    other.label_seed = 1
    assert not torch.equal(other.complete_labels(batch), first)  # the seed drives the draw


def test_a_user_item_pair_has_one_complete_label_in_every_list_and_batch(simulated: Path) -> None:
    dataset = PreparedDataset(simulated)
    true_reward = TrueReward(Simulator.load(Path(dataset.manifest["simulator"])), dataset, 4)
    seen: dict[tuple[int, int], float] = {}
    repeats = 0
    for name in ("valid", "test"):
        for batch in dataset.split(name).batches(7):  # odd batches: labels must not depend on batching
            labels = true_reward.complete_labels(batch)
            for user, items, row in zip(batch.users.tolist(), batch.candidates.tolist(), labels.tolist()):
                for item, label in zip(items, row):
                    repeats += (user, item) in seen
                    assert seen.setdefault((user, item), label) == label
    assert repeats > 100  # pairs do recur across lists, so the check has teeth


def test_simulator_audit_reports_three_groups_and_its_oracles(simulated: Path) -> None:
    rows = {row["ranker"]: row for row in audit(AuditConfig(data=str(simulated), beam_width=8))}
    assert {"itemwise_oracle", "list_oracle"} <= set(rows)
    assert {"NDCG@3", "complete_NDCG@3", "complete_AUC", "true_reward", "oracle_ratio"} <= set(rows["random"])
    assert rows["list_oracle"]["oracle_ratio"] == pytest.approx(1.0)
    assert rows["list_oracle"]["true_reward"] >= max(row["true_reward"] for row in rows.values()) - 1e-9
    assert rows["exposed_first"]["H@3"] == 1.0  # the exposed items, in slot order: every logged positive
    assert rows["logged"]["true_reward"] == pytest.approx(rows["logged"]["logged_true_reward"])


def test_evaluate_reports_complete_label_metrics_on_simulator_data(simulated: Path, tmp_path: Path) -> None:
    assert main(["train", "--model", "reward", "--data", str(simulated), "--out", str(tmp_path / "r"),
                 "--set", "model.d_model=8", "--set", "train.epochs=1", "--set", "train.device=cpu"]) == 0
    assert main(["train", "--model", "dnn", "--data", str(simulated), "--out", str(tmp_path / "dnn"),
                 "--set", "model.d_model=8", "--set", "train.epochs=1", "--set", "train.device=cpu"]) == 0
    table = format_metrics(*evaluate_run(EvaluateConfig(run=str(tmp_path / "dnn"), beam_width=4)))
    assert "| complete_NDCG@3 |" in table and "| true_reward |" in table and "| NDCG@3 |" in table
    written = tmp_path / "dnn" / "eval-test.json"
    before = written.read_bytes()
    shutil.copytree(simulated, tmp_path / "copy")
    other, _ = evaluate_run(EvaluateConfig(run=str(tmp_path / "dnn"), data=str(tmp_path / "copy"), beam_width=4))
    assert "(not written)" in other and written.read_bytes() == before  # another dataset: the run's file stays
    title, metrics = evaluate_run(EvaluateConfig(run=str(tmp_path / "r"), split="valid", beam_width=4))
    reward_model = load_reward_model(tmp_path / "r", "cpu")
    dataset = PreparedDataset(simulated)
    true_reward = TrueReward(Simulator.load(Path(dataset.manifest["simulator"])), dataset, 4)
    beam = RewardBeam(dataset.list_len, reward_model, RewardBeamPolicy())
    expected = evaluate_ranker(beam, dataset.split("valid"), 64, torch.device("cpu"), true_reward, progress=False)
    assert title == "reward_beam of the reward model on valid"
    assert metrics == pytest.approx(expected)


ISSUE_PANEL = ("random", "popularity", "exposure_rate", "not_in_history", "exposed_first", "itemwise_oracle",
               "list_oracle")  # the reference rankers the testbed's criterion is stated for


def kendall_tau(first: list[float], second: list[float]) -> float:
    pairs = [(a, b) for a in range(len(first)) for b in range(a + 1, len(first))]
    signs = [np.sign(first[a] - first[b]) * np.sign(second[a] - second[b]) for a, b in pairs]
    return float(sum(signs) / len(pairs))


def test_kendall_tau_by_hand() -> None:
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == 1.0 and kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3], [2, 1, 3]) == pytest.approx(1 / 3)


@pytest.fixture(scope="module")
def default_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smaller world of the default config (the production logger, 20 sessions, 20-core)."""
    root = tmp_path_factory.mktemp("default-like")
    world = simulate(SimConfig(n_users=300, n_items=150), root / "w")
    assert main(["prepare", "--source", "simulator", "--input", str(world), "--out", str(root / "d"),
                 "--set", "retriever.epochs=5"]) == 0
    return root / "d"


def test_the_default_world_tells_a_good_ranker_from_a_bad_one(default_like: Path) -> None:
    """Testbed criterion: in true reward random < logged < item-wise oracle < list oracle, logged at
    least 15 % above random and at most 75 % of the oracle; and the panel's order by logged-label
    NDCG@6 agrees with its order by true reward (Kendall τ >= 0.6)."""
    rows = {row["ranker"]: row for row in audit(AuditConfig(data=str(default_like)))}
    random, logged = rows["random"]["true_reward"], rows["logged"]["true_reward"]
    itemwise, oracle = rows["itemwise_oracle"]["true_reward"], rows["list_oracle"]["true_reward"]
    assert random < logged < itemwise < oracle
    assert logged >= 1.15 * random and logged <= 0.75 * oracle
    ndcg = [float(rows[name]["NDCG@6"]) for name in ISSUE_PANEL]
    true = [float(rows[name]["true_reward"]) for name in ISSUE_PANEL]
    assert kendall_tau(ndcg, true) >= 0.6


def test_reward_beam_ranks_the_best_list_of_the_reward_models_search_and_the_rest_by_one_item_reward() -> None:
    evaluator = PairwiseReward(40, seed=3)
    batch = make_batch(2, 5, 3, n_items=40, history_len=2, seed=3, logged=False)
    output = RewardBeam(3, evaluator, RewardBeamPolicy(beam_width=20, top=5)).rank(batch)  # 20: every prefix
    everything = all_lists(n_candidates=5, list_len=3, size=2)
    best = everything[torch.arange(2), evaluator.list_reward(batch, everything).argmax(dim=1)]
    assert torch.equal(output.lists, best)
    singles = evaluator.list_reward(batch, torch.arange(5).view(1, -1, 1).expand(2, -1, -1))
    for request in range(2):
        rest = [c for c in range(5) if c not in best[request].tolist()]
        assert output.scores[request, best[request]].min() > output.scores[request, rest].max()
        assert sorted(rest, key=lambda c: -float(output.scores[request, c])) == \
            sorted(rest, key=lambda c: -float(singles[request, c]))

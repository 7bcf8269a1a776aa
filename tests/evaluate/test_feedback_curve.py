"""`goalrank feedback-curve`: the logged items it reads, the factorisation's formula, recovery of a
planted click model, selection on validation only, the simulator's ceiling and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from goalrank.cli import main
from goalrank.data.storage import SPLITS, PreparedDataset, SplitSource, write_prepared
from goalrank.errors import ConfigError
from goalrank.evaluate.feedback_curve import (
    FeedbackCurveConfig,
    LoggedFeedback,
    LogisticFactorisation,
    feedback_curve,
    fit_factorisation,
)
from goalrank.evaluate.fidelity import ceiling_auc
from goalrank.evaluate.metrics import pooled_auc
from goalrank.evaluate.protocol import TrueReward, simulator_for
from goalrank.simulate import SimConfig, simulate

N_USERS, N_ITEMS, N_CANDIDATES, LIST_LEN = 20, 40, 8, 3


def _planted_logits(users: np.ndarray, items: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """A rank-2 logistic click model with item and position biases (what the factorisation can express)."""
    rng = np.random.default_rng(123)
    user_vectors, item_vectors = rng.normal(size=(N_USERS, 2)), rng.normal(size=(N_ITEMS + 1, 2))
    item_bias = rng.normal(scale=0.5, size=N_ITEMS + 1)
    return 1.5 * (user_vectors[users] * item_vectors[items]).sum(-1) + item_bias[items] - 0.4 * positions


def _planted_split(rng: np.random.Generator, size: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Lists whose labels are Bernoulli draws of the planted model; also the draws' probabilities."""
    users = rng.integers(0, N_USERS, size)
    candidates = np.stack([rng.choice(np.arange(1, N_ITEMS + 1), N_CANDIDATES, replace=False) for _ in range(size)])
    exposed = np.stack([rng.choice(N_CANDIDATES, LIST_LEN, replace=False) for _ in range(size)])
    items = np.take_along_axis(candidates, exposed, axis=1)
    probabilities = 1 / (1 + np.exp(-_planted_logits(users[:, None], items, np.arange(LIST_LEN)[None])))
    labels = np.zeros((size, N_CANDIDATES), dtype=np.int8)
    np.put_along_axis(labels, exposed, (rng.random(probabilities.shape) < probabilities).astype(np.int8), axis=1)
    history = rng.integers(0, N_ITEMS + 1, (size, 4))
    arrays = {"users": users, "timestamps": np.arange(size), "history": history,
              "history_labels": (history > 0).astype(np.int8), "candidates": candidates, "labels": labels,
              "exposed": exposed}
    return arrays, probabilities


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A prepared dataset drawn from the planted model, and the test split's true click probabilities."""
    rng = np.random.default_rng(0)
    drawn = {name: _planted_split(rng, size) for name, size in zip(SPLITS, (3000, 600, 600), strict=True)}
    splits = {name: SplitSource(len(arrays["users"]), [arrays]) for name, (arrays, _) in drawn.items()}
    manifest = {"n_users": N_USERS, "n_items": N_ITEMS, "list_len": LIST_LEN, "n_candidates": N_CANDIDATES,
                "history_len": 4}
    root = write_prepared(tmp_path_factory.mktemp("planted") / "d", splits, np.arange(N_USERS),
                          np.arange(-1, N_ITEMS), manifest)
    return root, drawn["test"][1]


def test_logged_feedback_reads_each_logged_item_with_its_position_and_label(planted) -> None:
    root, _ = planted
    split = PreparedDataset(root).split("valid")
    data = LoggedFeedback.of(split)
    rows = [(int(user), int(split.arrays["candidates"][i][slot]), position, int(split.arrays["labels"][i][slot]))
            for i, user in enumerate(split.arrays["users"]) for position, slot in enumerate(split.arrays["exposed"][i])]
    assert list(zip(data.users.tolist(), data.items.tolist(), data.positions.tolist(), data.labels.tolist(),
                    strict=True)) == rows
    some = LoggedFeedback.of(split, torch.tensor([5, 2]))
    assert some.items.tolist() == [item for _, item, _, _ in rows[15:18] + rows[6:9]]


def test_the_factorisation_is_the_dot_product_plus_item_position_and_global_biases() -> None:
    model = LogisticFactorisation(n_users=2, n_items=3, list_len=2, dim=2)
    with torch.no_grad():
        model.users.weight.copy_(torch.tensor([[1.0, 2.0], [0.5, -1.0], [0.0, 0.0]]))
        model.items.weight.copy_(torch.tensor([[0.0, 0.0], [3.0, 1.0], [-1.0, 4.0], [2.0, 2.0]]))
        model.item_bias.weight.copy_(torch.tensor([[0.0], [0.1], [0.2], [0.3]]))
        model.position_bias.copy_(torch.tensor([0.0, -0.5]))
        model.offset.fill_(1.0)
    data = LoggedFeedback(torch.tensor([0, 1]), torch.tensor([2, 1]), torch.tensor([1, 0]), torch.tensor([1, 0]))
    # user 0 x item 2: -1 + 8 = 7, + 0.2 - 0.5 + 1; user 1 x item 1: 1.5 - 1 = 0.5, + 0.1 + 0 + 1
    torch.testing.assert_close(model(data), torch.tensor([7.7, 1.6]))
    torch.testing.assert_close(model.penalty(data), torch.tensor(((5 + 17) + (1.25 + 10)) / 2))


def test_it_nearly_recovers_a_planted_click_model_and_chooses_on_validation(planted, tmp_path: Path) -> None:
    root, test_probabilities = planted
    config = FeedbackCurveConfig(data=str(root), shares=(0.1, 1.0), dims=(2, 8), weight_decays=(0.001, 0.1),
                                 epochs=40, json=str(tmp_path / "out" / "curve.json"))
    rows = feedback_curve(config)
    dataset = PreparedDataset(root)
    test = LoggedFeedback.of(dataset.split("test"))
    truth = pooled_auc(torch.from_numpy(test_probabilities).reshape(-1), test.labels)
    assert [row["lists"] for row in rows] == [300, 3000]
    assert [row["items"] for row in rows] == [900, 9000]
    full = rows[1]
    assert truth - 0.03 < full["test_auc"] <= truth + 0.01  # the true probabilities' AUC, nearly
    assert rows[0]["test_auc"] < full["test_auc"] - 0.02  # a tenth of the lists learns visibly less
    assert "ceiling_auc" not in full  # no simulator behind these logs
    # the chosen cell is the grid's best on validation, refit alike
    train = LoggedFeedback.of(dataset.split("train"))
    valid = LoggedFeedback.of(dataset.split("valid"))
    sizes = (N_USERS, N_ITEMS, LIST_LEN)
    grid = {(dim, wd): fit_factorisation(train, valid, sizes, dim, wd, config)[1]
            for dim in (2, 8) for wd in (0.001, 0.1)}
    assert (full["dim"], full["weight_decay"]) == max(grid, key=grid.__getitem__)
    assert full["valid_auc"] == pytest.approx(max(grid.values()))
    assert json.loads(Path(config.json).read_text()) == rows


def test_early_stopping_keeps_the_best_epoch(planted) -> None:
    root, _ = planted
    dataset = PreparedDataset(root)
    train, valid = LoggedFeedback.of(dataset.split("train")), LoggedFeedback.of(dataset.split("valid"))
    config = FeedbackCurveConfig(data=str(root), epochs=30, patience=2, lr=0.05)
    model, auc, epoch = fit_factorisation(train, valid, (N_USERS, N_ITEMS, LIST_LEN), 16, 0.0, config)
    with torch.no_grad():
        assert pooled_auc(model(valid), valid.labels) == pytest.approx(auc)
    assert 1 <= epoch < 30  # unregularised at a high rate, it overfits and stops


def test_simulator_data_reports_the_exact_probabilities_ceiling(tmp_path: Path, capsys) -> None:
    world = simulate(SimConfig(n_users=40, n_items=40, sessions_per_user=6, list_len=3, time_span=1000), tmp_path / "w")
    assert main(["prepare", "--source", "simulator", "--input", str(world), "--out", str(tmp_path / "d"),
                 "--set", "kcore=2", "--set", "n_candidates=8", "--set", "history_len=4",
                 "--set", "retriever.epochs=1"]) == 0
    capsys.readouterr()
    assert main(["feedback-curve", str(tmp_path / "d"), "--shares", "1", "--set", "epochs=2",
                 "--set", "dims=4", "--set", "weight_decays=0.01"]) == 0
    table = capsys.readouterr().out
    dataset = PreparedDataset(tmp_path / "d")
    simulator = simulator_for(dataset)
    assert simulator is not None
    ceiling = ceiling_auc(TrueReward(simulator, dataset, beam_width=1), dataset.split("test"), 512)
    assert table.splitlines()[0].endswith("| test_auc | ceiling_auc |")
    assert table.splitlines()[2].split("|")[-2].strip() == f"{ceiling:.4f}"


@pytest.mark.parametrize(("field", "value"), [("shares", (0.0,)), ("shares", (1.5,)), ("shares", ()),
                                              ("dims", (0,)), ("weight_decays", (-1.0,)), ("epochs", 0),
                                              ("patience", 0), ("lr", 0.0)])
def test_bad_settings_are_refused(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=field):
        FeedbackCurveConfig(data="d", **{field: value})

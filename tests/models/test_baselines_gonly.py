"""Generator-only baselines (DNN, DLCM, SetRank, PRM, MIR, RankMixer) and the re-rankers' shared blocks.

The contract tests run for every registered generator-only model (``builders.GENERATOR_ONLY``).
"""

import math

import numpy as np
import pytest
import torch

from builders import GENERATOR_ONLY, N_ITEMS, make_batch, objective_for, tiny_dataset
from goalrank.cli import main
from goalrank.config import from_dict
from goalrank.data.storage import PreparedDataset, RankingBatch
from goalrank.errors import ConfigError
from goalrank.evaluate.protocol import evaluate_ranker
from goalrank.io import read_json
from goalrank.models.blocks import RequestEncoder, RerankerConfig, gather_rows
from goalrank.models.rankmixer import TokenMixing
from goalrank.runs.load import load_run
from goalrank.runs.registry import MODELS

ORDER_BASED = ["dlcm", "prm", "rankmixer"]  # the re-rankers that read the candidates in an order


def make_model(name: str, list_len: int = 3, seed: int = 0, **fields: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = MODELS[name]
    config = spec.config_cls(n_items=N_ITEMS, d_model=16, n_heads=2, ffn_mult=2, list_len=list_len, **fields)
    return spec.model_cls(config).eval()


def with_fields(batch: RankingBatch, **tensors: torch.Tensor) -> RankingBatch:
    return RankingBatch(**{**vars(batch), **tensors})


def test_gather_rows_matches_a_loop():
    x = torch.randn(3, 5, 2, 4)
    index = torch.tensor([[4, 0, 2], [1, 1, 3], [0, 2, 4]])
    expected = torch.stack([torch.stack([x[b, i] for i in row]) for b, row in enumerate(index.tolist())])
    torch.testing.assert_close(gather_rows(x, index), expected)
    scores = torch.randn(3, 5)
    order = scores.argsort(dim=1, descending=True)
    torch.testing.assert_close(gather_rows(gather_rows(scores, order), order.argsort(dim=1)), scores)


def test_request_encoder_initial_ranking_is_the_sorted_embedding_dot_product():
    torch.manual_seed(0)
    encoder = RequestEncoder(N_ITEMS, d_model=8, n_heads=2, history_layers=1, ffn_mult=2)
    batch = make_batch(4, n_candidates=6, list_len=3)
    request = encoder(batch.history, batch.history_labels, batch.candidates)
    items = encoder.items.weight.detach().numpy()[batch.candidates.numpy()]  # (B, N, D)
    user = request.context.user.detach().numpy()  # (B, D)
    expected = np.einsum("bnd,bd->bn", items, user) / math.sqrt(8)
    np.testing.assert_allclose(request.initial_scores.numpy(), expected, rtol=1e-5, atol=1e-6)
    assert not request.initial_scores.requires_grad
    np.testing.assert_array_equal(request.initial_order.numpy(), np.argsort(-expected, axis=1, kind="stable"))
    features = np.concatenate([items, np.broadcast_to(user[:, None], items.shape), items * user[:, None]], -1)
    weight, bias = encoder.personalise.weight.detach().numpy(), encoder.personalise.bias.detach().numpy()
    np.testing.assert_allclose(request.candidates.detach().numpy(), features @ weight.T + bias, rtol=1e-4, atol=1e-5)


def test_token_mixing_matches_a_textbook_loop():
    torch.manual_seed(0)
    mixing = TokenMixing(d_model=6, n_heads=3, max_candidates=7, dropout=0.0)
    torch.nn.init.normal_(mixing.mixing)  # far from uniform, so each weight matters
    x = torch.randn(2, 5, 6)
    normed = mixing.norm(x)
    expected = x.clone()
    for t in range(5):
        for h in range(3):
            weights = mixing.mixing[h, t, :5].softmax(dim=0)  # only the 5 present ranks
            channels = slice(2 * h, 2 * h + 2)
            expected[:, t, channels] += sum(weights[s] * normed[:, s, channels] for s in range(5))
    torch.testing.assert_close(mixing(x), expected)


def reference_scores(model: torch.nn.Module, batch: RankingBatch, name: str) -> torch.Tensor:
    """Scores computed one request at a time on the candidates sorted by a Python ``sorted``."""
    request = model.request(batch.history, batch.history_labels, batch.candidates)
    size, n_candidates = batch.candidates.shape
    scores = torch.empty(size, n_candidates)
    for b in range(size):
        order = sorted(range(n_candidates), key=lambda i: -request.initial_scores[b, i].item())
        tokens = request.candidates[b, order][None]  # (1, N, D) best first
        if name == "dlcm":
            backwards = list(reversed(range(n_candidates)))  # DLCM reads the list from the bottom up
            outputs, final = model.gru(tokens[:, backwards])
            outputs = outputs[:, backwards]
            gates = torch.tanh(model.context_gates(final[-1])).view(1, model.config.n_heads, -1)
            row = model.readout((outputs[0][:, None] * gates).flatten(1)).squeeze(-1)
        elif name == "prm":
            row = model.readout(model.encoder(tokens + model.positions.weight[:n_candidates]))[0, :, 0]
        else:  # rankmixer
            x = tokens
            for layer in model.layers:
                x = layer(x)
            row = model.readout(model.norm(x))[0, :, 0]
        scores[b, order] = row
    return scores


@pytest.mark.parametrize("name", ORDER_BASED)
def test_order_based_models_read_candidates_in_initial_ranking_order(name):
    model = make_model(name, layers=2)
    batch = make_batch(3, n_candidates=7, list_len=3)
    with torch.no_grad():
        torch.testing.assert_close(model.score(batch), reference_scores(model, batch, name))


@pytest.mark.parametrize("name", GENERATOR_ONLY)
def test_forward_backward_gives_the_bce_and_every_parameter_a_gradient(name):
    model = make_model(name, dropout=0.1)
    batch = make_batch(4, n_candidates=6, list_len=3)
    objective = objective_for(name, model)
    probabilities, labels = torch.sigmoid(model.score(batch)), batch.labels
    manual = -(labels * probabilities.log() + (1 - labels) * (1 - probabilities).log()).mean()
    torch.testing.assert_close(objective(batch)[0], manual)
    model.train()
    loss, _ = objective(batch)
    assert torch.isfinite(loss)
    loss.backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


@pytest.mark.parametrize("name", GENERATOR_ONLY)
def test_rank_returns_the_top_l_candidates_by_score(name):
    model = make_model(name, list_len=3)
    batch = make_batch(5, n_candidates=7, list_len=3)
    output = model.rank(batch)
    scores = model.score(batch).detach()
    assert output.lists.shape == (5, 3)
    assert all(len(set(row)) == 3 and all(0 <= i < 7 for i in row) for row in output.lists.tolist())
    torch.testing.assert_close(output.scores, scores)
    np.testing.assert_array_equal(output.lists.numpy(), np.argsort(-scores.numpy(), axis=1)[:, :3])
    listed = scores.gather(1, output.lists)
    assert (listed[:, :-1] >= listed[:, 1:]).all()
    assert (listed[:, -1] >= scores.scatter(1, output.lists, -math.inf).max(dim=1).values).all()


@pytest.mark.parametrize("name", GENERATOR_ONLY)
def test_scores_depend_on_each_request_own_history_and_labels_only(name):
    model = make_model(name)
    batch = make_batch(4, n_candidates=6, list_len=3, seed=1)
    history, labels = batch.history.clone(), batch.history_labels.clone()
    history[1] = torch.tensor([3, 7, 11, 19])
    labels[2] = 1 - labels[2]
    labels[2][history[2] == 0] = 0
    padding_labels = labels.clone()
    padding_labels[history == 0] = 1  # labels on padded positions must be ignored
    with torch.no_grad():
        before = model.score(batch)
        after = model.score(with_fields(batch, history=history, history_labels=labels))
        padded = model.score(with_fields(batch, history=history, history_labels=padding_labels))
    assert (history == 0).any()
    assert not torch.allclose(before[1], after[1]) and not torch.allclose(before[2], after[2])
    torch.testing.assert_close(before[[0, 3]], after[[0, 3]])
    torch.testing.assert_close(padded, after)


@pytest.mark.parametrize("name", GENERATOR_ONLY)
def test_scores_are_equivariant_to_the_order_of_the_candidates(name):
    # SetRank and MIR by construction (no positions); the others because they read the
    # candidates in the initial ranking, which does not depend on the batch's order.
    model = make_model(name)
    batch = make_batch(3, n_candidates=6, list_len=3)
    permutation = torch.tensor([4, 2, 0, 5, 1, 3])
    permuted = with_fields(batch, candidates=batch.candidates[:, permutation], labels=batch.labels[:, permutation])
    with torch.no_grad():
        torch.testing.assert_close(model.score(permuted), model.score(batch)[:, permutation])


@pytest.mark.parametrize("name", GENERATOR_ONLY)
def test_a_few_adam_steps_reduce_the_bce_on_a_fixed_batch(name):
    model = make_model(name).train()
    batch = make_batch(8, n_candidates=6, list_len=3, seed=2)
    objective = objective_for(name, model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    rate = batch.labels.mean().item()
    best_constant = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))  # BCE of predicting the rate
    losses = []
    for _ in range(30):
        loss, _ = objective(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] > best_constant > 2 * losses[-1], losses


def test_configs_are_validated_and_built_from_overrides():
    config = from_dict(MODELS["prm"].config_cls, {"n_items": "30", "d_model": "32", "max_candidates": "9"})
    assert (config.n_items, config.d_model, config.max_candidates, config.layers) == (30, 32, 9, 2)
    # every generator-only model but the item-wise DNN is a re-ranker with one stack of ``layers``
    assert [name for name in GENERATOR_ONLY if not issubclass(MODELS[name].config_cls, RerankerConfig)] == ["dnn"]
    with pytest.raises(ConfigError, match="model.layers"):
        MODELS["dlcm"].config_cls(n_items=30, layers=0)
    with pytest.raises(ConfigError, match="model.n_heads"):
        MODELS["mir"].config_cls(n_items=30, d_model=30, n_heads=4)
    with pytest.raises(ConfigError, match="model.max_candidates"):
        MODELS["rankmixer"].config_cls(n_items=30, max_candidates=0)


@pytest.mark.parametrize("name", ["prm", "rankmixer"])
def test_more_candidates_than_learned_ranks_is_a_config_error(name):
    model = make_model(name, max_candidates=5)
    with pytest.raises(ConfigError, match=r"model.max_candidates=5: expected >= .* N=6"):
        model.score(make_batch(2, n_candidates=6, list_len=3))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("data") / "tiny", n_items=N_ITEMS)


@pytest.mark.parametrize("name", GENERATOR_ONLY)
def test_cli_trains_each_baseline_into_a_complete_run_folder(name, dataset, tmp_path):
    out = tmp_path / name
    settings = ["model.d_model=8", "model.n_heads=2", "model.ffn_mult=2", "train.epochs=1",
                "train.batch_size=32", "train.device=cpu"]
    argv = ["train", "--model", name, "--data", str(dataset), "--out", str(out)]
    assert main(argv + [arg for setting in settings for arg in ("--set", setting)]) == 0
    config = read_json(out / "config.json")
    assert config["model_name"] == name
    assert (config["model"]["d_model"], config["model"]["n_items"], config["model"]["list_len"]) == (8, N_ITEMS, 3)
    metrics = read_json(out / "metrics.json")
    assert metrics["best_epoch"] == 1
    model, _ = load_run(out)
    assert isinstance(model, MODELS[name].model_cls)
    recomputed = evaluate_ranker(model, PreparedDataset(dataset).split("valid"), 512, torch.device("cpu"),
                                 progress=False)
    assert 0.0 <= metrics["valid_NDCG@3"] <= 1.0
    assert metrics["valid_NDCG@3"] == pytest.approx(recomputed["NDCG@3"])
    assert metrics["valid_AUC"] == pytest.approx(recomputed["AUC"])


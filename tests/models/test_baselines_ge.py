import itertools
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss

from builders import GENERATOR_EVALUATOR, N_ITEMS, N_USERS, all_lists, make_batch, objective_for, tiny_dataset
from goalrank.cli import main
from goalrank.errors import ConfigError
from goalrank.models.base import RequestMemo, distinct_lists, group_standardised, select_best_list
from goalrank.models.egrerank import EGRerankConfig
from goalrank.models.goalrank import GeneratorConfig
from goalrank.models.nar4rec import decode_position_matrix
from goalrank.models.pier import PIER, PIERConfig
from goalrank.reward.model import RewardConfig, RewardModel
from goalrank.runs.registry import MODELS
from goalrank.serve.batcher import concat

SMALL = {"d_model": 16, "n_heads": 2, "ffn_mult": 2}


def make_evaluator(list_len: int, seed: int = 100) -> RewardModel:
    """A tiny randomly initialised reward model, frozen as the loader freezes a trained one."""
    torch.manual_seed(seed)
    evaluator = RewardModel(RewardConfig(n_items=N_ITEMS, n_users=N_USERS, list_len=list_len, position_weights="dcg",
                                         **SMALL)).eval()
    for parameter in evaluator.parameters():
        parameter.requires_grad_(False)
    return evaluator


def make_model(name: str, list_len: int, evaluator: RewardModel | None = None, seed: int = 0, **fields):
    spec = MODELS[name]
    torch.manual_seed(seed)
    config = spec.config_cls(n_items=N_ITEMS, list_len=list_len, **SMALL, **fields)
    return spec.model_cls(config, evaluator or make_evaluator(list_len))


def all_orders(items: list[int]) -> torch.Tensor:
    """(K, L) every order of ``items``, enumerated independently of the code under test."""
    return torch.tensor([list(order) for order in itertools.permutations(items)])


# --- shared by every generator–evaluator model ---------------------------------------------------


@pytest.mark.parametrize("name", GENERATOR_EVALUATOR)
def test_training_step_reaches_every_ranker_weight_and_never_the_evaluator(name):
    evaluator = make_evaluator(list_len=3)
    model = make_model(name, 3, evaluator).train()
    assert not evaluator.training
    assert not any(key.startswith("evaluator") for key in model.state_dict())
    assert {id(p) for p in model.parameters()}.isdisjoint(id(p) for p in evaluator.parameters())
    loss, stats = objective_for(name, model)(make_batch(5, n_candidates=7, list_len=3))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(np.isfinite(v) for v in stats.values())
    loss.backward()
    assert all(p.grad is None for p in evaluator.parameters())
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    assert sum(g.norm() for g in grads) > 0


@pytest.mark.parametrize("name", GENERATOR_EVALUATOR)
def test_rank_returns_permutations_with_consistent_scores(name):
    model = make_model(name, 3).eval()
    output = model.rank(make_batch(6, n_candidates=7, list_len=3))
    assert output.lists.shape == (6, 3) and output.scores.shape == (6, 7)
    assert ((output.lists >= 0) & (output.lists < 7)).all()
    assert all(len(set(row)) == 3 for row in output.lists.tolist())
    listed = output.scores.gather(1, output.lists)
    assert (listed[:, :-1] > listed[:, 1:]).all()
    unlisted = output.scores.scatter(1, output.lists, -1.0)
    assert (listed[:, -1] > unlisted.max(dim=1).values).all()


@pytest.mark.parametrize("name", GENERATOR_EVALUATOR)
def test_state_dict_round_trip_reproduces_rank(name):
    evaluator = make_evaluator(list_len=3)
    trained = make_model(name, 3, evaluator, seed=0).eval()
    rebuilt = make_model(name, 3, evaluator, seed=1).eval()
    rebuilt.load_state_dict(trained.state_dict())
    batch = make_batch(6, n_candidates=7, list_len=3)
    assert torch.equal(rebuilt.rank(batch).lists, trained.rank(batch).lists)


# --- PIER ----------------------------------------------------------------------------------------


def test_pier_scores_all_720_orders_and_returns_the_evaluators_best():
    evaluator = make_evaluator(list_len=6)
    batch = make_batch(2, n_candidates=8, list_len=6)
    model = make_model("pier", 6, evaluator).eval()
    assert model.permutations.shape == (720, 6)
    assert len({tuple(row) for row in model.permutations.tolist()}) == 720
    top = model.score(batch).topk(6, dim=1).indices
    for chunked in (None, 100):
        if chunked:
            model.config.max_lists_per_call = chunked
        lists = model.rank(batch).lists
        for b in range(2):
            orders = all_orders(top[b].tolist())  # (720, 6)
            rewards = evaluator.list_reward(batch.select(slice(b, b + 1)), orders[None])[0]
            assert torch.equal(lists[b], orders[rewards.argmax()])
            assert sorted(lists[b].tolist()) == sorted(top[b].tolist())
    # The arg-max as before the candidates were crossed once per request: one order per call
    # (K*T = 6 <= N = 8) crosses each listed item with the user, as every call did then.
    for b in range(2):
        request = batch.select(slice(b, b + 1))
        orders = all_orders(top[b].tolist())
        one_by_one = torch.cat([evaluator.list_reward(request, order[None, None])[0] for order in orders])
        torch.testing.assert_close(evaluator.list_reward(request, orders[None])[0], one_by_one)
        assert torch.equal(lists[b], orders[one_by_one.argmax()])


def test_pier_encodes_each_requests_user_once_however_many_calls_its_orders_take(monkeypatch):
    evaluator = make_evaluator(list_len=6)
    batch = make_batch(3, n_candidates=8, list_len=6)
    model = make_model("pier", 6, evaluator).eval()
    encodings = []
    user_side = RewardModel.user_side
    monkeypatch.setattr(RewardModel, "user_side", lambda self, b: encodings.append(b) or user_side(self, b))
    lists = {}
    for cap in (65536, 30):  # one call; 720 / (30 // 3) = 72 calls
        model.config.max_lists_per_call = cap
        encodings.clear()
        lists[cap] = model.rank(batch).lists
        assert encodings == [batch]
    assert torch.equal(lists[30], lists[65536])


def test_pier_memoising_passes_scores_only_the_requests_whose_top_set_is_new(monkeypatch):
    evaluator = make_evaluator(list_len=6)
    seen, fresh = make_batch(3, n_candidates=8, list_len=6, seed=1), make_batch(2, n_candidates=8, list_len=6, seed=2)
    both = concat([seen, fresh])
    plain, memoised = make_model("pier", 6, evaluator).eval(), make_model("pier", 6, evaluator).eval()
    memoised.memoise_passes()
    expected = plain.rank(both)
    scored = []
    user_side = RewardModel.user_side
    monkeypatch.setattr(RewardModel, "user_side", lambda self, b: scored.append(len(b)) or user_side(self, b))
    first = memoised.rank(seen)
    assert scored == [3] and len(memoised.memo) == 3
    again = memoised.rank(seen)
    assert scored == [3]  # a second pass over the same requests and sets scores nothing
    assert torch.equal(again.lists, first.lists) and torch.equal(again.scores, first.scores)
    mixed = memoised.rank(both)
    assert scored == [3, 2]  # only the two new requests
    assert torch.equal(mixed.lists, expected.lists) and torch.equal(mixed.scores, expected.scores)
    before = memoised.score(both).topk(6).indices.sort().values
    torch.manual_seed(3)
    with torch.no_grad():  # the pointwise model trains on: requests whose top set changed are scored again
        for parameter in memoised.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    changed = int((memoised.score(both).topk(6).indices.sort().values != before).any(dim=1).sum())
    assert 0 < changed < len(both)  # this perturbation moves some sets, not all
    trained = memoised.rank(both)
    assert scored == [3, 2, changed]
    plain.load_state_dict(memoised.state_dict())
    assert torch.equal(trained.lists, plain.rank(both).lists)


def test_request_memo_drops_the_least_recently_used_past_its_capacity():
    memo = RequestMemo(capacity=2)
    memo.put(b"a", torch.tensor([0]))
    memo.put(b"b", torch.tensor([1]))
    assert memo.get(b"a") is not None  # a is now the most recently used
    memo.put(b"c", torch.tensor([2]))
    assert memo.get(b"b") is None and memo.get(b"a") is not None and memo.get(b"c") is not None and len(memo) == 2


def test_request_memo_keys_tell_apart_requests_and_top_sets():
    batch = make_batch(3, n_candidates=8, list_len=6, seed=1)
    top = torch.tensor([[0, 1, 2, 3, 4, 5]] * 3)
    keys = RequestMemo.keys(batch, top)
    assert len(set(keys)) == 3 and keys == RequestMemo.keys(batch, top.clone())
    other = top.clone()
    other[0, 5] = 6
    assert RequestMemo.keys(batch, other)[0] != keys[0] and RequestMemo.keys(batch, other)[1:] == keys[1:]


def test_egrerank_keeps_the_user_id_embedding_off_that_goalrank_has_on_by_default():
    assert GeneratorConfig(n_items=N_ITEMS, n_users=N_USERS).user_embedding
    assert not EGRerankConfig(n_items=N_ITEMS).user_embedding  # and it needs no users then
    assert make_model("egrerank", 3).user_ids is None


def test_pier_refuses_list_lengths_with_too_many_orders():
    with pytest.raises(ConfigError, match="model.list_len"):
        PIERConfig(n_items=N_ITEMS, list_len=9)


# --- MG-E ----------------------------------------------------------------------------------------


def test_mge_returns_the_evaluators_best_among_its_generators_top_lists():
    evaluator = make_evaluator(list_len=3)
    batch = make_batch(8, n_candidates=7, list_len=3)
    model = make_model("mge", 3, evaluator, n_generators=5).eval()
    head_logits = model.head_logits(batch)  # (B, N, G)
    assert head_logits.shape == (8, 7, 5)
    by_head = [head_logits[:, :, g].argsort(dim=1, descending=True)[:, :3] for g in range(5)]
    proposals = torch.stack(by_head, dim=1)  # (B, G, L)
    rewards = evaluator.list_reward(batch, proposals)  # (B, G)
    best = proposals[torch.arange(8), rewards.argmax(dim=1)]
    assert torch.equal(model.rank(batch).lists, best)


def test_mge_without_bootstrap_minimises_the_pointwise_log_loss_of_every_head():
    batch = make_batch(4, n_candidates=7, list_len=3)
    model = make_model("mge", 3, n_generators=3, bootstrap=False)
    loss, _ = model.training_loss(batch)
    probabilities = torch.sigmoid(model.head_logits(batch)).detach()
    labels = batch.labels[..., None].expand_as(probabilities)
    expected = log_loss(labels.flatten().numpy(), probabilities.flatten().double().numpy(), labels=[0, 1])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_mge_with_100_generators_trains_and_proposes_distinct_lists():
    batch = make_batch(16, n_candidates=10, list_len=4)
    model = make_model("mge", 4, n_generators=100)
    torch.manual_seed(3)
    loss, _ = model.training_loss(batch)
    loss.backward()
    head_weights = model.mlp[-1].weight.grad  # (G, H): every head learns from its bootstrap sample
    assert head_weights.shape[0] == 100 and (head_weights.norm(dim=1) > 0).float().mean() > 0.9
    proposals = model.proposals(model.head_logits(batch))
    assert proposals.shape == (16, 100, 4)
    distinct = {tuple(row) for row in proposals[0].tolist()}
    assert len(distinct) > 1


# --- EGRerank ------------------------------------------------------------------------------------


def test_egrerank_policy_gradient_matches_the_exact_gradient_of_the_expected_reward():
    """E[∇ surrogate] ≈ −(K − 1)/K ∇ Σ_l π(l) r(l) / σ_π(r): the mean baseline shrinks it by
    (K − 1)/K and the per-request normalisation divides it by the rewards' spread under π, which
    the K = 5000 samples' standard deviation estimates closely."""
    samples = 5000
    evaluator = make_evaluator(list_len=2)
    model = make_model("egrerank", 2, evaluator, num_samples=samples)
    batch = make_batch(1, n_candidates=4, list_len=2, seed=1)
    params = [p for p in model.parameters() if p.requires_grad]

    def gradient(loss: torch.Tensor) -> torch.Tensor:
        grads = torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True)
        return torch.cat([g.flatten() for g in grads])

    rng = torch.Generator().manual_seed(0)
    estimated = gradient(model.policy_gradient_loss(batch, model.encode(batch), rng)[0])
    lists = all_lists(n_candidates=4, list_len=2, size=1)  # (1, 12, 2)
    probabilities = model.log_prob(model.encode(batch), lists).exp()  # (1, 12)
    rewards = evaluator.list_reward(batch, lists)
    expected_reward = (probabilities * rewards).sum()
    spread = ((probabilities * rewards**2).sum() - expected_reward**2).sqrt().detach()
    exact = gradient(-expected_reward * (samples - 1) / samples / spread)
    assert F.cosine_similarity(estimated, exact, dim=0) > 0.995
    assert estimated.norm() / exact.norm() == pytest.approx(1.0, abs=0.1)


def test_egrerank_advantages_have_zero_mean_and_unit_spread_per_request():
    rewards = torch.tensor([[1.0, 1.1, 1.3, 0.9], [5.0, 5.0, 5.0, 5.0], [0.0, 10.0, 0.0, 10.0]])
    advantages = group_standardised(rewards)
    torch.testing.assert_close(advantages.mean(dim=1), torch.zeros(3))
    torch.testing.assert_close(advantages[[0, 2]].std(dim=1, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    assert torch.equal(advantages[1], torch.zeros(4))  # equal rewards: no preference, no NaN
    torch.testing.assert_close(advantages[2], torch.tensor([-1.0, 1.0, -1.0, 1.0]), atol=1e-5, rtol=0)


def test_egrerank_training_raises_the_evaluators_reward_of_sampled_lists():
    evaluator = make_evaluator(list_len=3)
    model = make_model("egrerank", 3, evaluator, num_samples=16, supervised_weight=0.0)
    batch = make_batch(8, n_candidates=6, list_len=3)
    best = evaluator.list_reward(batch, all_lists(n_candidates=6, list_len=3, size=8)).max(dim=1).values

    def sampled_reward() -> float:
        with torch.no_grad():
            lists = model.decode(model.encode(batch), 64, rng=torch.Generator().manual_seed(0))
            return evaluator.list_reward(batch, lists).mean().item()

    before = sampled_reward()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(20):
        loss, _ = model.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = sampled_reward()
    gap = best.mean().item() - before
    assert after - before > 0.8 * gap


def test_egrerank_supervised_term_is_the_logged_list_negative_log_likelihood():
    batch = make_batch(4, n_candidates=6, list_len=3)
    with_term = make_model("egrerank", 3, supervised_weight=0.5)
    without = make_model("egrerank", 3, supervised_weight=0.0)
    torch.manual_seed(5)
    loss_with, stats = with_term.training_loss(batch)
    torch.manual_seed(5)
    loss_without, _ = without.training_loss(batch)
    logged = -with_term.log_prob(with_term.encode(batch), batch.exposed[:, None]).mean()
    assert stats["supervised"] == pytest.approx(logged.item(), rel=1e-5)
    assert (loss_with - loss_without).item() == pytest.approx(0.5 * logged.item(), rel=1e-4)


# --- NAR4Rec -------------------------------------------------------------------------------------


def test_nar4rec_loss_is_position_likelihood_plus_weighted_unlikelihood_of_negatives():
    batch = make_batch(4, n_candidates=6, list_len=3)
    model = make_model("nar4rec", 3, unlikelihood_weight=0.7)
    loss, stats = model.training_loss(batch)
    probabilities = model.position_logits(batch).softmax(dim=-1).detach()  # (B, L, N)
    likelihood = unlikelihood = 0.0
    for b, t in itertools.product(range(4), range(3)):
        item = batch.exposed[b, t]
        p = probabilities[b, t, item].item()
        likelihood -= np.log(p)
        if batch.labels[b, item] == 0:
            unlikelihood -= np.log(1.0 - p)
    assert stats["likelihood"] == pytest.approx(likelihood / 12, rel=1e-5)
    assert stats["unlikelihood"] == pytest.approx(unlikelihood / 12, rel=1e-5)
    assert loss.item() == pytest.approx((likelihood + 0.7 * unlikelihood) / 12, rel=1e-5)


@settings(max_examples=30, deadline=None)
@given(length=st.integers(1, 4), extra=st.integers(0, 4), num_lists=st.integers(1, 5),
       seed=st.integers(0, 10**6))
def test_nar4rec_decodes_a_greedy_list_then_samples_without_repeats(length, extra, num_lists, seed):
    n_candidates = length + extra
    logits = torch.randn(2, length, n_candidates, generator=torch.Generator().manual_seed(seed))
    lists = decode_position_matrix(logits, num_lists, 1.5, torch.Generator().manual_seed(seed))
    assert lists.shape == (2, num_lists, length)
    assert all(len(set(row)) == length for row in lists.reshape(-1, length).tolist())
    for b in range(2):
        greedy: list[int] = []
        for t in range(length):
            row = [(v, j) for j, v in enumerate(logits[b, t].tolist()) if j not in greedy]
            greedy.append(max(row)[1])
        assert lists[b, 0].tolist() == greedy


def test_nar4rec_samples_each_position_from_its_tempered_softmax():
    logits = torch.tensor([[[2.0, 0.5, -1.0, 0.0]]])  # (B=1, L=1, N=4)
    lists = decode_position_matrix(logits, 20001, 2.0, torch.Generator().manual_seed(0))[0, 1:, 0]
    frequencies = torch.bincount(lists, minlength=4).float() / lists.numel()
    torch.testing.assert_close(frequencies, (logits[0, 0] / 2.0).softmax(dim=0), atol=0.015, rtol=0)


def test_nar4rec_rank_is_the_evaluators_best_decoded_list():
    evaluator = make_evaluator(list_len=3)
    model = make_model("nar4rec", 3, evaluator, num_decoded=6).eval()
    batch = make_batch(8, n_candidates=7, list_len=3)
    rng = torch.Generator().manual_seed(int(model.decode_seed))
    decoded = decode_position_matrix(model.position_logits(batch), 6, 1.0, rng)
    rewards = evaluator.list_reward(batch, decoded)
    assert torch.equal(model.rank(batch).lists, decoded[torch.arange(8), rewards.argmax(dim=1)])


def test_nar4rec_learns_to_reproduce_positive_logged_lists():
    batch = make_batch(4, n_candidates=6, list_len=3)
    batch.labels.scatter_(1, batch.exposed, 1.0)  # every logged item positive: pure likelihood
    model = make_model("nar4rec", 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(25):
        loss, _ = model.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    greedy = decode_position_matrix(model.position_logits(batch), 1, 1.0)[:, 0]
    assert torch.equal(greedy, batch.exposed)


# --- through the CLI -----------------------------------------------------------------------------

TINY = ["--set", "model.d_model=8", "--set", "model.n_heads=2", "--set", "model.ffn_mult=2",
        "--set", "train.epochs=1", "--set", "train.batch_size=32", "--set", "train.device=cpu"]


@pytest.fixture(scope="module")
def trained_reward(tmp_path_factory):
    root = tmp_path_factory.mktemp("ge")
    data = tiny_dataset(root / "data")
    reward = root / "reward"
    assert main(["train", "--model", "reward", "--data", str(data), "--out", str(reward), *TINY]) == 0
    return data, reward


@pytest.mark.parametrize("name", GENERATOR_EVALUATOR)
def test_cli_trains_and_evaluates_with_the_shared_reward_model(name, trained_reward, tmp_path):
    data, reward = trained_reward
    run = tmp_path / name
    args = ["train", "--model", name, "--data", str(data), "--out", str(run), "--reward", str(reward), *TINY]
    assert main(args) == 0
    state = torch.load(run / "checkpoint.pt")["model"]
    assert not any(key.startswith("evaluator") for key in state)
    assert main(["evaluate", "--run", str(run)]) == 0
    metrics = json.loads((run / "eval-test.json").read_text())
    assert {"H@3", "NDCG@3", "MAP@3", "F1@3", "AUC"} <= set(metrics)
    assert all(0.0 <= metrics[key] <= 1.0 for key in ("H@3", "NDCG@3", "AUC"))


def test_cli_refuses_a_ge_model_without_a_reward_run(trained_reward, tmp_path, capsys):
    data, _ = trained_reward
    assert main(["train", "--model", "pier", "--data", str(data), "--out", str(tmp_path / "run"), *TINY]) == 2
    assert "--reward" in capsys.readouterr().err


def test_training_validates_pier_through_its_order_memo(trained_reward, tmp_path, monkeypatch):
    data, reward = trained_reward
    memoised, memoise = [], PIER.memoise_passes
    monkeypatch.setattr(PIER, "memoise_passes", lambda self: memoised.append(self) or memoise(self))
    args = ["train", "--model", "pier", "--data", str(data), "--out", str(tmp_path / "run"), "--reward", str(reward),
            *TINY, "--set", "train.epochs=2"]
    assert main(args) == 0
    assert len(memoised) == 1 and memoised[0].memo is not None and len(memoised[0].memo) > 0


def test_distinct_lists_keeps_each_list_once_in_proposal_order() -> None:
    lists = torch.tensor([[[0, 1], [2, 3], [0, 1], [2, 3], [4, 0]],
                          [[1, 0], [1, 0], [1, 0], [1, 0], [1, 0]]])
    assert distinct_lists(lists, n_candidates=5).tolist() == [[0, 1, 4], [0, 0, 0]]
    assert distinct_lists(lists, n_candidates=2**40).tolist() == [[0, 1, 2, 3, 4]] * 2  # N^L past int64: all kept


def test_scoring_each_distinct_proposal_once_picks_what_scoring_all_of_them_picks() -> None:
    evaluator = make_evaluator(3)
    batch = make_batch(16, 6, 3, seed=3)
    pool = torch.stack([torch.randperm(6)[:3] for _ in range(4)])  # 4 distinct lists shared by the heads
    lists = pool[torch.randint(4, (16, 40))]  # (B, 40, L): 40 proposals, mostly repeats
    best = select_best_list(evaluator, batch, lists, torch.zeros(16, 6)).lists
    rewards = evaluator.list_reward(batch, lists)
    expected = lists.gather(1, rewards.argmax(dim=1)[:, None, None].expand(-1, 1, 3))[:, 0]
    assert torch.equal(best, expected)

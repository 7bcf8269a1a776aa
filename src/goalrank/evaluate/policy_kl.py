"""KL(π* ‖ π) to the oracle Boltzmann policy on a world small enough to enumerate every list.

Theorem 1 of the paper is about approximation distance (Definition 3): how close the policy a
ranker can express comes to the entropy-regularised optimum π*(l) ∝ exp(R(l)/τ) (Eq. 2), R the
exact expected list reward. With N candidates and lists of L there are N!/(N−L)! lists, so on a
small world (8 candidates, L = 3: 336 lists) π* is computed exactly, from the simulator's reward
of every list, and so is the KL of each ranker whose policy has a density:

- a list generator (GoalRank; ``models.base.ListGenerator``): π_θ(l) = Π_t softmax_t(l_t), Eq. 6;
- MG-E: G item-wise generators, each a Plackett–Luce policy over its head's scores (a softmax
  output layer, as Definition 2 has it). Two numbers: the hard selection the evaluator makes in
  practice (the policy of the generator whose list it served), and the best soft mixture
  Σ_g w_g π_g of its G generators, with w fitted per request by EM on the exact π* — the most
  favourable point of MG-E's policy space, Definition 2's own.

π* is defined like GoalRank's reference policy (Eq. 4), over the whole list space instead of a
group: rewards standardised over all lists of the request, softmax at temperature τ
(``KL_TEMPERATURES``), so τ means the same here as ``reference.temperature`` there.
"""

from __future__ import annotations

import itertools
import math

import torch

from goalrank.data.storage import RankingBatch
from goalrank.evaluate.protocol import TrueReward
from goalrank.models.base import ListGenerator, group_standardised
from goalrank.models.mge import MGE

MAX_LISTS = 5040  # 10 candidates and L = 4, or 8 and L = 4 (1,680): enumerating more is no diagnostic
KL_TEMPERATURES = (1.0, 0.25)  # the reference policy's default temperature and the exact-reward study's
EM_ITERATIONS = 200
LISTS_PER_PASS = 1 << 15  # lists (requests × lists) teacher-forced in one pass of a list generator


def n_lists(n_candidates: int, list_len: int) -> int:
    """N!/(N−L)!: how many ordered lists of L distinct candidates there are."""
    return math.perm(n_candidates, list_len)


def enumerable(n_candidates: int, list_len: int) -> bool:
    return n_lists(n_candidates, list_len) <= MAX_LISTS


def all_lists(n_candidates: int, list_len: int) -> torch.Tensor:
    """(M, L) every ordered list of L distinct candidate positions, in lexicographic order."""
    return torch.tensor(list(itertools.permutations(range(n_candidates), list_len)), dtype=torch.long)


def oracle_log_policy(rewards: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, M) log π*: log-softmax of each request's standardised rewards (B, M) over all its lists, ÷ τ."""
    return torch.log_softmax(group_standardised(rewards) / temperature, dim=1)


def kl_divergence(log_target: torch.Tensor, log_policy: torch.Tensor) -> torch.Tensor:
    """(B,) KL(target ‖ policy) = Σ_l target(l) (log target(l) − log policy(l)), over the last dim."""
    return (log_target.exp() * (log_target - log_policy)).sum(dim=-1)


def plackett_luce_log_probs(logits: torch.Tensor, lists: torch.Tensor) -> torch.Tensor:
    """(B, M) log-probability of each list (M, L) under the Plackett–Luce policy of scores (B, N):
    the items of the list drawn one by one, each by softmax over the candidates not yet drawn."""
    picked = logits[:, lists]  # (B, M, L)
    taken = torch.zeros(*picked.shape[:2], logits.shape[1], dtype=torch.bool, device=logits.device)
    total = torch.zeros(picked.shape[:2], dtype=logits.dtype, device=logits.device)
    for step in range(lists.shape[1]):
        rest = logits[:, None, :].masked_fill(taken, -math.inf).logsumexp(dim=-1)  # (B, M)
        total = total + picked[:, :, step] - rest
        taken = taken.scatter(2, lists[None, :, step, None].expand(*picked.shape[:2], 1), True)
    return total


def best_mixture_kl(log_target: torch.Tensor, log_components: torch.Tensor,
                    iterations: int = EM_ITERATIONS) -> torch.Tensor:
    """(B,) min over the simplex of KL(target ‖ Σ_g w_g π_g), components (B, G, M), by EM.

    KL(π* ‖ Σ w π) is convex in w; EM's update w_g ← Σ_l π*(l) · w_g π_g(l) / Σ_h w_h π_h(l) never
    increases it (mixture-weight EM with π* as the data distribution). EM starts from uniform
    weights and creeps slowly towards an optimum on a vertex, so the result is also held to the
    best single generator's KL (a vertex of the simplex)."""
    target = log_target.exp()[:, None]  # (B, 1, M)
    log_w = torch.full(log_components.shape[:2], -math.log(log_components.shape[1]),
                       dtype=log_components.dtype, device=log_components.device)  # (B, G)
    for _ in range(iterations):
        joint = log_w[..., None] + log_components  # (B, G, M)
        responsibility = (joint - joint.logsumexp(dim=1, keepdim=True)).exp()  # (B, G, M)
        log_w = (target * responsibility).sum(dim=-1).clamp_min(1e-30).log()
    mixture = (log_w[..., None] + log_components).logsumexp(dim=1)  # (B, M)
    vertices = kl_divergence(log_target[:, None], log_components).min(dim=1).values  # (B,)
    return torch.minimum(kl_divergence(log_target, mixture), vertices)


@torch.no_grad()
def policy_kl(ranker: object, batch: RankingBatch, true_reward: TrueReward,
              served: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per request (B,), KL(π* ‖ the ranker's policy) at each of KL_TEMPERATURES; only the uniform
    policy's for a ranker without a policy density (item-wise scorers, PIER's evaluator-picked
    permutation, ...).

    ``served`` (B, L): the lists the ranker served, which name MG-E's hard-selected generator.
    Keys: ``kl_oracle_tT`` (the ranker's own policy; MG-E's hard selection), ``kl_mixture_tT``
    (MG-E's best mixture of its G generators) and, for every ranker, ``kl_uniform_tT``: the
    uniform policy's, the scale of the others (log M − H(π*)).
    """
    size, n_candidates = batch.candidates.shape
    list_len = served.shape[1]
    lists = all_lists(n_candidates, list_len).to(served.device)  # (M, L)
    rewards = true_reward.of_lists(batch, lists[None].expand(size, -1, -1)).to(served.device)  # (B, M)
    uniform = torch.full(rewards.shape, -math.log(lists.shape[0]), device=served.device)
    values: dict[str, torch.Tensor] = {}
    for temperature in KL_TEMPERATURES:
        values[f"kl_uniform_t{temperature:g}"] = kl_divergence(oracle_log_policy(rewards, temperature), uniform)
    if isinstance(ranker, MGE):
        head_logits = ranker.head_logits(batch)  # (B, N, G)
        components = torch.stack([plackett_luce_log_probs(head_logits[..., g], lists)
                                  for g in range(head_logits.shape[-1])], dim=1)  # (B, G, M)
        proposals = ranker.proposals(head_logits)  # (B, G, L)
        chosen = (proposals == served[:, None]).all(dim=-1).float().argmax(dim=1)  # first generator serving it
        own = components[torch.arange(size, device=served.device), chosen]  # (B, M)
    elif isinstance(ranker, ListGenerator):
        encoding = ranker.encode(batch)
        chunk = max(1, LISTS_PER_PASS // size)  # a teacher-forced pass over B·M lists would not fit memory
        own = torch.cat([ranker.log_prob(encoding, lists[None, lo : lo + chunk].expand(size, -1, -1))
                         for lo in range(0, lists.shape[0], chunk)], dim=1)  # (B, M)
        components = None
    else:
        return values
    for temperature in KL_TEMPERATURES:
        log_target = oracle_log_policy(rewards.to(own.dtype), temperature)
        values[f"kl_oracle_t{temperature:g}"] = kl_divergence(log_target, own)
        if components is not None:
            values[f"kl_mixture_t{temperature:g}"] = best_mixture_kl(log_target, components)
    return values

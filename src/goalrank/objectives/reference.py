"""How rewards become GoalRank's reference policy, and what else its generator imitates (config ``reference``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from goalrank.config import ADDED_LATER, check

SUPERVISED_TARGETS = ("logged", "positives_first", "positives")
FRESH, FIXED = "fresh", "fixed"
NOISE_KINDS = (FRESH, FIXED)


@dataclass
class ReferenceConfig:
    """How rewards become the reference policy and what the generator minimises.

    supervised_weight: weight of −log π_θ(target list). Default 1.0: the reward model only ever
    saw logged lists (and corrupted copies of them), so its estimates are trustworthy near them
    and not far away; the pull towards the logged list keeps the generator in that region. A
    tuning study on the simulator (docs/results.md, "How the defaults are chosen") kept it; on a
    real log a run takes ``positives`` at weight 10 instead (``train.run.REAL_LOG_DEFAULTS``), the
    same study's pick on ML-100K, where the reward model's lists are far from the logged labels.
    supervised_target: the list that term imitates: ``logged``, the exposed list in the order it
    was shown, or ``positives_first``, the same items with the positives moved to the top (stable
    otherwise): the order the feedback says was best, as a pointwise scorer learns it; or
    ``positives``, only that list's prefix of positives (−log π_θ of its first n⁺ steps, nothing
    for a list without positives). Imitating a whole logged list also teaches the shown-but-not-
    clicked items below its positives; ``positives`` leaves those positions to the reward model.
    reward_noise: β of the reward-bias study (Table 3): noise of β·σ_G·ε added to each list's reward
    (``objectives.losses.perturb_rewards``), σ_G the spread of the list's group, so in the
    group-standardised rewards the reference policy reads, the error is about β·ε.
    reward_noise_kind: ``fresh`` redraws ε for every list at every step, so over the epochs in
    which a request's group is rebuilt it averages out; ``fixed`` gives each (user, list) one ε for
    the whole run (``fixed_list_noise``, keyed by the run's seed), as a biased reward model's error
    stays with the list it misjudges. What stays fixed is the error in standardised units: in raw
    reward units it scales with σ_G of whichever group the list is in at that step.
    """

    temperature: float = 1.0
    variant: Literal["cross_entropy", "authors"] = "cross_entropy"
    supervised_weight: float = 1.0
    supervised_target: Literal["logged", "positives_first", "positives"] = "logged"
    reward_noise: float = 0.0
    reward_noise_kind: Literal["fresh", "fixed"] = field(default="fresh", metadata={ADDED_LATER: "2026-12-07"})

    def __post_init__(self) -> None:
        check(self.temperature > 0, "reference.temperature", "> 0", self.temperature)
        check(self.supervised_weight >= 0, "reference.supervised_weight", ">= 0", self.supervised_weight)
        check(self.supervised_target in SUPERVISED_TARGETS, "reference.supervised_target",
              f"one of {list(SUPERVISED_TARGETS)}", self.supervised_target)
        check(self.reward_noise >= 0, "reference.reward_noise", ">= 0 (β of the bias study)", self.reward_noise)
        check(self.reward_noise_kind in NOISE_KINDS, "reference.reward_noise_kind", f"one of {list(NOISE_KINDS)}",
              self.reward_noise_kind)
        # β = 0 adds no noise of either kind: a second name for the same run would train it twice
        check(self.reward_noise > 0 or self.reward_noise_kind == FRESH, "reference.reward_noise_kind",
              f"{FRESH} while reference.reward_noise is 0 (no noise to fix)", self.reward_noise_kind)

"""`goalrank feedback-curve`: how well the feedback can be learned from this much data at all.

The reward model's per-item AUC has two references. The simulator's exact click probabilities
give a ceiling no model reaches on average (``fidelity.ceiling_auc``), but they know the world's
parameters; a model has only the training split's labels. This module measures the other side:
a well-specified parametric model of the feedback — logistic matrix factorisation with item and
position biases, the item-wise terms of the simulator's click model (``simulate.simulator``:
``sigmoid(e_u·v_i + b_i − decay·k + ctx)``, all but the category context ``ctx``) — fit to a
growing share of the training lists. Its test AUC against the share says whether the gap between
the reward model and the ceiling is the model's (the factorisation does better with the same
data) or the data's (the factorisation does no better, and its AUC still rises as data is added).

Each fit: Adam, L2 on the embedding rows a batch uses, early stopping on validation AUC; the
embedding size and L2 weight are chosen on validation from a small grid. Test plays no part in
any choice. The share's lists are a seeded random subset of the training split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from goalrank.config import check
from goalrank.data.storage import PreparedDataset, Split
from goalrank.evaluate.fidelity import ceiling_auc
from goalrank.evaluate.metrics import pooled_auc
from goalrank.evaluate.protocol import TrueReward, simulator_for
from goalrank.io import write_text_atomic
from goalrank.progress import progress


@dataclass
class FeedbackCurveConfig:
    """`goalrank feedback-curve`: the dataset; the training shares (comma-separated fractions of
    the training lists); the grids of embedding sizes and L2 weights chosen among on validation;
    the optimisation budget (epochs, early-stopping patience in epochs, batch of logged items,
    learning rate); the seed of the subsets and initialisations; where to write the rows as JSON."""

    data: str
    shares: tuple[float, ...] = (0.25, 0.5, 1.0)
    dims: tuple[int, ...] = (16, 32)
    weight_decays: tuple[float, ...] = (0.01, 0.03)
    epochs: int = 60
    patience: int = 5
    batch_size: int = 2048
    lr: float = 0.01
    seed: int = 0
    json: str = ""

    def __post_init__(self) -> None:
        check(bool(self.shares) and all(0 < share <= 1 for share in self.shares), "shares",
              "fractions in (0, 1], at least one", self.shares)
        check(bool(self.dims) and min(self.dims) >= 1, "dims", "integers >= 1, at least one", self.dims)
        check(bool(self.weight_decays) and min(self.weight_decays) >= 0, "weight_decays",
              "numbers >= 0, at least one", self.weight_decays)
        check(self.epochs >= 1, "epochs", ">= 1", self.epochs)
        check(self.patience >= 1, "patience", ">= 1", self.patience)
        check(self.batch_size >= 1, "batch_size", ">= 1", self.batch_size)
        check(self.lr > 0, "lr", "> 0", self.lr)


@dataclass
class LoggedFeedback:
    """The logged items of a split, flat: user, item, position in its list, 0/1 label; (n,) each."""

    users: torch.Tensor
    items: torch.Tensor
    positions: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def of(cls, split: Split, lists: torch.Tensor | None = None) -> LoggedFeedback:
        """Every logged item of ``split`` (only of the lists ``lists``, row indices, when given)."""
        parts: list[list[torch.Tensor]] = [[], [], [], []]
        for batch in split.batches(65536):
            items = batch.candidates.gather(1, batch.exposed)  # (B, L) item indices
            parts[0].append(batch.users[:, None].expand_as(items))
            parts[1].append(items)
            parts[2].append(torch.arange(items.shape[1]).expand_as(items))
            parts[3].append(batch.labels.gather(1, batch.exposed))
        columns = [torch.cat(part) for part in parts]  # (n_lists, L) each
        if lists is not None:
            columns = [column[lists] for column in columns]
        return cls(*(column.reshape(-1) for column in columns))

    def __len__(self) -> int:
        return self.users.shape[0]


class LogisticFactorisation(nn.Module):
    """logit(u, i, k) = p_u·q_i + b_i + c_k + c0: the item-wise part of the simulator's click model."""

    def __init__(self, n_users: int, n_items: int, list_len: int, dim: int) -> None:
        super().__init__()
        self.users, self.items = nn.Embedding(n_users + 1, dim), nn.Embedding(n_items + 1, dim)
        for table in (self.users, self.items):
            nn.init.normal_(table.weight, std=0.1)
        self.item_bias = nn.Embedding(n_items + 1, 1)
        nn.init.zeros_(self.item_bias.weight)
        self.position_bias = nn.Parameter(torch.zeros(list_len))
        self.offset = nn.Parameter(torch.zeros(()))

    def forward(self, data: LoggedFeedback) -> torch.Tensor:
        return ((self.users(data.users) * self.items(data.items)).sum(-1) + self.item_bias(data.items)[:, 0]
                + self.position_bias[data.positions] + self.offset)

    def penalty(self, data: LoggedFeedback) -> torch.Tensor:
        """Mean squared norm of the user and item rows this batch uses."""
        return ((self.users(data.users) ** 2).sum(-1) + (self.items(data.items) ** 2).sum(-1)).mean()


def _rows(data: LoggedFeedback, index: torch.Tensor) -> LoggedFeedback:
    return LoggedFeedback(data.users[index], data.items[index], data.positions[index], data.labels[index])


def fit_factorisation(train: LoggedFeedback, valid: LoggedFeedback, sizes: tuple[int, int, int], dim: int,
                      weight_decay: float, config: FeedbackCurveConfig) -> tuple[LogisticFactorisation, float, int]:
    """The model at its best validation AUC, that AUC and its epoch (1-based); ``sizes`` = (users, items, L)."""
    generator = torch.Generator().manual_seed(config.seed)
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, the caller's global RNG untouched
        torch.manual_seed(config.seed)
        model = LogisticFactorisation(*sizes, dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    best_auc, best_epoch, best_state = -1.0, 0, {}
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(order), config.batch_size):
            batch = _rows(train, order[start : start + config.batch_size])
            loss = F.binary_cross_entropy_with_logits(model(batch), batch.labels.float())
            loss = loss + weight_decay * model.penalty(batch)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            auc = pooled_auc(model(valid), valid.labels)
        if auc > best_auc:
            best_auc, best_epoch = auc, epoch
            best_state = {key: value.clone() for key, value in model.state_dict().items()}
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    return model, best_auc, best_epoch


def feedback_curve(config: FeedbackCurveConfig) -> list[dict[str, float]]:
    """One row per training share: lists and logged items used, the chosen dim and L2 weight, the
    validation AUC they reached and its epoch, the test AUC, and on simulator data the ceiling AUC."""
    dataset = PreparedDataset(config.data)
    train_split, valid_split, test_split = (dataset.split(name) for name in ("train", "valid", "test"))
    valid, test = LoggedFeedback.of(valid_split), LoggedFeedback.of(test_split)
    sizes = (dataset.n_users, dataset.n_items, dataset.list_len)
    simulator = simulator_for(dataset)
    ceiling = (ceiling_auc(TrueReward(simulator, dataset, beam_width=1), test_split, 512)
               if simulator is not None else None)
    order = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(config.seed))
    grid = [(dim, weight_decay) for dim in config.dims for weight_decay in config.weight_decays]
    rows = []
    for share in config.shares:
        lists = order[: max(1, round(share * len(train_split)))].sort().values
        train = LoggedFeedback.of(train_split, lists)
        fits = [(*fit_factorisation(train, valid, sizes, dim, weight_decay, config), dim, weight_decay)
                for dim, weight_decay in progress(grid, f"share {share:g}: factorisation fits", unit="fit")]
        model, valid_auc, epoch, dim, weight_decay = max(fits, key=lambda fit: fit[1])
        with torch.no_grad():
            test_auc = pooled_auc(model(test), test.labels)
        row = {"share": share, "lists": len(lists), "items": len(train), "dim": dim,
               "weight_decay": weight_decay, "epoch": epoch, "valid_auc": valid_auc, "test_auc": test_auc}
        rows.append(row if ceiling is None else {**row, "ceiling_auc": ceiling})
    if config.json:
        Path(config.json).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(config.json), json.dumps(rows, indent=1) + "\n")
    return rows


def format_feedback_curve(rows: list[dict[str, float]]) -> str:
    """The rows as a Markdown table."""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---:|" * len(keys)]
    lines += ["| " + " | ".join(f"{row[key]:.4f}" if key.endswith("auc") else f"{row[key]:g}" for key in keys) + " |"
              for row in rows]
    return "\n".join(lines)

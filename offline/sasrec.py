"""SASRec (Kang & McAuley, 2018) as an offline baseline the evaluation runner can score.

Our own torch implementation, trained with a full softmax over the whole catalog, behind the
runner's :class:`~portrait.evaluation.runner.System` interface, so ``run(split, [system, ...])``
ranks it exactly like Portrait and the other baselines (full catalog, the user's visible
history excluded, ties by catalog row). torch lives here, never in :mod:`portrait`.

Data
----
* **Interactions**: item events of every type except ``dismiss`` on catalog items, the events
  :class:`~portrait.evaluation.baselines.ItemKNN` counts. A user's sequence is their
  interactions in stream order (``Split.train_events`` is in dataset order, which is stream
  order within one user), with *consecutive* repeats of one item collapsed (view, click,
  purchase of one item is one step).
* **Training** (:func:`fit_sasrec`): every user's sequence of ``train_events``. Each position
  predicts the next item (teacher forcing, all positions at once); the loss is the softmax
  cross-entropy over all catalog items. By default only steps to an item *new* to the user
  count (``new_targets_only``): the evaluation's targets are new items and the runner masks
  the history, so re-consumption is never scored. Of a sequence longer than ``max_len`` only
  the last ``max_len`` steps train (``windows="last"``, the default, the original code's
  truncation), or all of it cut into consecutive windows from the end (``windows="all"``,
  1.7x the cost per epoch on ml-latest-small).
* **Scoring**: a session keeps the user's sequence as the runner feeds it (the events before
  the case), encodes its last ``max_len`` items, takes the hidden state at the last position
  and scores every catalog item by the dot product with its (input-tied) embedding. A user
  without any interaction gets the time-respecting popularity counts instead.

Model
-----
Item embedding (row 0 = padding) scaled by ``sqrt(hidden)`` plus a learned positional
embedding, dropout, then ``blocks`` causal self-attention blocks in the **pre-LN** layout the
authors' code uses (``x + Drop(Attn(LN(x)))``, ``x + Drop(FFN(LN(x)))``, FFN = two
``hidden x hidden`` layers with GELU, padding positions zeroed after every block), a final
LayerNorm. Sequences are left-padded and positions count from the end (the last item always
has position ``max_len - 1``), so padding a batch only to its longest sequence changes nothing.
Optimiser: AdamW with a constant learning rate, mini-batches of ``batch_size`` sequences
(grouped by length to cut padding; batch order shuffled every epoch).

Determinism: fixed seeds for initialisation, dropout and batch order; on CPU two runs with
the same seed and the same ``torch`` thread count give bit-identical weights and scores. The
global torch RNG is left as it was (:func:`torch.random.fork_rng`).

Tuning (:func:`tune_sasrec`)
----------------------------
On the VALIDATION split only, objective mean NDCG@10 (computed with the runner's own
``rank_targets`` and metric functions, batched; :func:`evaluate_split`). ``budget``
configurations from :data:`GRID` (the defaults first, the rest in a seeded order) race in
successive halving: every configuration trains ``min_epochs`` epochs, the best ``1/eta``
continue to ``eta`` times as many epochs, and so on up to ``max_epochs``; each one is scored
on validation after every ``eval_every`` epochs and stops early after ``patience``
evaluations without improvement. The winner is the configuration and epoch count with the
best validation NDCG@10. The returned ``system`` holds exactly those weights (trained on
``validation.train_events``): the paper's protocol, one model selected on validation and
scored on test, the test histories including the validation item as input. With
``refit_events`` (the test phase's training events, as the baselines are refit on), ``refit``
is a second system retrained from scratch on them for the chosen number of epochs; it sees
one more item per user but its weights were never checked on validation, and with the epoch
count fixed the fresh run lands anywhere on a noisy learning curve (on ml-latest-small the
validation curves move by +/-0.005 NDCG@10 from one epoch to the next).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from portrait.evaluation.metrics import UNRANKED, per_user_metrics
from portrait.evaluation.runner import CaseContext, PopularityClock, rank_targets
from portrait.evaluation.splits import Split
from portrait.events import POSITIVE_ITEM_TYPES, Event, ItemEvent
from portrait.progress import Progress

OBJECTIVE = "NDCG@10"


# -- parameters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SASRecParams:
    """One SASRec configuration; ``epochs`` is how long :func:`fit_sasrec` trains."""

    hidden: int = 64
    blocks: int = 2
    heads: int = 1
    dropout: float = 0.2
    lr: float = 5e-3
    weight_decay: float = 0.0
    batch_size: int = 16
    max_len: int = 200
    epochs: int = 10
    windows: str = "last"  # the "last" max_len steps of each user, or "all" windows
    new_targets_only: bool = True

    def __post_init__(self) -> None:
        if self.hidden < 1 or self.blocks < 0 or self.heads < 1 or self.hidden % self.heads:
            raise ValueError("hidden must be a positive multiple of heads; blocks >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.lr <= 0 or self.batch_size < 1 or self.max_len < 1 or self.epochs < 0:
            raise ValueError("lr, batch_size, max_len must be positive and epochs >= 0")
        if self.windows not in ("all", "last"):
            raise ValueError("windows must be 'all' or 'last'")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# The tuning grid: the values each searched parameter may take (defaults are first in each).
GRID: Mapping[str, Sequence[Any]] = {
    "hidden": (64, 128),
    "blocks": (2, 1),
    "dropout": (0.2, 0.5),
    "lr": (5e-3, 1e-2),
}


# -- sequences --------------------------------------------------------------------------------


def _is_interaction(ev: Event) -> bool:
    return isinstance(ev, ItemEvent) and ev.TYPE in POSITIVE_ITEM_TYPES


def _append(seq: list[int], ev: Event, row_of: Mapping[str, int]) -> None:
    """Append ``ev``'s token (catalog row + 1) unless it repeats the last one."""
    if _is_interaction(ev):
        r = row_of.get(ev.item_id)  # type: ignore[attr-defined]
        if r is not None and (not seq or seq[-1] != r + 1):
            seq.append(r + 1)


def interaction_sequences(
    events: Iterable[Event], item_ids: Sequence[str]
) -> dict[str, list[int]]:
    """Per user, the tokens (catalog row + 1; 0 is padding) of their interactions, in order.

    ``events`` must be in stream order within each user (dataset order is).
    """
    row_of = {item: i for i, item in enumerate(item_ids)}
    out: dict[str, list[int]] = {}
    for ev in events:
        if _is_interaction(ev):
            _append(out.setdefault(ev.user_id, []), ev, row_of)
    return out


@dataclass
class _Samples:
    """Training windows: left-aligned token arrays (no padding) and their loss masks."""

    inputs: list[np.ndarray]
    targets: list[np.ndarray]  # 0 where the step does not count in the loss
    n_targets: int


def _training_samples(
    sequences: Iterable[list[int]], max_len: int, windows: str, new_targets_only: bool
) -> _Samples:
    inputs, targets = [], []
    n = 0
    for seq in sequences:
        s = np.asarray(seq, dtype=np.int64)
        if s.size < 2:
            continue
        tgt = s.copy()
        if new_targets_only:
            seen: set[int] = set()
            for i, tok in enumerate(seq):
                if tok in seen:
                    tgt[i] = 0
                seen.add(tok)
        end = s.size  # targets are s[a:end], inputs s[a-1:end-1]
        while end > 1:
            a = max(1, end - max_len)
            t = tgt[a:end]
            if t.any():
                inputs.append(s[a - 1 : end - 1])
                targets.append(t)
                n += int(np.count_nonzero(t))
            if windows == "last":
                break
            end = a
    return _Samples(inputs, targets, n)


def _left_pad(arrays: Sequence[np.ndarray]) -> torch.Tensor:
    width = max(a.size for a in arrays)
    out = np.zeros((len(arrays), width), dtype=np.int64)
    for i, a in enumerate(arrays):
        if a.size:
            out[i, width - a.size :] = a
    return torch.from_numpy(out)


# -- the model -------------------------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        self.ff1 = nn.Linear(hidden, hidden)
        self.ff2 = nn.Linear(hidden, hidden)
        self.dropout = dropout
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        shape = (b, t, self.heads, d // self.heads)
        q, k, v = (z.reshape(shape).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, t, d)))
        out: torch.Tensor = x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.ln2(x))))))
        return out


class SASRecModel(nn.Module):
    """The network: tokens (B, T), left-padded with 0, to hidden states (B, T, hidden)."""

    def __init__(self, n_items: int, params: SASRecParams) -> None:
        super().__init__()
        d = params.hidden
        self.max_len = params.max_len
        self.item = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos = nn.Embedding(params.max_len, d)
        self.drop = nn.Dropout(params.dropout)
        self.blocks = nn.ModuleList(
            _Block(d, params.heads, params.dropout) for _ in range(params.blocks)
        )
        self.ln = nn.LayerNorm(d)
        nn.init.xavier_normal_(self.item.weight)
        nn.init.xavier_normal_(self.pos.weight)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens[:, -self.max_len :]
        _, t = tokens.shape
        real = (tokens != 0).unsqueeze(-1)
        pos = torch.arange(self.max_len - t, self.max_len, device=tokens.device)
        x = self.item(tokens) * math.sqrt(self.item.embedding_dim) + self.pos(pos)
        x = self.drop(x) * real
        causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
        # attend to earlier real items, and always to oneself (no all-masked padding rows)
        mask = (causal & (tokens != 0)[:, None, :]) | torch.eye(t, dtype=torch.bool)
        mask = mask[:, None]  # (B, 1, T, T)
        for block in self.blocks:
            x = block(x, mask) * real
        out: torch.Tensor = self.ln(x)
        return out

    def item_matrix(self) -> torch.Tensor:
        """The output embedding of every catalog row (the input embedding, tied)."""
        return self.item.weight[1:]


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- the System the runner scores ---------------------------------------------------------------


class SASRecSession:
    def __init__(self, system: SASRecSystem) -> None:
        self.system = system
        self.tokens: list[int] = []

    def observe(self, events: Sequence[Event]) -> None:
        for ev in events:
            _append(self.tokens, ev, self.system.row_of)

    def scores(self, ctx: CaseContext) -> np.ndarray:
        if not self.tokens:
            return ctx.counts
        scores: np.ndarray = self.system.score_sequences([self.tokens])[0]
        return scores


class SASRecSystem:
    """A trained SASRec over one catalog; ``session`` is what the runner calls."""

    def __init__(
        self,
        model: SASRecModel,
        item_ids: Sequence[str],
        params: SASRecParams,
        name: str = "sasrec",
        history: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.name = name
        self.model = model.eval()
        self.item_ids = list(item_ids)
        self.row_of = {item: i for i, item in enumerate(self.item_ids)}
        self.params = params
        self.history = list(history)  # per-epoch training log (loss, seconds, validation)

    def session(self, user_id: str) -> SASRecSession:
        return SASRecSession(self)

    @torch.no_grad()
    def user_vectors(self, sequences: Sequence[Sequence[int]], batch: int = 256) -> np.ndarray:
        """The last hidden state of each token sequence, ``(n, hidden)`` float32."""
        self.model.eval()
        out = np.zeros((len(sequences), self.params.hidden), dtype=np.float32)
        arrays = [np.asarray(s[-self.params.max_len :], dtype=np.int64) for s in sequences]
        order = sorted(range(len(arrays)), key=lambda i: arrays[i].size)
        for start in range(0, len(order), batch):
            idx = [i for i in order[start : start + batch] if arrays[i].size]
            if idx:
                h = self.model(_left_pad([arrays[i] for i in idx]))[:, -1]
                out[idx] = h.numpy()
        return out

    @torch.no_grad()
    def score_sequences(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """``(n, n_items)`` float64 scores of every catalog row for each token sequence."""
        u = torch.from_numpy(self.user_vectors(sequences))
        return (u @ self.model.item_matrix().T).double().numpy()


# -- training ---------------------------------------------------------------------------------


class _Trainer:
    """One configuration's model, optimiser and random streams; trains epoch by epoch.

    Its RNG states are its own (saved and restored around every epoch), so several trainers
    can interleave, as in successive halving, without changing each other's results.
    """

    def __init__(
        self, samples: _Samples, n_items: int, params: SASRecParams, seed: int
    ) -> None:
        self.samples = samples
        self.params = params
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = SASRecModel(n_items, params)
            self.torch_state = torch.get_rng_state()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=params.lr, weight_decay=params.weight_decay
        )
        self.rng = np.random.default_rng(seed)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []

    def _batches(self) -> list[list[int]]:
        n = len(self.samples.inputs)
        lengths = np.fromiter((a.size for a in self.samples.inputs), dtype=np.int64, count=n)
        order = np.lexsort((self.rng.random(n), lengths))  # by length, random within a length
        bs = self.params.batch_size
        batches = [order[i : i + bs].tolist() for i in range(0, n, bs)]
        self.rng.shuffle(batches)
        return batches

    def train_epoch(self) -> float:
        t0 = time.perf_counter()
        self.model.train()
        total, count = 0.0, 0
        items = None
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.torch_state)
            for batch in self._batches():
                inp = _left_pad([self.samples.inputs[i] for i in batch])
                tgt = _left_pad([self.samples.targets[i] for i in batch])
                keep = tgt != 0
                h = self.model(inp)[keep]
                items = self.model.item_matrix()
                loss = F.cross_entropy(h @ items.T, tgt[keep] - 1)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                self.optimizer.step()
                k = int(keep.sum())
                total += float(loss.detach()) * k
                count += k
            self.torch_state = torch.get_rng_state()
        self.model.eval()
        self.epoch += 1
        mean_loss = total / max(count, 1)
        self.history.append(
            {"epoch": self.epoch, "loss": mean_loss, "seconds": time.perf_counter() - t0}
        )
        return mean_loss


def fit_sasrec(
    train_events: Iterable[Event],
    item_ids: Sequence[str],
    params: SASRecParams = SASRecParams(),
    *,
    seed: int = 0,
    name: str = "sasrec",
    num_threads: int | None = None,
    progress: Progress | None = None,
) -> SASRecSystem:
    """Train SASRec on ``train_events`` for ``params.epochs`` epochs.

    ``progress(epoch, epochs, loss=...)`` after each epoch. ``num_threads`` sets torch's CPU
    threads for the call (restored afterwards).
    """
    item_ids = list(item_ids)
    with _threads(num_threads):
        seqs = interaction_sequences(train_events, item_ids)
        samples = _training_samples(
            seqs.values(), params.max_len, params.windows, params.new_targets_only
        )
        trainer = _Trainer(samples, len(item_ids), params, seed)
        for e in range(params.epochs):
            loss = trainer.train_epoch()
            if progress is not None:
                progress(e + 1, params.epochs, loss=loss)
    return SASRecSystem(trainer.model, item_ids, params, name, trainer.history)


# -- fast validation scoring -----------------------------------------------------------------


class CaseSet:
    """A split's cases prepared once: what each session would see, masks and target rows.

    :meth:`ranks` gives exactly the ranks :func:`portrait.evaluation.runner.run` records for a
    :class:`SASRecSystem` (same masking, same tie rule, same popularity fallback), batched.
    """

    def __init__(self, split: Split, item_ids: Sequence[str]) -> None:
        self.split = split
        self.item_ids = list(item_ids)
        row_of = {item: i for i, item in enumerate(self.item_ids)}
        self.sequences: list[list[int]] = []
        self.masked: list[np.ndarray] = []  # history rows the runner excludes
        self.targets: list[list[int | None]] = []
        for case in split.cases:
            seq: list[int] = []
            for ev in split.streams[case.user_id][: case.cutoff]:
                _append(seq, ev, row_of)
            self.sequences.append(seq)
            targets = set(case.targets)
            hist = [
                row_of[i]
                for i in split.history_items(case)
                if i in row_of and i not in targets
            ]
            self.masked.append(np.asarray(hist, dtype=np.int64))
            self.targets.append([row_of.get(t) for t in case.targets])
        self._clock: PopularityClock | None = None

    def _fallback(self, i: int) -> np.ndarray:
        if self._clock is None:
            self._clock = PopularityClock(
                self.split.train_events,
                {item: r for r, item in enumerate(self.item_ids)},
                len(self.item_ids),
            )
        return self._clock.counts_until(self.split.cases[i].horizon)

    def ranks(self, system: SASRecSystem, chunk: int = 512) -> list[tuple[float, ...]]:
        n_items = len(self.item_ids)
        out: list[tuple[float, ...]] = []
        for start in range(0, len(self.sequences), chunk):
            idx = range(start, min(start + chunk, len(self.sequences)))
            scores = system.score_sequences([self.sequences[i] for i in idx])
            for j, i in enumerate(idx):
                s = scores[j] if self.sequences[i] else self._fallback(i)
                allowed = np.ones(n_items, dtype=bool)
                allowed[self.masked[i]] = False
                known = [r for r in self.targets[i] if r is not None]
                r = rank_targets(s, allowed, known)
                out.append(tuple(r + [UNRANKED] * (len(self.targets[i]) - len(known))))
        return out

    def metrics(self, system: SASRecSystem, ks: Sequence[int] = (5, 10, 20)) -> dict[str, float]:
        """Mean metrics over the cases, as ``RunResult.metrics`` would give them."""
        return {k: float(v.mean()) for k, v in per_user_metrics(self.ranks(system), ks).items()}


def evaluate_split(
    system: SASRecSystem, split: Split, item_ids: Sequence[str]
) -> dict[str, float]:
    """Mean HR/Recall/NDCG@{5,10,20} and MRR of ``system`` on ``split`` (same as the runner)."""
    return CaseSet(split, item_ids).metrics(system)


# -- tuning ----------------------------------------------------------------------------------


@dataclass
class SASRecTrial:
    index: int
    params: SASRecParams  # epochs = the best epoch seen
    values: dict[str, Any]  # the searched values
    epochs_trained: int
    best_epoch: int
    objective: float
    metrics: dict[str, float]
    curve: list[tuple[int, float]]  # (epoch, validation objective)
    seconds: float
    stopped: str  # "early", "max_epochs", "halved" (dropped by successive halving)


@dataclass
class SASRecTuning:
    params: SASRecParams  # the chosen configuration, epochs = its best validation epoch
    system: SASRecSystem  # the validation-selected weights (named ``name``)
    validation_metrics: dict[str, float]
    trials: list[SASRecTrial]
    seed: int
    budget: int
    seconds: float
    refit: SASRecSystem | None = None  # retrained on refit_events (named ``name-refit``)
    refit_seconds: float = 0.0
    objective: str = OBJECTIVE
    epoch_seconds: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "seed": self.seed,
            "budget": self.budget,
            "params": self.params.to_dict(),
            "validation_metrics": self.validation_metrics,
            "trials": [
                {
                    "values": t.values,
                    "best_epoch": t.best_epoch,
                    "epochs_trained": t.epochs_trained,
                    "objective": t.objective,
                    "stopped": t.stopped,
                    "seconds": t.seconds,
                }
                for t in self.trials
            ],
            "seconds": self.seconds,
            "refit_seconds": self.refit_seconds,
            "mean_epoch_seconds": (
                float(np.mean(self.epoch_seconds)) if self.epoch_seconds else None
            ),
        }


def grid_configs(
    grid: Mapping[str, Sequence[Any]], budget: int, seed: int
) -> list[dict[str, Any]]:
    """``budget`` points of ``grid``: the all-first-values point, then a seeded shuffle."""
    names = list(grid)
    combos = itertools.product(*(grid[n] for n in names))
    points = [dict(zip(names, combo, strict=True)) for combo in combos]
    head, rest = points[:1], points[1:]
    order = np.random.default_rng(seed).permutation(len(rest))
    return (head + [rest[i] for i in order])[: max(1, budget)]


class _Racer:
    """A trainer plus its validation record."""

    def __init__(self, index: int, values: dict[str, Any], trainer: _Trainer) -> None:
        self.index = index
        self.values = values
        self.trainer = trainer
        self.best = -math.inf
        self.best_epoch = 0
        self.best_metrics: dict[str, float] = {}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.curve: list[tuple[int, float]] = []
        self.since_best = 0
        self.stopped = ""
        self.seconds = 0.0


def tune_sasrec(
    validation: Split,
    item_ids: Sequence[str],
    *,
    budget: int = 8,
    seed: int = 0,
    base: SASRecParams = SASRecParams(),
    grid: Mapping[str, Sequence[Any]] = GRID,
    min_epochs: int = 4,
    max_epochs: int = 30,
    eta: int = 3,
    eval_every: int = 1,
    patience: int = 3,
    objective: str = OBJECTIVE,
    refit_events: Iterable[Event] | None = None,
    num_threads: int | None = None,
    name: str = "sasrec",
    progress: Progress | None = None,
) -> SASRecTuning:
    """Choose SASRec's configuration and epochs on ``validation`` (see the module docstring).

    Deterministic given ``seed`` (and torch's thread count). ``progress(done, total,
    last=..., best=...)`` after each validation evaluation; ``total`` is the most evaluations
    still possible (it shrinks as configurations stop), so a bar can be re-totalled.
    """
    if budget < 1 or min_epochs < 1 or max_epochs < min_epochs or eta < 2 or patience < 1:
        raise ValueError("invalid tuning budget")
    t_all = time.perf_counter()
    item_ids = list(item_ids)
    configs = grid_configs(grid, budget, seed)
    with _threads(num_threads):
        seqs = interaction_sequences(validation.train_events, item_ids)
        cases = CaseSet(validation, item_ids)
        sample_cache: dict[tuple[Any, ...], _Samples] = {}
        racers: list[_Racer] = []
        for i, values in enumerate(configs):
            p = dataclasses.replace(base, **values)
            key = (p.max_len, p.windows, p.new_targets_only)
            if key not in sample_cache:
                sample_cache[key] = _training_samples(seqs.values(), *key)
            racers.append(_Racer(i, values, _Trainer(sample_cache[key], len(item_ids), p, seed)))

        evals_done = 0
        epoch_seconds: list[float] = []

        def remaining(alive: list[_Racer], upto: int) -> int:
            return evals_done + sum(
                max(0, upto - r.trainer.epoch) // eval_every for r in alive if not r.stopped
            )

        def train_to(r: _Racer, epochs: int, alive: list[_Racer]) -> None:
            nonlocal evals_done
            t0 = time.perf_counter()
            while r.trainer.epoch < epochs and not r.stopped:
                r.trainer.train_epoch()
                epoch_seconds.append(r.trainer.history[-1]["seconds"])
                if r.trainer.epoch % eval_every and r.trainer.epoch < epochs:
                    continue
                system = SASRecSystem(r.trainer.model, item_ids, r.trainer.params, name)
                m = cases.metrics(system)
                value = m[objective]
                r.curve.append((r.trainer.epoch, value))
                r.trainer.history[-1]["validation"] = value
                if value > r.best:
                    r.best, r.best_epoch, r.best_metrics = value, r.trainer.epoch, m
                    r.best_state = {
                        k: v.detach().clone() for k, v in r.trainer.model.state_dict().items()
                    }
                    r.since_best = 0
                else:
                    r.since_best += 1
                    if r.since_best >= patience:
                        r.stopped = "early"
                evals_done += 1
                if progress is not None:
                    best = max(x.best for x in racers)
                    progress(evals_done, remaining(alive, max_epochs), last=value, best=best)
            r.seconds += time.perf_counter() - t0

        alive = list(racers)
        rung = min_epochs
        while alive:
            for r in alive:
                train_to(r, rung, alive)
            if rung >= max_epochs:
                for r in alive:
                    r.stopped = r.stopped or "max_epochs"
                break
            still = [r for r in alive if not r.stopped]
            keep = max(1, math.ceil(len(alive) / eta))
            ranked = sorted(alive, key=lambda x: (-x.best, x.index))
            survivors = [r for r in ranked[:keep] if not r.stopped]
            for r in still:
                if r not in survivors:
                    r.stopped = "halved"
            alive = survivors
            rung = min(max_epochs, rung * eta)

        winner = max(racers, key=lambda x: (x.best, -x.index))
        chosen = dataclasses.replace(winner.trainer.params, epochs=winner.best_epoch)
        assert winner.best_state is not None
        winner.trainer.model.load_state_dict(winner.best_state)
        system = SASRecSystem(
            winner.trainer.model, item_ids, chosen, name, winner.trainer.history
        )
        tuning_seconds = time.perf_counter() - t_all
        refit_seconds = 0.0
        refit = None
        if refit_events is not None:
            t0 = time.perf_counter()
            refit = fit_sasrec(refit_events, item_ids, chosen, seed=seed, name=f"{name}-refit")
            refit_seconds = time.perf_counter() - t0
    trials = [
        SASRecTrial(
            index=r.index,
            params=dataclasses.replace(r.trainer.params, epochs=r.best_epoch),
            values=dict(r.values),
            epochs_trained=r.trainer.epoch,
            best_epoch=r.best_epoch,
            objective=r.best,
            metrics=r.best_metrics,
            curve=r.curve,
            seconds=r.seconds,
            stopped=r.stopped,
        )
        for r in racers
    ]
    return SASRecTuning(
        params=chosen,
        system=system,
        validation_metrics=winner.best_metrics,
        trials=trials,
        seed=seed,
        budget=budget,
        seconds=tuning_seconds,
        refit=refit,
        refit_seconds=refit_seconds,
        epoch_seconds=epoch_seconds,
    )

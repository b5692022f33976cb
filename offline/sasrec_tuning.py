"""SASRec's validation scoring and tuning: which configuration and how many epochs.

Scoring (:class:`CaseSet`, :func:`evaluate_split`) gives exactly the metrics the evaluation
runner would for a :class:`~offline.sasrec.SASRecSystem`, batched, so a model can be scored
after every epoch. The model and its training are :mod:`offline.sasrec`.

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

import dataclasses
import itertools
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from offline.sasrec import (
    DEFAULT_PARAMS,
    SASRecParams,
    SASRecSystem,
    SASRecTrainer,
    TrainingSamples,
    append_token,
    fit_sasrec,
    interaction_sequences,
    torch_threads,
    training_samples,
)
from portrait.evaluation.metrics import UNRANKED, per_user_metrics
from portrait.evaluation.runner import PopularityClock, rank_targets
from portrait.evaluation.splits import Split
from portrait.events import Event
from portrait.progress import Progress

OBJECTIVE = "NDCG@10"

# The tuning grid: the values each searched parameter may take (defaults are first in each).
GRID: Mapping[str, Sequence[Any]] = {
    "hidden": (64, 128),
    "blocks": (2, 1),
    "dropout": (0.2, 0.5),
    "lr": (5e-3, 1e-2),
}


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
                append_token(seq, ev, row_of)
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
        """Each case's target ranks, scoring ``chunk`` sessions per forward pass."""
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
    """One raced configuration: its best validation epoch and why it stopped."""

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
    """What :func:`tune_sasrec` chose, the trained systems and every trial's record."""

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
        """A JSON-ready record of the tuning (no weights)."""
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

    def __init__(self, index: int, values: dict[str, Any], trainer: SASRecTrainer) -> None:
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
    base: SASRecParams = DEFAULT_PARAMS,
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
    with torch_threads(num_threads):
        seqs = interaction_sequences(validation.train_events, item_ids)
        cases = CaseSet(validation, item_ids)
        sample_cache: dict[tuple[Any, ...], TrainingSamples] = {}
        racers: list[_Racer] = []
        for i, values in enumerate(configs):
            p = dataclasses.replace(base, **values)
            key = (p.max_len, p.windows, p.new_targets_only)
            if key not in sample_cache:
                sample_cache[key] = training_samples(seqs.values(), *key)
            trainer = SASRecTrainer(sample_cache[key], len(item_ids), p, seed)
            racers.append(_Racer(i, values, trainer))

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

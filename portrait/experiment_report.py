"""The report of an online experiment: per variant, from impressions and their attribution.

Pure: numpy and the standard library only, no I/O. :func:`build_report` takes what the
adapter read (impressions, the attribution of the log to them, the catalog size) and returns
a JSON-ready dict; the API route and the ``portrait experiment report`` command both print it.

Per variant, over its impressions (each served list is one trial):

* ``users``, ``impressions``, ``interactions`` (attributed item events);
* ``ctr``: impressions with at least one attributed interaction (any positive item event),
  Wilson interval;
* ``conversion``: impressions with an attributed purchase or rating >= 4, Wilson interval;
* ``mrr``: mean over impressions of 1 / (1 + position) of the first item the user interacted
  with (0 when none), bootstrap interval;
* ``coverage``: distinct items served over the catalog size, bootstrap interval corrected
  for the distinct count's downward bias under resampling (it contains the estimate).

``differences`` holds each other variant minus the first (the control) with intervals and
p-values. Under interleaving every impression serves both variants: a variant's figures
count only the positions and interactions credited to its team, and ``interleaving`` gives
the preference: per user (and per impression), a win when the treatment's team got more of
the interactions, a loss when fewer; its share of wins over wins plus losses with a Wilson
interval, and the sign test's p-value.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from portrait.attribution import Attributed, Attribution
from portrait.experiment_stats import (
    Estimate,
    bootstrap_mean,
    bootstrap_mean_difference,
    coverage,
    rate_difference,
    replicate_difference,
    sign_test,
    users_needed,
    wilson,
)
from portrait.impression import INTERLEAVE, Impression

MIN_INTERACTIONS = 10  # below this per variant, intervals are too rough to read
MIN_DECISIVE = 10  # interleaving: users with a preference either way


class _Arm:
    """One variant's (or team's) trials: per impression, clicked, converted, reciprocal rank,
    and the item ids it served (as ints, for coverage)."""

    def __init__(self) -> None:
        self.users: set[str] = set()
        self.clicked: list[bool] = []
        self.converted: list[bool] = []
        self.rr: list[float] = []
        self.served: list[list[int]] = []
        self.interactions = 0

    def add(self, imp: Impression, credited: Sequence[Attributed], served: list[int]) -> None:
        self.users.add(imp.user_id)
        self.clicked.append(bool(credited))
        self.converted.append(any(a.conversion for a in credited))
        first = min(credited, key=lambda a: (a.occurred_at, a.position), default=None)
        self.rr.append(0.0 if first is None else 1.0 / (1 + first.position))
        self.served.append(served)
        self.interactions += len(credited)

    def summary(self, catalog_size: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
        n = len(self.clicked)
        cov, reps = coverage(self.served, catalog_size, seed=seed)
        out = {
            "users": len(self.users),
            "impressions": n,
            "interactions": self.interactions,
            "ctr": wilson(sum(self.clicked), n).to_dict(),
            "conversion": wilson(sum(self.converted), n).to_dict(),
            "mrr": bootstrap_mean(self.rr, seed=seed).to_dict(),
            "coverage": cov.to_dict(),
        }
        return out, reps


def _preference(
    impressions: Sequence[Impression], credited: Mapping[str, Sequence[Attributed]],
    control: str, treatment: str,
) -> dict[str, Any]:
    per_user: dict[str, int] = defaultdict(int)
    imp_w = imp_l = imp_t = 0
    for imp in impressions:
        got = credited.get(imp.request_id, ())
        # Each item counts once per impression, however many events it drew.
        t_items = {a.item_id for a in got if a.team == treatment}
        c_items = {a.item_id for a in got if a.team == control}
        score = len(t_items) - len(c_items)
        per_user[imp.user_id] += score
        if score > 0:
            imp_w += 1
        elif score < 0:
            imp_l += 1
        else:
            imp_t += 1
    u_w = sum(1 for s in per_user.values() if s > 0)
    u_l = sum(1 for s in per_user.values() if s < 0)
    u_t = len(per_user) - u_w - u_l

    def block(w: int, lo: int, t: int) -> dict[str, Any]:
        return {"wins": w, "losses": lo, "ties": t, "share": wilson(w, w + lo).to_dict(),
                "p_value": sign_test(w, lo)}

    return {"variant": treatment, "over": control, "by_user": block(u_w, u_l, u_t),
            "by_impression": block(imp_w, imp_l, imp_t)}


def build_report(
    experiment: str,
    impressions: Sequence[Impression],
    attribution: Attribution,
    catalog_size: int,
    *,
    variants: Sequence[str] = (),
    window_s: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The report (see the module docstring). ``variants`` fixes the order (the first is the
    control); by default, the variants seen in the impressions, sorted."""
    mode = "ab"
    if any(i.teams is not None for i in impressions):
        mode = INTERLEAVE
    names = list(variants)
    seen = sorted({t for i in impressions for t in (i.teams or ())} if mode == INTERLEAVE
                  else {i.variant for i in impressions})
    names += [v for v in seen if v not in names]
    credited = attribution.by_impression()
    item_ids: dict[str, int] = {}

    def ints(items: Sequence[str]) -> list[int]:
        return [item_ids.setdefault(i, len(item_ids)) for i in items]

    arms = {v: _Arm() for v in names}
    for imp in impressions:
        got = credited.get(imp.request_id, ())
        if mode == INTERLEAVE:
            assert imp.teams is not None
            for team, arm in arms.items():
                mine = [i for i, t in zip(imp.items, imp.teams, strict=True) if t == team]
                arm.add(imp, [a for a in got if a.team == team], ints(mine))
        elif imp.variant in arms:
            arms[imp.variant].add(imp, got, ints(imp.items))

    summaries: dict[str, dict[str, Any]] = {}
    replicates: dict[str, np.ndarray] = {}
    for name, arm in arms.items():
        summaries[name], replicates[name] = arm.summary(catalog_size, seed)
    warnings: list[str] = []
    differences: dict[str, dict[str, Any] | None] = {}
    control = names[0] if names else None
    if control is not None:
        c = arms[control]
        for name in names[1:]:
            t = arms[name]
            if not c.clicked or not t.clicked:
                differences[name] = None
                warnings.append(f"{name} vs {control}: no impressions in one of them yet")
                continue
            ctr = rate_difference(sum(c.clicked), len(c.clicked), sum(t.clicked), len(t.clicked))
            differences[name] = {
                "ctr": ctr.to_dict(),
                "conversion": rate_difference(sum(c.converted), len(c.converted),
                                              sum(t.converted), len(t.converted)).to_dict(),
                "mrr": bootstrap_mean_difference(c.rr, t.rr, seed=seed).to_dict(),
                "coverage": replicate_difference(
                    summaries[name]["coverage"]["value"] - summaries[control]["coverage"]["value"],
                    replicates[control], replicates[name]).to_dict(),
            }
            if mode != INTERLEAVE and not ctr.estimate.excludes(0.0):
                need = users_needed(summaries[control]["ctr"]["value"],
                                    summaries[name]["ctr"]["value"])
                more = (f"; at the observed rates about {need:,} impressions per variant would "
                        "tell (80% power)") if need is not None else ""
                warnings.append(f"{name} vs {control}: the click-through difference's 95% "
                                f"interval includes 0, the sample is too small to tell{more}")
    for name, arm in arms.items():
        if arm.interactions < MIN_INTERACTIONS:
            warnings.append(f"{name}: {arm.interactions} attributed interactions (fewer than "
                            f"{MIN_INTERACTIONS}): its intervals are too wide to rely on")
    interleaving = None
    if mode == INTERLEAVE and len(names) == 2:
        interleaving = _preference(impressions, credited, names[0], names[1])
        by_user = interleaving["by_user"]
        if by_user["wins"] + by_user["losses"] < MIN_DECISIVE:
            warnings.append(f"interleaving: {by_user['wins'] + by_user['losses']} users preferred "
                            f"one team (fewer than {MIN_DECISIVE}): too few to tell")
        elif by_user["p_value"] >= 0.05:
            warnings.append("interleaving: no significant preference yet (sign test p >= 0.05)")
    return {
        "experiment": experiment,
        "mode": mode,
        "control": control,
        "catalog_size": catalog_size,
        "attribution_window_s": window_s,
        "variants": summaries,
        "differences": differences,
        "interleaving": interleaving,
        "ignored_request_ids": dict(attribution.ignored),
        "warnings": warnings,
    }


def estimate(d: Mapping[str, float]) -> Estimate:
    """An :class:`Estimate` back from its dict (callers reading a report)."""
    return Estimate(d["value"], d["ci_low"], d["ci_high"])

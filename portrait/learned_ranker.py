"""The learned ranker: a LightGBM ``lambdarank`` model over retrieval candidates' features.

Pure: numpy, LightGBM and msgpack, no I/O (a model travels as bytes; storage keeps them with
the item space it was trained with).

A :class:`RankerBundle` is everything one retrain produced for ranking: the GBDT, the
co-occurrence and transition neighbour lists (by item id), the settings and feature names it
was trained with, and its training figures. :meth:`RankerBundle.from_bytes` refuses a bundle
whose format or features differ from what the running code computes
(:class:`IncompatibleRanker`), so a model is never fed columns it was not trained on.
:meth:`RankerBundle.bind` places it in one catalog view's rows (:class:`BoundRanker`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import msgpack
import numpy as np

from portrait.covisitation import Neighbours
from portrait.errors import PortraitError
from portrait.items import ItemIndex
from portrait.ranker_features import EXTRAS, feature_names
from portrait.retrieval import RETRIEVERS, ExactRetriever, exact_retrievers

# Bumped whenever a feature's meaning changes without its name changing.
FEATURES_VERSION = 2
_FORMAT = 1


class IncompatibleRanker(PortraitError):
    """A stored ranker whose format or features do not match the running code."""


class NotEnoughTraining(PortraitError):
    """Too little data to train a ranker that could beat the blend; the blend keeps serving."""


@dataclass(frozen=True)
class RankerSettings:
    """How candidates are retrieved and the ranker is trained.

    Attributes:
        candidates: rows each retriever proposes (the union is ranked).
        neighbours: neighbour-list length of the co-occurrence and transition models.
        window: how many steps ahead a transition counts.
        sequence_half_life: recency half-life of the user's recent items, in items.
        retrievers, extras: which retrievers and extra features (ablations drop some).
        labels_per_user: each user's last this many new items are labels, one group each.
        max_label_share: but never more than this share of a user's items (at least one).
        min_groups: fewer groups (labels the retrievers found) refuses training.
        max_groups: users sampled at most (bounds the retrain time).
        rounds, learning_rate, num_leaves, min_data_in_leaf: the GBDT.
        early_stopping: rounds without a better validation NDCG@10 before stopping.
        validation_share: share of the training users held out for early stopping.
        seed: of the user sampling, the validation split and LightGBM.
        threads: LightGBM's training threads (more than the CPUs free makes OpenMP spin:
            two threads on a busy two-CPU machine took a minute for what one does in 0.2 s).
    """

    candidates: int = 50
    neighbours: int = 100
    window: int = 3
    sequence_half_life: float = 3.0
    retrievers: tuple[str, ...] = RETRIEVERS
    extras: tuple[str, ...] = EXTRAS
    labels_per_user: int = 5
    max_label_share: float = 0.25
    min_groups: int = 30
    max_groups: int = 5_000
    rounds: int = 200
    learning_rate: float = 0.1
    num_leaves: int = 15
    min_data_in_leaf: int = 50
    early_stopping: int = 30
    validation_share: float = 0.2
    seed: int = 0
    threads: int = 2

    def __post_init__(self) -> None:
        unknown = [r for r in self.retrievers if r not in RETRIEVERS]
        if unknown or not self.retrievers:
            raise ValueError(f"retrievers must be a non-empty subset of {RETRIEVERS}")
        feature_names(self.retrievers, self.extras)  # raises on unknown extras
        if self.candidates < 1 or self.neighbours < 1 or self.window < 1:
            raise ValueError("candidates, neighbours and window must be at least 1")
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
        if not 0.0 < self.validation_share < 1.0:
            raise ValueError("validation_share must be between 0 and 1")

    @property
    def feature_names(self) -> tuple[str, ...]:
        return feature_names(self.retrievers, self.extras)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["retrievers"], d["extras"] = list(self.retrievers), list(self.extras)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RankerSettings:
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in fields}
        for key in ("retrievers", "extras"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)


@dataclass(frozen=True)
class TrainingSet:
    """Feature rows of (user, candidate) pairs grouped per user, label 1 for the next item."""

    x: np.ndarray  # (rows, features) float32
    y: np.ndarray  # (rows,) float32
    groups: np.ndarray  # (users,) rows per user, in order
    users: int  # labels considered (a user has up to labels_per_user)
    retrieved: int  # of them, how many the retrievers found (one group each)

    @property
    def recall(self) -> float:
        return self.retrieved / self.users if self.users else 0.0


@dataclass(frozen=True)
class RankerBundle:
    """One trained ranker with the neighbour models it ranks with."""

    model: str  # LightGBM's text model
    settings: RankerSettings
    features: tuple[str, ...]
    item_ids: tuple[str, ...]  # the rows of the neighbour lists
    cooc: Neighbours
    trans: Neighbours
    metrics: dict[str, float] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        def arr(a: np.ndarray) -> dict[str, Any]:
            return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}

        doc = {
            "format": _FORMAT, "features_version": FEATURES_VERSION, "model": self.model,
            "settings": self.settings.to_dict(), "features": list(self.features),
            "item_ids": list(self.item_ids),
            "cooc": [arr(self.cooc.nbr), arr(self.cooc.sim)],
            "trans": [arr(self.trans.nbr), arr(self.trans.sim)],
            "metrics": dict(self.metrics),
        }
        out: bytes = msgpack.packb(doc, use_bin_type=True)
        return out

    @classmethod
    def from_bytes(cls, blob: bytes) -> RankerBundle:
        """Decode a stored bundle. Raises :class:`IncompatibleRanker` when the running code
        would compute other features than it was trained on."""
        try:
            doc = msgpack.unpackb(blob, raw=False)
        except Exception as e:  # noqa: BLE001 - any decoding failure means "not ours"
            raise IncompatibleRanker(f"the stored ranker cannot be decoded: {e}") from e
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise IncompatibleRanker("the stored ranker has another format")
        if doc.get("features_version") != FEATURES_VERSION:
            raise IncompatibleRanker(
                f"the stored ranker has features version {doc.get('features_version')}, "
                f"this code {FEATURES_VERSION}: retrain to use a learned ranker"
            )
        try:
            settings = RankerSettings.from_dict(doc["settings"])
        except (TypeError, ValueError) as e:
            raise IncompatibleRanker(f"the stored ranker's settings are not valid here: {e}") from e
        names = tuple(doc["features"])
        if names != settings.feature_names:
            raise IncompatibleRanker(
                "the stored ranker was trained on other features than this code computes"
            )

        def arr(d: Mapping[str, Any]) -> np.ndarray:
            return np.frombuffer(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()

        return cls(
            doc["model"], settings, names, tuple(doc["item_ids"]),
            Neighbours(arr(doc["cooc"][0]), arr(doc["cooc"][1])),
            Neighbours(arr(doc["trans"][0]), arr(doc["trans"][1])),
            dict(doc.get("metrics", {})),
        )

    def bind(self, items: ItemIndex) -> BoundRanker:
        """This ranker over ``items``' rows (neighbours of items it lacks are dropped)."""
        rows = items.rows_of(self.item_ids)
        booster = lgb.Booster(model_str=self.model)
        return BoundRanker(
            booster, self.settings, self.cooc.remap(rows, len(items)),
            self.trans.remap(rows, len(items)), TreePaths.of(booster),
        )


@dataclass(frozen=True)
class TreePaths:
    """The ensemble's trees as flat arrays, to attribute a score to the features on its path.

    Each split moves a row from a node to a child whose expected output differs; that change
    is credited to the split's feature. Summed over the path and the trees, the credits plus
    the roots' values (the bias) equal the model's score exactly. This is the path
    attribution of a tree ensemble (cheap: one walk per shown item), not TreeSHAP, which
    LightGBM's ``pred_contrib`` computes at ~1 ms per row: too dear for a 4 ms request.
    """

    feature: np.ndarray  # per node, -1 for a leaf
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    n_features: int

    @classmethod
    def of(cls, booster: lgb.Booster) -> TreePaths:
        feature: list[int] = []
        threshold: list[float] = []
        left: list[int] = []
        right: list[int] = []
        value: list[float] = []
        roots: list[int] = []

        def add(node: Mapping[str, Any]) -> int:
            i = len(feature)
            feature.append(-1)
            threshold.append(0.0)
            left.append(i)
            right.append(i)
            if "leaf_value" in node:
                value.append(float(node["leaf_value"]))
                return i
            if node.get("decision_type", "<=") != "<=":
                raise IncompatibleRanker("only numerical splits are supported")
            value.append(float(node["internal_value"]))
            feature[i] = int(node["split_feature"])
            threshold[i] = float(node["threshold"])
            left[i] = add(node["left_child"])
            right[i] = add(node["right_child"])
            return i

        dump = booster.dump_model()
        for tree in dump["tree_info"]:
            roots.append(add(tree["tree_structure"]))
        return cls(
            np.asarray(feature, np.int64), np.asarray(threshold), np.asarray(left, np.int64),
            np.asarray(right, np.int64), np.asarray(value), np.asarray(roots, np.int64),
            booster.num_feature(),
        )

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """``(rows, n_features + 1)``: each feature's credit, the bias in the last column."""
        n = x.shape[0]
        out = np.zeros((n, self.n_features + 1))
        if n == 0 or self.roots.size == 0:
            return out
        node = np.broadcast_to(self.roots, (n, self.roots.size)).copy()
        row = np.broadcast_to(np.arange(n)[:, None], node.shape)
        out[:, -1] = self.value[self.roots].sum()
        while True:
            feat = self.feature[node]
            inner = feat >= 0
            if not inner.any():
                return out
            r, f, at = row[inner], feat[inner], node[inner]
            child = np.where(x[r, f] <= self.threshold[at], self.left[at], self.right[at])
            width = self.n_features + 1
            out += np.bincount(
                r * width + f, weights=self.value[child] - self.value[at], minlength=n * width
            ).reshape(n, width)
            node[inner] = child


@dataclass(frozen=True)
class BoundRanker:
    """A ranker ready to score candidates in one catalog view."""

    booster: lgb.Booster
    settings: RankerSettings
    cooc: Neighbours
    trans: Neighbours
    paths: TreePaths

    @property
    def retrievers(self) -> tuple[ExactRetriever, ...]:
        return exact_retrievers(self.settings.retrievers)

    def predict(self, x: np.ndarray) -> np.ndarray:
        if x.shape[0] == 0:
            return np.zeros(0)
        out = np.asarray(self.booster.predict(x, num_threads=1))
        return out

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per row, each feature's additive contribution to its score (last column: bias):
        the path attribution of :class:`TreePaths`, not LightGBM's TreeSHAP (see there)."""
        return self.paths.contributions(x)

    def grown(self, n_items: int) -> BoundRanker:
        """This ranker over its catalog grown by a delta to ``n_items`` rows: the new items
        have no co-occurrence or transition lists until the next retrain."""
        return dataclasses.replace(self, cooc=self.cooc.grown(n_items),
                                   trans=self.trans.grown(n_items))


def train_model(data: TrainingSet, settings: RankerSettings) -> tuple[str, dict[str, float]]:
    """Fit the lambdarank GBDT with early stopping on held-out users.

    Returns:
        the model as LightGBM's text and its figures (validation NDCG@10, rounds, groups).
    Raises:
        NotEnoughTraining: fewer than ``settings.min_groups`` usable users.
    """
    n_groups = int(data.groups.size)
    if n_groups < settings.min_groups:
        raise NotEnoughTraining(
            f"{n_groups} users with a retrievable next item (of {data.users} with enough "
            f"history); a learned ranker needs at least {settings.min_groups}: keeping the blend"
        )
    rng = np.random.default_rng(settings.seed)
    n_valid = max(1, int(round(n_groups * settings.validation_share)))
    valid = np.zeros(n_groups, dtype=bool)
    valid[rng.choice(n_groups, size=n_valid, replace=False)] = True
    row_valid = np.repeat(valid, data.groups)
    names = list(settings.feature_names)
    train = lgb.Dataset(
        data.x[~row_valid], data.y[~row_valid], group=data.groups[~valid],
        feature_name=names, free_raw_data=True,
    )
    check = lgb.Dataset(
        data.x[row_valid], data.y[row_valid], group=data.groups[valid], reference=train,
        feature_name=names,
    )
    params = {
        "objective": "lambdarank", "metric": "ndcg", "eval_at": [10],
        "learning_rate": settings.learning_rate, "num_leaves": settings.num_leaves,
        "min_data_in_leaf": settings.min_data_in_leaf, "feature_fraction": 0.9,
        "bagging_fraction": 0.9, "bagging_freq": 1, "lambdarank_truncation_level": 20,
        "seed": settings.seed, "deterministic": True, "force_row_wise": True,
        "num_threads": settings.threads, "verbose": -1,
    }
    booster = lgb.train(
        params, train, num_boost_round=settings.rounds, valid_sets=[check],
        callbacks=[lgb.early_stopping(settings.early_stopping, verbose=False)],
    )
    best = booster.best_iteration or settings.rounds
    ndcg = float(booster.best_score["valid_0"]["ndcg@10"]) if booster.best_score else float("nan")
    model: str = booster.model_to_string(num_iteration=best)
    return model, {
        "validation_ndcg10": ndcg, "rounds": float(best), "groups": float(n_groups),
        "users": float(data.users), "candidate_recall": data.recall,
    }


def feature_importance(bundle: RankerBundle) -> dict[str, float]:
    """Total gain per feature (what the inspector and the note show)."""
    booster = lgb.Booster(model_str=bundle.model)
    gains = booster.feature_importance(importance_type="gain")
    return {n: float(g) for n, g in zip(bundle.features, gains, strict=True)}

"""Interest keywords drawn from a user's own text, KeyBERT-style, with the item encoder.

For each text (a review, a search query) we list candidate phrases (1- and 2-word n-grams that
neither start nor end with a stop word), embed the text and the candidates with the same
encoder in ONE batch, and keep the candidates closest to the text, with a maximal-marginal-
relevance pass so that "space opera" and "opera space" do not both take a slot. The score is
the cosine similarity, so keywords weigh more when they capture what the text is about.

Everything here is pure: :class:`TextFeatureBatch` says what to encode and assembles the
result, so the synchronous path (evaluation, tests) and the asynchronous one (the service,
through the batched encoder deployment) share the logic.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from portrait.errors import InvalidField
from portrait.ports import TextFeatures
from portrait.segmentation import cjk_phrases, script_runs

STOP_WORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    also get got really one like much even still well way thing things lot make made go going
    im ive dont didnt doesnt isnt wasnt cant wont its it's i'm i've don't didn't doesn't""".split()
)
_WORD = re.compile(r"[^\W\d_][\w'-]*", re.UNICODE)
MAX_CANDIDATES = 24


def candidate_phrases(text: str, max_ngram: int = 2, limit: int = MAX_CANDIDATES) -> list[str]:
    """Candidate keyword phrases of ``text``, most frequent first (ties: first seen).

    Chinese and Japanese runs are cut into words first (:mod:`portrait.segmentation`): their
    candidates are nouns and short noun phrases; the text around them is cut into words here.
    """
    counts: dict[str, int] = {}
    for run, is_cjk in script_runs(text):
        phrases = cjk_phrases(run, max_ngram) if is_cjk else _word_ngrams(run, max_ngram)
        for phrase in phrases:
            counts[phrase] = counts.get(phrase, 0) + 1
    order = {p: i for i, p in enumerate(counts)}
    return sorted(counts, key=lambda p: (-counts[p], order[p]))[:limit]


def _word_ngrams(text: str, max_ngram: int) -> list[str]:
    """The 1- to ``max_ngram``-word n-grams of space-separated text, in order, repeats kept;
    none starts or ends with a stop word."""
    words = [w.strip("'-") for w in _WORD.findall(text.lower())]
    words = [w for w in words if len(w) > 1]
    phrases = []
    for n in range(1, max_ngram + 1):
        for i in range(len(words) - n + 1):
            gram = words[i : i + n]
            if gram[0] in STOP_WORDS or gram[-1] in STOP_WORDS:
                continue
            phrases.append(" ".join(gram))
    return phrases


def select_keywords(
    text_vector: np.ndarray,
    candidates: Sequence[str],
    candidate_vectors: np.ndarray,
    k: int = 5,
    diversity: float = 0.3,
) -> tuple[tuple[str, float], ...]:
    """The ``k`` candidates most similar to the text, diversified by MMR.

    Vectors must be L2-normalised. Only positively similar candidates are kept.
    """
    if not candidates:
        return ()
    relevance = candidate_vectors @ text_vector
    chosen: list[int] = []
    remaining = [i for i in range(len(candidates)) if relevance[i] > 0]
    while remaining and len(chosen) < k:
        if chosen:
            redundancy = (candidate_vectors[remaining] @ candidate_vectors[chosen].T).max(axis=1)
        else:
            redundancy = np.zeros(len(remaining))
        mmr = (1 - diversity) * relevance[remaining] - diversity * redundancy
        best = remaining[int(np.argmax(mmr))]
        chosen.append(best)
        remaining.remove(best)
    return tuple((candidates[i], round(float(relevance[i]), 6)) for i in chosen)


class TextFeatureBatch:
    """Plans one encoder batch for several texts and turns its output into features."""

    def __init__(self, texts: Sequence[str], keywords_per_text: int = 5) -> None:
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise InvalidField(f"texts[{i}]", "must be non-empty text")
        self.texts = list(texts)
        self.k = keywords_per_text
        self.candidates = [candidate_phrases(t) for t in self.texts]
        unique: dict[str, int] = {}
        for cands in self.candidates:
            for phrase in cands:
                unique.setdefault(phrase, len(unique))
        self._phrase_row = {p: len(self.texts) + i for p, i in unique.items()}
        self.inputs: list[str] = self.texts + list(unique)

    def assemble(self, vectors: np.ndarray, model_id: str) -> list[TextFeatures]:
        """Features per text, given the output of encoder ``model_id`` for :attr:`inputs`
        (same order)."""
        if vectors.shape[0] != len(self.inputs):
            raise InvalidField(
                "vectors", f"expected {len(self.inputs)} rows, got {vectors.shape[0]}"
            )
        out = []
        for i, cands in enumerate(self.candidates):
            rows = [self._phrase_row[p] for p in cands]
            kws = select_keywords(vectors[i], cands, vectors[rows], k=self.k) if rows else ()
            out.append(TextFeatures(np.asarray(vectors[i], dtype=np.float32), kws,
                                    model_id=model_id))
        return out

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

Validation scoring and tuning are :mod:`offline.sasrec_tuning`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from portrait.evaluation.runner import CaseContext
from portrait.events import POSITIVE_ITEM_TYPES, Event, ItemEvent
from portrait.progress import Progress

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


DEFAULT_PARAMS = SASRecParams()


# -- sequences --------------------------------------------------------------------------------


def _is_interaction(ev: Event) -> bool:
    return isinstance(ev, ItemEvent) and ev.TYPE in POSITIVE_ITEM_TYPES


def append_token(seq: list[int], ev: Event, row_of: Mapping[str, int]) -> None:
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
            append_token(out.setdefault(ev.user_id, []), ev, row_of)
    return out


@dataclass
class TrainingSamples:
    """Training windows: left-aligned token arrays (no padding) and their loss masks."""

    inputs: list[np.ndarray]
    targets: list[np.ndarray]  # 0 where the step does not count in the loss
    n_targets: int


def training_samples(
    sequences: Iterable[list[int]], max_len: int, windows: str, new_targets_only: bool
) -> TrainingSamples:
    """Cut token sequences into training windows (see ``windows`` and ``new_targets_only`` in
    the module docstring); sequences shorter than two tokens give none."""
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
    return TrainingSamples(inputs, targets, n)


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
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with torch on ``n`` CPU threads (unchanged if None), then restore them."""
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
    """One user's token sequence as the runner feeds it, scored by its system's model."""

    def __init__(self, system: SASRecSystem) -> None:
        self.system = system
        self.tokens: list[int] = []

    def observe(self, events: Sequence[Event]) -> None:
        for ev in events:
            append_token(self.tokens, ev, self.system.row_of)

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


class SASRecTrainer:
    """One configuration's model, optimiser and random streams; trains epoch by epoch.

    Its RNG states are its own (saved and restored around every epoch), so several trainers
    can interleave, as in successive halving, without changing each other's results.
    """

    def __init__(
        self, samples: TrainingSamples, n_items: int, params: SASRecParams, seed: int
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
        """One pass over every training window; returns the mean loss per counted target."""
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
    params: SASRecParams = DEFAULT_PARAMS,
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
    with torch_threads(num_threads):
        seqs = interaction_sequences(train_events, item_ids)
        samples = training_samples(
            seqs.values(), params.max_len, params.windows, params.new_targets_only
        )
        trainer = SASRecTrainer(samples, len(item_ids), params, seed)
        for e in range(params.epochs):
            loss = trainer.train_epoch()
            if progress is not None:
                progress(e + 1, params.epochs, loss=loss)
    return SASRecSystem(trainer.model, item_ids, params, name, trainer.history)

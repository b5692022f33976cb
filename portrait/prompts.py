"""What an encoder's model wants in front of a text, by the text's role.

Some sentence encoders are trained with instruction prefixes and give worse vectors without
them: multilingual-e5 expects ``"query: "`` before a search or a short statement of interest
and ``"passage: "`` before a document. MiniLM wants none. The prefixes belong to the model,
so the encoder carries them (:attr:`TextPrompts` as its ``prompts``, from its settings) and
the callers say only which role each text plays:

* **passage**: catalog items (``item_text``), the documents that are ranked;
* **query**: what a user wrote (searches, reviews), the keyword candidates drawn from it
  (compared with that text, a symmetric task, for which e5 also uses ``query:``) and the
  interest-tag prompts (compared with profile vectors, like a search).

An encoder without a ``prompts`` attribute (test fakes, MiniLM) gets the texts unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TextPrompts:
    """The prefixes one model wants; empty strings for none."""

    query: str = ""
    passage: str = ""

    def queries(self, texts: Sequence[str]) -> list[str]:
        return [self.query + t for t in texts] if self.query else list(texts)

    def passages(self, texts: Sequence[str]) -> list[str]:
        return [self.passage + t for t in texts] if self.passage else list(texts)


NO_PROMPTS = TextPrompts()


def prompts_of(encoder: object) -> TextPrompts:
    """The encoder's prompts, or none when it declares none."""
    prompts = getattr(encoder, "prompts", None)
    return prompts if isinstance(prompts, TextPrompts) else NO_PROMPTS

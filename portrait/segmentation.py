"""Words of Chinese and Japanese text, for keyword candidates.

Chinese and Japanese write no spaces between words, so splitting at spaces and punctuation
turns a whole clause into one "word" (``太空战斗场面宏大``). Here a text is cut into runs of one
script, and the CJK runs into words:

* Chinese: segmented and tagged with parts of speech by rjieba (jieba's dictionary and HMM,
  in Rust). Measured against the Python jieba 0.42.1 on 23 reviews: the same words and tags
  but a few (each has errors the other avoids), 0.01 ms to tag a 40-character review against
  0.44 ms, and 0.2 s to load the dictionary against 2.6 s. Only nouns are kept (see
  :data:`NOUN_TAGS`), alone or joined with their noun neighbours into short phrases written
  without a space (科幻题材, 星际冒险), so a candidate is a word or a noun phrase, never a
  clause.
* Japanese (a run with kana): no dictionary here: a run is cut where the script changes.
  Hiragana is mostly particles and inflections (の, は, しい), so it only separates; kanji
  and katakana pieces (夜景, ロボット) are the candidates, joined when adjacent
  (ロボット映画). A lone kanji is dropped: it is mostly a verb or adjective stem (美しい).

The dictionary loads on the first CJK text only, once per process: English-only text never
imports rjieba.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator

MAX_CHARS = 6
"""The longest CJK candidate, in characters: a word or a two-word phrase, not a clause."""

_HAN = "\u3005\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_HIRAGANA = "\u3040-\u309f"
_KATAKANA = "\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_CJK_RUN = re.compile(f"[{_HAN}{_HIRAGANA}{_KATAKANA}]+")
_KANA = re.compile(f"[{_HIRAGANA}{_KATAKANA}]")
_JAPANESE_PIECE = re.compile(f"[{_HAN}]+|[{_KATAKANA}]+|[{_HIRAGANA}]+")
_KANJI_OR_KATAKANA = re.compile(f"[{_HAN}{_KATAKANA}]")

NOUN_TAGS = frozenset({"vn", "an", "j"})
"""jieba's tags kept besides every ``n*`` (n noun, nr person, nrt/nrfg transliterated
names, ns place, nt organisation, nz other proper noun, ng noun morpheme): vn verbal noun
(战斗), an adjectival noun, j abbreviation (央视). Verbs, adjectives, adverbs, pronouns,
numerals and particles (喜欢, 宏大, 很, 我, 的, 了) are not keywords."""

_ATTRIBUTIVE = "的"
_NOMINAL_AFTER_ATTRIBUTIVE = frozenset({"a", "ad", "v", "i", "l", "b"})
"""The word right after 的 heads a noun phrase (电影的特效, 的爱情故事): jieba's dictionary
tags some such heads as adjectives, verbs or idioms (特效 a, 表演 v, 爱情故事 i), so there
they count as nouns."""

_DEGREE_ADVERBS = frozenset("很太挺真超最更好蛮")
"""很漂亮, 太短, 太贵: a degree adverb and an adjective, a predicate that jieba's dictionary
lists as a noun. Told from nouns that start with the same character (太空, 好莱坞) by the tag
of the rest (漂亮 a, 空 n)."""

CHINESE_STOP_WORDS = frozenset(
    """东西 时候 事情 地方 感觉 样子 方面 部分 有点 一点 大家 人们 问题 情况 原因 结果 过程
    其中 本人 之后 以后 之前 以前 今天 昨天 明天 一下 的话""".split()
)
"""Nouns (or words jieba tags as nouns) that say nothing about an interest. Function words
(的, 了, 我, 很, 和) need no list: their tags already keep them out."""


def script_runs(text: str) -> Iterator[tuple[str, bool]]:
    """``text`` cut into its CJK runs (True) and the text between them (False), in order.

    A text without CJK characters comes back whole, as one run.
    """
    start = 0
    for match in _CJK_RUN.finditer(text):
        if match.start() > start:
            yield text[start : match.start()], False
        yield match.group(), True
        start = match.end()
    if start < len(text) or not text:
        yield text[start:], False


def cjk_phrases(run: str, max_words: int = 2) -> list[str]:
    """Candidate keywords of one CJK run (from :func:`script_runs`), in text order.

    Repeats are kept (the caller counts them): words first, then phrases of 2 up to
    ``max_words`` adjacent words, each at most :data:`MAX_CHARS` characters.
    """
    words = _japanese_words(run) if _KANA.search(run) else _chinese_words(run)
    phrases = []
    for n in range(1, max_words + 1):
        for i in range(len(words) - n + 1):
            gram = words[i : i + n]
            if any(w is None for w in gram):
                continue
            phrase = "".join(w for w in gram if w is not None)
            if (n > 1 or len(phrase) > 1) and len(phrase) <= MAX_CHARS:
                phrases.append(phrase)
    return phrases


def _chinese_words(run: str) -> list[str | None]:
    """The run's words, ``None`` in place of each word that is not a noun."""
    words: list[str | None] = []
    previous = ""
    for word, tag in _tagger()(run):
        noun = (tag.startswith("n") or tag in NOUN_TAGS) and not _adjective_predicate(word)
        if previous == _ATTRIBUTIVE and tag in _NOMINAL_AFTER_ATTRIBUTIVE and len(word) > 1:
            noun = True
        words.append(word if noun and word not in CHINESE_STOP_WORDS else None)
        previous = word
    return words


def _adjective_predicate(word: str) -> bool:
    """Whether ``word`` is a degree adverb and an adjective (很漂亮), not a noun."""
    if len(word) < 2 or word[0] not in _DEGREE_ADVERBS:
        return False
    rest = _tagger()(word[1:])
    return len(rest) == 1 and rest[0][1] == "a"


def _japanese_words(run: str) -> list[str | None]:
    """Kanji and katakana pieces of the run, ``None`` for each hiragana piece."""
    return [
        piece if _KANJI_OR_KATAKANA.match(piece) else None
        for piece in _JAPANESE_PIECE.findall(run)
    ]


@functools.cache
def _tagger() -> Callable[[str], list[tuple[str, str]]]:
    """rjieba's part-of-speech tagger. Importing rjieba loads its dictionary (~0.2 s); the
    import lock makes that happen once per process even when threads race here, and the
    tagger only reads it afterwards. rjieba logs nothing."""
    import rjieba

    return rjieba.tag

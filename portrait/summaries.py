"""A profile in plain words: the facts a summary may use, the prompt, the template, the check.

A summary is written from a handful of facts drawn from a profile's summary
(:func:`portrait.inspection.summarize`): the strongest tags, the strongest keywords from the
user's own text, the titles of recently touched items and the attributes. Two writers use the
same facts:

* :func:`template_summary`, deterministic, always available;
* a small instruct model (``serve/summarizer.py``), prompted by :func:`build_messages`.

A model may name interests the profile does not hold (a 135M-parameter model readily adds
"action" or "horror" to a drama fan). :func:`check_summary` extracts the interests a text
names, against a vocabulary of interest words (catalog tags, the profile's own tags and
keywords, common genre words), and rejects a text naming one the profile lacks, or a text
that loops. The caller then answers with the template. Everything here is pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Bump when the prompt or the post-processing changes: cached model summaries are keyed by it.
PROMPT_VERSION = "2"

# How many facts of each kind the prompt and the template use: a small model loses track of
# longer lists, and two or three sentences have no room for more.
MAX_TAGS = 3
MAX_KEYWORDS = 3
MAX_RECENT = 3
MAX_SENTENCES = 3

# Event types after which an item is not "something the user chose".
_NOT_CHOSEN = frozenset({"dismiss"})

# Genre words a model may name even when the catalog's tags spell them otherwise (MovieLens
# genres and the usual others): without them, an invented "horror" in a catalog without a
# Horror tag would pass unnoticed.
GENRE_WORDS = frozenset({
    "action", "adventure", "animation", "children", "comedy", "crime", "documentary",
    "drama", "fantasy", "film noir", "horror", "imax", "musical", "mystery", "romance",
    "sci fi", "thriller", "war", "western", "biography", "superhero", "martial arts",
    "anime", "noir", "slasher", "zombie",
})

# Other spellings of the same interest, normalised (see :func:`normalise`).
ALIASES: Mapping[str, str] = {
    "science fiction": "sci fi", "scifi": "sci fi",
    "romantic": "romance", "romances": "romance", "romcom": "romance",
    "comedies": "comedy", "comedic": "comedy",
    "dramas": "drama", "dramatic": "drama",
    "thrillers": "thriller", "animated": "animation", "cartoon": "animation",
    "cartoons": "animation", "documentaries": "documentary", "musicals": "musical",
    "westerns": "western", "mysteries": "mystery", "kids": "children",
    "children s": "children", "childrens": "children", "horrors": "horror",
    "fantasies": "fantasy", "adventures": "adventure", "crimes": "crime",
    "wars": "war", "biographies": "biography", "superheroes": "superhero",
    "zombies": "zombie", "slashers": "slasher",
}


def normalise(text: str) -> str:
    """Lower case, punctuation and dashes to spaces, single spaces: ``Sci-Fi`` -> ``sci fi``."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def canonical(term: str) -> str:
    """The interest a term names (``Science Fiction`` -> ``sci fi``)."""
    norm = normalise(term)
    return ALIASES.get(norm, norm)


def display_title(title: str) -> str:
    """A catalog title as a sentence wants it: MovieLens's ``Matrix, The (1999)`` -> ``The
    Matrix``. The year goes: a small model repeated it in a loop when given."""
    t = re.sub(r"\s*\(\d{4}\)\s*$", "", title.strip())
    # A trailing original-language title or alias, "(Buono, il brutto, il cattivo, Il)":
    # the model repeated such asides in loops.
    t = re.sub(r"\s*\([^()]*\)\s*$", "", t) or t
    m = re.match(r"^(.*), (The|A|An|Les|La|Le|Il|Der|Die|Das|El)$", t)
    return f"{m.group(2)} {m.group(1)}" if m else t


def display_tag(tag: str) -> str:
    """A tag in running text: ``Sci-Fi`` -> ``sci-fi``, ``Children`` -> ``children's``."""
    low = tag.strip().lower()
    return "children's" if low == "children" else low


@dataclass(frozen=True, slots=True)
class SummaryFacts:
    """What a summary of one profile may say.

    ``tags`` and ``keywords`` are every interest the profile holds with a positive weight,
    strongest first (the writers use the first few; the check allows all of them).
    """

    last_seq: int
    event_count: int
    tags: tuple[str, ...]
    keywords: tuple[str, ...]
    recent_titles: tuple[str, ...]
    attributes: tuple[tuple[str, str], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "last_seq": self.last_seq,
            "event_count": self.event_count,
            "tags": list(self.tags[:MAX_TAGS]),
            "keywords": list(self.keywords[:MAX_KEYWORDS]),
            "recent_titles": list(self.recent_titles[:MAX_RECENT]),
            "attributes": dict(self.attributes),
        }


def facts_from_profile(summary: Mapping[str, Any], titles: Mapping[str, str]) -> SummaryFacts:
    """The facts of a profile summary; ``titles`` maps item ids to catalog titles (items
    without one are left out: an id means nothing in a sentence)."""
    tags = tuple(t["tag"] for t in summary.get("tags", ())
                 if t["weight"] > 0 and not t["tag"].startswith("("))  # "(no genres listed)"
    keywords = tuple(k["keyword"] for k in summary.get("keywords", ()) if k["weight"] > 0)
    recent: list[str] = []
    for r in summary.get("recent", ()):  # newest first
        title = titles.get(r["item_id"])
        if r.get("type") in _NOT_CHOSEN or not title:
            continue
        shown = display_title(title)
        if shown and shown not in recent:
            recent.append(shown)
        if len(recent) == MAX_RECENT:
            break
    attributes = tuple(sorted((str(k), str(v)) for k, v in
                              dict(summary.get("attributes") or {}).items() if v not in (None, "")))
    return SummaryFacts(int(summary.get("last_seq", 0)), int(summary.get("event_count", 0)),
                        tags, keywords, tuple(recent), attributes)


def _join(words: Sequence[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


_ATTRIBUTE_NAMES = {"age_band": "age band", "gender": "gender", "region": "region",
                    "country": "country", "language": "language"}


def _attribute_phrase(facts: SummaryFacts) -> str:
    return ", ".join(f"{_ATTRIBUTE_NAMES.get(k, k.replace('_', ' '))} {v}"
                     for k, v in facts.attributes)


# -- the prompt ---------------------------------------------------------------------------

# Tried on SmolLM2-135M-Instruct with six profiles (bench/bench_summaries.py and the engine
# test's): facts as one line of prose, then an instruction that fixes the first words. Without
# "Start with", four texts in six began 'A user named "Alec"'; a system prompt added invented
# ages and genders. This one had five in six pass the check.
INSTRUCTION = ('Write two sentences about this user\'s taste, using only these facts. '
               'Start with "This user".')


def build_messages(facts: SummaryFacts) -> list[dict[str, str]]:
    """The chat for an instruct model: the facts in one line, then the instruction."""
    parts = []
    if facts.tags:
        parts.append("their main interests are " + _join(
            [display_tag(t) for t in facts.tags[:MAX_TAGS]]))
    if facts.keywords:
        parts.append("their own reviews and searches mention "
                     + _join(list(facts.keywords[:MAX_KEYWORDS])))
    if facts.recent_titles:
        parts.append("recently they chose " + _join(list(facts.recent_titles[:MAX_RECENT])))
    if facts.attributes:
        parts.append(_attribute_phrase(facts))
    if not parts:
        parts.append("they have no clear interests yet")
    return [{"role": "user", "content": "Facts about a user: " + "; ".join(parts) + ".\n"
             + INSTRUCTION}]


# -- the template -------------------------------------------------------------------------


def template_summary(facts: SummaryFacts) -> str:
    """Two or three sentences from the facts alone; the same facts give the same text."""
    events = f"{facts.event_count} recorded event{'s' if facts.event_count != 1 else ''}"
    tags = [display_tag(t) for t in facts.tags[:MAX_TAGS]]
    keywords = list(facts.keywords[:MAX_KEYWORDS])
    if tags and keywords:
        first = (f"Across {events}, this user leans towards {_join(tags)}, and their own "
                 f"words mention {_join(keywords)}.")
    elif tags:
        first = f"Across {events}, this user leans towards {_join(tags)}."
    elif keywords:
        first = f"Across {events}, this user's own words mention {_join(keywords)}."
    else:
        first = f"This user has no clear interests yet ({events})."
    sentences = [first]
    if facts.recent_titles:
        sentences.append(f"Most recently they chose {_join(list(facts.recent_titles))}.")
    if facts.attributes:
        sentences.append(f"Profile details: {_attribute_phrase(facts)}.")
    return " ".join(sentences)


# -- the check ----------------------------------------------------------------------------


def tidy(text: str) -> str:
    """A generated text cut to whole sentences, at most :data:`MAX_SENTENCES`: a generation
    stopped by the token limit ends mid-sentence."""
    flat = " ".join(text.split())
    sentences = re.findall(r"[^.!?]+[.!?]+(?:[\"')\]]+)?", flat)
    if not sentences:
        return flat
    return " ".join(s.strip() for s in sentences[:MAX_SENTENCES])


def interest_vocabulary(facts: SummaryFacts, catalog_tags: Iterable[str] = ()) -> frozenset[str]:
    """Every interest word a summary is checked for, canonical: common genre words, the
    catalog's tags, the profile's own tags and keywords."""
    terms = {canonical(t) for t in (*GENRE_WORDS, *catalog_tags, *facts.tags, *facts.keywords)}
    terms.discard("")
    return frozenset(terms)


def named_interests(text: str, vocabulary: Iterable[str],
                    quoted: Iterable[str] = ()) -> frozenset[str]:
    """The interests of ``vocabulary`` a text names, canonical. ``quoted`` strings (the
    titles given to the model) are blanked first, so that "Star Wars" names no "war"."""
    norm = f" {normalise(text)} "
    for q in quoted:
        nq = normalise(q)
        if nq:
            norm = norm.replace(f" {nq} ", " | ")
    found = set()
    # Aliases and plain terms alike: each matched as whole words, a trailing "s" allowed.
    for term in {*vocabulary, *ALIASES}:
        if re.search(rf" {re.escape(term)}s? ", norm):
            found.add(ALIASES.get(term, term))
    vocab = set(vocabulary)
    return frozenset(f for f in found if f in vocab)


def _loops(text: str, n: int = 5, times: int = 2) -> bool:
    """A word ``n``-gram that recurs ``times`` times: the way a small model degenerates."""
    words = normalise(text).split()
    seen: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - n + 1):
        gram = tuple(words[i:i + n])
        seen[gram] = seen.get(gram, 0) + 1
        if seen[gram] >= times:
            return True
    return False


# Words that give a person a gender; a profile without a gender attribute supports none.
_GENDERED = frozenset({"he", "she", "him", "her", "his", "hers", "himself", "herself", "man",
                       "woman", "male", "female", "boy", "girl", "guy", "lady"})


def unsupported_details(text: str, facts: SummaryFacts) -> frozenset[str]:
    """Details no fact supports, which a small model invents: names and titles (capitalised
    words inside a sentence: "a user named Alec"), numbers ("a 25-year-old", "1970s
    comedies"), and a gender. The words of the facts (titles, tags, keywords, attribute
    values, the event count) are fine; a sentence's first word is not looked at."""
    known = set(normalise(" ".join((*facts.recent_titles, *facts.tags, *facts.keywords,
                                    *(v for _, v in facts.attributes),
                                    str(facts.event_count)))).split())
    found = set()
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        for word in re.findall(r"(?<=[\s\"'(])[A-Z][A-Za-z]+", sentence):
            if word.lower() not in known and word != "I":
                found.add(word)
    for number in re.findall(r"\d+", text):
        if number not in known:
            found.add(number)
    if not any(k == "gender" for k, _ in facts.attributes):
        found.update(w for w in normalise(text).split() if w in _GENDERED)
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a generated summary may be served, and why not."""

    ok: bool
    reason: str | None  # None, "empty", "loops", "ungrounded", "unsupported"
    named: frozenset[str]
    invented: frozenset[str]
    unsupported: frozenset[str] = frozenset()


def check_summary(text: str, facts: SummaryFacts,
                  catalog_tags: Iterable[str] = ()) -> Verdict:
    """Accept a generated summary only if it says something, does not loop, names no
    interest the profile lacks (every tag and keyword of the profile is allowed) and no
    detail no fact supports (:func:`unsupported_details`)."""
    vocabulary = interest_vocabulary(facts, catalog_tags)
    named = named_interests(text, vocabulary, facts.recent_titles)
    allowed = {canonical(t) for t in (*facts.tags, *facts.keywords)}
    invented = frozenset(named - allowed)
    if not text.strip():
        return Verdict(False, "empty", named, invented)
    if _loops(text):
        return Verdict(False, "loops", named, invented)
    if invented:
        return Verdict(False, "ungrounded", named, invented)
    details = unsupported_details(text, facts)
    if details:
        return Verdict(False, "unsupported", named, invented, details)
    return Verdict(True, None, named, invented)

"""Profile summaries' pure parts: facts, prompt, template, tidy-up and the grounding check,
with canned texts (the real model's texts: tests/engine/test_summarizer.py)."""

from __future__ import annotations

from typing import Any

import pytest

from portrait.summaries import (
    INSTRUCTION,
    SummaryFacts,
    build_messages,
    canonical,
    check_summary,
    display_title,
    facts_from_profile,
    named_interests,
    template_summary,
    tidy,
)
from serve.settings import load_settings

TITLES = {
    "1": "Toy Story (1995)", "2": "Matrix, The (1999)", "3": "Star Wars: Episode IV - A New "
    "Hope (1977)", "4": "Heat (1995)", "5": "Casino (1995)", "6": "Sabrina (1995)",
}


def profile(**over: Any) -> dict[str, Any]:
    """A profile summary as portrait.inspection.summarize writes it."""
    base: dict[str, Any] = {
        "user_id": "u1", "last_seq": 42, "event_count": 40,
        "attributes": {"age_band": "25-34", "country": "FR", "gender": None},
        "tags": [{"tag": "Drama", "weight": 3.0}, {"tag": "Sci-Fi", "weight": 2.0},
                 {"tag": "Comedy", "weight": 1.5}, {"tag": "Romance", "weight": 0.5},
                 {"tag": "(no genres listed)", "weight": 0.4},
                 {"tag": "Horror", "weight": -1.0}],
        "keywords": [{"keyword": "time travel", "weight": 0.8},
                     {"keyword": "heist", "weight": -0.1}],
        "recent": [{"item_id": "6", "type": "dismiss"}, {"item_id": "2", "type": "rating"},
                   {"item_id": "unknown", "type": "view"}, {"item_id": "1", "type": "view"},
                   {"item_id": "2", "type": "click"}, {"item_id": "3", "type": "view"},
                   {"item_id": "4", "type": "view"}],
    }
    return {**base, **over}


def test_facts_keep_positive_interests_and_chosen_titles() -> None:
    facts = facts_from_profile(profile(), TITLES)
    # Negative weights (dismissed, disliked) are not interests; the placeholder tag is not one.
    assert facts.tags == ("Drama", "Sci-Fi", "Comedy", "Romance")
    assert facts.keywords == ("time travel",)
    # Newest first, dismissed and unknown items skipped, repeats once, three at most.
    assert facts.recent_titles == ("The Matrix", "Toy Story",
                                   "Star Wars: Episode IV - A New Hope")
    assert facts.attributes == (("age_band", "25-34"), ("country", "FR"))
    assert (facts.last_seq, facts.event_count) == (42, 40)
    assert facts.to_dict()["tags"] == ["Drama", "Sci-Fi", "Comedy"]


def test_display_title() -> None:
    assert display_title("Matrix, The (1999)") == "The Matrix"
    assert display_title("Good, the Bad and the Ugly, The (Buono, il brutto, il cattivo, Il) "
                         "(1966)") == "The Good, the Bad and the Ugly"
    assert display_title("American President, The (1995)") == "The American President"
    assert display_title("Heat (1995)") == "Heat"
    assert display_title("Plain title") == "Plain title"


def test_prompt_holds_the_facts_and_nothing_else() -> None:
    facts = facts_from_profile(profile(), TITLES)
    [message] = build_messages(facts)
    assert message["role"] == "user"
    text = message["content"]
    assert "drama, sci-fi and comedy" in text
    assert "romance" not in text  # only the three strongest tags
    assert "time travel" in text
    assert "The Matrix, Toy Story and Star Wars: Episode IV - A New Hope" in text
    assert "age band 25-34, country FR" in text
    assert text.endswith(INSTRUCTION) and 'Start with "This user"' in text


def test_prompt_for_an_empty_profile() -> None:
    facts = facts_from_profile({"last_seq": 1, "event_count": 1}, {})
    assert "no clear interests yet" in build_messages(facts)[0]["content"]


def test_template_is_deterministic_and_grounded() -> None:
    facts = facts_from_profile(profile(), TITLES)
    text = template_summary(facts)
    assert text == (
        "Across 40 recorded events, this user leans towards drama, sci-fi and comedy, and "
        "their own words mention time travel. Most recently they chose The Matrix, Toy Story "
        "and Star Wars: Episode IV - A New Hope. Profile details: age band 25-34, country FR."
    )
    assert template_summary(facts_from_profile(profile(), TITLES)) == text
    # The template never fails the check the model's texts must pass ("Star Wars" is a title).
    assert check_summary(text, facts).ok


@pytest.mark.parametrize("over", [
    {"tags": [], "keywords": [], "recent": [], "attributes": {}, "event_count": 1},
    {"tags": [{"tag": "Children", "weight": 1.0}], "keywords": [], "attributes": {}},
    {"tags": [], "keywords": [{"keyword": "space opera", "weight": 1.0}], "recent": []},
])
def test_template_for_sparse_profiles_still_reads(over: dict[str, Any]) -> None:
    facts = facts_from_profile(profile(**over), TITLES)
    text = template_summary(facts)
    assert 1 <= text.count(".") <= 3 and text.endswith(".")
    assert check_summary(text, facts).ok
    if over.get("event_count") == 1:
        assert text == "This user has no clear interests yet (1 recorded event)."


def test_check_accepts_a_grounded_summary() -> None:
    facts = facts_from_profile(profile(), TITLES)
    verdict = check_summary("This user loves dramas and science fiction, and enjoys comedies "
                            "about time travel such as The Matrix.", facts)
    assert verdict.ok and verdict.reason is None
    assert verdict.named == {"drama", "sci fi", "comedy", "time travel"}


def test_check_rejects_an_invented_interest() -> None:
    facts = facts_from_profile(profile(), TITLES)
    verdict = check_summary("This user is a fan of action movies and horror, and of drama.",
                            facts)
    assert not verdict.ok and verdict.reason == "ungrounded"
    # Horror is in the profile only with a negative weight: naming it is invented too.
    assert verdict.invented == {"action", "horror"}


def test_check_uses_the_catalog_tags() -> None:
    facts = facts_from_profile(profile(), TITLES)
    text = "This user likes drama and electronics."
    assert check_summary(text, facts).ok  # "electronics" is no known interest word...
    verdict = check_summary(text, facts, catalog_tags=["Electronics"])
    assert verdict.invented == {"electronics"}  # ...until the catalog has it as a tag


def test_titles_given_to_the_model_name_no_interest() -> None:
    facts = facts_from_profile(profile(), TITLES)
    assert "war" not in named_interests(
        "They recently watched Star Wars: Episode IV - A New Hope.",
        {"war", "drama"}, facts.recent_titles)
    assert named_interests("a war film", {"war"}) == {"war"}


def test_check_rejects_loops_and_empty_texts() -> None:
    facts = facts_from_profile(profile(), TITLES)
    loop = "She's a fan of the latest game, and she's a fan of the latest game."
    assert check_summary(loop, facts).reason == "loops"
    assert check_summary("   ", facts).reason == "empty"


def test_check_rejects_details_no_fact_supports() -> None:
    """Seen from SmolLM2-135M: an invented person, film, age and gender."""
    facts = facts_from_profile(profile(), TITLES)
    verdict = check_summary('A user named "Alec" chose Toy Story and The Matrix.', facts)
    assert verdict.reason == "unsupported" and verdict.unsupported == {"Alec"}
    assert check_summary("They liked Toy Story and Jurassic Park.", facts).unsupported == {
        "Jurassic", "Park"}
    assert check_summary("The user, a 28-year-old male, likes drama.", facts).unsupported == {
        "28", "male"}
    assert check_summary("She likes drama.", facts).unsupported == {"she"}
    # Sentence starts, the given titles, the attribute values and the event count are fine;
    # so is a gender the profile holds.
    assert check_summary("Drama it is. They chose Toy Story in FR after 40 events.", facts).ok
    with_gender = facts_from_profile(profile(attributes={"gender": "f"}), TITLES)
    assert check_summary("She likes drama.", with_gender).ok


def test_aliases() -> None:
    assert canonical("Sci-Fi") == canonical("science fiction") == "sci fi"
    assert canonical("Comedies") == "comedy"
    assert named_interests("Romantic comedies!", {"romance", "comedy"}) == {"romance",
                                                                           "comedy"}


def test_tidy_cuts_to_whole_sentences() -> None:
    assert tidy("One. Two!  Three? Four. Fi") == "One. Two! Three?"
    assert tidy("A whole sentence. And a half") == "A whole sentence."
    assert tidy("no sentence end") == "no sentence end"


def test_summarizer_settings_from_env() -> None:
    assert load_settings({}).summaries.enabled is False
    s = load_settings({"PORTRAIT_SUMMARIES": "on",
                                     "PORTRAIT_SUMMARIES_MAX_BATCH_SIZE": "4"}).summaries
    assert s.enabled and s.max_batch_size == 4
    with pytest.raises(ValueError, match="PORTRAIT_SUMMARIES: .*'maybe'"):
        load_settings({"PORTRAIT_SUMMARIES": "maybe"})
    with pytest.raises(ValueError, match="PORTRAIT_SUMMARIES_MAX_TOKENS"):
        load_settings({"PORTRAIT_SUMMARIES_MAX_TOKENS": "2"})


def test_facts_are_frozen() -> None:
    facts = SummaryFacts(1, 1, ("Drama",), (), (), ())
    with pytest.raises(AttributeError):
        facts.last_seq = 2  # type: ignore[misc]

"""Next-item examples for fine-tuning the encoder: history, own words, time split, refusals."""

from __future__ import annotations

import pytest

from portrait.encoder_training import ExampleSettings, NotEnoughText, build_training_set
from portrait.errors import InvalidField
from portrait.events import ItemClicked, ItemDismissed, ReviewWritten, SearchPerformed

SMALL = ExampleSettings(min_train=1, min_validation=1, validation_share=0.25)


def clicks(user: str, items: list[str], start: float = 0.0) -> list[ItemClicked]:
    return [ItemClicked(f"{user}-c{i}", user, start + i, item) for i, item in enumerate(items)]


def test_each_new_wanted_item_is_predicted_from_what_came_before() -> None:
    events = clicks("u", ["a", "b", "c", "d"])
    data = build_training_set(events, {"a", "b", "c", "d"}, SMALL)
    everything = sorted([*data.train, *data.validation], key=lambda e: e.occurred_at)
    assert [(e.history, e.target) for e in everything] == [
        (("a",), "b"), (("a", "b"), "c"), (("a", "b", "c"), "d")]
    # the latest target is after the cut: validation; the others train
    assert [e.target for e in data.validation] == ["d"]
    assert all(e.occurred_at < data.cut for e in data.train)


def test_history_is_capped_and_repeats_and_unknown_items_are_not_targets() -> None:
    events = clicks("u", ["a", "b", "a", "x", "c"])
    data = build_training_set(events, {"a", "b", "c"}, ExampleSettings(
        history=2, min_train=1, min_validation=1, validation_share=0.3))
    everything = sorted([*data.train, *data.validation], key=lambda e: e.occurred_at)
    # "a" again is no new target (already wanted) but moves to the newest place; "x" is not
    # in the catalog
    assert [(e.history, e.target) for e in everything] == [(("a",), "b"), (("b", "a"), "c")]


def test_own_words_before_the_target_only_and_never_the_review_of_the_target() -> None:
    events = [
        *clicks("u", ["a", "b"]),
        SearchPerformed("s1", "u", 2.5, "space operas"),
        # a review of the target, ordered before its click, describes the target
        ReviewWritten("c2", "u", 3.0, "c", "loved this one about pirates"),
        ItemClicked("c3", "u", 3.0, "c"),
        ReviewWritten("r2", "u", 4.0, "a", "the first was fine"),
        ItemClicked("c4", "u", 5.0, "d"),
    ]
    data = build_training_set(events, set("abcd"), SMALL)
    by_target = {e.target: e for e in [*data.train, *data.validation]}
    assert by_target["c"].user_texts == ("space operas",)
    # the review of c, written before d, is the user's words for d
    assert by_target["d"].user_texts == ("loved this one about pirates", "the first was fine")


def test_items_of_one_day_are_a_sequence_in_event_id_order() -> None:
    # Amazon dates reviews to the day: a user's purchases of one day still follow each other
    events = [ReviewWritten(f"r{i}", "u", 86400.0, item, f"about {item}")
              for i, item in enumerate("abc")]
    events.append(ItemClicked("later", "u", 2 * 86400.0, "d"))
    data = build_training_set(events, set("abcd"), SMALL)
    assert [(e.history, e.user_texts, e.target) for e in data.train] == [
        (("a",), ("about a",), "b"), (("a", "b"), ("about a", "about b"), "c")]
    assert [e.target for e in data.validation] == ["d"]


def test_dismissals_are_not_wanted() -> None:
    events = [*clicks("u", ["a", "b"]), ItemDismissed("d1", "u", 9.0, "z"),
              ItemClicked("c9", "u", 10.0, "c")]
    data = build_training_set(events, set("abcz"), SMALL)
    assert all("z" not in e.history and e.target != "z"
               for e in [*data.train, *data.validation])


def test_too_little_is_refused_with_the_counts() -> None:
    with pytest.raises(NotEnoughText, match="empty"):
        build_training_set([], {"a"})
    with pytest.raises(NotEnoughText, match="two items"):
        build_training_set(clicks("u", ["a"]), {"a"})
    with pytest.raises(NotEnoughText, match="at least 200"):
        build_training_set(clicks("u", list("abcdef")), set("abcdef"))


def test_settings_are_checked() -> None:
    with pytest.raises(InvalidField, match="validation_share"):
        ExampleSettings(validation_share=1.0)
    with pytest.raises(InvalidField, match="history"):
        ExampleSettings(history=0)


def test_validation_is_one_example_per_user_after_the_cut() -> None:
    events = [ev for u in range(10) for ev in clicks(f"u{u}", list("abcdefgh"), start=u * 0.01)]
    data = build_training_set(events, set("abcdefgh"), ExampleSettings(
        min_train=1, min_validation=1, validation_share=0.3))
    users = [e.user_id for e in data.validation]
    assert len(users) == len(set(users)) == 10
    assert all(e.occurred_at >= data.cut for e in data.validation)
    assert data.describe()["train_examples"] == len(data.train)

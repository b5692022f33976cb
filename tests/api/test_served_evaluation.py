"""The served-path evaluation against the in-process service equals the offline evaluation of
the same configuration on the same split: the blend where the service trains no ranker
(text-only config: nothing to retrain), the two-stage system where its retrain trains one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from actors.text_features import ThreadedEncoder
from offline.prepare import Prepared, prepare
from offline.served import (
    evaluate_served,
    offline_reference,
    paired_gap,
    ranker_counts,
    replayed_events,
    served_report,
)
from portrait.evaluation.tuning import PortraitParams
from portrait.item_space import CollabSettings
from portrait.tuned_config import ItemVectorSettings, TunedConfig
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder
from tests.integration.test_evaluate_small import write_dataset

pytestmark = pytest.mark.asyncio(loop_scope="session")
# Tiny data: the ranker may learn from few rows (as tests/api/test_learned_ranker_api.py).
SMALL_RANKER = dict(ranker_min_groups=10, ranker_min_data_in_leaf=2, ranker_labels_per_user=3)


async def served_run(
    tmp_path: Path, prep: Prepared, config: TunedConfig, url: str, **settings: Any
) -> dict[str, Any]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_document()))
    encoder = ThreadedEncoder(HashingEncoder(dim=32))
    system = auth.system(Settings(shards=2, profile_config=path, **settings), url, encoder)
    try:
        transport = httpx.ASGITransport(app=system.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                     headers=await auth.headers(system)) as client:
            return await evaluate_served(prep, client, prefix="run1-")
    finally:
        await system.close()
        forget_memory(url)


async def test_served_metrics_equal_the_offline_ones(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_users=30)
    prep = prepare("generic", data, split_kind="leave-last-out", encoder=HashingEncoder(dim=32))
    # No event after any test case's cutoff is sent.
    split = prep.splits["test"]
    sent = {e.event_id for e in replayed_events(prep)}
    for case in split.cases:
        assert not sent & {e.event_id for e in split.streams[case.user_id][case.cutoff:]}

    config = TunedConfig()  # untuned, text vectors only: the service retrains nothing
    served = await served_run(tmp_path, prep, config, "memory://served-eval")
    assert served["item_space"] == {"enabled": False, "reason": served["item_space"]["reason"]}
    # ... so it trains no ranker and every response says the blend ranked it.
    assert served["rankers"] == {"blend": len(split.cases)}
    # The offline reference is then the blend too, whatever ranker settings are passed.
    params = PortraitParams(config.profile, config.ranking, 0.0)
    offline = offline_reference(prep, params, None, None)
    assert offline["ranker"]["reference"] == "blend"
    metrics = offline["metrics"]
    assert metrics["portrait"] == metrics["portrait-blend"]
    assert served["cases"] == len(split.cases) > 10
    assert metrics["portrait"]["HR@10"] > 0.1  # a real signal, not two zeros
    for metric in ("HR@5", "HR@10", "NDCG@10", "NDCG@20"):
        # Only the popularity prior differs: the service counts every replayed event,
        # offline counts those before each case's horizon.
        assert served["metrics"][metric] == pytest.approx(metrics["portrait"][metric], abs=0.05)
    report = served_report(served, offline)
    assert f"(learned:*): 0 of {len(split.cases)}; by the blend: {len(split.cases)}." in report
    assert "no retrain, no learned ranker" in report


async def test_the_served_two_stage_system_is_counted_and_compared(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_users=60)
    prep = prepare("generic", data, split_kind="leave-last-out", encoder=HashingEncoder(dim=32))
    collab = CollabSettings(dim=8, min_count=1)
    config = TunedConfig(item_vectors=ItemVectorSettings(alpha=0.5, collaborative=collab))
    served = await served_run(tmp_path, prep, config, "memory://served-eval-learned",
                              **SMALL_RANKER)
    space = served["item_space"]
    assert space["ranker_trained"] and space["ranker_skipped_reason"] is None, space
    cases = served["cases"]
    # Every test user has history: the learned ranker of the retrained space ranks them all.
    assert served["rankers"] == {f"learned:{space['version']}": cases}
    assert ranker_counts(served["rankers"]) == (cases, 0, 0)

    ranker = Settings(**SMALL_RANKER).ranker.ranker_settings()  # the service's settings
    assert ranker is not None
    params = PortraitParams(config.profile, config.ranking, 0.5)
    offline = offline_reference(prep, params, collab, ranker)
    assert offline["ranker"]["reference"] == "two-stage", offline["ranker"]
    assert offline["ranker"]["settings"]["min_groups"] == 10
    metrics = offline["metrics"]
    assert metrics["portrait"] != metrics["portrait-blend"]  # a different system, trained
    for metric in ("HR@10", "NDCG@10"):
        # The service trains its vectors and ranker on the replayed events (offline: the
        # split's training events, which add other users' later events here) and counts
        # popularity over all of them: close, not equal.
        assert served["metrics"][metric] == pytest.approx(metrics["portrait"][metric], abs=0.1)
    # The paired gap pairs each test user's served list with their offline one.
    gap = paired_gap(served, offline)
    assert gap.mean_a == pytest.approx(served["metrics"]["NDCG@10"])
    assert gap.mean_b == pytest.approx(metrics["portrait"]["NDCG@10"])
    assert gap.diff.low <= gap.diff.mean <= gap.diff.high
    report = served_report(served, offline)
    assert "Served / offline portrait NDCG@10, users paired: " in report
    assert f"(learned:*): {cases} of {cases}; by the blend: 0." in report
    assert f"item space {space['version']}: ranker trained (" in report
    assert "| NDCG@10 |" in report and "offline portrait (two-stage)" in report

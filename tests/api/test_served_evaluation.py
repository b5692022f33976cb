"""The served-path evaluation against the in-process service equals the offline evaluation of
the same configuration on the same split (text-only config: nothing to retrain)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from actors.text_features import ThreadedEncoder
from offline.prepare import prepare
from offline.served import evaluate_served, offline_reference, replayed_events
from portrait.evaluation.tuning import PortraitParams
from portrait.tuned_config import TunedConfig
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder
from tests.integration.test_evaluate_small import write_dataset

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_served_metrics_equal_the_offline_ones(tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data", n_users=30)
    encoder = HashingEncoder(dim=32)
    prep = prepare("generic", data, split_kind="leave-last-out", encoder=encoder)
    # No event after any test case's cutoff is sent.
    split = prep.splits["test"]
    sent = {e.event_id for e in replayed_events(prep)}
    for case in split.cases:
        assert not sent & {e.event_id for e in split.streams[case.user_id][case.cutoff:]}

    config = TunedConfig()  # untuned, text vectors only
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config.to_document()))
    url = "memory://served-eval"
    system = auth.system(Settings(shards=2, profile_config=path), url, ThreadedEncoder(encoder))
    try:
        transport = httpx.ASGITransport(app=system.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                 headers=await auth.headers(system)) as client:
            served = await evaluate_served(prep, client, prefix="run1-")
    finally:
        await system.close()
        forget_memory(url)
    assert served["item_space"] == {"enabled": False, "reason": served["item_space"]["reason"]}
    offline = offline_reference(prep, PortraitParams(config.profile, config.ranking, 0.0), None)
    assert served["cases"] == len(split.cases) > 10
    assert offline["portrait"]["HR@10"] > 0.1  # a real signal, not two zeros
    for metric in ("HR@5", "HR@10", "NDCG@10", "NDCG@20"):
        # Only the popularity prior differs: the service counts every replayed event,
        # offline counts those before each case's horizon.
        assert served["metrics"][metric] == pytest.approx(offline["portrait"][metric], abs=0.05)

"""A simulated online experiment on the bundled MovieLens sample (offline.online_simulation):
the report ranks the two variants as the offline evaluation does on the same users, and
interleaving reaches a significant preference; prints the users each design needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from offline.experiment_sim_setup import (
    CONTROL,
    TREATMENT,
    offline_hit_rates,
    prepared,
    run_experiment,
    user_order,
)
from tests import auth
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_online_report_agrees_with_offline_and_interleaving_decides(
    tmp_path: Path,
) -> None:
    encoder = HashingEncoder(dim=32)
    prep = prepared(encoder)
    users = user_order(prep, len(prep.splits["test"].cases))
    offline = offline_hit_rates(prep, set(users))
    assert offline[TREATMENT] > 2 * offline[CONTROL]  # known, clearly different quality

    ab = await run_experiment(prep, encoder, tmp_path, "ab", users, auth.TEST_KEY, auth.headers)
    il = await run_experiment(prep, encoder, tmp_path, "interleave", users, auth.TEST_KEY,
                              auth.headers)
    report = ab["report"]
    online = {v: report["variants"][v]["ctr"]["value"] for v in (CONTROL, TREATMENT)}
    print(f"\noffline HR@10 {offline}; online CTR {online}; users needed: A/B "
          f"{ab['users_needed']}, interleaving {il['users_needed']} (of {len(users)})")
    # Same order as offline, and told apart: the difference's interval excludes 0.
    assert online[TREATMENT] > online[CONTROL]
    assert report["differences"][TREATMENT]["ctr"]["ci_low"] > 0
    assert report["differences"][TREATMENT]["mrr"]["ci_low"] > 0
    # The simulated users act exactly on offline hits: CTR is HR@10 on the served lists.
    for v in (CONTROL, TREATMENT):
        assert online[v] == pytest.approx(offline[v], abs=0.04)
    pref = il["report"]["interleaving"]
    assert pref["variant"] == TREATMENT and pref["by_user"]["share"]["value"] > 0.5
    assert pref["by_user"]["p_value"] < 0.05
    assert ab["users_needed"] is not None and il["users_needed"] is not None

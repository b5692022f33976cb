"""How many users an online experiment needs: A/B split against team-draft interleaving.

Replays the bundled MovieLens sample's test users through the in-process API (see
offline/online_simulation.py) several times, each with another order of the users, and
prints per run the users each design needed before its result was significant (and stayed
so), with the offline HR@10 of both variants on the same users.

    .venv/bin/python bench/bench_experiments.py [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from offline.experiment_sim_setup import (  # noqa: E402
    CONTROL,
    TREATMENT,
    offline_hit_rates,
    prepared,
    run_experiment,
    user_order,
)
from tests import auth  # noqa: E402
from tests.fakes import HashingEncoder  # noqa: E402


async def main(runs: int) -> None:
    encoder = HashingEncoder(dim=32)
    prep = prepared(encoder)
    n = len(prep.splits["test"].cases)
    offline = offline_hit_rates(prep, set(user_order(prep, n)))
    print(f"offline HR@10 on {n} users: {TREATMENT} {offline[TREATMENT]:.4f}, "
          f"{CONTROL} {offline[CONTROL]:.4f}")
    for seed in range(runs):
        users = user_order(prep, n, seed)
        out = {}
        for mode in ("ab", "interleave"):
            with tempfile.TemporaryDirectory() as folder:
                out[mode] = await run_experiment(prep, encoder, Path(folder), mode, users,
                                                 auth.TEST_KEY, auth.headers)
        ctr = {v: out["ab"]["report"]["variants"][v]["ctr"]["value"] for v in (CONTROL, TREATMENT)}
        pref = out["interleave"]["report"]["interleaving"]["by_user"]
        print(f"order {seed}: users needed A/B {out['ab']['users_needed']}, interleaving "
              f"{out['interleave']['users_needed']}; CTR {ctr}; interleaving share "
              f"{pref['share']['value']:.3f} (p={pref['p_value']:.2g})", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args().runs))

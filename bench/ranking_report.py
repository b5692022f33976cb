"""The test-split table and paired differences that the offline-quality benches print."""

from __future__ import annotations

from typing import Any

from portrait.evaluation.metrics import paired_bootstrap


def print_test_table(result: Any, n_cases: int, reference: str, seed: int = 0
                     ) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Print NDCG@10, HR@10, MRR and replay time per system (best first), then ``reference``
    minus every other system with its paired bootstrap interval; return both as data."""
    metrics = result.metrics((10,))
    print(f"\nTEST ({n_cases} users, full catalog)")
    print(f"{'system':18s} {'NDCG@10':>8s} {'HR@10':>8s} {'MRR':>8s} {'replay s':>9s}")
    table: dict[str, dict[str, float]] = {}
    for name, m in sorted(metrics.items(), key=lambda kv: -kv[1]["NDCG@10"].mean()):
        table[name] = {k: float(m[k].mean()) for k in ("NDCG@10", "HR@10", "MRR")}
        print(f"{name:18s} {table[name]['NDCG@10']:8.4f} {table[name]['HR@10']:8.4f} "
              f"{table[name]['MRR']:8.4f} {result.systems[name].seconds:9.1f}")
    paired: dict[str, Any] = {}
    for name in metrics:
        if name != reference:
            d = paired_bootstrap(metrics[reference]["NDCG@10"], metrics[name]["NDCG@10"],
                                 seed=seed)
            paired[name] = d.to_dict()
            print(f"{reference} - {name}: NDCG@10 diff {d.diff.mean:+.4f} "
                  f"[{d.diff.low:+.4f}, {d.diff.high:+.4f}]")
    return table, paired

"""Checking that live profiles equal a fresh replay of their logs, shared by the faults tier,
the multi-node test and ``./dev bench faults``: drop the snapshots (so that activation replays
the log alone), then compare the profiles' JSON."""

from __future__ import annotations

import math
from typing import Any


async def drop_snapshots(url: str) -> None:
    """Delete every stored snapshot in the database at ``url``."""
    from sqlalchemy import text

    from storage.database import create_engine

    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM snapshots"))
    finally:
        await engine.dispose()


def json_difference(a: Any, b: Any, where: str = "") -> str | None:
    """Where two JSON values first differ, or None when equal (floats to 1e-9 relative: a
    live fold and a replay add in another order)."""
    if isinstance(a, float) or isinstance(b, float):
        ok = (isinstance(a, (int, float)) and isinstance(b, (int, float))
              and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12))
        return None if ok else f"{where}: {a!r} != {b!r}"
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return f"{where}: keys differ"
        return next((d for k in a if (d := json_difference(a[k], b[k], f"{where}.{k}"))), None)
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return f"{where}: lengths differ"
        return next((d for i, (x, y) in enumerate(zip(a, b, strict=True))
                     if (d := json_difference(x, y, f"{where}[{i}]"))), None)
    return None if a == b else f"{where}: {a!r} != {b!r}"


def assert_same_json(a: Any, b: Any, where: str) -> None:
    difference = json_difference(a, b, where)
    assert difference is None, difference

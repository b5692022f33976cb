"""`portrait import-events` through a live service on loopback: good rows recorded, bad rows
reported by line and field without stopping or half-writing a batch, and a second run (a
resumed import) records nothing twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from actors.text_features import ThreadedEncoder
from serve.cli import main
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder
from tests.live_server import serving

FUTURE = int(time.time()) + 30 * 86_400  # past the service's allowed clock skew
CSV = f"""user_id,item_id,timestamp,event_type,rating,text,event_id
alice,m1,2024-03-01T09:00:00Z,view,,,
alice,m2,1709284000,rating,4.5,,
bob,m1,yesterday,view,,,
bob,,2024-03-02T11:00:00Z,search,,space adventure,
carol,m1,2024-03-02T11:00:00Z,teleport,,,
dave,m2,2024-03-03T00:00:00Z,view,,
erin,m1,{FUTURE},view,,,
frank,m1,2024-03-04T00:00:00Z,view,,,fixed-1
frank,m2,2024-03-04T00:01:00Z,view,,,fixed-1
gina,m2,2024-03-05T00:00:00Z,click,,,
"""


@pytest.fixture
def live() -> Iterator[tuple[str, dict[str, str]]]:
    system = auth.system(Settings(shards=2), "memory://import",
                         ThreadedEncoder(HashingEncoder(dim=32)))
    with serving(system) as (base, headers):
        items = [{"id": f"m{k}", "title": f"Film {k}", "description": "a film", "tags": []}
                 for k in (1, 2)]
        assert httpx.post(f"{base}/v1/items", json={"items": items}, headers=headers,
                          timeout=30).status_code == 200
        yield base, headers
    forget_memory("memory://import")


def test_import_reports_bad_rows_and_resumes(
    live: tuple[str, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base, headers = live
    token = headers["authorization"].split()[1]
    path = tmp_path / "interactions.csv"
    path.write_text(CSV)
    argv = ["import-events", str(path), "--url", base, "--token", token, "--batch", "3"]
    assert main(argv) == 1  # rows were rejected
    out = capsys.readouterr().out
    assert "10 rows: 5 recorded, 0 already there, 5 rejected" in out, out
    for expected in ("interactions.csv:4 timestamp", "interactions.csv:6 event_type",
                     "interactions.csv:7 *", "interactions.csv:8 occurred_at",
                     "interactions.csv:10 "):
        assert f"rejected {expected}" in out, (expected, out)
    with httpx.Client(base_url=base, headers=headers) as http:
        assert http.get("/v1/users/alice/profile").json()["event_count"] == 2
        assert http.get("/v1/users/bob/profile").json()["counts"] == {"search": 1}
        # The batch that held the refused future row still recorded its other rows.
        assert http.get("/v1/users/gina/profile").json()["event_count"] == 1
        assert http.get("/v1/users/frank/profile").json()["event_count"] == 1

    assert main(argv) == 1
    again = capsys.readouterr().out
    assert "10 rows: 0 recorded, 5 already there, 5 rejected" in again, again


def test_import_without_a_token_is_a_clear_message(
    live: tuple[str, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PORTRAIT_TOKEN", raising=False)
    path = tmp_path / "interactions.csv"
    path.write_text(CSV)
    assert main(["import-events", str(path), "--url", live[0]]) == 2
    assert "set PORTRAIT_TOKEN" in capsys.readouterr().err
    assert main(["import-events", str(tmp_path / "missing.csv"), "--url", live[0]]) == 2
    assert "no such file" in capsys.readouterr().err

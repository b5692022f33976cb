"""`portrait encoder register|list` against a real database, and the check that keeps a
checkpoint whose record lies about it from ever being loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from encoding.encoder_checkpoint import CheckpointMismatch, read_record
from encoding.settings import EncoderSettings
from encoding.version_engines import VersionEngines
from portrait.encoder_versions import EncoderVersion
from serve.cli import main
from tests.encoder_folders import perturbed_minilm
from tests.fakes import HashingEncoder


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, embedded_scratch_url: str, tmp_path: Path) -> Path:
    monkeypatch.setenv("PORTRAIT_DATABASE_URL", embedded_scratch_url)
    monkeypatch.setenv("PORTRAIT_DATA_DIR", str(tmp_path))
    return tmp_path


def test_register_then_list(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record = perturbed_minilm(env / "tuned")
    assert main(["encoder", "register", str(env / "tuned")]) == 0
    assert "registered as version 1" in capsys.readouterr().out
    assert main(["encoder", "list"]) == 0
    listed = capsys.readouterr().out
    assert "* 0  base" in listed and record.model_id in listed and "registered" in listed
    assert main(["encoder", "register", str(env / "tuned")]) == 2  # the name is taken
    assert "name" in capsys.readouterr().err
    assert main(["encoder", "rollback"]) == 2  # nothing to roll back to
    assert "no previous" in capsys.readouterr().err


def test_a_record_that_lies_about_its_folder_is_refused(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    perturbed_minilm(env / "wide", name="wide", dim=768)
    assert main(["encoder", "register", str(env / "wide")]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "384" in err and "768" in err
    assert main(["encoder", "list"]) == 0
    assert "wide" not in capsys.readouterr().out
    assert main(["encoder", "register", str(env / "missing")]) == 2
    assert "portrait_encoder.json" in capsys.readouterr().err


def test_a_mismatched_checkpoint_is_never_loaded(tmp_path: Path) -> None:
    """Registered while it was right, edited afterwards: the engine set checks again before
    every load, and refuses."""
    record = perturbed_minilm(tmp_path / "tuned")
    loads: list[Any] = []

    def factory(settings: EncoderSettings) -> HashingEncoder:
        loads.append(settings)
        return HashingEncoder(dim=384, model_id=settings.model_id)

    engines = VersionEngines(HashingEncoder(dim=384, model_id="base"), EncoderSettings(),
                             factory)
    version = EncoderVersion(1, record.name, record.model_id, record.base_model,
                             record.base_name, str(tmp_path / "tuned"), record.dim)
    assert engines.engine_for(version).model_id == record.model_id  # checked, then loaded
    assert len(loads) == 1 and loads[0].model_path == str(tmp_path / "tuned")

    (tmp_path / "tuned" / "tokenizer.json").write_text("{}")  # another tokenizer
    fresh = VersionEngines(HashingEncoder(dim=384, model_id="base"), EncoderSettings(), factory)
    with pytest.raises(CheckpointMismatch, match="tokenizer"):
        fresh.engine_for(version)
    other = EncoderVersion(2, "other", "test/other", record.base_model, record.base_name,
                           str(tmp_path / "tuned"), record.dim)
    with pytest.raises(CheckpointMismatch, match="names model"):
        fresh.engine_for(other)
    assert len(loads) == 1  # neither was loaded
    assert read_record(tmp_path / "tuned").model_id == record.model_id

"""`portrait token create|list|revoke` against a real database, and the key it needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from portrait.access import parse_authorization
from serve.cli import main
from serve.secret_key import load_secret_key
from serve.settings import Settings, SettingsError


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, embedded_scratch_url: str, tmp_path: Path) -> Path:
    monkeypatch.setenv("PORTRAIT_DATABASE_URL", embedded_scratch_url)
    monkeypatch.setenv("PORTRAIT_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("PORTRAIT_SECRET_KEY", raising=False)
    return tmp_path


def test_create_list_revoke(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "create", "--name", "scraper", "--scope", "metrics:read"]) == 0
    out = capsys.readouterr().out
    token = out.strip().splitlines()[-1]
    token_id, _ = parse_authorization(f"Bearer {token}")
    key_file = env / "secret.key"
    assert key_file.exists() and key_file.stat().st_mode & 0o777 == 0o600  # made on first use

    assert main(["token", "list"]) == 0
    listed = capsys.readouterr().out
    assert "scraper" in listed and token_id in listed and "valid" in listed
    assert token.split("_")[2] not in listed  # never the secret

    assert main(["token", "create", "--name", "scraper", "--scope", "admin"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["token", "revoke", "scraper"]) == 0
    assert main(["token", "list"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["token", "revoke", "nobody"]) == 2
    assert "no token called 'nobody'" in capsys.readouterr().err


def test_bad_scope_is_a_clear_cli_error(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["token", "create", "--name", "x", "--scope", "everything"])
    assert "invalid choice: 'everything'" in capsys.readouterr().err


def test_missing_or_short_keys_are_clear_settings_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PORTRAIT_SECRET_KEY", raising=False)
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(SettingsError, match="no secret key"):
        load_secret_key(settings)
    (tmp_path / "secret.key").write_text("c2hvcnQ=\n")  # "short"
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        load_secret_key(settings)
    monkeypatch.setenv("PORTRAIT_SECRET_KEY", "ab" * 32)
    # The environment wins; settings read it when they are built (each process its own).
    assert load_secret_key(Settings(data_dir=tmp_path)) == bytes.fromhex("ab" * 32)

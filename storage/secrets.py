"""The secrets of this process: read from its own environment, never handed to another.

Ray keeps actor and deployment arguments in its GCS and shows them in its tools, so the
database password, the master key and the token secret key are never passed along: each
process reads them itself. :class:`ProcessSecrets` is the one reader of those variables (the
``security`` section of Portrait's settings holds one, :mod:`serve.settings`), and a copy of
it that crosses a process boundary (pickled as part of the settings) carries no value: the
receiving process reads its own environment when it unpickles it.

Key decoding (hex or base64) lives here too, for the master keys and the token secret key.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

PREFIX = "PORTRAIT_"


class ProcessSecrets(BaseModel):
    """``PORTRAIT_SECRET_KEY``, ``PORTRAIT_MASTER_KEY``, ``PORTRAIT_DATABASE_PASSWORD`` and
    ``PORTRAIT_DATABASE_URL`` (for the password it may hold), as this process sees them.

    Every value is a :class:`~pydantic.SecretStr` (``repr`` and logs show ``**********``).
    Pickling keeps no value: unpickling reads the receiving process's environment.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret_key: SecretStr | None = Field(None, description=(
        "the key token digests are made with (32+ bytes, hex or base64); takes precedence "
        "over `PORTRAIT_SECRET_KEY_FILE`"))
    master_key: SecretStr | None = Field(None, description=(
        "the master key(s) that wrap users' keys: 32 bytes, hex or base64, comma-separated "
        "during a rotation (the first is active); takes precedence over "
        "`PORTRAIT_MASTER_KEY_FILE`"))
    database_password: SecretStr | None = Field(None, description=(
        "the database password, kept out of `PORTRAIT_DATABASE_URL` (see \"Security and "
        "privacy\")"))
    database_url: SecretStr | None = Field(None, description=(
        "read again by each process for the password it may hold (same user, host and "
        "database)"))

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> ProcessSecrets:
        """The secrets in ``env`` (default: this process's environment); unset or blank
        variables are None. The password keeps its spaces: it is the database's to judge."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(PREFIX + name.upper())
            if raw is not None and raw.strip():
                values[name] = raw if name == "database_password" else raw.strip()
        return cls(**values)

    @staticmethod
    def variables() -> list[str]:
        """The variables read, for documentation and the deploy checks."""
        return [PREFIX + name.upper() for name in ProcessSecrets.model_fields]

    def __reduce__(self) -> tuple[Callable[[], ProcessSecrets], tuple[()]]:
        return ProcessSecrets.read, ()

    @staticmethod
    def value(secret: SecretStr | None) -> str | None:
        """The plain text of ``secret`` (None stays None)."""
        return None if secret is None else secret.get_secret_value()


def decode_key(text: str, accept: Callable[[bytes], bool]) -> bytes | None:
    """``text`` as hex, else as (urlsafe, unpadded or padded) base64: the first decoding
    ``accept`` takes, or None."""
    text = text.strip()
    for decode in (bytes.fromhex, lambda t: base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))):
        try:
            key = decode(text)
        except (ValueError, binascii.Error):
            continue
        if accept(key):
            return key
    return None


__all__ = ["PREFIX", "ProcessSecrets", "decode_key"]

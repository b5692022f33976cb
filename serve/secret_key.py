"""The deployment's secret key: token digests are HMACs under it.

Read by each process that needs it, from ``PORTRAIT_SECRET_KEY`` (base64 or hex, at least 32
bytes; on Kubernetes, from a Secret; the settings' ``security.secrets``, which each process
reads from its own environment) or else from a file (``PORTRAIT_SECRET_KEY_FILE``,
default ``<data_dir>/secret.key``), and never passed in actor or deployment arguments.
``portrait run`` and ``portrait token create`` create the file (mode 0600) when neither
exists, so a local first run needs no set-up.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from portrait.access import MIN_KEY_BYTES
from serve.settings import PREFIX, Settings, SettingsError
from storage.secrets import decode_key

ENV = PREFIX + "SECRET_KEY"


def key_file(settings: Settings) -> Path:
    return settings.security.secret_key_file or settings.storage.data_dir / "secret.key"


def _decode(text: str, source: str) -> bytes:
    key = decode_key(text, lambda k: len(k) >= MIN_KEY_BYTES)
    if key is None:
        raise SettingsError(
            f"{source}: must be at least {MIN_KEY_BYTES} bytes, as hex or base64")
    return key


def load_secret_key(settings: Settings, *, create: bool = False) -> bytes:
    """The key, from the environment or the key file (created when ``create`` and absent).

    Raises:
        SettingsError: no key anywhere, or a key too short or not hex/base64.
    """
    given = settings.security.secrets.secret_key  # read by this process (storage.secrets)
    if given is not None:
        return _decode(given.get_secret_value(), ENV)
    path = key_file(settings)
    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes creating it at once cannot both write (one fails, re-reads).
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs below
        else:
            with os.fdopen(fd, "w") as out:
                out.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode() + "\n")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SettingsError(
            f"{ENV}: no secret key: set it, point {PREFIX}SECRET_KEY_FILE at a file holding "
            f"one, or let `portrait run` create {path}"
        ) from None
    except OSError as exc:
        raise SettingsError(f"{PREFIX}SECRET_KEY_FILE ({path}): {exc.strerror}") from None
    return _decode(text, f"{PREFIX}SECRET_KEY_FILE ({path})")


__all__ = ["ENV", "key_file", "load_secret_key"]

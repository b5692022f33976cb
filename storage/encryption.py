"""Crypto-shredding: each user's personal data at rest is sealed with that user's own key.

Every user gets a random 256-bit data key (DEK) the first time anything of theirs is written.
Event payloads, snapshots and cached text features are sealed with it (AES-256-GCM), and the
DEK itself is stored only wrapped (AES-GCM) by a *master key* that never enters the database.
Erasing a user destroys their wrapped DEK: whatever of theirs stays in the append-only log,
in a backup or in a WAL archive is ciphertext nobody can open again, a database superuser
included. (``storage.erasure`` does the rest of an erasure.)

Sealed bytes are ``0xC1 | version | key_id (8 bytes) | nonce (12) | ciphertext + tag``. 0xC1
is the one byte msgpack never uses, so a sealed payload can never be mistaken for a plaintext
one written before encryption was turned on; both are read. The associated data binds the
ciphertext to its user and to what it is (an event payload cannot be passed off as a
snapshot, or moved to another user's rows).

Master keys come from ``PORTRAIT_MASTER_KEY`` (comma-separated, the first one active) or a
key file; each has an id derived from it, and every wrapped DEK records which master key
wrapped it, so a start with the wrong key fails with a clear message instead of producing
garbage, and rotation (:func:`storage.user_keys.rewrap`) can move DEKs to a new master key
while the old one is still configured.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from portrait.errors import PortraitError, StorageIntegrityError
from storage.secrets import ProcessSecrets, decode_key

MARK = 0xC1  # never a msgpack type byte
VERSION = 1
_HEADER = struct.Struct(">BBq")  # mark, version, key_id
NONCE_BYTES = 12
OVERHEAD = _HEADER.size + NONCE_BYTES + 16  # header, nonce, GCM tag
_BODY = _HEADER.size + NONCE_BYTES  # where the ciphertext starts
KEY_BYTES = 32

MASTER_KEY_ENV = "PORTRAIT_MASTER_KEY"
MASTER_KEY_FILE_ENV = "PORTRAIT_MASTER_KEY_FILE"

# What a sealed blob is; part of the associated data.
EVENT = b"event"
SNAPSHOT = b"snapshot"
TEXT_FEATURES = b"text-features"
_WRAP = b"dek"


class MasterKeyError(PortraitError):
    """A master key is missing, malformed or not the one the data was sealed with."""


class SealedDataError(StorageIntegrityError):
    """Sealed bytes that cannot be opened: their user's key is gone (erased) or they were
    altered."""


def is_sealed(data: bytes) -> bool:
    return len(data) > OVERHEAD and data[0] == MARK


HEADER_BYTES = _HEADER.size


def key_id_of(data: bytes) -> int:
    """The DEK id a sealed blob names (call only when :func:`is_sealed`)."""
    mark, version, key_id = _HEADER.unpack_from(data)
    if version != VERSION:
        raise SealedDataError(f"sealed data of unknown version {version}")
    return int(key_id)


def _aad(kind: bytes, user_id: str, key_id: int) -> bytes:
    return b"portrait|" + kind + b"|" + struct.pack(">q", key_id) + user_id.encode()


@dataclass(frozen=True)
class DataKey:
    """One user's unwrapped DEK."""

    user_id: str
    key_id: int
    cipher: AESGCM
    # Per kind: the associated data and the header, built once (they are the same for every
    # blob of this key; building them per call was most of a replay's decryption time).
    _aads: dict[bytes, bytes] = field(default_factory=dict, repr=False, compare=False)

    def _aad(self, kind: bytes) -> bytes:
        aad = self._aads.get(kind)
        if aad is None:
            aad = self._aads[kind] = _aad(kind, self.user_id, self.key_id)
        return aad

    @property
    def _header(self) -> bytes:
        return _HEADER.pack(MARK, VERSION, self.key_id)

    def seal(self, kind: bytes, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return b"".join((self._header, nonce,
                         self.cipher.encrypt(nonce, plaintext, self._aad(kind))))

    def seal_many(self, kind: bytes, plaintexts: Sequence[bytes]) -> list[bytes]:
        """:meth:`seal` for a batch (one read of the random source for all the nonces)."""
        header, aad, encrypt = self._header, self._aad(kind), self.cipher.encrypt
        nonces = os.urandom(NONCE_BYTES * len(plaintexts))
        out = []
        for i, plaintext in enumerate(plaintexts):
            nonce = nonces[i * NONCE_BYTES:(i + 1) * NONCE_BYTES]
            out.append(b"".join((header, nonce, encrypt(nonce, plaintext, aad))))
        return out

    def open(self, kind: bytes, sealed: bytes) -> bytes:
        try:  # bytes slices: cheaper here than memoryviews, which the cipher converts
            return self.cipher.decrypt(sealed[_HEADER.size:_BODY], sealed[_BODY:],
                                       self._aad(kind))
        except InvalidTag:
            raise SealedDataError(
                f"sealed {kind.decode()} of key {self.key_id} does not open: altered, or not "
                "this user's") from None

    def opener(self, kind: bytes) -> Callable[[bytes], bytes]:
        """:meth:`open` for many blobs of one kind, without its per-call overhead (a replay
        opens thousands: the wrapper cost four times the decryption). Raises
        :class:`~cryptography.exceptions.InvalidTag` on a blob that does not open."""
        decrypt, aad = self.cipher.decrypt, self._aad(kind)

        def open_one(sealed: bytes) -> bytes:
            return decrypt(sealed[_HEADER.size:_BODY], sealed[_BODY:], aad)

        return open_one

    def digest(self, data: bytes) -> bytes:
        """A keyed digest of ``data`` for equality lookups (the text-feature cache's key):
        without the DEK it says nothing about the text, and after erasure it matches nothing.
        """
        return hmac.new(self._mac_key, data, hashlib.sha256).digest()[:16]

    @property
    def _mac_key(self) -> bytes:
        # Derived by encrypting a constant: the raw DEK bytes are not kept outside the cipher.
        return self.cipher.encrypt(b"\x00" * NONCE_BYTES, b"mac-key", b"portrait|mac")[:32]


def master_key_id(key: bytes) -> str:
    """A short public name of a master key (not reversible to it)."""
    return hashlib.sha256(b"portrait master key id|" + key).hexdigest()[:16]


class MasterKeys:
    """The configured master keys; the first is the one new DEKs are wrapped with."""

    def __init__(self, keys: Iterable[bytes]) -> None:
        ordered = list(keys)
        if not ordered:
            raise MasterKeyError(f"{MASTER_KEY_ENV}: no master key given")
        for key in ordered:
            if len(key) != KEY_BYTES:
                raise MasterKeyError(
                    f"{MASTER_KEY_ENV}: a master key must be exactly {KEY_BYTES} bytes "
                    f"(got {len(key)})")
        self._ciphers = {master_key_id(k): AESGCM(k) for k in ordered}
        self.active_id = master_key_id(ordered[0])

    @property
    def ids(self) -> list[str]:
        return list(self._ciphers)

    def new_dek(self, user_id: str) -> tuple[int, bytes, DataKey]:
        """A fresh DEK for ``user_id``: (key_id, wrapped bytes, the key)."""
        key_id = secrets.randbits(63)
        raw = AESGCM.generate_key(bit_length=256)
        return key_id, self.wrap(user_id, key_id, raw), DataKey(user_id, key_id, AESGCM(raw))

    def wrap(self, user_id: str, key_id: int, raw: bytes,
             master_id: str | None = None) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        cipher = self._ciphers[master_id or self.active_id]
        return nonce + cipher.encrypt(nonce, raw, _aad(_WRAP, user_id, key_id))

    def unwrap_raw(self, user_id: str, key_id: int, wrapped: bytes, master_id: str) -> bytes:
        cipher = self._ciphers.get(master_id)
        if cipher is None:
            raise MasterKeyError(
                f"{MASTER_KEY_ENV}: user keys are wrapped by master key {master_id}, which is "
                f"not configured (configured: {', '.join(self.ids)}); start with the key "
                "the data was written with, or both during a rotation")
        try:
            return cipher.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:],
                                  _aad(_WRAP, user_id, key_id))
        except InvalidTag:
            raise MasterKeyError(
                f"a user key wrapped by master key {master_id} does not unwrap: the stored key "
                "was altered") from None

    def unwrap(self, user_id: str, key_id: int, wrapped: bytes, master_id: str) -> DataKey:
        return DataKey(user_id, key_id, AESGCM(self.unwrap_raw(user_id, key_id, wrapped,
                                                               master_id)))


class DataKeyCache:
    """Unwrapped DEKs by key id, least recently used dropped first, each kept at most
    ``ttl_s``: an erasure in another process destroys the stored key, and this bounds how long
    a copy can outlive it here. Key ids are random and never reused, so a cached key can only
    ever open what it sealed."""

    def __init__(self, capacity: int = 100_000, ttl_s: float = 300.0) -> None:
        self._keys: OrderedDict[int, tuple[float, DataKey]] = OrderedDict()
        self._capacity = capacity
        self._ttl_s = ttl_s

    def get(self, key_id: int) -> DataKey | None:
        hit = self._keys.get(key_id)
        if hit is None:
            return None
        if time.monotonic() - hit[0] > self._ttl_s:
            del self._keys[key_id]
            return None
        self._keys.move_to_end(key_id)
        return hit[1]

    def put(self, key: DataKey) -> None:
        self._keys[key.key_id] = (time.monotonic(), key)
        self._keys.move_to_end(key.key_id)
        while len(self._keys) > self._capacity:
            self._keys.popitem(last=False)

    def forget_user(self, user_id: str) -> None:
        for key_id in [k for k, (_, key) in self._keys.items() if key.user_id == user_id]:
            del self._keys[key_id]

    def __len__(self) -> int:
        return len(self._keys)


# -- where master keys come from -------------------------------------------------------------


def _decode(text: str, source: str) -> bytes:
    key = decode_key(text, lambda k: len(k) == KEY_BYTES)
    if key is None:
        raise MasterKeyError(f"{source}: each master key must be {KEY_BYTES} bytes, as hex or "
                             "base64")
    return key


def parse_master_keys(text: str, source: str) -> MasterKeys:
    """``key[,key...]`` (hex or base64; the first is active) as :class:`MasterKeys`."""
    parts = [p for p in (s.strip() for s in text.replace("\n", ",").split(",")) if p]
    return MasterKeys(_decode(p, source) for p in parts)


def new_master_key_text() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode()


def load_master_keys(default_file: Path | None, *, create: bool = False,
                     process_secrets: ProcessSecrets | None = None) -> MasterKeys:
    """The master keys of this process: ``PORTRAIT_MASTER_KEY`` (of ``process_secrets``, default
    this process's environment), else the file ``default_file`` (the settings'
    ``PORTRAIT_MASTER_KEY_FILE``; created, mode 0600, when ``create`` and absent: a local first
    run needs no set-up).

    Raises:
        MasterKeyError: no key anywhere, or a malformed one.
    """
    given = (process_secrets or ProcessSecrets.read()).master_key
    if given is not None:
        return parse_master_keys(given.get_secret_value(), MASTER_KEY_ENV)
    path = default_file
    if path is None:
        raise MasterKeyError(
            f"{MASTER_KEY_ENV}: encryption at rest is on but no master key is configured: "
            f"set {MASTER_KEY_ENV} or {MASTER_KEY_FILE_ENV}, or turn it off with "
            "PORTRAIT_ENCRYPTION=off")
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # O_EXCL: of two processes creating it at once, one writes, the other reads
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as out:
                out.write(new_master_key_text() + "\n")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MasterKeyError(
            f"{MASTER_KEY_ENV}: no master key: set it, or {MASTER_KEY_FILE_ENV} to a file "
            f"holding one ({path} does not exist)") from None
    except OSError as exc:
        raise MasterKeyError(f"{MASTER_KEY_FILE_ENV} ({path}): {exc.strerror}") from None
    return parse_master_keys(text, f"{MASTER_KEY_FILE_ENV} ({path})")


__all__ = [
    "EVENT", "MASTER_KEY_ENV", "MASTER_KEY_FILE_ENV", "OVERHEAD", "SNAPSHOT", "TEXT_FEATURES",
    "DataKey", "DataKeyCache", "MasterKeyError", "MasterKeys", "SealedDataError", "is_sealed",
    "key_id_of", "load_master_keys", "master_key_id", "new_master_key_text",
    "parse_master_keys",
]

"""The relational schema of Portrait's store, as SQLAlchemy Core tables.

This module is the single description of the tables the code reads and writes; the Alembic
revisions in ``migrations/versions`` create them explicitly (never ``metadata.create_all``),
and ``tests/integration/test_migrations.py`` checks that the two agree.

Tables:

* ``events``: the append-only per-user event log. ``(user_id, seq)`` is the stream order,
  ``position`` (an identity column) the global commit order that ``read_all`` follows, and
  ``payload`` the codec's msgpack bytes of the whole event; ``event_type``, ``schema_version``
  and ``occurred_at`` are copied out of it for filtering and operations, never read back.
* ``snapshots``: serialised profile states, keyed by the config hash that built them.
* ``items``: the item catalog (:mod:`storage.catalog`).
* ``text_features``: cached encodings of text events per user and model (derived, safe to lose).
* ``user_keys``: each user's data key, wrapped (:mod:`storage.encryption`).
* ``erasures``: the audit record of each erased user (:mod:`storage.erasure`).
* ``api_tokens``: API tokens (:mod:`portrait.access`), by id, with a keyed digest of the secret.
* ``impressions``: what each recommendation response served (:mod:`storage.impression_store`),
  for online experiments; never folded into a profile.
* ``encoder_versions``, ``encoder_active``, ``item_vectors``: registered text encoders, which
  one is active, and item vectors per encoder for a switch between them
  (:mod:`storage.encoder_versions`).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Double,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TIMESTAMP

# Deterministic constraint and index names, so that migrations can refer to (and drop) them.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

events = Table(
    "events",
    metadata,
    Column("user_id", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    # ALWAYS: no writer may pick its own position; commit order is the identity's order
    # because writers serialise on an advisory lock (see storage.postgres).
    Column("position", BigInteger, Identity(always=True), nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("schema_version", SmallInteger, nullable=False),
    # Unix seconds as a float, like the domain; double precision keeps microseconds.
    Column("occurred_at", Double, nullable=False),
    Column(
        "recorded_at", TIMESTAMP(timezone=True), server_default=func.now(), nullable=False
    ),
    Column("payload", LargeBinary, nullable=False),
    # Copied out of the payload (like event_type) so item popularity is one indexed query.
    Column("item_id", Text, nullable=True),
    PrimaryKeyConstraint("user_id", "seq"),
    UniqueConstraint("user_id", "event_id"),
    CheckConstraint("seq > 0", name="seq_positive"),
    Index(None, "position", unique=True),
    Index(None, "user_id", "occurred_at"),
    Index(None, "item_id", "occurred_at"),
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("user_id", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("state", LargeBinary, nullable=False),
    Column("config_hash", Text, nullable=False),
    Column(
        "created_at", TIMESTAMP(timezone=True), server_default=func.now(), nullable=False
    ),
    PrimaryKeyConstraint("user_id", "config_hash", "seq"),
)

items = Table(
    "items",
    metadata,
    Column("id", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("tags", ARRAY(Text), server_default=text("'{}'::text[]"), nullable=False),
    Column("attributes", JSONB, server_default=text("'{}'::jsonb"), nullable=False),
    Column("embedding", LargeBinary, nullable=True),
    Column("model_id", Text, nullable=True),
    Column("dim", Integer, nullable=True),
    Column(
        "updated_at", TIMESTAMP(timezone=True), server_default=func.now(), nullable=False
    ),
    PrimaryKeyConstraint("id"),
    # The catalog version (the newest updated_at) and delta reads (rows after a version)
    # cost O(log n) and the rows read, not a scan of the catalog.
    Index(None, "updated_at"),
)

text_features = Table(
    "text_features",
    metadata,
    Column("user_id", Text, nullable=False),
    # The event id and text digest; keyed by the user's data key when encryption is on.
    Column("cache_key", Text, nullable=False),
    Column("model_id", Text, nullable=False),
    Column("vector", LargeBinary, nullable=False),
    Column("keywords", LargeBinary, nullable=False),
    Column(
        "created_at", TIMESTAMP(timezone=True), server_default=func.now(), nullable=False
    ),
    PrimaryKeyConstraint("user_id", "cache_key", "model_id"),
)

# Trained collaborative item spaces, newest version wins; a few old ones are kept for audit.
item_spaces = Table(
    "item_spaces",
    metadata,
    Column("version", BigInteger, Identity(always=True), nullable=False),
    Column(
        "created_at", TIMESTAMP(timezone=True), server_default=func.now(), nullable=False
    ),
    Column("trained_through", BigInteger, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("dim", Integer, nullable=False),
    Column("settings", JSONB, nullable=False),
    Column("item_ids", ARRAY(Text), nullable=False),
    Column("vectors", LargeBinary, nullable=False),
    # The learned ranker trained with these vectors (opaque bytes), so one version names
    # both; null when the retrain trained none.
    Column("ranker", LargeBinary, nullable=True),
    PrimaryKeyConstraint("version"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("scopes", ARRAY(Text), nullable=False),
    # HMAC-SHA256 of the token's secret under the deployment's key; never the secret.
    Column("digest", LargeBinary, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("revoked_at", Double, nullable=True),
    PrimaryKeyConstraint("token_id"),
    UniqueConstraint("name"),
)

# Each user's data key, wrapped by a master key (storage.encryption); deleting the row is what
# makes the user's remaining ciphertext unreadable.
user_keys = Table(
    "user_keys",
    metadata,
    Column("user_id", Text, nullable=False),
    Column("key_id", BigInteger, nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("master_key_id", Text, nullable=False),
    Column(
        "created_at", TIMESTAMP(timezone=True), server_default=func.now(), nullable=False
    ),
    PrimaryKeyConstraint("user_id"),
    UniqueConstraint("key_id"),
    Index(None, "master_key_id"),
)

# The audit trail of erasures: who asked, when, and a hash of the erased id, never the id.
erasures = Table(
    "erasures",
    metadata,
    Column("erasure_id", BigInteger, Identity(always=True), nullable=False),
    Column("user_hash", LargeBinary, nullable=False),
    Column("requested_by", Text, nullable=False),
    Column("erased_at", Double, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("snapshots", BigInteger, nullable=False),
    Column("text_features", BigInteger, nullable=False),
    PrimaryKeyConstraint("erasure_id"),
    Index(None, "user_hash"),
)

# What each recommendation response served, for online experiments (portrait.impression).
# User and item ids in the clear, like events.item_id: no scores, reasons or text; an
# erasure deletes the user's rows.
impressions = Table(
    "impressions",
    metadata,
    Column("request_id", Text, nullable=False),
    Column("user_id", Text, nullable=False),
    Column("experiment", Text, nullable=False),
    Column("variant", Text, nullable=False),
    Column("config_hash", Text, nullable=False),
    Column("item_space", BigInteger, nullable=False),
    # Served ids in rank order (position = index); teams per position under interleaving.
    Column("items", ARRAY(Text), nullable=False),
    Column("served_at", Double, nullable=False),
    Column("teams", ARRAY(Text), nullable=True),
    Column("shown", ARRAY(Text), nullable=True),
    # Which ranker ordered the list: "blend", or "learned:<item space version>".
    Column("ranker", Text, server_default=text("'blend'"), nullable=False),
    PrimaryKeyConstraint("request_id"),
    Index(None, "experiment", "served_at"),
    Index(None, "user_id", "served_at"),
)

# Text encoders registered for a switch (see "Encoder versions" in the README). The shipped
# encoder has no row: it is version 0, "the base".
encoder_versions = Table(
    "encoder_versions",
    metadata,
    Column("version", BigInteger, Identity(always=True), nullable=False),
    Column("name", Text, nullable=False),
    Column("model_id", Text, nullable=False),
    Column("base_model", Text, nullable=False),
    Column("base_name", Text, nullable=False),
    # The checkpoint folder (a sentence-transformers model with its portrait_encoder.json).
    Column("path", Text, nullable=True),
    Column("dim", Integer, nullable=False),
    Column("record", JSONB, nullable=False),
    Column("state", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("activated_at", Double, nullable=True),
    PrimaryKeyConstraint("version"),
    UniqueConstraint("name"),
    UniqueConstraint("model_id"),
    CheckConstraint("state IN ('registered', 'migrating', 'ready', 'active', 'retired')",
                    name="state_known"),
)

# The one row naming the active encoder: version 0 is the base; no row at all is the base
# too. ``previous`` is what a rollback switches back to (null: nothing to roll back to).
encoder_active = Table(
    "encoder_active",
    metadata,
    Column("singleton", SmallInteger, server_default=text("1"), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("previous", BigInteger, nullable=True),
    Column("switched_at", Double, nullable=False),
    PrimaryKeyConstraint("singleton"),
    CheckConstraint("singleton = 1", name="one_row"),
)

# Item vectors by encoder: what a switch re-encodes into (resumable: a row whose text digest
# matches the item's text is not encoded again) and copies into ``items`` when it commits;
# the previous encoder's stay, so a rollback copies them back without encoding.
item_vectors = Table(
    "item_vectors",
    metadata,
    Column("model_id", Text, nullable=False),
    Column("item_id", Text, nullable=False),
    Column("embedding", LargeBinary, nullable=False),
    Column("dim", Integer, nullable=False),
    Column("text_digest", Text, nullable=False),
    PrimaryKeyConstraint("model_id", "item_id"),
)

__all__ = [
    "NAMING_CONVENTION", "api_tokens", "encoder_active", "encoder_versions", "erasures",
    "events", "impressions", "item_spaces", "item_vectors", "items", "metadata", "snapshots",
    "text_features", "user_keys",
]

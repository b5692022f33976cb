"""Portrait's settings: one typed value built once per process from ``PORTRAIT_*`` variables.

Every variable is optional; the defaults run the embedded stack on one machine. A bad value
stops start-up with a :class:`SettingsError` naming the variable. The JSON documents that
variables name (``PORTRAIT_PROFILE_CONFIG``, ``PORTRAIT_EXPERIMENT``) are read and checked
here, once. Child processes (Ray actors, Serve replicas) are handed the value, never the
environment; the secrets are the exception (see :class:`SecuritySettings`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from encoding.settings import EncoderSettings
from serve.settings.sections import (
    PREFIX,
    ApiSettings,
    ExperimentsSettings,
    LoggingSettings,
    RankerSection,
    RetrainSettings,
    SecuritySettings,
    ShardsSettings,
    StorageSettings,
    UsersSettings,
)
from serve.settings.source import EnvSource, SettingsError, describe, route_flat
from serve.summarizer import SummarizerSettings
from storage.secrets import ProcessSecrets

# The environment load_settings reads; None for a Settings(...) built in code, which takes
# only its arguments and the defaults.
_ENV: ContextVar[Mapping[str, str] | None] = ContextVar("portrait_settings_env", default=None)


class Settings(BaseSettings):
    """Portrait's settings, in sections; each field is one ``PORTRAIT_*`` variable.

    ``Settings(...)`` in code also takes the variables' flat names as keywords
    (``Settings(shards=2, snapshot_every=4)``); :func:`load_settings` reads the environment.
    The secret fields (``security.secrets``) are read in each process by the same model, from
    that process's own environment, and never travel with a pickled copy.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid", env_prefix=PREFIX)

    storage: StorageSettings = Field(default_factory=StorageSettings)
    shards: ShardsSettings = Field(default_factory=ShardsSettings)
    users: UsersSettings = Field(default_factory=UsersSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    experiments: ExperimentsSettings = Field(default_factory=ExperimentsSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    ranker: RankerSection = Field(default_factory=RankerSection)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    encoder: EncoderSettings = Field(default_factory=EncoderSettings)
    summaries: SummarizerSettings = Field(default_factory=SummarizerSettings)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(describe(exc, type(self))) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env = _ENV.get()
        if env is None:
            return (init_settings,)
        return (init_settings, EnvSource(settings_cls, env))

    @model_validator(mode="before")
    @classmethod
    def _flat_names(cls, data: Any) -> Any:
        return route_flat(cls, data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _cache_dir(self) -> Settings:
        # The encoder's cache follows the data dir unless set: resolved here, in the process
        # that read the settings, since encoder replicas may not share its working directory.
        if self.encoder.cache_dir is None:
            cache = str(self.storage.data_dir / "models")
            object.__setattr__(self, "encoder", self.encoder.model_copy(
                update={"cache_dir": cache}))
        return self

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The same as :func:`load_settings`."""
        return load_settings(env)

    def replace(self, **sections: Mapping[str, Any]) -> Settings:
        """A copy with some fields changed, by section: ``replace(storage={"database_url":
        None})``. Changed sections are checked again; the others (the experiment documents
        among them) are kept as they are."""
        update = {}
        for name, changes in sections.items():
            section = getattr(self, name)
            try:
                update[name] = type(section).model_validate({**dict(section), **changes})
            except ValidationError as exc:
                raise SettingsError(describe(exc, type(self))) from None
        return self.model_copy(update=update)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """The settings of this process, from ``env`` (default: its environment), validated.

    Raises:
        SettingsError: a value does not parse or is out of range, or a JSON document a
            variable names is unreadable; the message starts with the variable's name.
    """
    env = os.environ if env is None else env
    token = _ENV.set(env)
    try:
        return Settings(security={"secrets": ProcessSecrets.read(env)})
    finally:
        _ENV.reset(token)


__all__ = ["Settings", "SettingsError", "load_settings"]

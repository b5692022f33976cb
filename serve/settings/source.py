"""Where the settings model's values come from, and how a bad one is reported.

Each field of each section is one variable (:func:`variables`): the flat names users have in
their deployments (``PORTRAIT_SHARDS_MAX``) and the nested form (``PORTRAIT_SHARDS__MAX``,
section and field). Unset or blank means the default; values are stripped, except the few a
field marks verbatim (the encoder's prefixes end in a space). A validation error becomes a
:class:`SettingsError` whose message starts with the variable's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from serve.settings.sections import PREFIX

# Sections whose fields are named by a prefix and the field name, where the field does not
# name its variable itself.
SECTION_PREFIXES = {"encoder": "ENCODER_", "summaries": "SUMMARIES_"}


class SettingsError(ValueError):
    """A ``PORTRAIT_*`` variable (or the file it names) is invalid; the message starts with
    the variable's name."""


@dataclass(frozen=True)
class Variable:
    """One ``PORTRAIT_*`` variable: the section and field it sets, and the field itself."""

    name: str
    section: str
    field: str
    info: FieldInfo

    @property
    def flat(self) -> str:
        """The keyword ``Settings(...)`` also accepts for it (``shards_max``)."""
        return self.name[len(PREFIX):].lower()

    @property
    def nested(self) -> str:
        """The nested spelling, ``PORTRAIT_<SECTION>__<FIELD>``."""
        return f"{PREFIX}{self.section.upper()}__{self.field.upper()}"

    @property
    def verbatim(self) -> bool:
        extra = self.info.json_schema_extra
        return isinstance(extra, dict) and bool(extra.get("verbatim"))


def variables(settings_cls: type[BaseModel]) -> list[Variable]:
    """Every variable of the model, section by section, in declaration order."""
    out = []
    for section, info in settings_cls.model_fields.items():
        model = info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, field in model.model_fields.items():
            if field.exclude:  # the secrets: ProcessSecrets reads them, not this source
                continue
            extra = field.json_schema_extra
            own = extra.get("env") if isinstance(extra, dict) else None
            suffix = str(own) if own else SECTION_PREFIXES.get(section, "") + name.upper()
            out.append(Variable(PREFIX + suffix, section, name, field))
    return out


class EnvSource(PydanticBaseSettingsSource):
    """The values of ``env`` for the model's variables, as ``{section: {field: value}}``."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        self._env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ reads every section at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data: dict[str, dict[str, Any]] = {}
        for var in variables(self.settings_cls):
            raw = self._env.get(var.nested)
            if raw is None or not raw.strip():
                raw = self._env.get(var.name)
            if raw is None or not raw.strip():
                continue
            data.setdefault(var.section, {})[var.field] = raw if var.verbatim else raw.strip()
        return data


def route_flat(settings_cls: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """``Settings(shards_max=4, snapshot_every=3)``: flat keywords (the variables' names in
    lower case) put into their sections. ``shards`` and ``summaries`` are both a section and a
    variable: a mapping or a model is the section, anything else the variable."""
    by_flat = {v.flat: v for v in variables(settings_cls)}
    out: dict[str, Any] = {}
    flat: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        is_section = key in settings_cls.model_fields
        if is_section and (isinstance(value, (Mapping, BaseModel)) or key not in by_flat):
            out[key] = value
        elif key in by_flat:
            var = by_flat[key]
            flat.setdefault(var.section, {})[var.field] = value
        else:
            out[key] = value  # unknown: let validation name it
    for section, values in flat.items():
        given = out.get(section)
        if isinstance(given, BaseModel):
            given = given.model_dump(exclude_unset=True)
        out[section] = {**(given or {}), **values}
    return out


def describe(exc: ValidationError, settings_cls: type[BaseModel]) -> str:
    """The errors of ``exc``, each starting with the variable's name."""
    names = {(v.section, v.field): v.name for v in variables(settings_cls)}
    lines = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        loc = tuple(str(p) for p in error["loc"][:2])
        if message.startswith(PREFIX):
            lines.append(message)  # a check across fields names its variables itself
            continue
        name = names.get(loc) if len(loc) == 2 else None
        if name is None:
            lines.append(f"{PREFIX}{'__'.join(loc).upper()}: {message}")
        else:
            lines.append(f"{name}: {message}, got {error.get('input')!r}")
    return "; ".join(lines)


__all__ = ["EnvSource", "SettingsError", "Variable", "describe", "route_flat", "variables"]

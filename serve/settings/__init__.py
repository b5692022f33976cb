"""Portrait's settings model: sections (:mod:`.sections`), the environment source and error
naming (:mod:`.source`), the root value and :func:`load_settings` (:mod:`.model`), and the
README's table (:mod:`.doc`)."""

from serve.settings.model import Settings, load_settings
from serve.settings.sections import PREFIX
from serve.settings.source import SettingsError, variables

__all__ = ["PREFIX", "Settings", "SettingsError", "load_settings", "variables"]

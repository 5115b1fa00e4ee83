"""Render config: defaults from config/schema.yaml, validation, and the derived settings every stage reads."""
from __future__ import annotations


class ConfigError(ValueError):
    """A bad render config: the message is one line that names the config key."""

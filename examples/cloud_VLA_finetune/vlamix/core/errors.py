"""Errors that name what the user must change."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is invalid. The message names the field and the allowed values.

    Attributes:
        field: the field's name as the user writes it in ``vla_algorithm.yaml`` (e.g. ``"batch_size"``).
    """

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"config field '{field_name}': {message}")

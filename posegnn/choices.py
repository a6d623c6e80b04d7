"""Settings with a closed set of values: checked where their schema dataclass is built,
which every entry point does first (``OmegaConf.to_object``), before any data work."""

from __future__ import annotations

from collections.abc import Iterable


class SettingError(ValueError):
    """A setting has a value outside its allowed set; the message lists the allowed ones."""


def one_of(setting: str, value, allowed: Iterable) -> None:
    """Raise :class:`SettingError` unless ``value`` is in ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise SettingError(f"{setting}={value!r} is not one of: "
                           f"{', '.join(str(a) for a in allowed)}")

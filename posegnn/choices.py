"""Settings: a closed set of values is checked where its schema dataclass is built, which
every entry point does first (``OmegaConf.to_object``), before any data work; plain values
(a checkpoint's, the Python API's) become a schema dataclass through :func:`typed`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

from omegaconf import OmegaConf

T = TypeVar("T")


class SettingError(ValueError):
    """A setting has a value outside its allowed set; the message lists the allowed ones."""


def one_of(setting: str, value, allowed: Iterable) -> None:
    """Raise :class:`SettingError` unless ``value`` is in ``allowed``."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise SettingError(f"{setting}={value!r} is not one of: "
                           f"{', '.join(str(a) for a in allowed)}")


def typed(schema: type[T], values: T | Mapping | None) -> T:
    """``values`` as a checked ``schema`` dataclass: itself when it is one, else the plain
    values (a checkpoint's stored settings, None for the defaults) merged over the schema,
    so that an unknown key or a wrong type is refused and a missing key (a checkpoint
    written before it existed) takes its default."""
    if isinstance(values, schema):
        return values
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values or {}))

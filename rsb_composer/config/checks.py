"""The small vocabulary every builder module checks its config section with, and the registry of choices.

A check failing raises one :class:`ConfigError` line naming the key, the value and what it must be; a choice
(``optimizer.name``, ``loss.name``, ``data.source``, ...) is looked up in the :class:`Choices` of the module
that builds it, which refuses an unknown name with the closest known one.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from rsb_composer.config.schema import ConfigError

T = TypeVar("T")


def check(condition: bool, key: str, value: Any, why: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r}: {why}")


def check_choice(key: str, value: str, choices: Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{key}={value!r}: must be one of {', '.join(choices)}{hint}")


def check_time(key: str, value: str, units: str = "ep,ba") -> None:
    """A Composer time string (``300ep``, ``1000ba``) in one of ``units``, positive."""
    from composer.core import Time, TimeUnit

    try:
        time = Time.from_timestring(value)
    except (ValueError, TypeError):
        raise ConfigError(f"{key}={value!r}: not a Composer time string; use e.g. 300ep or 1000ba") from None
    allowed = {"ep": TimeUnit.EPOCH, "ba": TimeUnit.BATCH}
    check(time.unit in [allowed[u] for u in units.split(",")], key, value, f"the unit must be one of: {units}")
    check(time.value > 0, key, value, "must be positive")


def options_set_but_unread(section: Any, read: Iterable[str]) -> list[str]:
    """Fields of a section dataclass set to something other than their default that are not in ``read`` (the
    options the chosen entry uses): a value the user wrote that would change nothing."""
    read = set(read) | {"name"}
    unread = []
    for f in dataclasses.fields(section):
        if f.name in read:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if getattr(section, f.name) != default:
            unread.append(f.name)
    return unread


class Choices(dict[str, T], Generic[T]):
    """A registry: the names a config ``key`` accepts, each mapped to what builds it (and the facts about it)."""

    def __init__(self, key: str):
        super().__init__()
        self.key = key

    def add(self, name: str, entry: T) -> T:
        if name in self:
            raise ValueError(f"{self.key}: {name!r} is registered twice")
        self[name] = entry
        return entry

    def pick(self, name: str) -> T:
        """The entry for ``name``; an unknown name is a ConfigError naming the key and the valid names."""
        check_choice(self.key, name, self)
        return self[name]

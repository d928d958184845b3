"""The small vocabulary every builder module checks its config section with, and the registry of choices.

A check failing raises one :class:`ConfigError` line naming the key, the value and what it must be; a choice
(``optimizer.name``, ``loss.name``, ``data.source``, ``loggers.NAME``, ...) is looked up in the :class:`Choices` of
the module that builds it, which refuses an unknown name with the closest known one. Every entry of a registry
carries its documentation and its check (and, where the choice can be ready or not on a machine, its pre-flight
check), so adding a choice is one entry in one module; tests/test_registries.py walks every registry for them.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
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


# Pre-flight marks (``rsb-composer preflight``): ready, a warning that does not block the run, a failure.
OK, WARN, FAIL = "ok", "!!", "FAIL"


@dataclass(frozen=True)
class PreflightCheck:
    """One line of ``rsb-composer preflight``: ``[mark] title: detail``; a failing line says what to fix."""

    mark: str  # OK, WARN or FAIL
    title: str
    detail: str


def nothing_to_check(*args: Any, **kwargs: Any) -> None:
    """The check of a choice that has no options of its own: there is nothing it could get wrong."""


@dataclass(frozen=True)
class About:
    """What a registry knows about one entry besides the entry itself."""

    doc: str  # one paragraph: what the choice does, when to pick it, what it needs
    check: Callable[..., None] | None  # raises ConfigError (one line) on bad options; its arguments: the registry's
    preflight: Callable[..., PreflightCheck | None] | None  # is this machine ready for it (None: nothing to say)


class Choices(dict[str, T], Generic[T]):
    """A registry: the names a config ``key`` accepts, each mapped to what builds it (and the facts about it).

    ``add(name, entry, doc=..., check=..., preflight=...)`` registers a choice with its documentation and its
    check; what the check and the pre-flight callable receive is the registry's to say (its module docstring).
    """

    def __init__(self, key: str):
        super().__init__()
        self.key = key
        self.about: dict[str, About] = {}

    def add(self, name: str, entry: T, *, doc: str | None = None, check: Callable[..., None] | None = None,
            preflight: Callable[..., PreflightCheck | None] | None = None) -> T:
        """Register ``entry`` as ``name``. ``doc`` defaults to the entry's docstring when the entry is a function;
        ``check=nothing_to_check`` says the choice has no options (tests/test_registries.py wants one or the other)."""
        if name in self:
            raise ValueError(f"{self.key}: {name!r} is registered twice")
        if doc is None and inspect.isfunction(entry):
            doc = inspect.getdoc(entry)
        self[name] = entry
        self.about[name] = About(inspect.cleandoc(doc) if doc else "", check, preflight)
        return entry

    def remove(self, name: str) -> T:
        """Take an entry out again (a test's own entry, after the test)."""
        self.about.pop(name, None)
        return self.pop(name)

    def pick(self, name: str) -> T:
        """The entry for ``name``; an unknown name is a ConfigError naming the key and the valid names."""
        check_choice(self.key, name, self)
        return self[name]

    def doc(self, name: str) -> str:
        return self.about[name].doc

    def check(self, name: str, *args: Any, **kwargs: Any) -> None:
        """Run ``name``'s own check (none registered: nothing to run)."""
        checker = self.about[name].check
        if checker is not None:
            checker(*args, **kwargs)

    def preflight(self, name: str, *args: Any, **kwargs: Any) -> PreflightCheck | None:
        """``name``'s pre-flight line, or None when the choice has nothing to say before a run."""
        ask = self.about[name].preflight
        return ask(*args, **kwargs) if ask is not None else None

    def incomplete(self) -> dict[str, list[str]]:
        """Entries registered without a doc or without a check: name -> what is missing."""
        missing = {}
        for name in self:
            about = self.about.get(name, About("", None, None))
            lacks = [what for what, has in (("doc", about.doc.strip()), ("check", about.check)) if not has]
            if lacks:
                missing[name] = lacks
        return missing


def import_submodules(package: ModuleType, first: Sequence[str] = ()) -> list[ModuleType]:
    """Import every module of ``package`` (``first`` in that order, the rest by name): the modules that register
    a choice when imported are then all registered, so a new choice is a new file and no other code."""
    names = sorted(info.name for info in pkgutil.iter_modules(package.__path__))
    ordered = [name for name in first if name in names] + [name for name in names if name not in first]
    return [importlib.import_module(f"{package.__name__}.{name}") for name in ordered]

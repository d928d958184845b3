"""docs/configuration.md against the schema: every key a recipe can set is documented there, and the page's key
table names no key the schema lacks (a renamed key shows up in both directions)."""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

import rsb_composer.recipe  # noqa: F401  (it imports every module that builds a section: every registry filled)
from rsb_composer.config import Choices, Config
from tests.helpers import REPO

PAGE = REPO / "docs" / "configuration.md"
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`([^`]*)`")
KEYISH = re.compile(r"[A-Za-z_][\w.{},]*")
# A free-form mapping in the schema whose registry is not a Choices keyed by the section's name.
PLAIN_REGISTRIES = {"algorithms": ("rsb_composer.algorithms", "REGISTRY")}


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a field holds (``X``, ``X | None``), or None."""
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [_dataclass_in(arg) for arg in typing.get_args(hint) if arg is not type(None)]
        return next((cls for cls in inner if cls is not None), None)
    return None


def _is_mapping(hint: Any) -> bool:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_is_mapping(arg) for arg in typing.get_args(hint))
    origin = typing.get_origin(hint) or hint
    return isinstance(origin, type) and issubclass(origin, Mapping)


def _registries(key: str) -> list[Mapping[str, Any]]:
    """The registries that declare what a free-form section ``key`` holds: the Choices keyed ``key`` in any module
    of the package imported with the recipe's checks, or the plain registry named above."""
    found: list[Mapping[str, Any]] = []
    for name, module in list(sys.modules.items()):
        if name.startswith("rsb_composer") and module is not None:
            found += [v for v in vars(module).values() if isinstance(v, Choices) and v.key == key and v not in found]
    if not found and key in PLAIN_REGISTRIES:
        module, attribute = PLAIN_REGISTRIES[key]
        found.append(getattr(importlib.import_module(module), attribute))
    return found


def _declared_options(entry: Any) -> type | None:
    """The dataclass of options a registry entry declares (``entry.options``, or a dataclass-typed field of a
    dataclass entry), if it declares one."""
    options = getattr(entry, "options", None)
    if isinstance(options, type) and dataclasses.is_dataclass(options):
        return options
    if dataclasses.is_dataclass(entry) and not isinstance(entry, type):
        for field in dataclasses.fields(entry):
            value = getattr(entry, field.name)
            if isinstance(value, type) and dataclasses.is_dataclass(value):
                return value
    return None


def schema_keys(cls: type = Config, prefix: str = "") -> Iterator[str]:
    """Every dotted key of the schema: dataclass fields recursively; a section without options of its own
    (``loggers.tensorboard``) is a key itself; a free-form mapping gives its registry's entries and their options."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.metadata.get("internal"):
            continue
        key = f"{prefix}{field.name}"
        nested = _dataclass_in(hints[field.name])
        if nested is not None:
            inner = list(schema_keys(nested, f"{key}."))
            yield from inner or [key]
        elif _is_mapping(hints[field.name]):
            yield key  # the section itself (what it holds, how an entry is switched on), then each entry's options
            entries = [(name, entry) for registry in _registries(key) for name, entry in registry.items()]
            for name, entry in entries:
                switch = getattr(entry, "data_key", None)
                if switch is not None:  # switched on by a key of its own beside the mapping (data.auto_augment)
                    yield f"{prefix}{switch}"
                    continue
                options = _declared_options(entry)
                inner = list(schema_keys(options, f"{key}.{name}.")) if options else []
                yield from inner or [f"{key}.{name}"]
        else:
            yield key


def _expand(token: str) -> list[str]:
    """``loggers.wandb.{project,name}`` -> ``loggers.wandb.project``, ``loggers.wandb.name``."""
    match = re.search(r"\{([^{}]*)\}", token)
    if match is None:
        return [token]
    head, tail = token[:match.start()], token[match.end():]
    return [word for part in match.group(1).split(",") for word in _expand(f"{head}{part.strip()}{tail}")]


def documented(text: str) -> set[str]:
    """The key-like words in the code spans of the page's prose (outside fenced blocks), braces expanded."""
    prose, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            prose.append(line)
    words: set[str] = set()
    for span in CODE_SPAN.findall("\n".join(prose)):
        for token in KEYISH.findall(span):
            words.update(word.strip(".") for word in _expand(token))
    return words


def _table_keys(text: str) -> set[str]:
    """The keys in the first column of the page's key table."""
    keys: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            for span in CODE_SPAN.findall(first):
                keys.update(_expand(span))
    return keys


KEYS = list(dict.fromkeys(schema_keys()))  # once, at collection


def test_the_schema_walk_reaches_nested_sections_and_registries():
    for key in ("seed", "data.batch_size", "data.toy.num_classes", "optimizer.lr", "scheduler.style",
                "checkpoints.trust", "loggers.tensorboard", "algorithms.mixup"):
        assert key in KEYS, key
    assert "config_path" not in KEYS  # internal, not a user's key


# A schema of our own for the walk's rules (module level: the type hints are strings resolved here).
@dataclasses.dataclass
class _Crop:
    size: int = 224
    scale: float = 1.0


@dataclasses.dataclass
class _NoOptions:
    pass


@dataclasses.dataclass
class _Entry:
    options: type
    data_key: str | None = None


@dataclasses.dataclass
class _Data:
    auto: str | None = None
    augmentations: dict[str, Any] = dataclasses.field(default_factory=dict)
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Schema:
    data: _Data = dataclasses.field(default_factory=_Data)


def test_a_free_form_section_gives_its_registrys_entries_and_their_options(monkeypatch):
    registry: Choices[_Entry] = Choices("data.augmentations")
    registry.add("crop", _Entry(_Crop))
    registry.add("flip", _Entry(_NoOptions))
    registry.add("auto", _Entry(str, data_key="auto"))  # switched on by data.auto, not data.augmentations.auto
    monkeypatch.setattr(sys.modules[__name__], "_registries",
                        lambda key: [registry] if key == "data.augmentations" else [])
    assert list(dict.fromkeys(schema_keys(_Schema))) == [
        "data.auto", "data.augmentations", "data.augmentations.crop.size", "data.augmentations.crop.scale",
        "data.augmentations.flip", "data.extras"]


def test_braces_expand():
    assert documented("`loggers.wandb.{project,name}` and `data.{a,b}.c=1`") >= {
        "loggers.wandb.project", "loggers.wandb.name", "data.a.c", "data.b.c"}


def test_every_schema_key_is_on_the_configuration_page():
    words = documented(PAGE.read_text())
    # an entry of a free-form section (an algorithm) may be listed by its bare name
    missing = [k for k in KEYS if k not in words and not (k.count(".") == 1 and k.split(".")[1] in words
                                                          and k.split(".")[0] in PLAIN_REGISTRIES)]
    assert missing == [], f"keys docs/configuration.md does not name: {missing}"


def test_the_key_table_names_only_keys_the_schema_has():
    sections = {k.split(".")[0] for k in KEYS}
    placeholders = {"algorithms.NAME.ARG"}  # a pattern, not a key
    unknown = [k for k in _table_keys(PAGE.read_text())
               if k.split(".")[0] in sections and k not in KEYS and k not in placeholders]
    assert unknown == [], f"docs/configuration.md's table names keys the schema lacks: {unknown}"


def test_every_choice_a_key_accepts_is_on_the_configuration_page():
    """The values of a choice key (optimizer.name, loss.name, data.source, scheduler.style, ...): its registry."""
    words = documented(PAGE.read_text())
    registries = {v.key: v for module in list(sys.modules.values()) if module and module.__name__.startswith(
        "rsb_composer") for v in vars(module).values() if isinstance(v, Choices)}
    # A mapping section's entries (loggers.wandb, data.augmentations.NAME) are keys of their own, checked above.
    choices = {key: registry for key, registry in registries.items()
               if key in KEYS and not any(k.startswith(f"{key}.") for k in KEYS)}
    assert {"optimizer.name", "loss.name", "data.source"} <= set(choices)
    missing = [f"{key}: {name}" for key, registry in choices.items() for name in registry if name not in words]
    assert missing == [], f"choices docs/configuration.md does not name: {missing}"

"""Reading a recipe: YAML file + dotted command-line overrides -> a typed :class:`Config`.

Unknown keys (with the closest valid one), values of the wrong type and YAML syntax errors are refused here, as
one :class:`ConfigError` line; whether a value makes sense is for the module that builds its section.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from rsb_composer.config.schema import Config, ConfigError


def load_config(path: str | os.PathLike[str], overrides: typing.Sequence[str] = ()) -> Config:
    """Read a recipe YAML, apply ``key.sub=value`` overrides and return the typed :class:`Config`.

    Fills in ``run_name`` (the file's stem) and ``run_dir`` (``runs/{run_name}``). The values are typed, not yet
    checked against what the builders accept: :func:`rsb_composer.recipe.load_recipe` does both.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}:{where}: YAML syntax error: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    for override in overrides:
        apply_override(raw, override)
    if raw.get("run_name") is None:
        raw["run_name"] = path.stem
    config = build_section(Config, raw, prefix="")
    config.config_path = str(path)
    if config.run_dir is None:
        config.run_dir = str(Path("runs") / config.run_name)
    return config


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``key.sub=value`` in the raw YAML mapping; the value is read as YAML (``null``, ``[0.9, 0.99]``)."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"malformed override {override!r}: expected key.sub=value, e.g. optimizer.lr=0.1")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text  # an unquoted string YAML cannot parse (e.g. 'a: b'); the typed check decides
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(parts[: depth + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def unknown_key(prefix: str, key: str, valid: typing.Iterable[str]) -> ConfigError:
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
    return ConfigError(f"unknown config key '{prefix}{key}'{hint}")


def build_section(cls: type, raw: Any, prefix: str) -> Any:
    """A section dataclass from its raw mapping, every value coerced to the field's type."""
    name = prefix.rstrip(".") or "the config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name} must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise unknown_key(prefix, str(key), fields)
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        # int | str (a number or a word such as "auto"): the first type that takes the value; whether the word
        # is one the key accepts is for the section's check.
        errors = []
        for candidate in inner:
            try:
                return _coerce(candidate, value, key)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if dataclasses.is_dataclass(hint):
        return build_section(hint, value, prefix=f"{key}.")
    if origin is list:  # a list of numbers (crop_scale); element type from the hint
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, e.g. [0.08, 1.0], got {value!r}")
        return [_coerce(args[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:  # algorithms, loggers: name -> options mapping; the registry of the choice checks them
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML reads 5e-3 (no dot) as a string; a number written that way is still a number.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # a bug in the dataclasses, not user input

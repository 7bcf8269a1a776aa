"""Typed configuration: dataclasses loaded from TOML plus ``key=value`` overrides, validated once.

Each stage keeps its config dataclass beside the module it configures (as nanoGPT does); this
module holds the shared machinery: building a dataclass from a mapping while rejecting unknown
keys, coercing override strings to the field's type, and the range checks configs call from
``__post_init__``. Invalid configs fail at start-up with one ConfigError naming the field.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

from goalrank.errors import ConfigError

T = TypeVar("T")

PAPER_LIST_LEN = 6  # L of the paper (§4.1): the default length of a list everywhere
# Field metadata key of a config field added after runs were recorded (value: the date it came);
# ``to_dict`` leaves such a field out while it holds its default.
ADDED_LATER = "added_later"


def from_dict(cls: type[T], values: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``values``; nested dataclass fields take nested mappings."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(fields)}")
    missing = [name for name, f in fields.items() if name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        prefix = where.partition(".")[2]  # "config.model" -> "model": the --set path of a nested table
        key = f"{prefix}.{missing[0]}" if prefix else missing[0]
        flag = f"the --{missing[0].replace('_', '-')} flag or " if not prefix else ""
        raise ConfigError(f"{where}: missing required key(s) {missing} (give {flag}--set {key}=...)")
    kwargs = {}
    for name, value in values.items():
        field_type = hints[name]
        if isinstance(field_type, type) and dataclasses.is_dataclass(field_type):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{name}={value!r}: expected a table of its fields "
                                  f"(e.g. --set {name}.FIELD=VALUE), not a value")
            kwargs[name] = from_dict(field_type, value, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, field_type, f"{where}.{name}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def to_dict(config: Any) -> dict[str, Any]:
    """Plain-dict form of a config, for manifests and run folders.

    A field marked ``ADDED_LATER`` in its metadata is left out while it holds its default, which
    is the behaviour from before it existed: a run's config.json and the digest that names it
    (results rows are found by that name) stay what they were, so recorded runs are read back and
    interrupted ones resume across the change. ``from_dict`` fills the default back in.
    """
    plain = dataclasses.asdict(config)
    _drop_later_defaults(config, plain)
    return plain


def _drop_later_defaults(config: Any, plain: dict[str, Any]) -> None:
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.metadata.get(ADDED_LATER):
            # a default_factory leaves field.default MISSING, which no value equals: the field
            # would silently stay in the dict and rename every run
            if field.default is dataclasses.MISSING:
                raise TypeError(f"{type(config).__name__}.{field.name}: a field marked {ADDED_LATER} needs a "
                                "plain default to compare with")
            if value == field.default:
                del plain[field.name]
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            _drop_later_defaults(value, plain[field.name])


def load_values(path: Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Raw config values: an optional TOML file, then ``key=value`` overrides (dotted for nesting).

    Kept separate from ``from_dict`` so callers can add data-derived fields (e.g. the number of
    items of a dataset) before the dataclasses are built and validated.
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); a config is a TOML file") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key=value")
        node = values
        *parents, leaf = key.strip().split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {parent!r} is not a section")
        node[leaf] = raw.strip()
    return values


def merge_values(*layers: dict[str, Any]) -> dict[str, Any]:
    """Nested merge of config value mappings; later layers win, sub-tables merge key by key."""
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = merge_values(merged[key], value)
            else:
                merged[key] = value
    return merged


def flatten_values(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf of nested config values: the inverse of ``--set`` parsing."""
    leaves: list[tuple[str, Any]] = []
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        leaves += flatten_values(value, f"{dotted}.") if isinstance(value, dict) else [(dotted, value)]
    return leaves


def config_differences(saved: Any, now: Any, where: str = "") -> list[str]:
    """``key: saved X, now Y`` for every (dotted) key whose value differs; ``now`` is compared in its
    JSON form (tuples as lists), as ``saved`` was read back from a JSON file."""
    now = json.loads(json.dumps(now, default=str)) if not where else now
    if isinstance(saved, dict) and isinstance(now, dict):
        return [line for key in sorted(set(saved) | set(now))
                for line in config_differences(saved.get(key), now.get(key), f"{where}.{key}" if where else key)]
    return [] if saved == now else [f"{where or 'config'}: saved {saved!r}, now {now!r}"]


def check(condition: bool, field: str, expected: str, value: Any) -> None:
    """Raise ConfigError ``field=value: expected ...`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{field}={value!r}: expected {expected}")


def check_finite(field: str, value: float) -> None:
    """Raise ConfigError unless ``value`` is a finite number (``inf``/``nan`` parse as floats)."""
    check(math.isfinite(value), field, "a finite number", value)


def _coerce(value: Any, field_type: Any, where: str) -> Any:
    """Turn override strings (and TOML scalars) into the field's declared type."""
    origin = typing.get_origin(field_type)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(field_type) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], where)
    if origin is dict or field_type is dict:
        if not isinstance(value, dict):
            key = where.partition(".")[2] or where
            raise ConfigError(f"{where}={value!r}: expected a table of values (e.g. --set {key}.FIELD=VALUE), "
                              "not a value")
        return value
    if origin in (tuple, list):
        (inner, *_) = typing.get_args(field_type) or (str,)
        items = value.split(",") if isinstance(value, str) else list(value)
        items = [_coerce(v.strip() if isinstance(v, str) else v, inner, where) for v in items if v != ""]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        allowed = typing.get_args(field_type)
        if value not in allowed:
            raise ConfigError(f"{where}={value!r}: expected one of {list(allowed)}")
        return value
    try:
        if field_type is bool:
            if isinstance(value, bool):
                return value
            lowered = str(value).lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return lowered in ("true", "1", "yes")
        if field_type in (int, float):
            if isinstance(value, bool):
                raise ValueError(value)
            number = field_type(value)
            if field_type is int and isinstance(value, float) and value != number:
                raise ValueError(value)
            if field_type is float and not math.isfinite(number):  # "inf", "nan" and 1e400 parse as floats
                raise ConfigError(f"{where}={value!r}: expected a finite number")
            return number
        if field_type is str:
            return str(value)
    except (TypeError, ValueError, OverflowError) as exc:  # int(1e400) overflows
        raise ConfigError(f"{where}={value!r}: expected {field_type.__name__}") from exc
    return value

"""Typed configs: dataclasses are the schema (defaults and a docstring per field), dicts are values.

One mechanism for every config (training, the main job, the benchmarks): :func:`config_from_dict`
builds one from a plain mapping (a YAML preset, a config saved in a checkpoint), :func:`update_config`
applies a mapping onto an existing one (nested sections are updated field by field), and
:func:`apply_overrides` applies command-line ``key=value`` items with dotted keys. Every value is
checked against its field's type once, here: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``
(a choice), ``X | None``, ``list``, ``tuple``, ``dict`` and nested dataclasses. An unknown key or a
value of the wrong type is a one-line :class:`MedfoundryError` naming the key.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import yaml

from medfoundry import MedfoundryError

T = TypeVar("T")
log = logging.getLogger(__name__)


def config_from_dict(cls: type[T], raw: Mapping | None, renamed: Mapping[str, str] = {}) -> T:  # noqa: B006
    """A ``cls`` with its defaults updated from ``raw`` (see :func:`update_config`)."""
    return update_config(cls(), raw or {}, renamed=renamed)


def update_config(
    cfg: T,
    raw: Mapping,
    prefix: str = "",
    renamed: Mapping[str, str] = {},  # noqa: B006
    root: Any = None,
) -> T:
    """Set the fields named in ``raw`` on ``cfg`` (in place; returned). A nested dataclass field given
    a mapping is updated field by field, so a preset may name only the values it changes.
    ``renamed`` maps old dotted keys to their new names (used for configs saved by older versions);
    ``root`` is the top config when ``cfg`` is one of its sections (named by ``prefix``)."""
    root = cfg if root is None else root
    if not isinstance(raw, Mapping):
        raise MedfoundryError(f"config section '{prefix[:-1] or 'top'}': expected a mapping")
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if dotted in renamed:
            set_dotted(root, renamed[dotted], value)
            continue
        f = _field(cfg, str(key), dotted)
        current = getattr(cfg, f.name)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            update_config(current, value, f"{dotted}.", renamed, root)
        else:
            setattr(cfg, f.name, coerce(value, _hint(cfg, f.name), dotted))
    return cfg


def set_dotted(cfg: Any, key: str, value: Any) -> None:
    """Set the dotted ``key`` (``optim.lr``) of ``cfg`` to ``value``, checked against its type."""
    parts = key.strip().split(".")
    obj = cfg
    for i, part in enumerate(parts[:-1]):
        obj = getattr(obj, _field(obj, part, key).name)
        if not dataclasses.is_dataclass(obj):
            raise MedfoundryError(f"unknown config key '{key}' ('{parts[i]}' is not a section)")
    f = _field(obj, parts[-1], key)
    if dataclasses.is_dataclass(getattr(obj, f.name)) and isinstance(value, Mapping):
        update_config(getattr(obj, f.name), value, f"{key}.")
    else:
        setattr(obj, f.name, coerce(value, _hint(obj, f.name), key))


def apply_overrides(cfg: T, items: list[str], renamed: Mapping[str, str] = {}) -> T:  # noqa: B006
    """Apply ``key=value`` items (dotted keys; each value parsed as one YAML scalar or flow
    collection, e.g. ``patch_size=[16, 32, 32]``) in order; returns ``cfg``. A key of ``renamed``
    (an older spelling) sets its new key, with a warning."""
    for item in items:
        if "=" not in item:
            raise MedfoundryError(f"--set expects key=value, got '{item}'")
        key, text = item.split("=", 1)
        key = key.strip()
        if key in renamed:
            log.warning("config key '%s' is now '%s'", key, renamed[key])
            key = renamed[key]
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text  # not YAML: the text itself (a str field takes it; others refuse it)
        set_dotted(cfg, key, value)
    return cfg


_INTERVAL = re.compile(r"^([\[(])\s*(\S+)\s*,\s*(\S+)\s*([\])])$")


def check_ranges(cfg: Any, ranges: Mapping[str, str]) -> None:
    """Check numeric fields against intervals, e.g. ``{"optim.lr": "(0, inf)", "data.fg_fraction":
    "[0, 1]"}``: a bracket includes its end, a parenthesis excludes it. A list or tuple field has
    each item checked, and a ``tuple[float, float]`` (a range) must have ``low <= high``. ``None`` (a default
    taken from elsewhere) passes. The first violation is a one-line error naming the key."""
    for key, interval in ranges.items():
        m = _INTERVAL.match(interval)
        if m is None:
            raise ValueError(f"bad interval {interval!r} for {key}")
        *path, name = key.split(".")
        owner = cfg
        for part in path:
            owner = getattr(owner, part)
        value = getattr(owner, name)
        items = list(value) if isinstance(value, list | tuple) else [value]
        for v in items:
            if v is not None and not _within(v, m):
                raise MedfoundryError(f"config key '{key}': must be in {interval}, not {v!r}")
        is_pair = typing.get_args(_hint(owner, name)) in ((float, float), (int, int))
        if is_pair and value[0] > value[1]:  # a (low, high) range
            raise MedfoundryError(f"config key '{key}': low {value[0]} is above high {value[1]}")


def _within(v: float, m: re.Match) -> bool:
    lo, hi = float(m[2]), float(m[3])
    above = v >= lo if m[1] == "[" else v > lo
    below = v <= hi if m[4] == "]" else v < hi
    return math.isfinite(v) and above and below


def config_to_dict(cfg: Any) -> dict:
    """Plain types only (tuples become lists), as written to ``config.yaml`` and checkpoints."""
    return _plain(dataclasses.asdict(cfg))


def load_yaml_mapping(text: str, source: str) -> dict:
    """A YAML document that must be a mapping (an empty one is ``{}``)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MedfoundryError(f"{source}: not valid YAML ({exc})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise MedfoundryError(f"{source}: expected a YAML mapping of config keys")
    return raw


def coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the type ``hint`` describes, or a one-line error naming ``key``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            choices = ", ".join(map(str, args))
            raise MedfoundryError(f"config key '{key}': {value!r} is not one of: {choices}")
        return value
    try:
        return _convert(value, hint, origin, args, key)
    except (TypeError, ValueError):
        name = getattr(hint, "__name__", str(hint))
        raise MedfoundryError(f"config key '{key}': cannot use {value!r} for a {name}") from None


def _convert(value, hint, origin, args, key: str):
    if hint is bool:
        if not isinstance(value, bool):
            raise TypeError
        return value
    if hint in (int, float) and (isinstance(value, bool) or value is None):
        raise TypeError
    if hint is int and isinstance(value, float) and not value.is_integer():
        raise TypeError  # int(1.5) would silently drop the fraction
    if hint in (int, float, str):
        if hint is str and not isinstance(value, str | int | float):
            raise TypeError
        if hint is float and not math.isfinite(float(value)):
            raise MedfoundryError(f"config key '{key}': must be a finite number, not {value!r}")
        return hint(value)
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping):
            raise TypeError
        return dict(value)
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise TypeError
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: tuple[a, b]
            if len(value) != len(args):
                raise MedfoundryError(
                    f"config key '{key}': expected {len(args)} values, got {len(value)}"
                )
            hints = list(args)
        else:
            hints = [args[0] if args else Any] * len(value)
        items = [
            v if h is Any else coerce(v, h, f"{key}[{i}]")
            for i, (v, h) in enumerate(zip(value, hints, strict=True))
        ]
        return tuple(items) if origin is tuple else items
    if dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
        return config_from_dict(hint, value)
    raise TypeError


def _field(obj: Any, name: str, key: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields:
        raise MedfoundryError(f"unknown config key '{key}' (known here: {', '.join(fields)})")
    return fields[name]


def _hint(obj: Any, name: str) -> Any:
    return typing.get_type_hints(type(obj))[name]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value

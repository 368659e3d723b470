"""Frozen-dataclass configs from YAML files and ``--set key=value`` overrides, with typed validation."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from drake.errors import SpecError, did_you_mean
from drake.spec import read_yaml

T = TypeVar("T")


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Convert ``value`` (from YAML or a CLI string) to the annotated type, or raise SpecError."""
    origin = typing.get_origin(typ)
    args = typing.get_args(typ)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except SpecError as exc:
                errors.append(str(exc))
        raise SpecError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin in (tuple, list) or typ in (tuple, list):
        if isinstance(value, str):
            value = [v for v in (s.strip() for s in value.split(",")) if v] if value else []
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else str
        items = [_coerce(v, inner, where) for v in value]
        return tuple(items) if (origin or typ) is tuple else items
    if origin in (dict, Mapping) or typ is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, Mapping):
            raise SpecError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise SpecError(f"{where}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool):
            raise SpecError(f"{where}: expected an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise SpecError(f"{where}: expected an integer, got {value!r}") from None
    if typ is float:
        if isinstance(value, bool):
            raise SpecError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SpecError(f"{where}: expected a number, got {value!r}") from None
    if typ is str:
        if not isinstance(value, (str, int, float)):
            raise SpecError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def parse_sets(sets: Sequence[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> {"a": "1", "b": "x"}; a malformed item raises SpecError."""
    out: dict[str, str] = {}
    for item in sets:
        if "=" not in item:
            raise SpecError(f"--set {item!r}: expected key=value (e.g. --set lr=1e-3)")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


#: named configs shipped with the package (the paper's ablations): ``--config fedmosaic-no-rela``
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


def named_configs() -> list[str]:
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a YAML file, or from a named config of drake/configs/ (a name without a suffix)."""
    p = Path(path)
    if not p.is_file() and p.suffix == "" and (CONFIGS_DIR / f"{p}.yaml").is_file():
        p = CONFIGS_DIR / f"{p}.yaml"
    if not p.is_file():
        raise SpecError(f"--config {p}: file not found (named configs: {', '.join(named_configs())})")
    doc = read_yaml(p) or {}
    if not isinstance(doc, Mapping):
        raise SpecError(f"--config {p}: expected a mapping of key: value")
    return dict(doc)


def coerce_fields(cls: type, values: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """``values`` converted to the annotated types of dataclass ``cls``'s fields (unknown keys and bad types
    raise SpecError)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise SpecError(f"{where}: unknown key {key!r}{did_you_mean(key, names)}; valid keys: {', '.join(names)}")
        kwargs[key] = _coerce(value, hints[key], f"{where}: {key}")
    return kwargs


def build_config(cls: type[T], values: Mapping[str, Any], *, where: str) -> T:
    """Instantiate dataclass ``cls`` from ``values`` (unknown keys and bad types raise SpecError)."""
    kwargs = coerce_fields(cls, values, where=where)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # a required field not given, or the class's own check (__post_init__)
        raise SpecError(f"{where}: {exc}") from exc


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-friendly dict of a (possibly nested) dataclass config."""
    d = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

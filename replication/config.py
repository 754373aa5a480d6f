"""params.yaml: one rule from the file to the settings every stage runs with.

The file has base sections (the papers' values) and ``profiles:`` that state only what they
change. The effective settings of a profile are, for every key, the first value found in:

1. the profile's per-model entry ``<section>.models.<model>`` (models a section runs with
   settings of their own);
2. the profile's section;
3. the base section's per-model entry;
4. the base section.

So a profile always beats the base, and a model's own entry beats its section within a layer.
Mappings merge key by key; lists and scalars replace. Every layer is checked against the schema
(``Params`` and the section classes it names) before it is merged: an unknown key anywhere,
in any profile, is an error that names the closest valid key. The merged result is then built
into frozen dataclasses, which checks every value's type and range.

``python -m replication params [--profile P] [--stage S] [--model M]`` prints the result.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from replication.errors import ConfigError
from replication.settings import (PositiveInt, Seed, Settings, check_keys, closest, mapping_values,
                                  schema_keys, settings, settings_class)

PROFILES = ("smoke", "quick", "paper")
MODELS = "models"  # the per-model field of a PerModelSettings section


class PerModelSettings(Settings):
    """A section whose ``models: {name: {…}}`` entries override it for one model.

    In the effective settings, ``models[name]`` is that model's whole section (the override
    order of this module applied), so ``for_model(name)`` is a lookup.
    """

    def for_model(self, name: str) -> "PerModelSettings":
        models = getattr(self, MODELS)
        return models.get(name, self)


def deep_merge(base: Mapping, override: Mapping) -> dict:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


# --- the schema ---------------------------------------------------------------------------------

def _schema() -> type[Settings]:
    """``Params``: the whole file's schema (imported late: the sections live with their code)."""
    from replication.schema import Params

    return Params


def check_layer(cls: type[Settings], layer: Mapping, where: str) -> None:
    """Every key of one raw layer (the base or a profile) must be in the schema."""
    if not isinstance(layer, Mapping):
        raise ConfigError(f"params.yaml {where or 'top level'} must be a mapping of settings")
    hints = schema_keys(cls)
    check_keys(layer, list(hints), where)
    for key, value in layer.items():
        path = f"{where}.{key}" if where else key
        if issubclass(cls, PerModelSettings) and key == MODELS:
            if not isinstance(value, Mapping):
                raise ConfigError(f"params.yaml {path} must map model names to their settings")
            for model, entry in value.items():
                _check_partial(cls, entry, f"{path}.{model}", skip=(MODELS,))
            continue
        _check_value(hints[key], value, path)


def _check_value(hint: Any, value: Any, path: str) -> None:
    nested = settings_class(hint)
    if nested is not None and isinstance(value, Mapping):
        check_layer(nested, value, path)
        return
    values = mapping_values(hint)
    if values is not None and isinstance(value, Mapping):
        inner = settings_class(values)
        if inner is not None:
            for name, entry in value.items():
                if isinstance(entry, Mapping):
                    check_layer(inner, entry, f"{path}.{name}")


def _check_partial(cls: type[Settings], entry: Any, where: str, skip: tuple[str, ...]) -> None:
    if entry is None:
        return
    if not isinstance(entry, Mapping):
        raise ConfigError(f"params.yaml {where} must be a mapping of settings")
    valid = [k for k in schema_keys(cls) if k not in skip]
    check_keys(entry, valid, where)
    hints = schema_keys(cls)
    for key, value in entry.items():
        _check_value(hints[key], value, f"{where}.{key}")


def merge_layers(cls: type[Settings], base: Mapping, profile: Mapping) -> dict:
    """The profile merged over the base, with per-model sections resolved (module docstring)."""
    merged = {}
    hints = schema_keys(cls)
    for key in dict.fromkeys([*base, *profile]):
        if issubclass(cls, PerModelSettings) and key == MODELS:
            continue
        merged[key] = _merge_value(hints.get(key), base.get(key), profile.get(key),
                                   key in base, key in profile)
    if issubclass(cls, PerModelSettings):
        base_models = base.get(MODELS) or {}
        profile_models = profile.get(MODELS) or {}
        plain_base = {k: v for k, v in base.items() if k != MODELS}
        plain_profile = {k: v for k, v in profile.items() if k != MODELS}
        models = {}
        for name in dict.fromkeys([*base_models, *profile_models]):
            layers = [plain_base, base_models.get(name) or {}, plain_profile,
                      profile_models.get(name) or {}]
            resolved: dict = {}
            for layer in layers:
                resolved = deep_merge(resolved, layer)
            models[name] = resolved
        merged[MODELS] = models
    return merged


def _merge_value(hint: Any, base: Any, profile: Any, in_base: bool, in_profile: bool) -> Any:
    """One key of a section: mappings merge key by key (through their settings classes, so
    per-model sections inside are resolved); anything else from the profile replaces the base."""
    if in_profile and not isinstance(profile, Mapping):
        return copy.deepcopy(profile)
    if not in_profile and not isinstance(base, Mapping):
        return copy.deepcopy(base)
    base = base if isinstance(base, Mapping) else {}
    profile = profile if isinstance(profile, Mapping) else {}
    nested = settings_class(hint) if hint is not None else None
    if nested is not None:
        return merge_layers(nested, base, profile)
    values = mapping_values(hint) if hint is not None else None
    inner = settings_class(values) if values is not None else None
    if inner is not None:
        return {name: _merge_value(values, base.get(name), profile.get(name), name in base,
                                   name in profile)
                for name in dict.fromkeys([*base, *profile])}
    return deep_merge(base, profile)


# --- loading ------------------------------------------------------------------------------------

def read_file(path: str | os.PathLike = "params.yaml") -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found: run the command from the repository root")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path} must be a mapping of settings at the top level")
    return dict(raw)


def effective_params(raw: Mapping, profile: str | None = None) -> dict:
    """The merged, key-checked (not yet type-checked) settings of ``profile``."""
    cls = _schema()
    raw = dict(raw)
    profiles = raw.pop("profiles", None)
    if not isinstance(profiles, Mapping):
        raise ConfigError("params.yaml has no 'profiles' mapping")
    missing = [p for p in PROFILES if p not in profiles]
    unknown = [p for p in profiles if p not in PROFILES]
    if missing or unknown:
        raise ConfigError(f"params.yaml profiles must be exactly {list(PROFILES)}; "
                          f"missing {missing}, unknown {unknown}")
    profile = profile if profile is not None else raw.get("profile")
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; {closest(str(profile), list(PROFILES))}"
                          .replace("valid keys", "profiles"))
    check_layer(cls, raw, "")
    for name, layer in profiles.items():
        if layer is None:
            continue
        if "profile" in layer or "profiles" in layer:
            raise ConfigError(f"params.yaml profiles.{name} may not set 'profile' or 'profiles'")
        check_layer(cls, layer, f"profiles.{name}")
    merged = merge_layers(cls, raw, profiles[profile] or {})
    merged["profile"] = profile
    return merged


def load_settings(path: str | os.PathLike = "params.yaml", profile: str | None = None) -> Any:
    """The validated settings (a ``Params``) of ``profile`` (default: the file's ``profile``)."""
    return _schema().from_params(effective_params(read_file(path), profile), "")


def load_params(path: str | os.PathLike = "params.yaml", profile: str | None = None) -> dict:
    """The validated effective settings as plain data (what the stage settings files hold)."""
    return load_settings(path, profile).as_params()


def check_all_profiles(path: str | os.PathLike = "params.yaml") -> dict[str, Any]:
    """Every profile validated (what ``make reproduce`` runs before ``dvc repro``)."""
    raw = read_file(path)
    effective_params(raw)  # the file's own `profile:` must name a profile too
    return {p: _schema().from_params(effective_params(raw, p), "") for p in PROFILES}


def get(params: Mapping, dotted: str) -> Any:
    """``get(params, "data.network.attempts")`` with an error naming the missing key."""
    node: Any = params
    for part in dotted.split("."):
        if isinstance(node, Settings):
            node = node.as_params()
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"the settings have no key {dotted!r} (missing {part!r})")
        node = node[part]
    return node


__all__ = ["MODELS", "PROFILES", "PerModelSettings", "PositiveInt", "Seed", "check_all_profiles",
           "deep_merge", "effective_params", "get", "load_params", "load_settings", "read_file",
           "settings"]


def run_settings_stage(ctx) -> None:
    """The `settings` stage: check params.yaml (every profile's keys, the active profile's
    values) and write each stage's settings file; a bad file stops here, before DVC touches
    any other stage's outputs (the folder persists, so a failure deletes nothing)."""
    from replication.fileio import atomic_directory
    from replication.pipeline import write_stage_settings

    params = load_params(ctx.input("params"))
    with atomic_directory(ctx.output("out")) as folder:
        write_stage_settings(params, folder)

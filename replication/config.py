"""params.yaml: every knob of the pipeline, with one parameter selecting the profile.

The effective configuration is the base sections of params.yaml with ``profiles.<profile>``
merged over them, so a profile only states what it changes.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from replication.errors import ConfigError

PROFILES = ("smoke", "quick", "paper")


def deep_merge(base: dict, override: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_params(path: str | os.PathLike = "params.yaml", profile: str | None = None) -> dict:
    """The effective parameters for ``profile`` (default: the ``profile`` key of the file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} not found: run the command from the repository root")
    raw = yaml.safe_load(path.read_text()) or {}
    profiles = raw.pop("profiles", {}) or {}
    profile = profile or raw.get("profile")
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r} in {path}; choose one of {list(PROFILES)}")
    missing = [p for p in PROFILES if p not in profiles]
    if missing:
        raise ConfigError(f"{path} has no 'profiles' entry for {missing}")
    params = deep_merge(raw, profiles[profile])
    params["profile"] = profile
    return params


def get(params: dict, dotted: str) -> Any:
    """``get(params, "data.network.attempts")`` with an error naming the missing key."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"params.yaml has no key {dotted!r} (missing {part!r})")
        node = node[part]
    return node

"""Paper claims (``claims/*.yaml``) and their verdicts against the metrics the pipeline wrote.

A claim names where its value lives (``ours: {file, key}``); the verdict is computed here, so no
number in the report is ever typed in by hand.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from replication.errors import ConfigError

REPRODUCED, NOT_REPRODUCED, NOT_RUN = "reproduced", "not reproduced", "not run"

# The report's sections, in this order.
PAPERS = {
    "data": "Datasets the papers use",
    "sanity_checks": "Sanity Checks for Saliency Maps (Adebayo et al., NeurIPS 2018)",
    "expected_gradcam": "Expected Grad-CAM (Buono et al., 2024) — reconstruction",
    "parchgrad": "ParchGrad (Park, Jeon, Choi, 2023)",
}

OPERATORS = ("==", "approx", ">=", ">", "<=", "<", "between")


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    where: str
    statement: str
    ours_file: str
    ours_key: str
    op: str
    paper_value: Any = None
    tolerance: float | None = None
    threshold: Any = None
    figure_file: str | None = None
    note: str = ""

    def describe_check(self) -> str:
        if self.op == "approx":
            return f"within ±{self.tolerance:g} of the paper"
        if self.op == "between":
            low, high = self.threshold
            return f"in [{low:g}, {high:g}]"
        if self.op == "==":
            return "equal to the paper's value"
        return f"{self.op} {format_value(self._bound())}"

    def _bound(self) -> Any:
        return self.paper_value if self.threshold is None else self.threshold


@dataclass
class Verdict:
    claim: Claim
    status: str
    our_value: Any = None
    reason: str = ""
    extras: dict = field(default_factory=dict)


def _claim_from(entry: dict, default_paper: str, source: Path) -> Claim:
    where = f"{source}: claim {entry.get('id', '?')}"
    for key in ("id", "statement", "ours", "check"):
        if key not in entry:
            raise ConfigError(f"{where} lacks {key!r}")
    ours, check = entry["ours"], entry["check"]
    if not isinstance(ours, dict) or {"file", "key"} - set(ours):
        raise ConfigError(f"{where}: 'ours' must be a mapping with 'file' and 'key'")
    op = check.get("op") if isinstance(check, dict) else None
    if op not in OPERATORS:
        raise ConfigError(f"{where}: check.op {op!r} is not one of {list(OPERATORS)}")
    claim = Claim(
        id=str(entry["id"]), paper=entry.get("paper", default_paper),
        where=str(entry.get("where", "")), statement=str(entry["statement"]).strip(),
        ours_file=ours["file"], ours_key=str(ours["key"]), op=op,
        paper_value=entry.get("paper_value"), tolerance=check.get("tolerance"),
        threshold=check.get("threshold"), figure_file=entry.get("figure_file"),
        note=str(entry.get("note", "")).strip(),
    )
    if claim.paper not in PAPERS:
        raise ConfigError(f"{where}: paper {claim.paper!r} is not one of {list(PAPERS)}")
    if op == "approx" and (claim.tolerance is None or claim.paper_value is None):
        raise ConfigError(f"{where}: 'approx' needs paper_value and check.tolerance")
    if op == "between" and not (isinstance(claim.threshold, list) and len(claim.threshold) == 2):
        raise ConfigError(f"{where}: 'between' needs check.threshold: [low, high]")
    if op in ("==", ">=", ">", "<=", "<") and claim._bound() is None:
        raise ConfigError(f"{where}: {op!r} needs paper_value or check.threshold")
    return claim


def read_claims(path: str | os.PathLike) -> list[Claim]:
    """The claims of one file (``claims/<paper>.yaml``), in file order."""
    path = Path(path)
    doc = yaml.safe_load(path.read_text()) or {}
    return [_claim_from(e, doc.get("paper", path.stem), path) for e in doc.get("claims", [])]


def load_claims(folder: str | os.PathLike = "claims") -> list[Claim]:
    """All claims, grouped by paper in ``PAPERS`` order, each file's entries in file order."""
    claims: list[Claim] = []
    for path in sorted(Path(folder).glob("*.yaml")):
        claims += read_claims(path)
    ids = [c.id for c in claims]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(f"claim ids must be unique; repeated: {duplicates}")
    order = list(PAPERS)
    return sorted(claims, key=lambda c: order.index(c.paper))  # stable: keeps file order


def lookup(obj: Any, dotted: str) -> Any:
    """``lookup(m, "train.class_counts.3")``: mapping keys and list indices, dot-separated."""
    for part in dotted.split("."):
        if isinstance(obj, list):
            obj = obj[int(part)]
        else:
            obj = obj[part]
    return obj


def _holds(op: str, ours: Any, claim: Claim) -> bool:
    if op == "==":
        return ours == claim.paper_value
    if op == "approx":
        return abs(float(ours) - float(claim.paper_value)) <= float(claim.tolerance)
    if op == "between":
        low, high = claim.threshold
        return low <= float(ours) <= high
    bound = float(claim._bound())
    return {">=": ours >= bound, ">": ours > bound, "<=": ours <= bound, "<": ours < bound}[op]


def evaluate(claim: Claim, root: str | os.PathLike = ".") -> Verdict:
    path = Path(root) / claim.ours_file
    if not path.is_file():
        return Verdict(claim, NOT_RUN, reason=f"{claim.ours_file} was not produced in this run")
    metrics = json.loads(path.read_text())
    try:
        ours = lookup(metrics, claim.ours_key)
    except (KeyError, IndexError, ValueError, TypeError):
        reason = _stated_reason(metrics, claim.ours_key)
        return Verdict(claim, NOT_RUN, reason=reason or f"{claim.ours_file} has no {claim.ours_key!r}")
    if ours is None or (isinstance(ours, float) and math.isnan(ours)):
        return Verdict(claim, NOT_RUN, ours, reason=_stated_reason(metrics, claim.ours_key)
                       or "the stage recorded no value")
    return Verdict(claim, judge(claim, ours), ours)


def _stated_reason(metrics: Any, dotted: str) -> str:
    """The ``reason`` a stage wrote beside a missing value: in the nearest enclosing mapping."""
    parts = dotted.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        try:
            parent = lookup(metrics, ".".join(parts[:depth])) if depth else metrics
        except (KeyError, IndexError, ValueError, TypeError):
            continue
        if isinstance(parent, dict) and parent.get("reason"):
            return str(parent["reason"])
    return ""


def judge(claim: Claim, value: Any) -> str:
    """The verdict of ``claim`` for a measured ``value`` (NOT_RUN when there is none)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_RUN
    return REPRODUCED if _holds(claim.op, value, claim) else NOT_REPRODUCED


def format_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)

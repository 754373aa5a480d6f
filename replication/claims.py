"""Paper claims (``claims/*.yaml``) and their verdicts against the metrics the pipeline wrote.

A claim names where its value lives (``ours: {file, key}``); the stage that wrote it put the
value's uncertainty beside it, as ``<key>_ci``: a 95% interval, the number of sampled units and
how it was obtained (``replication.metrics.stats.Interval``). The verdict is computed here, so
no number in the report is ever typed in by hand. The rule (``VERDICT_RULE``), written once:

- a bound (``>``, ``>=``, ``<``, ``<=``): **reproduced** when the whole interval is on the claim's
  side of the bound, **not reproduced** when the whole interval is on the other side,
  **inconclusive** when it straddles the bound;
- a band (``approx``: paper value ± tolerance; ``between``): reproduced when the interval lies
  inside the band (an equivalence test), not reproduced when it lies wholly outside,
  inconclusive otherwise;
- ``==`` and every exact quantity (an identity, a dataset size, a seeded toy): the value itself;
- a sampled value with no interval (n = 1) is inconclusive; **not run** keeps its reason.

For an inconclusive claim, ``n_needed`` is the number of units at which the interval's
half-width, shrinking as 1/√n from the observed spread, would fall below the distance from the
estimate to the bound (or the band's nearest edge).
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

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN = (
    "reproduced", "not reproduced", "inconclusive", "not run")
VERDICTS = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_RUN)
VERDICT_RULE = (
    "A verdict is read from the value's 95% interval: **reproduced** when the whole interval is "
    "on the claim's side of its bound (inside its band, for ± tolerances), **not reproduced** "
    "when the whole interval is on the other side (outside the band), **inconclusive** when it "
    "straddles the bound, or when a sampled value has no interval (n = 1). Exact quantities "
    "(identities, dataset sizes, seeded toys; *exact* in the n column) are compared as they "
    "are. Intervals are bootstraps over the sampled units (images) of the whole statistic the "
    "claim judges, or Wilson intervals for accuracies. *n needed*: the units at which the "
    "interval would, at the observed spread, clear the bound.")

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
    n_setting: str | None = None  # the settings key that sets n (for the paper profile's n)
    exact: bool = False  # a deterministic quantity (identity, dataset size, seeded toy)

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
    interval: dict = field(default_factory=dict)  # low, high, n, method, unit (the <key>_ci)
    n_needed: int | None = None
    paper_n: int | None = None  # n under the paper profile (the claim's n_setting)
    per_model: dict[str, "Verdict"] = field(default_factory=dict)  # model -> its verdict
    run_note: str = ""  # what this run did differently (e.g. the sample instead of ILSVRC2012)

    @property
    def models_disagree(self) -> bool:
        """Whether the models measured give different verdicts (not-run ones aside)."""
        return len({v.status for v in self.per_model.values() if v.status != NOT_RUN}) > 1


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
        note=str(entry.get("note", "")).strip(), n_setting=entry.get("n_setting"),
        exact=bool(entry.get("exact", False)),
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
    low, high = _band(claim) if op in ("approx", "between") else (None, None)
    if low is not None:
        return low <= float(ours) <= high
    bound = float(claim._bound())
    return {">=": ours >= bound, ">": ours > bound, "<=": ours <= bound, "<": ours < bound}[op]


def _band(claim: Claim) -> tuple[float, float]:
    if claim.op == "approx":
        centre, tolerance = float(claim.paper_value), float(claim.tolerance)
        return centre - tolerance, centre + tolerance
    low, high = claim.threshold
    return float(low), float(high)


def evaluate(claim: Claim, root: str | os.PathLike = ".") -> Verdict:
    """The claim's verdict on the value its stage wrote; where the stage measured the claim on
    several models (``per_model`` beside the value: the ImageNet claims on every offline
    architecture), each model's verdict too, in ``Verdict.per_model``; a ``note`` beside the
    value (what this run did differently, e.g. the ImageNet sample instead of ILSVRC2012
    validation) becomes ``Verdict.run_note``."""
    path = Path(root) / claim.ours_file
    if not path.is_file():
        return Verdict(claim, NOT_RUN, reason=f"{claim.ours_file} was not produced in this run")
    metrics = json.loads(path.read_text())
    verdict = _evaluate_in(claim, metrics, claim.ours_key)
    parent, _, leaf = claim.ours_key.rpartition(".")
    try:
        node = lookup(metrics, parent) if parent else metrics
    except (KeyError, IndexError, ValueError, TypeError):
        node = None
    per_model = node.get("per_model") if isinstance(node, dict) else None
    if isinstance(node, dict) and node.get("note"):
        verdict.run_note = str(node["note"])
    if isinstance(per_model, dict):
        verdict.per_model = {model: _evaluate_in(claim, entry, leaf)
                             for model, entry in per_model.items()}
    return verdict


def _evaluate_in(claim: Claim, metrics: Any, key: str) -> "Verdict":
    try:
        ours = lookup(metrics, key)
    except (KeyError, IndexError, ValueError, TypeError):
        reason = _stated_reason(metrics, key)
        return Verdict(claim, NOT_RUN, reason=reason or f"{claim.ours_file} has no {key!r}")
    if ours is None or (isinstance(ours, float) and math.isnan(ours)):
        return Verdict(claim, NOT_RUN, ours, reason=_stated_reason(metrics, key)
                       or "the stage recorded no value")
    interval = _interval(metrics, key)
    status, n_needed, reason = judge(claim, ours, interval)
    return Verdict(claim, status, ours, reason=reason, interval=interval, n_needed=n_needed)


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


def _interval(metrics: Any, dotted: str) -> dict:
    """The ``<leaf>_ci`` mapping the stage wrote beside the value (empty when none)."""
    parent, _, leaf = dotted.rpartition(".")
    try:
        node = lookup(metrics, parent) if parent else metrics
        found = node.get(f"{leaf}_ci") if isinstance(node, dict) else None
    except (KeyError, IndexError, ValueError, TypeError):
        found = None
    return dict(found) if isinstance(found, dict) else {}


def judge(claim: Claim, value: Any, interval: dict | None = None) -> tuple[str, int | None, str]:
    """(verdict, n needed, reason) of ``claim`` for a measured ``value`` and its interval
    (``VERDICT_RULE``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_RUN, None, "the stage recorded no value"
    interval = interval or {}
    method = interval.get("method")
    if claim.op == "==" or claim.exact or method == "exact" or not isinstance(value, (int, float)):
        return (REPRODUCED if _holds(claim.op, value, claim) else NOT_REPRODUCED), None, ""
    if method is None:
        return INCONCLUSIVE, None, "no interval was recorded for this value"
    low, high, n = interval.get("low"), interval.get("high"), interval.get("n")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE, None, f"n = {n}: no interval can be formed"
    value = float(value)
    if claim.op in ("approx", "between"):
        band_low, band_high = _band(claim)
        if band_low <= low and high <= band_high:
            return REPRODUCED, None, ""
        if high < band_low or low > band_high:
            return NOT_REPRODUCED, None, ""
        inside = band_low <= value <= band_high
        distance = (min(value - band_low, band_high - value) if inside
                    else min(abs(value - band_low), abs(value - band_high)))
    else:
        bound = float(claim._bound())
        claimed_side = _holds(claim.op, low, claim) and _holds(claim.op, high, claim)
        other_side = not _holds(claim.op, low, claim) and not _holds(claim.op, high, claim)
        if claimed_side:
            return REPRODUCED, None, ""
        if other_side:
            return NOT_REPRODUCED, None, ""
        distance = abs(value - bound)
    return INCONCLUSIVE, needed_units(value, low, high, n, distance), "the interval straddles the bound"


def needed_units(value: float, low: float, high: float, n: int | None,
                 distance: float) -> int | None:
    """Units at which the interval's half-width (∝ 1/√n, from the observed one) would fall
    below ``distance``; None when it cannot (the estimate sits on the bound, or n unknown)."""
    half_width = (high - low) / 2
    if not n or distance <= 0 or half_width <= 0:
        return None
    return max(n + 1, math.ceil(n * (half_width / distance) ** 2))


def point_verdict(claim: Claim, value: Any) -> str:
    """The verdict of a value on its own, ignoring its uncertainty (for tables that show how a
    point estimate moves with an option, e.g. the Sanity Checks option study)."""
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

"""The replication report: each paper claim beside the value this repository measured."""

from __future__ import annotations

import os
import logging
from collections import Counter
from pathlib import Path

from replication.claims import (INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN, PAPERS, REPRODUCED,
                                VERDICT_RULE, Verdict, evaluate, format_value, load_claims)
from replication.config import get
from replication.fileio import atomic_write_text, write_json

log = logging.getLogger("replication")

MARK = {REPRODUCED: "reproduced", NOT_REPRODUCED: "**not reproduced**",
        INCONCLUSIVE: "*inconclusive*", NOT_RUN: "not run"}


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _where(verdict: Verdict, report_dir: Path, root: Path) -> str:
    claim = verdict.claim
    if claim.figure_file and (root / claim.figure_file).exists():
        link = os.path.relpath(root / claim.figure_file, report_dir)
        return f"[{_cell(claim.where)}]({link})"
    return _cell(claim.where)


def _ours(verdict: Verdict) -> str:
    if verdict.status == NOT_RUN:
        return f"— ({_cell(verdict.reason)})"
    return format_value(verdict.our_value)


def _interval(verdict: Verdict) -> tuple[str, str]:
    """The 95% CI and n cells."""
    interval = verdict.interval
    if verdict.status == NOT_RUN:
        return "", ""
    if verdict.claim.exact or interval.get("method") == "exact":
        return "—", "exact"
    if not interval:
        return "none", "—"
    low, high, n = interval.get("low"), interval.get("high"), interval.get("n")
    ci = (f"[{format_value(low)}, {format_value(high)}]" if low is not None and high is not None
          else "none")
    unit = interval.get("unit") or ""
    return ci, f"{n:,} {unit}".strip() if n is not None else "—"


def _verdict(verdict: Verdict) -> str:
    text = MARK[verdict.status]
    if verdict.status == INCONCLUSIVE:
        if verdict.n_needed:
            text += f" (n needed ≈ {verdict.n_needed:,}"
            text += f"; paper profile: {verdict.paper_n:,})" if verdict.paper_n else ")"
        elif verdict.reason:
            text += f" ({_cell(verdict.reason)})"
    return text


def counts_line(verdicts: list[Verdict]) -> str:
    counts = Counter(v.status for v in verdicts)
    return (f"{len(verdicts)} claims: {counts[REPRODUCED]} reproduced, {counts[NOT_REPRODUCED]} "
            f"not reproduced, {counts[INCONCLUSIVE]} inconclusive, {counts[NOT_RUN]} not run")


def render_markdown(verdicts: list[Verdict], profile: str, report_dir: Path, root: Path,
                    stand_in: bool = False) -> str:
    lines = ["# Replication report", ""]
    if stand_in:
        lines += [f"> **{STAND_IN_BANNER}**", ""]
    lines += [
        f"Written by the `report` stage of `dvc repro` (profile **{profile}**). Every value in the "
        "*Ours* column is read from a metrics file the pipeline wrote; the claims, with the "
        "paper's values and the tolerances, are in [`claims/`](../claims/).",
        "",
        VERDICT_RULE,
        "",
        f"**{counts_line(verdicts)}.**",
        "",
    ]
    lines += [f"- {PAPERS[paper]}: {counts_line([v for v in verdicts if v.claim.paper == paper])}"
              for paper in PAPERS if any(v.claim.paper == paper for v in verdicts)]
    for paper, title in PAPERS.items():
        group = [v for v in verdicts if v.claim.paper == paper]
        if not group:
            continue
        lines += ["", f"## {title}", "", f"{counts_line(group)}.", "",
                  "| ID | Where | Claim | Paper | Ours | 95% CI | n | Test | Verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for v in group:
            c = v.claim
            ci, n = _interval(v)
            lines.append(" | ".join([
                f"| {c.id}", _where(v, report_dir, root), _cell(c.statement),
                format_value(c.paper_value), _ours(v), ci, n, _cell(c.describe_check()),
                f"{_verdict(v)} |",
            ]))
        lines += per_model_table([v for v in group if v.per_model])
        notes = [f"- **{v.claim.id}**: {_cell(v.claim.note)}" for v in group if v.claim.note]
        notes += [f"- **{v.claim.id}** (this run): {_cell(v.run_note)}" for v in group
                  if v.run_note]
        if notes:
            lines += ["", *notes]
    return "\n".join(lines) + "\n"


def _short(verdict: Verdict) -> str:
    """Value, interval and verdict in one cell."""
    if verdict.status == NOT_RUN:
        return f"not run ({_cell(verdict.reason)})" if verdict.reason else "not run"
    ci, _ = _interval(verdict)
    interval = f" {ci}" if ci not in ("—", "", "none") else ""
    return f"{format_value(verdict.our_value)}{interval}: {_verdict(verdict)}"


def per_model_table(verdicts: list[Verdict]) -> list[str]:
    """The claims measured on several architectures: one column each; ⚠ where they disagree."""
    if not verdicts:
        return []
    models = list(dict.fromkeys(m for v in verdicts for m in v.per_model))
    lines = ["", "Each claim measured on every architecture (value, 95% CI: verdict); "
                 "⚠ marks a claim whose verdict depends on the architecture.", "",
             "| ID | " + " | ".join(models) + " | |", "|---" * (len(models) + 2) + "|"]
    for v in verdicts:
        cells = [_short(v.per_model[m]) if m in v.per_model else "—" for m in models]
        lines.append(f"| {v.claim.id} | " + " | ".join(cells) +
                     f" | {'⚠' if v.models_disagree else ''} |")
    return lines


def _record(verdict: Verdict) -> dict:
    interval = verdict.interval
    record = {"id": verdict.claim.id, "paper": verdict.claim.paper, "status": verdict.status,
              "paper_value": verdict.claim.paper_value, "our_value": verdict.our_value,
              "ci_low": interval.get("low"), "ci_high": interval.get("high"),
              "n": interval.get("n"),
              "method": "exact" if verdict.claim.exact else interval.get("method")}
    if verdict.status == INCONCLUSIVE:
        record.update(n_needed=verdict.n_needed, paper_n=verdict.paper_n,
                      paper_n_reaches=(None if not (verdict.n_needed and verdict.paper_n)
                                       else verdict.paper_n >= verdict.n_needed))
    if verdict.reason:
        record["reason"] = verdict.reason
    if verdict.run_note:
        record["note"] = verdict.run_note
    if verdict.per_model:
        record["per_model"] = {model: {k: w for k, w in _record(v).items()
                                       if k not in ("id", "paper", "paper_value")}
                               for model, v in verdict.per_model.items()}
        record["models_disagree"] = verdict.models_disagree
    return record


STAND_IN_BANNER = ("stand-in weights: pretrained weights this machine could not obtain were "
                   "replaced by seeded random ones; every number below is meaningless (a dry run)")


def _any_stand_in(metrics: Path) -> bool:
    """Whether any metrics file was written by a stage that ran on stand-in weights."""
    return any('"stand_in_weights"' in p.read_text() for p in metrics.rglob("*.json"))


def write_report(claims_dir: str | os.PathLike, markdown: str | os.PathLike,
                 json_path: str | os.PathLike, profile: str, root: str | os.PathLike = ".",
                 paper_params: dict | None = None, stand_in: bool = False) -> list[Verdict]:
    """Judge every claim and write the report; ``paper_params`` (the paper profile's effective
    settings) gives each inconclusive claim the n the paper profile would use."""
    root, markdown = Path(root), Path(markdown)
    verdicts = [evaluate(c, root) for c in load_claims(claims_dir)]
    for verdict in verdicts:
        key = verdict.claim.n_setting
        if paper_params is not None and key:
            value = get(paper_params, key)
            verdict.paper_n = value if isinstance(value, int) else None
    stand_in = stand_in or _any_stand_in(root / "metrics")
    atomic_write_text(markdown, render_markdown(verdicts, profile, markdown.parent.resolve(),
                                                root.resolve(), stand_in))
    write_json(json_path, [_record(v) for v in verdicts])
    return verdicts


def run_stage(ctx) -> None:
    """The `report` stage: every claim's verdict, as Markdown and JSON. It reads params.yaml
    whole: the active profile, and the paper profile's sample sizes for the n-needed column."""
    from replication.config import load_params

    params = load_params(ctx.input("params"))
    verdicts = write_report(ctx.input("claims"), ctx.output("markdown"), ctx.output("json"),
                            params["profile"],
                            paper_params=load_params(ctx.input("params"), "paper"),
                            stand_in=params["stand_in_weights"])
    log.info("report: %s -> %s", counts_line(verdicts), ctx.output("markdown"))

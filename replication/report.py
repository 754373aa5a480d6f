"""The replication report: each paper claim beside the value this repository measured."""

from __future__ import annotations

import os
import logging
from collections import Counter
from pathlib import Path

from replication.claims import (NOT_REPRODUCED, NOT_RUN, PAPERS, REPRODUCED, Verdict, evaluate,
                                format_value, load_claims)
from replication.fileio import atomic_write_text, write_json

log = logging.getLogger("replication")

MARK = {REPRODUCED: "reproduced", NOT_REPRODUCED: "**not reproduced**", NOT_RUN: "not run"}


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


def render_markdown(verdicts: list[Verdict], profile: str, report_dir: Path, root: Path) -> str:
    counts = Counter(v.status for v in verdicts)
    lines = [
        "# Replication report",
        "",
        f"Written by the `report` stage of `dvc repro` (profile **{profile}**). Every value in the "
        "*Ours* column is read from a metrics file the pipeline wrote; the claims, with the "
        "paper's values and the tolerances, are in [`claims/`](../claims/).",
        "",
        f"**{len(verdicts)} claims: {counts[REPRODUCED]} reproduced, "
        f"{counts[NOT_REPRODUCED]} not reproduced, {counts[NOT_RUN]} not run.**",
    ]
    for paper, title in PAPERS.items():
        group = [v for v in verdicts if v.claim.paper == paper]
        if not group:
            continue
        lines += ["", f"## {title}", "",
                  "| ID | Where | Claim | Paper | Ours | Test | Verdict |",
                  "|---|---|---|---|---|---|---|"]
        for v in group:
            c = v.claim
            lines.append(" | ".join([
                f"| {c.id}", _where(v, report_dir, root), _cell(c.statement),
                format_value(c.paper_value), _ours(v), _cell(c.describe_check()),
                f"{MARK[v.status]} |",
            ]))
        notes = [f"- **{v.claim.id}**: {_cell(v.claim.note)}" for v in group if v.claim.note]
        if notes:
            lines += ["", *notes]
    return "\n".join(lines) + "\n"


def write_report(claims_dir: str | os.PathLike, markdown: str | os.PathLike,
                 json_path: str | os.PathLike, profile: str,
                 root: str | os.PathLike = ".") -> list[Verdict]:
    root, markdown = Path(root), Path(markdown)
    verdicts = [evaluate(c, root) for c in load_claims(claims_dir)]
    atomic_write_text(markdown, render_markdown(verdicts, profile, markdown.parent.resolve(),
                                                root.resolve()))
    write_json(json_path, [
        {"id": v.claim.id, "paper": v.claim.paper, "status": v.status,
         "paper_value": v.claim.paper_value, "our_value": v.our_value}
        for v in verdicts
    ])
    return verdicts


def run_stage(ctx) -> None:
    """The `report` stage: every claim's verdict, as Markdown and JSON."""
    verdicts = write_report(ctx.input("claims"), ctx.output("markdown"), ctx.output("json"),
                            ctx.settings("profile"))
    log.info("report: %d claims -> %s", len(verdicts), ctx.output("markdown"))

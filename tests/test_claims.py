"""Claims: verdicts computed from metrics files, clear errors for malformed claims, the report."""

from __future__ import annotations

import json
import textwrap

import pytest

from replication.claims import (INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN, REPRODUCED, Claim,
                                evaluate, judge, load_claims)
from replication.errors import ConfigError
from replication.report import write_report

# No float result of torch or numpy kernels is compared here: .ci/numeric-isa skips this file.
pytestmark = pytest.mark.isa_independent


def _write(tmp_path, claims_yaml: str, metrics: dict | None = None):
    (tmp_path / "claims").mkdir(exist_ok=True)
    (tmp_path / "claims" / "sanity_checks.yaml").write_text(textwrap.dedent(claims_yaml))
    if metrics is not None:
        (tmp_path / "metrics").mkdir(exist_ok=True)
        (tmp_path / "metrics" / "m.json").write_text(json.dumps(metrics))


CLAIMS = """
claims:
  - id: C1
    where: Fig. 6
    statement: IG ABS similarity is about 0.99
    exact: true
    paper_value: 0.99
    check: {op: approx, tolerance: 0.1}
    ours: {file: metrics/m.json, key: ig.abs}
  - id: C2
    statement: Gradient ABS below 0.3
    exact: true
    check: {op: "<", threshold: 0.3}
    ours: {file: metrics/m.json, key: grad.abs}
  - id: C3
    statement: test accuracy at chance
    exact: true
    check: {op: between, threshold: [0.075, 0.125]}
    ours: {file: metrics/m.json, key: accs.1}
  - id: C4
    statement: a stage that has not run
    paper_value: 1
    check: {op: "=="}
    ours: {file: metrics/absent.json, key: x}
  - id: C5
    statement: a key the stage did not write
    paper_value: 1
    check: {op: ">="}
    ours: {file: metrics/m.json, key: nothing.here}
"""


def test_verdicts_follow_the_metrics(tmp_path):
    _write(tmp_path, CLAIMS, {"ig": {"abs": 0.95}, "grad": {"abs": 0.31}, "accs": [0.99, 0.1]})
    verdicts = {c.id: evaluate(c, tmp_path) for c in load_claims(tmp_path / "claims")}
    assert verdicts["C1"].status == REPRODUCED and verdicts["C1"].our_value == 0.95
    assert verdicts["C2"].status == NOT_REPRODUCED
    assert verdicts["C3"].status == REPRODUCED
    assert verdicts["C4"].status == NOT_RUN and "not produced" in verdicts["C4"].reason
    assert verdicts["C5"].status == NOT_RUN and "nothing.here" in verdicts["C5"].reason


def test_a_missing_value_reports_the_reason_its_stage_wrote(tmp_path):
    reason = "needs ILSVRC2012 boxes; not available offline"
    _write(tmp_path, CLAIMS, {"ig": {"abs": None, "reason": reason},
                              "nothing": {"value": None, "detail": {}, "reason": reason}})
    verdicts = {c.id: evaluate(c, tmp_path) for c in load_claims(tmp_path / "claims")}
    assert verdicts["C1"].status == NOT_RUN and verdicts["C1"].reason == reason
    assert verdicts["C5"].status == NOT_RUN and verdicts["C5"].reason == reason  # key absent


def test_the_same_claim_fails_when_the_metric_moves(tmp_path):
    _write(tmp_path, CLAIMS, {"ig": {"abs": 0.85}, "grad": {"abs": 0.1}, "accs": [0.9, 0.2]})
    verdicts = {c.id: evaluate(c, tmp_path) for c in load_claims(tmp_path / "claims")}
    assert [verdicts[i].status for i in ("C1", "C2", "C3")] == [
        NOT_REPRODUCED, REPRODUCED, NOT_REPRODUCED]


@pytest.mark.parametrize("entry, message", [
    ("{id: X, statement: s, ours: {file: f}, check: {op: '=='}, paper_value: 1}", "'file' and 'key'"),
    ("{id: X, statement: s, ours: {file: f, key: k}, check: {op: '~'}}", "check.op '~'"),
    ("{id: X, statement: s, ours: {file: f, key: k}, check: {op: approx}, paper_value: 1}", "tolerance"),
    ("{id: X, statement: s, ours: {file: f, key: k}, check: {op: between, threshold: 1}}", "low, high"),
    ("{id: X, statement: s, ours: {file: f, key: k}, check: {op: '>='}}", "paper_value or"),
    ("{id: X, statement: s, check: {op: '=='}}", "lacks 'ours'"),
    ("{id: X, paper: nature, statement: s, ours: {file: f, key: k}, check: {op: '=='}, paper_value: 1}",
     "paper 'nature'"),
])
def test_malformed_claims_are_rejected_with_the_reason(tmp_path, entry, message):
    _write(tmp_path, f"claims:\n  - {entry}\n")
    with pytest.raises(ConfigError, match=message):
        load_claims(tmp_path / "claims")


def test_duplicate_ids_are_rejected(tmp_path):
    entry = "{id: X, statement: s, ours: {file: f, key: k}, check: {op: '=='}, paper_value: 1}"
    _write(tmp_path, f"claims:\n  - {entry}\n  - {entry}\n")
    with pytest.raises(ConfigError, match="repeated: \\['X'\\]"):
        load_claims(tmp_path / "claims")


def test_report_puts_paper_and_measured_values_side_by_side(tmp_path):
    _write(tmp_path, CLAIMS, {"ig": {"abs": 0.95}, "grad": {"abs": 0.31}, "accs": [0.99, 0.1]})
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "fig6.png").write_bytes(b"png")
    text = (tmp_path / "claims" / "sanity_checks.yaml").read_text()
    text = text.replace("    where: Fig. 6\n", "    where: Fig. 6\n    figure_file: figures/fig6.png\n")
    (tmp_path / "claims" / "sanity_checks.yaml").write_text(text)
    write_report(tmp_path / "claims", tmp_path / "reports" / "replication.md",
                 tmp_path / "reports" / "claims.json", "smoke", root=tmp_path)
    markdown = (tmp_path / "reports" / "replication.md").read_text()
    assert "profile **smoke**" in markdown
    assert "5 claims: 2 reproduced, 1 not reproduced, 0 inconclusive, 2 not run" in markdown
    assert ("| C1 | [Fig. 6](../figures/fig6.png) | IG ABS similarity is about 0.99 | 0.99 | 0.95 "
            "| — | exact |") in markdown
    assert "## Sanity Checks for Saliency Maps" in markdown
    records = json.loads((tmp_path / "reports" / "claims.json").read_text())
    assert records[0] == {"id": "C1", "paper": "sanity_checks", "status": "reproduced",
                          "paper_value": 0.99, "our_value": 0.95, "ci_low": None,
                          "ci_high": None, "n": None, "method": "exact"}
    assert [r["status"] for r in records][3:] == ["not run", "not run"]


def test_a_note_beside_a_value_is_shown_in_the_report(tmp_path):
    note = "ILSVRC2012 validation archives were not supplied: the 1000-image sample instead"
    _write(tmp_path, CLAIMS, {"ig": {"abs": 0.95, "note": note}, "grad": {"abs": 0.31},
                              "accs": [0.99, 0.1]})
    verdicts = {c.id: evaluate(c, tmp_path) for c in load_claims(tmp_path / "claims")}
    assert verdicts["C1"].run_note == note and verdicts["C2"].run_note == ""
    write_report(tmp_path / "claims", tmp_path / "reports" / "replication.md",
                 tmp_path / "reports" / "claims.json", "paper", root=tmp_path)
    markdown = (tmp_path / "reports" / "replication.md").read_text()
    assert f"- **C1** (this run): {note}" in markdown
    records = json.loads((tmp_path / "reports" / "claims.json").read_text())
    assert records[0]["note"] == note and "note" not in records[1]


def test_repository_claims_are_well_formed():
    from conftest import ROOT

    claims = load_claims(ROOT / "claims")
    assert claims and all(c.ours_file.startswith("metrics/") for c in claims)


# Sampled claims whose n no setting moves: the 10,000 test images of each accuracy, and
# identities computed on one random model.
FIXED_N = {"M1", "M2", "M7", "M8", "M9", "M10", "C17", "C18-locality"}
# Settings whose null means "all the images" (M3-M6: the 55,000 permuted-label images).
NULL_MEANS_ALL = {"train.random_labels.subset"}


def test_every_sampled_claim_names_the_setting_of_its_n():
    """So an inconclusive verdict can say whether the paper profile's n would decide it."""
    import yaml

    from conftest import ROOT
    from replication.config import get, load_params

    paper = load_params(ROOT / "params.yaml", "paper")
    for path in sorted((ROOT / "claims").glob("*.yaml")):
        for claim in yaml.safe_load(path.read_text())["claims"]:
            if not claim.get("exact") and claim["id"] not in FIXED_N:
                assert "n_setting" in claim, f"{path.name}: {claim['id']}"
            if "n_setting" in claim:
                value = get(paper, claim["n_setting"])
                null_is_all = claim["n_setting"] in NULL_MEANS_ALL
                assert isinstance(value, int) or (value is None and null_is_all), claim["id"]


def _claim(op: str, **fields) -> Claim:
    return Claim(id="X", paper="sanity_checks", where="", statement="", ours_file="m.json",
                 ours_key="v", op=op, **fields)


def _ci(low, high, n=20):
    return {"low": low, "high": high, "n": n, "method": "bootstrap", "unit": "images"}


@pytest.mark.parametrize("op, fields, value, interval, expected", [
    (">", {"threshold": 0.2}, 0.3, _ci(0.25, 0.35), REPRODUCED),
    (">", {"threshold": 0.2}, 0.1, _ci(0.05, 0.17), NOT_REPRODUCED),    # C2 as measured
    (">", {"threshold": 0.2}, 0.22, _ci(0.15, 0.3), INCONCLUSIVE),
    (">=", {"threshold": 0.7}, 0.648, _ci(0.56, 0.73), INCONCLUSIVE),   # C4 as measured
    (">=", {"threshold": 0.7}, 0.75, _ci(0.7, 0.8), REPRODUCED),        # touching is on the side
    ("<", {"threshold": 0.5}, 0.647, _ci(0.47, 0.79), INCONCLUSIVE),    # C5 as measured
    ("<", {"threshold": 0.5}, 0.3, _ci(0.2, 0.45), REPRODUCED),
    ("<", {"threshold": 0.5}, 0.7, _ci(0.5, 0.8), NOT_REPRODUCED),      # 0.5 is not < 0.5
    ("<=", {"threshold": 0.5}, 0.6, _ci(0.51, 0.7), NOT_REPRODUCED),
    ("approx", {"paper_value": 0.0, "tolerance": 0.04}, 0.022, _ci(-0.01, 0.03), REPRODUCED),
    ("approx", {"paper_value": 0.0, "tolerance": 0.04}, 0.022, _ci(0.0, 0.06), INCONCLUSIVE),
    ("approx", {"paper_value": 0.0, "tolerance": 0.04}, 0.2, _ci(0.1, 0.3), NOT_REPRODUCED),
    ("between", {"threshold": [0.075, 0.125]}, 0.1, _ci(0.09, 0.11), REPRODUCED),
    ("between", {"threshold": [0.075, 0.125]}, 0.1, _ci(0.07, 0.11), INCONCLUSIVE),
])
def test_the_verdict_rule_on_constructed_intervals(op, fields, value, interval, expected):
    status, n_needed, _ = judge(_claim(op, **fields), value, interval)
    assert status == expected
    assert (n_needed is not None) == (expected == INCONCLUSIVE)


def test_n_needed_shrinks_the_half_width_below_the_distance_to_the_bound():
    status, n_needed, _ = judge(_claim(">=", threshold=0.7), 0.648, _ci(0.56, 0.73, n=12))
    # half-width 0.085 must fall below |0.648 - 0.7| = 0.052: n = 12 * (0.085 / 0.052)^2
    assert status == INCONCLUSIVE and n_needed == 33


def test_a_sampled_value_with_one_unit_is_inconclusive_and_says_why():
    status, n_needed, reason = judge(_claim(">", threshold=0.0), 0.3,
                                     {"low": None, "high": None, "n": 1, "method": "bootstrap"})
    assert status == INCONCLUSIVE and n_needed is None and "n = 1" in reason
    status, _, reason = judge(_claim(">", threshold=0.0), 0.3, {})
    assert status == INCONCLUSIVE and "no interval" in reason


def test_exact_claims_and_equality_ignore_intervals():
    assert judge(_claim("==", paper_value=60000), 60000, {})[0] == REPRODUCED
    assert judge(_claim("<", threshold=1e-6, exact=True), 1e-9, {})[0] == REPRODUCED
    assert judge(_claim("<", threshold=1e-6, exact=True), 1e-3, {})[0] == NOT_REPRODUCED


def test_the_interval_is_read_from_beside_the_value(tmp_path):
    _write(tmp_path, """
    claims:
      - id: C9
        statement: s
        check: {op: ">=", threshold: 0.7}
        ours: {file: metrics/m.json, key: C4.value}
    """, {"C4": {"value": 0.648, "value_ci": _ci(0.56, 0.73, n=12)}})
    (claim,) = load_claims(tmp_path / "claims")
    verdict = evaluate(claim, tmp_path)
    assert verdict.status == INCONCLUSIVE and verdict.interval["n"] == 12
    assert verdict.n_needed == 33


def test_a_claim_measured_on_several_architectures_gets_a_column_each(tmp_path):
    _write(tmp_path, """
    claims:
      - id: C4
        statement: s
        check: {op: ">=", threshold: 0.7}
        ours: {file: metrics/m.json, key: C4.value}
    """, {"C4": {"value": 0.75, "value_ci": _ci(0.71, 0.8),
                 "per_model": {"lite0": {"value": 0.75, "value_ci": _ci(0.71, 0.8)},
                               "lite1": {"value": 0.5, "value_ci": _ci(0.4, 0.6)},
                               "lite2": {"reason": "not measured in smoke"}}}})
    verdicts = write_report(tmp_path / "claims", tmp_path / "r.md", tmp_path / "r.json", "quick",
                            root=tmp_path)
    (verdict,) = verdicts
    assert verdict.status == REPRODUCED
    assert {m: v.status for m, v in verdict.per_model.items()} == {
        "lite0": REPRODUCED, "lite1": NOT_REPRODUCED, "lite2": NOT_RUN}
    assert verdict.models_disagree
    markdown = (tmp_path / "r.md").read_text()
    assert "| ID | lite0 | lite1 | lite2 | |" in markdown
    assert "| C4 | 0.75 [0.71, 0.8]: reproduced | 0.5 [0.4, 0.6]: **not reproduced** | " \
           "not run (not measured in smoke) | ⚠ |" in markdown
    record = json.loads((tmp_path / "r.json").read_text())[0]
    assert record["models_disagree"] and record["per_model"]["lite1"]["status"] == NOT_REPRODUCED


def test_a_run_on_stand_in_weights_says_so_at_the_top_of_the_report(tmp_path):
    _write(tmp_path, CLAIMS, {"stand_in_weights": "stand-in weights: …", "ig": {"abs": 0.95},
                              "grad": {"abs": 0.31}, "accs": [0.99, 0.1]})
    write_report(tmp_path / "claims", tmp_path / "r.md", tmp_path / "r.json", "paper",
                 root=tmp_path)
    first = (tmp_path / "r.md").read_text().splitlines()[2]
    assert first.startswith("> **stand-in weights") and "meaningless" in first


def test_the_claim_values_of_a_stand_in_run_are_stamped(tmp_path):
    """Every paper's claims stage reads `stand_in_weights` and, in a dry run, stamps its
    metrics as the figures and the report are (it loads no model to learn it from)."""
    from pathlib import Path

    from conftest import stage_context
    from replication.pipeline import get_stage, stages

    claim_stages = [s for s in stages().values()
                    if any(Path(o.path).parts[0] == "metrics" and Path(o.path).name == "claims.json"
                           for o in s.outs.values())]
    assert {s.name for s in claim_stages} == {"sanity_claims", "egc_claims", "parchgrad_claims"}
    assert all(s.judges_models and "stand_in_weights" in s.reads for s in claim_stages)
    stage = get_stage("egc_claims")  # the one that runs on no tables at all
    for stand_in in (True, False):
        out = tmp_path / str(stand_in) / "claims.json"
        ctx = stage_context("egc_claims", stand_in_weights=stand_in, outputs={"claims": out},
                            inputs={k: tmp_path / "none" / Path(v).name
                                    for k, v in stage.deps.items()})
        stage.function()(ctx)
        ctx.done()
        assert ("stand_in_weights" in json.loads(out.read_text())) is stand_in

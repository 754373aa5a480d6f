"""``python -m replication <command>``: one command per pipeline stage, and the tools around them.

The stage commands are generated from the stage declarations (``replication.pipeline``): each
reads its settings file and the paths it is given, calls one library function and writes its
outputs atomically. ``params`` prints the settings a stage runs with; ``dvc-yaml`` writes the
``dvc.yaml`` those declarations imply.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from replication.errors import ReplicationError

log = logging.getLogger("replication")


def cmd_params(args: argparse.Namespace) -> None:
    """Print the effective settings (the whole profile, or what one stage reads)."""
    import yaml

    from replication import config
    from replication.pipeline import extract, get_stage

    if args.check:
        config.check_all_profiles(args.params)
        print(f"{args.params}: every profile is valid")
        return
    params = config.load_params(args.params, args.profile)
    if args.stage:
        params = extract(params, get_stage(args.stage).reads)
    if args.model:
        params = _for_model(params, args.model)
    print(yaml.safe_dump(params, sort_keys=False, allow_unicode=True, width=100), end="")


def _for_model(tree: dict, model: str, path: tuple[str, ...] = ()) -> dict:
    """Each per-model section replaced by ``model``'s entry (what that model runs with)."""
    from replication.config import MODELS
    from replication.pipeline import is_per_model

    result = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            if is_per_model([*path, key]) and MODELS in value:
                own = value[MODELS].get(model, {})
                value = {**{k: v for k, v in value.items() if k != MODELS}, **own}
            value = _for_model(value, model, (*path, key))
        result[key] = value
    return result


def cmd_dvc_yaml(args: argparse.Namespace) -> None:
    from replication.fileio import atomic_write_text
    from replication.pipeline import render_dvc_yaml

    text = render_dvc_yaml()
    if args.check:
        current = Path(args.out).read_text() if Path(args.out).is_file() else ""
        if current != text:
            raise ReplicationError(f"{args.out} differs from the stage declarations: run "
                                   "`python -m replication dvc-yaml` and commit it")
        print(f"{args.out} matches the stage declarations")
        return
    atomic_write_text(args.out, text)


def cmd_timings(args: argparse.Namespace) -> None:
    from replication import timings

    records = timings.read_timings(args.folder)
    table = timings.markdown(records, args.wall_seconds)
    print(table, end="")
    if args.wall_seconds is not None:
        timings.write_results(records, args.wall_seconds, args.out)
        if args.update_readme:
            timings.update_readme(table)


def cmd_cost(args: argparse.Namespace) -> None:
    from replication import cost

    print(cost.run(args.params, args.profile, Path(args.throughput) if args.throughput else None,
                   args.tflops), end="")


def build_parser() -> argparse.ArgumentParser:
    from replication.pipeline import add_stage_commands

    parser = argparse.ArgumentParser(prog="python -m replication", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    params = commands.add_parser("params", help="print the effective settings")
    params.add_argument("--params", default="params.yaml", help="parameter file")
    params.add_argument("--profile", help="smoke | quick | paper (default: the file's profile)")
    params.add_argument("--stage", help="only what this stage reads")
    params.add_argument("--model", help="per-model sections resolved for this model")
    params.add_argument("--check", action="store_true",
                        help="validate every profile and print nothing else")
    params.set_defaults(run=cmd_params)

    dvc = commands.add_parser("dvc-yaml", help="write dvc.yaml from the stage declarations")
    dvc.add_argument("--out", default="dvc.yaml")
    dvc.add_argument("--check", action="store_true", help="only check that it is up to date")
    dvc.set_defaults(run=cmd_dvc_yaml)

    cost = commands.add_parser("cost", help="the model passes each stage's settings imply, and "
                                           "an estimate of the time")
    cost.add_argument("--params", default="params.yaml")
    cost.add_argument("--profile", help="smoke | quick | paper (default: the file's profile)")
    cost.add_argument("--throughput", help="measured seconds per pass per model (JSON, "
                                           "benchmarks/results/throughput-*.json)")
    cost.add_argument("--tflops", type=float, default=50.0,
                      help="assumed sustained TFLOP/s without a measurement (default 50)")
    cost.set_defaults(run=cmd_cost)

    timing = commands.add_parser("timings", help="where the pipeline's time went, per stage")
    timing.add_argument("--folder", default="timings")
    timing.add_argument("--wall-seconds", type=float,
                        help="the measured wall time of `make reproduce`")
    timing.add_argument("--out", default="benchmarks/results/pipeline.json")
    timing.add_argument("--update-readme", action="store_true")
    timing.set_defaults(run=cmd_timings)

    add_stage_commands(commands)
    return parser


def main(argv: list[str] | None = None, started: float | None = None) -> int:
    from replication.pipeline import Interrupted, install_signal_handlers, run_stage

    install_signal_handlers()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("lightning.pytorch", "lightning.fabric", "fontTools"):  # banners, per-call logs
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        args = build_parser().parse_args(argv)
        if hasattr(args, "stage") and not hasattr(args, "run"):
            run_stage(args.stage, args, started=started)
        else:
            args.run(args)
    except ReplicationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except Interrupted as interrupted:
        print(f"interrupted by {interrupted}: stopped; no output of this run was kept",
              file=sys.stderr)
        return 128 + interrupted.signum
    return 0

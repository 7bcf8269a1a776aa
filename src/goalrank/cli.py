"""The one entry point: ``goalrank <stage> ...``, one subcommand per pipeline stage.

Handlers import their stage lazily so that ``goalrank --help`` is instant. Every GoalRankError
becomes one ``error: ...`` line on stderr and exit code 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from goalrank.errors import GoalRankError

Handler = Callable[[argparse.Namespace], None]


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with config fields")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config field (dotted for nested fields); repeatable",
    )


def _cmd_simulate(args: argparse.Namespace) -> None:
    from goalrank.config import load_config
    from goalrank.simulate.simulator import SimConfig, simulate

    config = load_config(SimConfig, args.config, args.overrides)
    out = simulate(config, args.out, overwrite=args.overwrite)
    print(f"simulated logs written to {out}")


def _cmd_prepare(args: argparse.Namespace) -> None:
    from goalrank.config import load_config
    from goalrank.data.prepare import PrepareConfig, format_stats, prepare

    overrides = [f"source={args.source}", f"input={args.input}", *args.overrides]
    config = load_config(PrepareConfig, args.config, overrides)
    dataset = prepare(config, args.out, overwrite=args.overwrite)
    print(format_stats(dataset.manifest))
    print(f"prepared dataset written to {dataset.root}")


def _cmd_stats(args: argparse.Namespace) -> None:
    from goalrank.data.prepare import format_stats
    from goalrank.data.storage import PreparedDataset

    print(format_stats(PreparedDataset(args.dataset, verify=not args.no_verify).manifest))


def _cmd_bench_prepare(args: argparse.Namespace) -> None:
    from goalrank.data.bench import bench_prepare

    print(bench_prepare(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="goalrank",
        description="GoalRank: group-relative optimisation of a generator-only ranker.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "simulate", help="generate logs from the ground-truth user-response simulator",
        description="Generate users, items and exposure logs with feedback drawn from a known "
        "list-wise user-response model. Writes interactions.parquet (columns user,item,"
        "timestamp,label, the generic format `prepare` reads) and the simulator's world, "
        "which gives the exact expected reward of any list.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_simulate)

    p = sub.add_parser(
        "prepare", help="turn a raw interaction log into list-wise ranking samples",
        description="Load a log, filter it k-core, cut each user's history into exposed lists "
        "of L items, split temporally, train the MF retriever on training interactions and "
        "build N candidates per list. Writes a prepared-dataset folder atomically.",
    )
    p.add_argument(
        "--source", required=True,
        choices=["movielens", "amazon", "kuairand", "generic", "simulator"],
        help="log format: movielens (ratings.dat '::', u.data tab, ratings.csv), amazon "
        "(CSV/JSON-lines), kuairand (short-video log), generic (CSV/Parquet user,item,"
        "timestamp,label), simulator (a `goalrank simulate` folder)",
    )
    p.add_argument("--input", required=True, help="log file (or simulator folder)")
    p.add_argument("--out", type=Path, required=True, help="prepared-dataset folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_prepare)

    p = sub.add_parser(
        "stats", help="print the statistics table of a prepared dataset",
        description="Print users, items, interactions and lists per split (paper App. D.1).",
    )
    p.add_argument("dataset", type=Path, help="prepared-dataset folder")
    p.add_argument("--no-verify", action="store_true", help="skip checksum verification")
    p.set_defaults(handler=_cmd_stats)

    p = sub.add_parser(
        "bench", help="performance benchmarks (wall time, peak memory, step time)",
        description="Performance targets live here, never in unit tests.",
    )
    bench = p.add_subparsers(dest="bench", required=True, metavar="WHAT")
    b = bench.add_parser("prepare", help="wall time and peak memory of `prepare` on several logs")
    b.add_argument("--ml100k", type=Path, help="ML-100K ratings file to include")
    b.add_argument("--sizes", default="1000000,10000000", help="simulated log sizes (interactions)")
    b.add_argument("--workdir", type=Path, default=Path("runs/bench-prepare"), help="scratch folder")
    b.set_defaults(handler=_cmd_bench_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except GoalRankError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

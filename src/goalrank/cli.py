"""The one entry point: ``goalrank <stage> ...``, one subcommand per pipeline stage.

Handlers import their stage lazily so that ``goalrank --help`` is instant. Every GoalRankError
becomes one ``error: ...`` line on stderr and exit code 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import json
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


def _cmd_train(args: argparse.Namespace) -> None:
    from goalrank.config import load_values
    from goalrank.train.run import REWARD, train_ranker, train_reward

    values = load_values(args.config, args.overrides)
    if args.model == REWARD:
        metrics = train_reward(args.data, args.out, values)
    else:
        metrics = train_ranker(args.model, args.data, args.out, values, args.reward)
    print(json.dumps(metrics, indent=2))
    print(f"run written to {args.out}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from goalrank.evaluate.report import evaluate_run

    print(evaluate_run(args.run, args.data, args.split, args.beam_width))


def _cmd_demo(args: argparse.Namespace) -> None:
    from goalrank.config import from_dict, load_values
    from goalrank.pipeline import DemoConfig, run_demo

    values = load_values(args.config, args.overrides)
    if args.seeds:
        values["seeds"] = args.seeds
    print(run_demo(args.out, from_dict(DemoConfig, values)))


def _cmd_bench_prepare(args: argparse.Namespace) -> None:
    from goalrank.data.bench import bench_prepare

    print(bench_prepare(args))


def _cmd_bench_train(args: argparse.Namespace) -> None:
    from goalrank.train.bench import bench_train

    mix = {name: 1.0 for name in args.policies.split(",")} if args.policies else None
    sizes = [int(k) for k in args.group_sizes.split(",")]
    print(bench_train(args.data, args.reward, sizes, args.batch_size, args.steps, device_name=args.device, mix=mix))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="goalrank",
        description="GoalRank: group-relative optimisation of a generator-only ranker.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo", help="the main job: simulate, prepare, train reward model, GoalRank and DNN, evaluate",
        description="Run the whole pipeline on the built-in simulator data under --out. Stages "
        "whose output folder is already complete are skipped, so an interrupted demo resumes.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    p.add_argument("--seeds", help="comma-separated training seeds (default 0)")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_demo)

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
        "train", help="train the reward model, GoalRank or a baseline on a prepared dataset",
        description="Train one model. `--model reward` fits the list-wise reward model; "
        "`--model goalrank` fits the generator against the group-relative reference policy "
        "built with a trained reward model (--reward). Per-epoch metrics go to OUT/log.jsonl, "
        "the best validation checkpoint to OUT/checkpoint.pt, the config to OUT/config.json.",
    )
    p.add_argument("--model", required=True, help="reward, goalrank, or a baseline name (e.g. dnn)")
    p.add_argument("--data", type=Path, required=True, help="prepared-dataset folder")
    p.add_argument("--out", type=Path, required=True, help="run folder to create")
    p.add_argument("--reward", type=Path, help="reward-model run folder (needed by goalrank)")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser(
        "evaluate", help="H@L, NDCG@L, MAP@L, F1@L and AUC of a trained ranker on a split",
        description="Evaluate a run on a split (default test). On simulator data also prints the "
        "true expected list reward and its ratio to the best list found by beam search.",
    )
    p.add_argument("--run", type=Path, required=True, help="run folder of a trained ranker")
    p.add_argument("--data", type=Path, help="prepared-dataset folder (default: the run's own)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--beam-width", type=int, default=64, help="beam width of the oracle search")
    p.set_defaults(handler=_cmd_evaluate)

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
    b = bench.add_parser("train", help="time per GoalRank training step, split by stage, vs a supervised step")
    b.add_argument("--data", type=Path, required=True, help="prepared-dataset folder")
    b.add_argument("--reward", type=Path, required=True, help="reward-model run folder")
    b.add_argument("--group-sizes", default="5,20,100", help="comma-separated K values")
    b.add_argument("--batch-size", type=int, default=128)
    b.add_argument("--steps", type=int, default=5, help="timed steps per K (after 2 warm-up steps)")
    b.add_argument("--policies", help="comma-separated policy names (default: the GroupConfig mix)")
    b.add_argument("--device", default="auto", help="auto, cpu or cuda")
    b.set_defaults(handler=_cmd_bench_train)
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

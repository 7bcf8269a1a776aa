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


def _add_dataset_flag(parser: argparse.ArgumentParser) -> None:
    from goalrank.experiments.config import BUILT_IN_DATASET

    parser.add_argument(
        "--dataset", dest="datasets", action="append", metavar="NAME=SOURCE:PATH",
        help="a dataset to run on, repeatable: any source `prepare` reads and its log, e.g. "
        f"ml100k=movielens:ml-100k/ratings.csv; NAME=simulator is the built-in world (default: {BUILT_IN_DATASET})",
    )


def _cmd_simulate(args: argparse.Namespace) -> None:
    from goalrank.config import load_config
    from goalrank.simulate import SimConfig, simulate

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
    from goalrank.train.distributed import process_group
    from goalrank.runs.load import REWARD
    from goalrank.train.run import train_ranker, train_reward

    values = load_values(args.config, args.overrides)
    with process_group() as dist:
        if args.model == REWARD:
            metrics = train_reward(args.data, args.out, values, resume=args.resume)
        else:
            metrics = train_ranker(args.model, args.data, args.out, values, args.reward, resume=args.resume)
    if dist.is_main:
        print(json.dumps(metrics, indent=2))
        print(f"run written to {args.out}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from goalrank.experiments.evaluation import evaluate_run

    print(evaluate_run(args.run, args.data, args.split, args.beam_width))


def _cmd_benchmark(args: argparse.Namespace) -> None:
    import shlex

    from goalrank.experiments.benchmark import run_benchmark
    from goalrank.experiments.config import load_benchmark_config
    from goalrank.experiments.estimate import estimate_benchmark

    flags = {"datasets": args.datasets, "seeds": args.seeds, "studies": getattr(args, "only", None)}
    config = load_benchmark_config(args.profile, args.config, args.overrides, flags)
    if getattr(args, "estimate", None) is not None:
        print(estimate_benchmark(args.out, config, args.estimate))
    else:
        print(run_benchmark(args.out, config, shlex.join(["goalrank", *args.argv])))


def _cmd_bench_prepare(args: argparse.Namespace) -> None:
    from goalrank.data.bench import bench_prepare

    print(bench_prepare(args))


def _cmd_bench_train(args: argparse.Namespace) -> None:
    from goalrank.train.bench import bench_train

    mix = {name: 1.0 for name in args.policies.split(",")} if args.policies else None
    sizes = [int(k) for k in args.group_sizes.split(",")]
    print(bench_train(args.data, args.reward, sizes, args.batch_size, args.steps, device_name=args.device, mix=mix,
                      precision=args.precision, peak_tflops=args.peak_tflops))


def _cmd_serve(args: argparse.Namespace) -> None:
    from goalrank.config import from_dict
    from goalrank.serve.app import ServeConfig, serve

    values = {key: getattr(args, key) for key in ("run", "host", "port", "max_batch", "max_wait_ms", "backend",
                                                  "threads")}
    serve(from_dict(ServeConfig, {**values, "run": str(args.run)}))


def _cmd_bench_serve(args: argparse.Namespace) -> None:
    from goalrank.serve.bench import bench_serve

    print(bench_serve(args))


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
    _add_dataset_flag(p)
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_benchmark, profile="demo")

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
        "the best validation checkpoint to OUT/checkpoint.pt, the config to OUT/config.json, and "
        "every train.checkpoint_every batches the training state to OUT/last.pt. Launched by "
        "torchrun, it trains data-parallel (DDP) with rank 0 writing OUT.",
    )
    p.add_argument("--model", required=True, help="reward, goalrank, or a baseline name (e.g. dnn)")
    p.add_argument("--data", type=Path, required=True, help="prepared-dataset folder")
    p.add_argument("--out", type=Path, required=True, help="run folder to create")
    p.add_argument("--reward", type=Path, help="reward-model run folder (needed by goalrank)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its last.pt (same config required)")
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
        "serve", help="serve a trained ranker over HTTP (POST /rank, GET /healthz, /readyz)",
        description="Load a run once and serve POST /rank with micro-batching: requests arriving "
        "together are ranked as one batch (up to --max-batch, waiting at most --max-wait-ms). "
        "Requests and responses use the log's raw user and item ids; see /docs for the schema.",
    )
    p.add_argument("--run", type=Path, required=True, help="run folder of a trained ranker")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--max-batch", type=int, default=64, help="largest micro-batch")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="longest wait for a micro-batch to fill")
    p.add_argument("--backend", default="eager", choices=["eager", "torchscript", "compile"],
                   help="inference path (see `goalrank bench serve --backends`)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.set_defaults(handler=_cmd_serve)

    p = sub.add_parser(
        "benchmark", help="the reproduction report: Table 1, group-size and reward-bias ablations, scaling",
        description="Train and evaluate every method of the paper's Table 1, the Table 3 ablations and "
        "the Fig. 3 scaling study on the simulator and/or ML-100K; writes CSVs, markdown tables, PNG "
        "plots and report.md under --out. Finished runs are reused, so re-running resumes and "
        "regenerates the report. `quick` is a few-minute smoke test; `full` is the real experiment.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--profile", default="quick", help="sizes and budgets preset (experiments.config.PROFILES; "
                   "quick: smoke test; demo: the demo; cpu: Table 1, 3 seeds, ~50 min per seed and dataset on one "
                   "CPU thread; full: everything, GPU-sized)")
    _add_dataset_flag(p)
    p.add_argument("--seeds", help="comma-separated training seeds (default: the profile's)")
    p.add_argument("--only", help="comma-separated studies: table1, groupsize, bias, scaling (default: all)")
    p.add_argument("--estimate", type=int, metavar="STEPS", help="do not run the profile: time each distinct "
                   "run for one epoch of at most STEPS batches and project the profile's wall time on this "
                   "machine (writes OUT/estimate/estimate.md)")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_benchmark)

    p = sub.add_parser(
        "bench", help="performance benchmarks (wall time, peak memory, step time)",
        description="Performance targets live here, never in unit tests.",
    )
    bench = p.add_subparsers(dest="bench", required=True, metavar="WHAT")
    b = bench.add_parser("prepare", help="wall time and peak memory of `prepare` on several logs")
    b.add_argument("--ml100k", type=Path, help="ML-100K ratings file to include")
    b.add_argument("--sizes", default="1000000,10000000", help="simulated log sizes (interactions)")
    b.add_argument("--workdir", type=Path, default=Path("runs/bench-prepare"), help="scratch folder")
    _add_config_flags(b)
    b.set_defaults(handler=_cmd_bench_prepare)
    b = bench.add_parser(
        "serve", help="ranking latency and throughput, in-process and over HTTP, GoalRank vs baselines",
        description="p50/p95/p99 latency and throughput of single and batched requests for each run, "
        "in-process and over HTTP on loopback (server in a subprocess), the GoalRank/MG-E latency "
        "ratio (paper App. D.3), FLOPs of one GoalRank request and its share of the measured "
        "matmul peak. --load adds a load test with a share of malformed requests.",
    )
    b.add_argument("--run", type=Path, required=True, help="GoalRank run folder")
    b.add_argument("--mge-run", type=Path, help="MG-E run folder to compare with")
    b.add_argument("--pier-run", type=Path, help="PIER run folder to compare with")
    b.add_argument("--requests", type=int, default=200, help="requests per measurement (upper bound)")
    b.add_argument("--max-seconds", type=float, default=20.0, help="time bound per measurement")
    b.add_argument("--batch-size", type=int, default=64, help="batch size of the batched path")
    b.add_argument("--concurrency", type=int, default=16, help="concurrent HTTP clients of the batched path")
    b.add_argument("--load", type=int, default=0, help="requests of the HTTP load test (0: skip)")
    b.add_argument("--malformed", type=float, default=0.2, help="share of malformed load-test requests")
    b.add_argument("--backends", default="", help="comma-separated inference paths to compare "
                   "(eager,torchscript,compile); empty: skip")
    b.add_argument("--threads", type=int, default=1, help="torch intra-op threads of client and server "
                   "(0: torch's default; 1 avoids oversubscription when clients share the cores)")
    b.add_argument("--no-http", action="store_true", help="skip the HTTP measurements")
    b.add_argument("--seed", type=int, default=0, help="seed of request sampling")
    b.set_defaults(handler=_cmd_bench_serve)
    b = bench.add_parser("train", help="time per GoalRank training step, split by stage, vs a supervised step, "
                         "and its model FLOPs utilisation (MFU)")
    b.add_argument("--data", type=Path, required=True, help="prepared-dataset folder")
    b.add_argument("--reward", type=Path, required=True, help="reward-model run folder")
    b.add_argument("--group-sizes", default="5,20,100", help="comma-separated K values")
    b.add_argument("--batch-size", type=int, default=128)
    b.add_argument("--steps", type=int, default=5, help="timed steps per K (after 2 warm-up steps)")
    b.add_argument("--policies", help="comma-separated policy names (default: the GroupConfig mix)")
    b.add_argument("--device", default="auto", help="auto, cpu or cuda")
    b.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="compute dtype (auto: bf16 autocast on CUDA, fp32 on CPU)")
    b.add_argument("--peak-tflops", type=float, help="peak for MFU, e.g. a datasheet figure "
                   "(default: the measured matmul peak in the compute dtype)")
    b.set_defaults(handler=_cmd_bench_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
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

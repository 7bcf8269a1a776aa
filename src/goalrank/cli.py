"""The one entry point: ``goalrank <stage> ...``, one subcommand per pipeline stage.

Every command takes ``--config FILE.toml`` and ``--set key=value``; its flags are shorthands for
fields of the command's config dataclass, which is the only place their choices, defaults and
checks are written (a flag left out keeps the config's value, and ``--help`` shows it). Handlers
are thin: they build the config and call the Python API (``goalrank.api``) or the stage's function,
then print; they import it lazily so that ``goalrank --help`` is instant. Every GoalRankError, and every
OSError (a file the machine will not read or write, a full disk), becomes one ``error: ...`` line
on stderr and exit code 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from goalrank.errors import GoalRankError

Handler = Callable[[argparse.Namespace], None]


class ConfigDefault:
    """A flag's default: "unset", shown in ``--help`` as the config field's default, read lazily."""

    def __init__(self, module: str, cls: str, field: str) -> None:
        self.module, self.cls, self.field = module, cls, field

    def __str__(self) -> str:
        config_cls = getattr(importlib.import_module(self.module), self.cls)
        for field in dataclasses.fields(config_cls):
            if field.name == self.field:
                if field.default is not dataclasses.MISSING:
                    value = field.default
                elif field.default_factory is not dataclasses.MISSING:
                    value = field.default_factory()
                else:
                    return "required"
                text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
                return text or "none"
        raise AttributeError(f"{self.cls} has no field {self.field!r}")


def _flag(parser: argparse.ArgumentParser, name: str, config: tuple[str, str], help: str, option: str = "",
          **kwargs: Any) -> None:
    """A shorthand for config field ``name`` (``--name`` with dashes, or ``option``, e.g. a ``--no-x``
    switch); unset keeps the config's value."""
    default = ConfigDefault(*config, name)
    parser.add_argument(option or f"--{name.replace('_', '-')}", dest=name, default=default,
                        help=f"{help} (config field {name}; default: %(default)s)", **kwargs)
    parser.set_defaults(config_flags=(*(parser.get_default("config_flags") or ()), name))


def _load(cls: type, args: argparse.Namespace, **values: Any) -> Any:
    """``cls`` from ``--config``, then ``--set``, then the command's config flags the user gave, then ``values``."""
    from goalrank.config import from_dict, load_values, merge_values

    names = getattr(args, "config_flags", ())
    flags = {name: getattr(args, name) for name in names if not isinstance(getattr(args, name), ConfigDefault)}
    flags = {name: str(value) if isinstance(value, Path) else value for name, value in flags.items()}
    return from_dict(cls, merge_values(load_values(args.config, args.overrides), flags, values))


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML file with config fields")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one config field (dotted for nested fields); repeatable",
    )


def _add_dataset_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", dest="datasets", action="append", metavar="NAME=SOURCE:PATH",
        help="a dataset to run on, repeatable: any source `prepare` reads and its log, e.g. "
        "ml100k=movielens:ml-100k/ratings.csv; NAME=simulator is the built-in world (default: sim=simulator)",
    )


def _cmd_simulate(args: argparse.Namespace) -> None:
    from goalrank import api
    from goalrank.simulate import SimConfig

    out = api.simulate(args.out, _load(SimConfig, args), overwrite=args.overwrite)
    print(f"simulated logs written to {out}")


def _cmd_prepare(args: argparse.Namespace) -> None:
    from goalrank import api
    from goalrank.data.prepare import PrepareConfig, format_stats
    from goalrank.evaluate.audit import shortcut_warning

    dataset = api.prepare(args.out, _load(PrepareConfig, args), overwrite=args.overwrite)
    print(format_stats(dataset.manifest))
    print(f"prepared dataset written to {dataset.root}")
    warning = shortcut_warning(dataset)
    if warning:
        print(warning, file=sys.stderr)


def _cmd_stats(args: argparse.Namespace) -> None:
    from goalrank.data.prepare import StatsConfig, format_stats
    from goalrank.data.storage import PreparedDataset

    config = _load(StatsConfig, args, dataset=str(args.dataset))
    print(format_stats(PreparedDataset(config.dataset, verify=config.verify).manifest))


def _cmd_audit(args: argparse.Namespace) -> None:
    from goalrank.evaluate.audit import AuditConfig, audit, format_audit

    config = _load(AuditConfig, args, data=str(args.data))
    print(format_audit(audit(config)))
    if config.json:
        print(f"audit written to {config.json}")


def _cmd_feedback_curve(args: argparse.Namespace) -> None:
    from goalrank.evaluate.feedback_curve import FeedbackCurveConfig, feedback_curve, format_feedback_curve

    config = _load(FeedbackCurveConfig, args, data=str(args.data))
    print(format_feedback_curve(feedback_curve(config)))
    if config.json:
        print(f"feedback curve written to {config.json}")


def _cmd_train(args: argparse.Namespace) -> None:
    from goalrank import api
    from goalrank.config import load_values
    from goalrank.train.distributed import process_group

    values = load_values(args.config, args.overrides)
    with process_group() as dist:  # api.train joins the same group; rank 0 alone prints
        run = api.train(args.model, args.data, args.out, values, reward=args.reward, resume=args.resume)
    if dist.is_main:
        print(json.dumps(run.metrics, indent=2))
        print(f"run written to {args.out}")


def _cmd_ensemble(args: argparse.Namespace) -> None:
    from goalrank.runs.ensemble import EnsembleConfig, write_ensemble

    config = _load(EnsembleConfig, args)
    out = write_ensemble(Path(config.out), [Path(run) for run in config.generators], Path(config.reward))
    print(f"MG-E run of {len(config.generators)} generators written to {out}")


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from goalrank.experiments.evaluation import EvaluateConfig, evaluate_run, format_metrics

    title, metrics = evaluate_run(_load(EvaluateConfig, args))  # api.evaluate's metrics, and a title for them
    print(format_metrics(title, metrics))


def _cmd_benchmark(args: argparse.Namespace) -> None:
    import shlex

    from goalrank.experiments.benchmark import run_benchmark
    from goalrank.experiments.config import load_benchmark_config
    from goalrank.experiments.estimate import estimate_benchmark

    flags = {"datasets": args.datasets, "seeds": args.seeds, "studies": getattr(args, "only", None),
             "results": getattr(args, "results", None)}
    config = load_benchmark_config(args.profile, args.config, args.overrides, flags)
    if getattr(args, "estimate", None) is not None:
        print(estimate_benchmark(args.out, config, args.estimate))
    else:
        print(run_benchmark(args.out, config, shlex.join(["goalrank", *args.argv])))


def _cmd_report(args: argparse.Namespace) -> None:
    import shlex

    from goalrank.config import load_values
    from goalrank.experiments.report import write_results_report

    values = load_values(args.config, list(args.overrides))
    write_results_report(args.results, args.out, shlex.join(["goalrank", *args.argv]), values)
    print(f"report written to {args.out / 'report.md'}")


def _cmd_serve(args: argparse.Namespace) -> None:
    from goalrank.serve.app import ServeConfig, serve

    serve(_load(ServeConfig, args))


def _cmd_bench_prepare(args: argparse.Namespace) -> None:
    from goalrank.data.bench import BenchPrepareConfig, bench_prepare

    print(bench_prepare(_load(BenchPrepareConfig, args)))


def _cmd_bench_train(args: argparse.Namespace) -> None:
    from goalrank.train.bench import BenchTrainConfig, bench_train

    print(bench_train(_load(BenchTrainConfig, args)))


def _cmd_bench_pier(args: argparse.Namespace) -> None:
    from goalrank.train.bench_pier import BenchPierConfig, bench_pier

    print(bench_pier(_load(BenchPierConfig, args)))


def _cmd_bench_serve(args: argparse.Namespace) -> None:
    from goalrank.serve.bench import BenchServeConfig, bench_serve

    print(bench_serve(_load(BenchServeConfig, args)))


SERVE = ("goalrank.serve.app", "ServeConfig")
BENCH_TRAIN = ("goalrank.train.bench", "BenchTrainConfig")
BENCH_SERVE = ("goalrank.serve.bench", "BenchServeConfig")
BENCH_PIER = ("goalrank.train.bench_pier", "BenchPierConfig")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="goalrank",
        description="GoalRank: group-relative optimisation of a generator-only ranker.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo", help="the main job: simulate, prepare, train reward model, GoalRank and DNN, evaluate",
        description="`goalrank benchmark --profile demo`: Table 1 with GoalRank and the DNN on the built-in "
        "simulator data (or --dataset). Finished stages are skipped and an interrupted training run "
        "continues from its last checkpoint, so an interrupted demo resumes.",
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
        "of L items, split temporally and give each list N candidates: its L exposed items and N - L "
        "others, exposure-matched (--set candidates=matched, the default for real logs) or the MF "
        "retriever's best (candidates=retrieved, the paper's; the default for simulator logs). Writes a "
        "prepared-dataset folder atomically, then warns if a non-personalised shortcut separates the "
        "validation labels (see `goalrank audit`). All PrepareConfig fields can be set with --set.",
    )
    prepare_config = ("goalrank.data.prepare", "PrepareConfig")
    _flag(p, "source", prepare_config, "log format (goalrank.data.loaders.Source): movielens (ratings.dat '::', "
          "u.data tab, ratings.csv), amazon (CSV/JSON-lines), kuairand (short-video log), generic (CSV/Parquet "
          "user,item,timestamp,label), simulator (a `goalrank simulate` folder)")
    _flag(p, "input", prepare_config, "log file (or simulator folder)")
    p.add_argument("--out", type=Path, required=True, help="prepared-dataset folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_prepare)

    p = sub.add_parser(
        "stats", help="print the statistics table of a prepared dataset",
        description="Print users, items, interactions and lists per split (paper App. D.1).",
    )
    p.add_argument("dataset", type=Path, help="prepared-dataset folder")
    _flag(p, "verify", ("goalrank.data.prepare", "StatsConfig"), "skip checksum verification",
          option="--no-verify", action="store_false")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_stats)

    p = sub.add_parser(
        "audit", help="score a panel of reference rankers that need no training (floor, ceiling, shortcuts)",
        description="Random, popularity, the exposure-rate and not-in-history shortcuts, the exposed-first "
        "exposure oracle and, on simulator data, the item-wise and list oracles, evaluated like any "
        "trained ranker: logged-label metrics, and on simulator data complete-label metrics and true reward.",
    )
    p.add_argument("data", type=Path, help="prepared-dataset folder")
    audit_config = ("goalrank.evaluate.audit", "AuditConfig")
    _flag(p, "split", audit_config, "train, valid or test")
    _flag(p, "json", audit_config, "also write the table as a JSON list of objects to this file (empty: no)")
    _flag(p, "beam_width", audit_config, "beam width of the list oracle (simulator data)")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_audit)

    p = sub.add_parser(
        "feedback-curve", help="how well a well-specified factorisation learns the feedback from a share of the data",
        description="Fit logistic matrix factorisation with item and position biases (the item-wise terms of the "
        "simulator's click model) to growing shares of the training lists, each chosen on validation, and print "
        "its per-item test AUC (and on simulator data the exact click probabilities' ceiling): whether a reward "
        "model's distance to the ceiling is the model's or the data's.",
    )
    p.add_argument("data", type=Path, help="prepared-dataset folder")
    curve_config = ("goalrank.evaluate.feedback_curve", "FeedbackCurveConfig")
    _flag(p, "shares", curve_config, "comma-separated shares of the training lists, in (0, 1]")
    _flag(p, "json", curve_config, "also write the rows as a JSON list of objects to this file (empty: no)")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_feedback_curve)

    p = sub.add_parser(
        "train", help="train the reward model, GoalRank or a baseline on a prepared dataset",
        description="Train one model. `--model reward` fits the list-wise reward model; "
        "`--model goalrank` fits the generator against the group-relative reference policy "
        "built with a trained reward model (--reward). Per-epoch metrics go to the run folder's "
        "log.jsonl, the training curves to tensorboard/ (off with --set train.tensorboard=false), the best "
        "validation checkpoint to checkpoint.pt, the config to config.json, and "
        "every train.checkpoint_every batches the training state to last.pt. Launched by "
        "torchrun, it trains data-parallel (DDP) with rank 0 writing OUT.",
    )
    p.add_argument("--model", required=True, help="reward, goalrank, or a baseline (goalrank.runs.registry.MODELS)")
    p.add_argument("--data", type=Path, required=True, help="prepared-dataset folder")
    p.add_argument("--out", type=Path, required=True, help="run folder to create")
    p.add_argument("--reward", type=Path, help="reward-model run folder (needed by goalrank and the G-E baselines), "
                   "or `oracle`: the simulator's exact list reward (simulator data)")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted run in --out from its last.pt (same config required)")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser(
        "ensemble", help="assemble MG-E from separately trained ranker runs into one servable run",
        description="Write a multi-generator (MG-E) run folder: each generator run proposes a list, the "
        "reward model of --reward picks the best. The run is served, evaluated and benchmarked like any other.",
    )
    ensemble_config = ("goalrank.runs.ensemble", "EnsembleConfig")
    _flag(p, "generators", ensemble_config, "comma-separated ranker run folders, one per generator")
    _flag(p, "reward", ensemble_config, "reward-model run folder: the shared evaluator")
    _flag(p, "out", ensemble_config, "run folder to create")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_ensemble)

    p = sub.add_parser(
        "evaluate", help="H@L, NDCG@L, MAP@L, F1@L and AUC of a trained ranker on a split",
        description="Evaluate a run on a split. On simulator data also prints the true expected list "
        "reward and its ratio to the best list found by beam search. A reward-model run is evaluated as "
        "the list its own beam search prefers (the benchmark's reward_beam row).",
    )
    evaluate_config = ("goalrank.experiments.evaluation", "EvaluateConfig")
    _flag(p, "run", evaluate_config, "run folder of a trained ranker (or reward model)")
    _flag(p, "data", evaluate_config, "prepared-dataset folder (empty: the run's own)")
    _flag(p, "split", evaluate_config, "train, valid or test")
    _flag(p, "beam_width", evaluate_config, "beam width of the oracle search")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_evaluate)

    p = sub.add_parser(
        "serve", help="serve a trained ranker over HTTP (POST /rank, GET /healthz, /readyz)",
        description="Load a run once and serve POST /rank with micro-batching: requests arriving "
        "together are ranked as one batch (up to --max-batch, waiting at most --max-wait-ms). "
        "Requests and responses use the log's raw user and item ids; see /docs for the schema. "
        "Every ServeConfig field (e.g. max_body_bytes) can be set with --set.",
    )
    _flag(p, "run", SERVE, "run folder of a trained ranker")
    _flag(p, "host", SERVE, "address to listen on")
    _flag(p, "port", SERVE, "port to listen on")
    _flag(p, "max_batch", SERVE, "largest micro-batch")
    _flag(p, "max_wait_ms", SERVE, "longest wait for a micro-batch to fill")
    _flag(p, "backend", SERVE, "inference path: auto (the fastest exact one at start-up), eager, onnx, torchscript or "
          "compile (see `goalrank bench serve`)")
    _flag(p, "threads", SERVE, "torch intra-op threads (0: torch's default)")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_serve)

    p = sub.add_parser(
        "benchmark", help="the reproduction report: Table 1, group-size and reward-bias ablations, scaling",
        description="Train and evaluate every method of the paper's Table 1, the Table 3 ablations and "
        "the Fig. 3 scaling study on the built-in simulator and/or any log (--dataset); writes CSVs, "
        "markdown tables, PNG plots and report.md under --out. Finished runs are reused, so re-running "
        "resumes and regenerates the report. `quick` is a few-minute smoke test; `full` is the real experiment.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--profile", default="quick", help="sizes and budgets preset (experiments.config.PROFILES; "
                   "quick: smoke test; demo: the demo; cpu: Table 1, 3 seeds, ~50 min per seed and dataset on one "
                   "CPU thread; full: everything, GPU-sized)")
    _add_dataset_flag(p)
    p.add_argument("--seeds", help="comma-separated training seeds (default: the profile's)")
    p.add_argument("--only",
                   help="comma-separated studies: table1, tune, oracle, groupsize, bias, scaling "
                   "(default: the profile's; table1 for demo, cpu and converged, all for quick and full)")
    p.add_argument("--results", help="results folder to record finished runs in and read recorded runs back from "
                   "instead of training them (default: OUT/results; the repository keeps its own in results/)")
    p.add_argument("--estimate", type=int, metavar="STEPS", help="do not run the profile: time each distinct "
                   "run for one epoch of at most STEPS batches and project the profile's wall time on this "
                   "machine (writes OUT/estimate/estimate.md)")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_benchmark)

    p = sub.add_parser(
        "report", help="regenerate the benchmark's tables, plots and report.md from a results folder alone",
        description="Read every recorded run of a results folder (`goalrank benchmark --results DIR`; the "
        "repository's is results/) and write each study's CSV, its markdown tables with the paired bootstrap, "
        "the PNG plots and report.md under --out. Needs no data and no checkpoints.",
    )
    p.add_argument("results", type=Path, help="results folder (e.g. results)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    _add_config_flags(p)
    p.set_defaults(handler=_cmd_report)

    p = sub.add_parser(
        "bench", help="performance benchmarks (wall time, peak memory, step time)",
        description="Performance targets live here, never in unit tests.",
    )
    bench = p.add_subparsers(dest="bench", required=True, metavar="WHAT")
    b = bench.add_parser("prepare", help="wall time and peak memory of `prepare` on several logs",
                         description="Every child `prepare` gets the prepare.* values (e.g. --set prepare.kcore=5).")
    bench_prepare = ("goalrank.data.bench", "BenchPrepareConfig")
    _flag(b, "ml100k", bench_prepare, "ML-100K ratings file to include (empty: skip)")
    _flag(b, "sizes", bench_prepare, "comma-separated simulated log sizes (interactions)")
    _flag(b, "workdir", bench_prepare, "scratch folder")
    _add_config_flags(b)
    b.set_defaults(handler=_cmd_bench_prepare)
    b = bench.add_parser(
        "serve", help="ranking latency and throughput, in-process and over HTTP, GoalRank vs baselines",
        description="p50/p95/p99 latency and throughput of single and batched requests for each run, "
        "in-process and over HTTP on loopback (server in a subprocess), the GoalRank/MG-E latency "
        "ratio (paper App. D.3), FLOPs of one GoalRank request and its share of the measured "
        "matmul peak. --load adds a load test with a share of malformed requests.",
    )
    _flag(b, "run", BENCH_SERVE, "GoalRank run folder")
    _flag(b, "mge_generators", BENCH_SERVE, "comma-separated runs of MG-E's G separately trained generators "
          "(empty: none)")
    _flag(b, "mge_heads_run", BENCH_SERVE, "run of the G-heads-on-one-trunk MG-E (`--model mge`) (empty: none)")
    _flag(b, "pier_run", BENCH_SERVE, "PIER run folder to compare with (empty: none)")
    _flag(b, "requests", BENCH_SERVE, "requests per measurement (upper bound)")
    _flag(b, "max_seconds", BENCH_SERVE, "time bound per measurement")
    _flag(b, "batch_size", BENCH_SERVE, "batch size of the batched path")
    _flag(b, "concurrency", BENCH_SERVE, "concurrent HTTP clients of the batched path")
    _flag(b, "load", BENCH_SERVE, "requests of the HTTP load test (0: skip)")
    _flag(b, "malformed", BENCH_SERVE, "share of malformed load-test requests")
    _flag(b, "backends", BENCH_SERVE, "comma-separated inference paths to compare (eager,onnx,torchscript,compile; "
          "empty: skip)")
    _flag(b, "threads", BENCH_SERVE, "torch intra-op threads of client and server (0: torch's default)")
    _flag(b, "http", BENCH_SERVE, "skip the HTTP measurements", option="--no-http", action="store_false")
    _flag(b, "seed", BENCH_SERVE, "seed of request sampling")
    _flag(b, "json", BENCH_SERVE, "also write the rows as a JSON list of objects to this file (empty: no)")
    _add_config_flags(b)
    b.set_defaults(handler=_cmd_bench_serve)
    b = bench.add_parser("train", help="time per GoalRank training step, split by stage, vs a supervised step, "
                         "and its model FLOPs utilisation (MFU)")
    _flag(b, "data", BENCH_TRAIN, "prepared-dataset folder")
    _flag(b, "reward", BENCH_TRAIN, "reward-model run folder")
    _flag(b, "group_sizes", BENCH_TRAIN, "comma-separated K values")
    _flag(b, "batch_size", BENCH_TRAIN, "requests per step")
    _flag(b, "steps", BENCH_TRAIN, "timed steps per K (after the warm-up steps)")
    _flag(b, "warmup", BENCH_TRAIN, "untimed warm-up steps per K")
    _flag(b, "policies", BENCH_TRAIN, "comma-separated policy names, equal weights (empty: the GroupConfig mix)")
    _flag(b, "device", BENCH_TRAIN, "auto, cpu or cuda")
    _flag(b, "precision", BENCH_TRAIN, "compute dtype: auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32")
    _flag(b, "peak_tflops", BENCH_TRAIN, "peak for MFU, e.g. a datasheet figure (None: the measured matmul peak)")
    _flag(b, "json", BENCH_TRAIN, "also write the rows (K, step_ms, ratio, mfu) as JSON to this file (empty: no)")
    _add_config_flags(b)
    b.set_defaults(handler=_cmd_bench_train)
    b = bench.add_parser("pier", help="PIER's validation passes along its training, with and without its order "
                         "memo (same lists checked)")
    _flag(b, "data", BENCH_PIER, "prepared-dataset folder")
    _flag(b, "reward", BENCH_PIER, "reward-model run folder (PIER's evaluator)")
    _flag(b, "requests", BENCH_PIER, "validation requests ranked each pass")
    _flag(b, "passes", BENCH_PIER, "validation passes")
    _flag(b, "steps_between", BENCH_PIER, "training batches before each pass")
    _flag(b, "batch_size", BENCH_PIER, "training batch size")
    _flag(b, "seed", BENCH_PIER, "training seed")
    _flag(b, "device", BENCH_PIER, "auto, cpu or cuda")
    _flag(b, "json", BENCH_PIER, "also write the rows (pass, new_sets, plain_s, memo_s) as JSON to this file")
    _add_config_flags(b)
    b.set_defaults(handler=_cmd_bench_pier)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args.handler(args)
    except (GoalRankError, OSError) as exc:  # OSError: the machine refused a file (unreadable, unwritable, disk full)
        # One write of the whole line: print() writes the text and the newline separately, and under torchrun
        # every rank shares one stderr pipe, where two ranks' halves interleave (a write under PIPE_BUF is atomic).
        sys.stderr.write(f"error: {'; '.join([str(exc), *getattr(exc, '__notes__', [])])}\n")
        sys.stderr.flush()
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``sopagent eval star [DATA_DIR]``: the STAR next-action benchmark."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sopagent.errors import EvalDataError
from sopagent.settings import Settings

DEFAULT_DATA_DIR = Path("data") / "star"
"""Relative to the current folder (the repository root)."""


def register(sub: Any) -> None:
    """Register ``eval star`` under the ``sopagent`` command's subparsers."""
    evaluate = sub.add_parser("eval", help="benchmarks on public data sets")
    benchmarks = evaluate.add_subparsers(dest="benchmark", required=True)
    star = benchmarks.add_parser("star", help="STAR next-action prediction (SAM's zero-shot protocol)")
    star.add_argument("data_dir", nargs="?", default=None,
                      help=f"STAR folder with tasks/, tasks_sam/, dialogues.jsonl.gz, happy_dialogue_ids.json "
                           f"(default {DEFAULT_DATA_DIR})")
    star.add_argument("--tasks", help="folder of STAR task schemas (default DATA_DIR/tasks)")
    star.add_argument("--domains", help="comma-separated domains to run (default: all with a task)")
    star.add_argument("--limit-per-domain", type=int, default=None, metavar="N",
                      help="a deterministic sample of N cases per domain (whole dialogues)")
    star.add_argument("--sample-offset", type=int, default=0, metavar="K",
                      help="with --limit-per-domain N: a later sample, sharing no dialogue with the ones "
                           "before it (K a multiple of N: --limit-per-domain 40 --sample-offset 40 is the "
                           "second, 80 the third), for held-out checks")
    star.add_argument("--model", help="model spec; 'uniform' reads nothing (the procedure alone) "
                                      "(default $SOPAGENT_MODEL or the embedded model)")
    star.add_argument("--config", help="config file (default ./sopagent.toml; see docs/backends.md)")
    star.add_argument("--out", default="star_results.json", help="summary JSON (default star_results.json)")
    star.add_argument("--cases-file", help="per-case JSONL, appended as the run goes and used to resume "
                                           "(default OUT with .cases.jsonl)")
    star.add_argument("--baseline", action="store_true",
                      help="run the unconstrained prompt-only baseline instead (free generation)")
    star.add_argument("--quiet", action="store_true", help="no progress bar")
    star.set_defaults(func=cmd_eval_star)


def _load_model(settings: Settings) -> Any:
    from sopagent.compose import open_model
    from sopagent.models.spec import redact

    print(f"loading model{' ' + redact(settings.model) if settings.model else ''} ...", file=sys.stderr)
    return open_model(settings)


def cmd_eval_star(args: argparse.Namespace) -> int:
    """Run the benchmark, print the per-domain table, write the summary JSON."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from sopagent.eval.star.data import load_cases, load_tasks, sample_cases
    from sopagent.eval.star.metrics import format_table, summarize
    from sopagent.eval.star.runner import read_done

    data_dir = Path(args.data_dir) if args.data_dir else DEFAULT_DATA_DIR
    if not data_dir.is_dir():
        raise EvalDataError(f"STAR data folder {data_dir} not found",
                            fix="run from the repository root (default data/star) or pass DATA_DIR")
    tasks = load_tasks(data_dir, Path(args.tasks) if args.tasks else None)
    if args.domains:
        wanted = {d.strip() for d in args.domains.split(",") if d.strip()}
        unknown = wanted - {t.domain for t in tasks.values()}
        if unknown:
            raise EvalDataError(f"no task of domain(s) {sorted(unknown)}",
                                fix=f"choose among {sorted({t.domain for t in tasks.values()})}")
        tasks = {k: v for k, v in tasks.items() if v.domain in wanted}
    cases = sample_cases(load_cases(data_dir, tasks), args.limit_per_domain, args.sample_offset)
    if not cases:
        raise EvalDataError(f"no test case in {data_dir} for tasks {sorted(tasks)}",
                            fix="check --domains/--tasks against the dialogues' tasks")
    out = Path(args.out)
    cases_file = Path(args.cases_file) if args.cases_file else out.with_suffix(".cases.jsonl")
    workdir = cases_file.with_suffix(".work")
    done = read_done(cases_file)
    todo = sum(c.case_id not in done for c in cases)
    print(f"{len(cases)} cases in {len({c.domain for c in cases})} domains; {len(cases) - todo} already done "
          f"in {cases_file}", file=sys.stderr)
    settings = Settings.load(args.config, model=args.model)
    model = _load_model(settings) if todo else None
    if args.baseline:
        from sopagent.eval.star.baseline import BaselineRunner

        runner: Any = BaselineRunner(tasks, model, cases_file)
    else:
        from sopagent.eval.star.runner import Runner

        runner = Runner(tasks, model, workdir, cases_file, settings)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    with Progress(*columns, disable=args.quiet or not todo, transient=False) as progress:
        bar = progress.add_task("star", total=todo)
        rows = runner.run(cases, progress=lambda row: progress.advance(bar))
    summary = runner.summarize(rows) if args.baseline else summarize(rows)
    summary["model"] = getattr(model, "name", None) if model is not None else "(resumed)"
    summary["data_dir"] = str(data_dir)
    summary["limit_per_domain"] = args.limit_per_domain
    if args.baseline:
        print(runner.format(summary))
    else:
        print(format_table(summary))
        for row in rows:
            if row["pred"] not in row["allowed"]:
                print(f"VIOLATION {row['case_id']}: {row['pred']} not in {row['allowed']}")
    out.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(f"wrote {out} and {cases_file}", file=sys.stderr)
    return 0

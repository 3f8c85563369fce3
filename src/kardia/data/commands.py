"""CLI: `kardia build`, `kardia data merge`, `kardia data split`. Heavy imports stay inside commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from ..config import fail, ConfigError
from .config import BuildConfig
from ..records import RecordError
from .engine import BuildError, dry_run_report, plan_for, run_build
from .plan import parse_shard
from .export import finalize


def _load_cfg(config: Optional[Path], sets: List[str]):
    try:
        return BuildConfig.from_cli(config, sets)
    except ConfigError as exc:
        fail(str(exc))


def _print_plan(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title="kardia build: plan (dry run)")
    t.add_column("item")
    t.add_column("value", justify="right")
    for k in ("dialogues", "profiles", "situations", "mbti_assigned", "skipped_bad_inputs"):
        t.add_row(k, str(report[k]))
    for role, n in report["model_calls_upper_bound"].items():
        t.add_row(f"model calls, at most ({role})", str(n))
    for role, m in report["models"].items():
        t.add_row(f"model ({role})", m)
    con.print(t)
    lt = Table(title="label distribution")
    lt.add_column("emotion")
    lt.add_column("dialogues", justify="right")
    for lab, n in report["labels"].items():
        lt.add_row(lab, str(n))
    con.print(lt)


def _print_summary(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    g = result.get("generation", {})
    if g:
        t = Table(title="generation")
        t.add_column("item")
        t.add_column("value", justify="right")
        for k in ("planned", "already_done", "written", "failed", "turns", "revisions", "critic_unparsed",
                  "emotion_unparsed", "calls", "seconds", "skipped_bad_inputs"):
            t.add_row(k, str(g.get(k)))
        con.print(t)
        for f in g.get("failed_ids", [])[:5]:
            con.print(f"[yellow]failed[/] {f['id']}: {f['error'][:160]}")
    d = result.get("dataset")
    if d:
        from .export import stats_table

        con.print(f"kept {d['kept']} of {d['generated']} dialogues; dropped: {d['dropped'] or 'none'}")
        con.print(f"crisis filter: {d['crisis_filter']}; dedup: {d['dedup']}")
        con.print(stats_table(d["table"]), markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    data_app = typer.Typer(help="Dataset utilities: merge build shards, re-split a built dataset.", no_args_is_help=True)

    @app.command("build")
    def build(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML build config (configs/build/*.yaml)."),
        set_: List[str] = typer.Option([], "--set", help="Override a config key: --set max_exchanges=4 (repeatable)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder (rerun the same command to resume)."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and the model-call upper bound; call no model."),
        shard_: Optional[str] = typer.Option(None, "--shard", help="Do shard I of N (e.g. 0/4); join with `kardia data merge`."),
        skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count malformed input lines instead of stopping."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar (logs, CI)."),
    ) -> None:
        """Generate a KardiaBench-style dataset: user simulator, four-span responder, rubric critic with revision."""

        cfg = _load_cfg(config, set_)
        try:
            spec = parse_shard(shard_)
            if dry_run:
                items, bad = plan_for(cfg, skip_bad, spec)
                report = dry_run_report(cfg, items, bad)
                _print_plan(report)
                for b in bad[:10]:
                    typer.echo(f"skipped: {b}", err=True)
                return
            result = run_build(cfg, out, spec, skip_bad=skip_bad, progress=not no_progress)
        except (RecordError, FileNotFoundError, BuildError, ValueError) as exc:
            fail(str(exc))
        _print_summary(result)
        if spec:
            typer.echo(f"shard {spec[0]}/{spec[1]} done; join shards with: kardia data merge SHARD_DIRS... --out DIR")
        else:
            typer.echo(f"dataset written to {out}")

    @data_app.command("merge")
    def merge_cmd(
        shards: List[Path] = typer.Argument(..., help="Shard output folders (each holds work/generated*.jsonl)."),
        out: Path = typer.Option(..., "--out", "-o"),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="Default: the first shard's work/config.yaml."),
        set_: List[str] = typer.Option([], "--set"),
    ) -> None:
        """Join `kardia build --shard` outputs into one dataset (filters, dedup, split, card run once)."""
        from .engine import BuildError, merge

        cfg = _load_cfg(config, set_) if config or set_ else None
        try:
            result = merge(shards, out, cfg)
        except (BuildError, FileNotFoundError) as exc:
            fail(str(exc))
        typer.echo(f"merged {result['merged']} dialogues")
        _print_summary(result)

    @data_app.command("split")
    def split_cmd(
        dataset: Path = typer.Argument(..., help="A built output folder."),
        test_fraction: float = typer.Option(0.1, help="Fraction of profiles in test."),
        seed: int = typer.Option(0),
    ) -> None:
        """Re-split a built dataset (profile-disjoint train/test) without regenerating anything."""

        cfg_path = dataset / "work" / "config.yaml"
        if not cfg_path.exists():
            fail(f"{cfg_path}: not a kardia build folder")
        cfg = BuildConfig.from_cli(cfg_path, options={"split.test_fraction": test_fraction, "split.seed": seed})
        summary = finalize(dataset, cfg)
        typer.echo(json.dumps(summary["table"], indent=2))

    app.add_typer(data_app, name="data")

"""`kardia reproduce`: the paper's central experiment as one command, a plain recipe over the real parts.

build (ED training situations, the person's first turn is the situation, emotion span = gold label)
-> SFT (easy split, compact training profile) -> short GRPO (hard split, full reward: format + emotion +
rubric judge) -> evaluate base, SFT and GRPO on held-out ED situations -> `results.md` with the table,
bootstrap intervals, predicted-label distributions and a plot. Every input is checked before any model
work; every stage resumes (stages.py). `--size cpu` is sized for 2 CPU cores and the embedded model; the
model flags take any model string, so on GPUs the same recipe runs a 7B policy with a strong judge.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from pydantic import Field

from .config import ConfigError, KardiaConfig, OptionalModel, fail
from .data.engine import input_path, run_build
from .data.profiles import load_profiles
from .data.seeds import ed_seeds, load_seeds
from .eval.loaders import load_items
from .data.config import BuildConfig
from .records import iter_jsonl
from .train.config import SFTRunConfig, GRPORunConfig
from .train.sft import run_sft
from .train.grpo import run_grpo
from .reproduce_curve import stage_curve
from .reproduce_report import write_results
from .stages import run_stages

Size = Literal["tiny", "demo", "cpu", "gpu"]
TRAIN_CSV = "ed_situations_train.csv"
VALID_CSV = "ed_situations_valid.csv"

# What each size does. `cpu` fits 90 minutes on 2 cores (see docs/results/central-result); `tiny` is for
# tests; `gpu` is the paper's shape (bring real models: --model, --roles, --judge).
SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(situations=6, seed_limit="situations", distribution="natural", max_exchanges=1, max_revisions=0,
                 span_tokens=16, response_tokens=20,
                 sft_epochs=1.0, sft_batch=2, sft_lr=1e-4, train_top_layers=4, emotion_loss_weight=5.0,
                 grpo_steps=1, num_generations=2, grpo_batch=2, completion_tokens=48,
                 eval_n=4, eval_limit=4, eval_tokens=48, base_spans_n=2, concurrency=8, skip_stages=(),
                 curve_points=2, curve_n=2, judge_limit=None),
    # `kardia demo`: half the shipped training situations (3 a label of 6; 2 a label held out for the eval),
    # 15 minutes with set-up on 2 cores; the tuned model evaluated is the GRPO one; 12 turns judged per model.
    "demo": dict(situations=96, seed_limit=None, distribution="balanced", max_exchanges=1, max_revisions=0,
                 span_tokens=24, response_tokens=32,
                 # ~40 easy dialogues: 5 passes, because the format needs ~200-300 example passes to take
                 # (central result's curve: 104 -> 2% format, 208 -> 67%, 312 -> 91%; 2 passes gave 3%)
                 sft_epochs=5.0, sft_batch=4, sft_lr=3e-4, train_top_layers=12, emotion_loss_weight=5.0,
                 grpo_steps=1, num_generations=4, grpo_batch=8, completion_tokens=112,
                 eval_n=64, eval_limit=None, eval_tokens=112, base_spans_n=8, concurrency=48,
                 skip_stages=("eval_sft", "curve"), curve_points=1, curve_n=0, judge_limit=12),
    # cpu: one exchange per dialogue and no revision: with one exchange a revised draft can never make
    # a dialogue easy (one FAIL already fails the easy test) and GRPO reads only the hard prompts, so
    # revisions would cost ~30% of the build and change no training example.
    "cpu": dict(situations=1000, seed_limit="situations", distribution="natural", max_exchanges=1, max_revisions=0,
                span_tokens=24, response_tokens=32,
                sft_epochs=1.0, sft_batch=8, sft_lr=2e-4, train_top_layers=12, emotion_loss_weight=5.0,
                grpo_steps=2, num_generations=4, grpo_batch=8, completion_tokens=112,
                eval_n=200, eval_limit=None, eval_tokens=112, base_spans_n=40, concurrency=48, skip_stages=(),
                curve_points=4, curve_n=100, judge_limit=None),
    "gpu": dict(situations=20000, seed_limit="situations", distribution="natural", max_exchanges=10, max_revisions=5,
                span_tokens=96, response_tokens=64,
                sft_epochs=2.0, sft_batch=16, sft_lr=1e-4, train_top_layers=None, emotion_loss_weight=1.0,
                grpo_steps=500, num_generations=8, grpo_batch=32, completion_tokens=256,
                eval_n=2000, eval_limit=None, eval_tokens=384, base_spans_n=200, concurrency=64, skip_stages=(),
                curve_points=4, curve_n=500, judge_limit=None),
}


class ReproduceConfig(KardiaConfig):
    out: str = "kardia-reproduce"
    size: Size = "cpu"
    ed: str = ""  # folder holding ed_situations_train.csv (and ed_situations_valid.csv for the default eval)
    train_seeds: str | None = None  # other training situations (ED situation .csv or seed .jsonl); None: the ED train CSV
    eval_data: str | None = None  # an ED situation CSV (text, aug_text, label); None: eval_n shuffled valid rows
    profiles: str = "kardia:samples/profiles.jsonl"
    profiles_kind: Literal["person", "personachat", "esconv"] = "person"
    model: str = "embedded"  # the base policy
    user: str | None = None  # the three build roles; None: the base model
    responder: str | None = None
    critic: str | None = None
    judge: OptionalModel = "embedded"  # GRPO's rubric reward and the eval's judged dimensions (none/off: no judged eval)
    prompt_template: str = "system_compact"  # the training profile (saved with the tuned models)
    profile_words: int | None = 20
    seed: int = 0
    overrides: dict[str, Any] = Field(default_factory=dict)  # any SIZES key, e.g. {situations: 2000}

    def sized(self, key: str) -> Any:
        return self.overrides.get(key, SIZES[self.size][key])


class ReproduceError(ValueError):
    pass


# -- inputs, checked before any model work ---------------------------------------------------------
def check_inputs(cfg: ReproduceConfig, out: Path) -> dict[str, Any]:
    """Every input read once, streaming: a bad file fails here, naming file, line and field."""

    needs_ed = cfg.train_seeds is None or cfg.eval_data is None
    ed = Path(cfg.ed)
    if needs_ed and not cfg.ed:
        raise ReproduceError("no ED folder: pass --ed DIR (the folder with ed_situations_train.csv)")
    if needs_ed and not ed.is_dir():
        raise ReproduceError(f"{ed}: ED folder not found")
    kind, train = seed_source(cfg)
    if not Path(train).is_file():
        raise ReproduceError(f"{train}: file not found (the training situations)")
    n_train = sum(1 for _ in (ed_seeds(train) if kind == "ed" else load_seeds(kind, train)))
    n_profiles = sum(1 for _ in load_profiles(cfg.profiles_kind, input_path(cfg.profiles)))
    eval_csv = Path(input_path(cfg.eval_data)) if cfg.eval_data else sample_eval_csv(
        ed / VALID_CSV, out / "eval_data.csv", cfg.sized("eval_n"), cfg.seed)
    n_eval = sum(1 for _ in load_items(str(eval_csv)))
    if n_eval == 0:
        raise ReproduceError(f"{eval_csv}: no evaluation items")
    return {"train_situations": n_train, "profiles": n_profiles, "eval_data": str(eval_csv), "eval_items": n_eval}


def sample_eval_csv(valid: Path, target: Path, n: int, seed: int) -> Path:
    """`n` rows of an ED situation CSV, uniformly at random (reservoir: memory holds n rows), shuffled."""
    import csv

    from .data.seeds import ed_seeds

    if not valid.is_file():
        raise ReproduceError(f"{valid}: file not found (the default eval data; or pass --eval-data FILE)")
    list(ed_seeds(valid))  # validates every row first (file, line, field)
    rng = random.Random(seed)
    keep: list[dict] = []
    with valid.open(encoding="utf-8", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if len(keep) < n:
                keep.append(row)
            else:
                j = rng.randrange(i + 1)
                if j < n:
                    keep[j] = row
    rng.shuffle(keep)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["text", "aug_text", "label"], extrasaction="ignore")
        w.writeheader()
        w.writerows(keep)
    tmp.replace(target)
    return target


def seed_source(cfg: ReproduceConfig) -> tuple[str, str]:
    """(seed kind, path) of the training situations."""

    if cfg.train_seeds is None:
        return "ed", str(Path(cfg.ed) / TRAIN_CSV)
    path = input_path(cfg.train_seeds)
    return ("ed" if path.lower().endswith(".csv") else "jsonl"), path


# -- stages ----------------------------------------------------------------------------------------
def build_config(cfg: ReproduceConfig):
    base = cfg.model
    seed_kind, seed_path = seed_source(cfg)
    return BuildConfig.model_validate({
        "profiles": [{"kind": cfg.profiles_kind, "path": cfg.profiles}],
        # seed_limit "situations": the first N situations of the (shuffled) file, one dialogue each; None: draw
        # the dialogues from every situation of the file (`distribution` decides how)
        "seeds": [{"kind": seed_kind, "path": seed_path, "limit": seed_limit(cfg)}],
        "dialogues_per_profile": 1, "max_profiles": None, "distribution": cfg.sized("distribution"), "assign_mbti": True,
        "seed": cfg.seed,
        "models": {"user": cfg.user or base, "responder": cfg.responder or base, "critic": cfg.critic or base},
        "responder_mode": "guided", "emotion_source": "target", "first_user_turn": "situation", "user_drift": "end",
        "max_exchanges": cfg.sized("max_exchanges"), "max_revisions": cfg.sized("max_revisions"),
        "critic_rubric": "critic_compact" if (cfg.critic or base) == "embedded" else "critic",
        "critic_scorer": "probs" if (cfg.critic or base) == "embedded" else "text",
        "profile_words": cfg.profile_words,
        "prompts": {"understanding": "build/compact/understanding", "reasoning": "build/compact/reasoning",
                    "response": "build/compact/response"},
        "sampling": {"temperature": 0.0, "span_max_tokens": cfg.sized("span_tokens"),
                     "response_max_tokens": cfg.sized("response_tokens"), "user_max_tokens": cfg.sized("response_tokens")},
        "concurrency": cfg.sized("concurrency"),
        "split": {"test_fraction": 0.05},
    })


def seed_limit(cfg: ReproduceConfig) -> int | None:
    lim = cfg.sized("seed_limit")
    return cfg.sized("situations") if lim == "situations" else lim


def plan_shape(situations: int, n_profiles: int) -> tuple[int, int]:
    """(dialogues per profile, profiles) giving one dialogue per situation: as few per profile as the
    profiles allow, and exactly `situations` dialogues when it divides (never fewer)."""
    per = max(1, math.ceil(situations / max(1, n_profiles)))
    return per, math.ceil(situations / per)


def stage_build(cfg: ReproduceConfig, out: Path, inputs: dict) -> dict:
    bcfg = build_config(cfg)
    per, n_profiles = plan_shape(cfg.sized("situations"), inputs["profiles"])
    bcfg = bcfg.model_copy(update={"dialogues_per_profile": per, "max_profiles": n_profiles})
    result = run_build(bcfg, out / "data", progress=True)
    counts = split_counts(out / "data")
    if counts["train"] == 0:
        raise ReproduceError(f"the build kept no training dialogue ({counts}); see {out / 'data' / 'dropped.jsonl'}")
    return {"dataset": str(out / "data"), "counts": counts, "generation": result.get("generation", {}),
            "dropped": result.get("dataset", {}).get("dropped", {})}


def split_counts(data: Path) -> dict[str, int]:
    counts = {"train": 0, "test": 0, "train_easy": 0, "train_hard": 0}
    for split in ("train", "test"):
        p = data / f"{split}.jsonl"
        if not p.exists():
            continue
        for _, rec in iter_jsonl(p):
            counts[split] += 1
            diff = (rec.get("meta") or {}).get("difficulty")
            if split == "train" and diff in ("easy", "hard"):
                counts[f"train_{diff}"] += 1
    return counts


def subset(counts: dict, wanted: str, console) -> str:
    """The paper's subset when it has data; otherwise all training dialogues, said out loud and recorded."""
    if counts[f"train_{wanted}"] > 0:
        return wanted
    console.print(f"[yellow]the {wanted} subset is empty (the critic graded every dialogue the other way): "
                  f"this stage uses all {counts['train']} training dialogues[/yellow]")
    return "all"


def stage_sft(cfg: ReproduceConfig, out: Path, build: dict, console) -> dict:
    difficulty = subset(build["counts"], "easy", console)
    scfg = SFTRunConfig.model_validate({
        "preset": "cpu" if cfg.size != "gpu" else "paper",
        "model": cfg.model, "output_dir": str(out / "sft"),
        "data": {"path": str(out / "data" / "train.jsonl"), "difficulty": difficulty},
        "prompt": {"template": cfg.prompt_template, "profile_words": cfg.profile_words},
        "num_train_epochs": cfg.sized("sft_epochs"), "per_device_train_batch_size": cfg.sized("sft_batch"),
        "gradient_accumulation_steps": 1, "learning_rate": cfg.sized("sft_lr"), "max_length": 512,
        "train_top_layers": cfg.sized("train_top_layers"), "emotion_loss_weight": cfg.sized("emotion_loss_weight"),
        "report_to": ["tensorboard"], "save_steps": curve_save_steps(cfg, build["counts"], difficulty),
        "save_total_limit": None, "logging_steps": 5, "seed": cfg.seed,
    })
    summary = run_sft(scfg, resume=_has_checkpoint(out / "sft"), log=console.print)
    summary["difficulty_used"] = difficulty
    return summary


def curve_save_steps(cfg: ReproduceConfig, counts: dict, difficulty: str) -> int:
    """A checkpoint every 1/curve_points of the SFT run: the learning curve's points (and resume points)."""
    n = counts["train"] if difficulty == "all" else counts[f"train_{difficulty}"]
    steps = math.ceil(n / cfg.sized("sft_batch")) * cfg.sized("sft_epochs")
    return max(1, math.floor(steps / max(1, cfg.sized("curve_points"))))


def stage_grpo(cfg: ReproduceConfig, out: Path, build: dict, console) -> dict:
    difficulty = subset(build["counts"], "hard", console)
    n = cfg.sized("num_generations")
    gcfg = GRPORunConfig.model_validate({
        "preset": "cpu" if cfg.size != "gpu" else "paper",
        "model": str(out / "sft" / "model"), "output_dir": str(out / "grpo"),
        "data": {"path": str(out / "data" / "train.jsonl"), "difficulty": difficulty},
        "max_steps": cfg.sized("grpo_steps"), "num_generations": n,
        "per_device_train_batch_size": cfg.sized("grpo_batch"), "gradient_accumulation_steps": 1,
        "max_completion_length": cfg.sized("completion_tokens"),
        "judge": {"model": cfg.judge or "embedded",
                  "scorer": "probs" if cfg.judge == "embedded" else "auto"},
        "report_to": ["tensorboard"], "save_steps": 2, "seed": cfg.seed,
    })
    summary = run_grpo(gcfg, resume=_has_checkpoint(out / "grpo"), log=console.print)
    summary["difficulty_used"] = difficulty
    return summary


def _has_checkpoint(run_dir: Path) -> bool:
    return run_dir.is_dir() and any(run_dir.glob("checkpoint-*"))


def stage_eval(cfg: ReproduceConfig, out: Path, data: str, model: str, name: str, mode: str,
               limit: int | None = None, judge: bool = True) -> dict:
    from .eval.run import EvalConfig, run_eval

    ecfg = EvalConfig(
        model=model, data=data, out=str(out / "eval" / name), mode=mode,
        judge=cfg.judge if judge else None, judge_scorer="probs" if cfg.judge == "embedded" else "auto",
        emotion_reader="probs_calibrated" if mode == "plain" else "text",
        limit=limit if limit is not None else cfg.sized("eval_limit"), max_tokens=cfg.sized("eval_tokens"), plain_max_tokens=64,
        concurrency=cfg.sized("concurrency"), n_boot=1000, judge_limit=cfg.sized("judge_limit") if judge else None,
    )
    summary = run_eval(ecfg, progress=True)
    if model != cfg.model:  # a tuned model or checkpoint is evaluated once: free its weights (base and judge stay)
        from .llm import release_llm

        release_llm(model)
    return {"out": summary["out"], "mode": summary["mode"], "total": summary["total"], "wall_s": summary["wall_s"],
            "failures": summary["failures"][:10]}


# -- the recipe ------------------------------------------------------------------------------------
def recipe(cfg: ReproduceConfig, out: Path, console) -> list[tuple[str, Any]]:
    """The stages, in order, as (name, fn(results so far)); inputs are checked first."""

    inputs = check_inputs(cfg, out)
    console.print(f"inputs: {inputs}")
    data = inputs["eval_data"]
    tuned = lambda stage: str(out / stage / "model")  # noqa: E731
    steps = [
        ("build", lambda r: stage_build(cfg, out, inputs)),
        ("sft", lambda r: stage_sft(cfg, out, r["build"], console)),
        ("grpo", lambda r: stage_grpo(cfg, out, r["build"], console)),
        ("eval_base", lambda r: stage_eval(cfg, out, data, cfg.model, "base", "plain")),
        ("eval_base_spans", lambda r: stage_eval(cfg, out, data, cfg.model, "base_spans", "spans",
                                                 limit=cfg.sized("base_spans_n"), judge=False)),
        ("eval_sft", lambda r: stage_eval(cfg, out, data, tuned("sft"), "sft", "spans")),
        ("eval_grpo", lambda r: stage_eval(cfg, out, data, tuned("grpo"), "grpo", "spans")),
        ("curve", lambda r: stage_curve(out, cfg.sized("sft_batch"), cfg.sized("curve_n"),
                                        lambda model, name, limit: stage_eval(cfg, out, data, model, name, "spans",
                                                                              limit=limit, judge=False),
                                        final_step=r["sft"].get("global_step"))),
        ("results", lambda r: write_results(out, cfg.model_dump(mode="json"), r)),
    ]
    skip = set(cfg.sized("skip_stages"))
    return [s for s in steps if s[0] not in skip]


def quiet_libraries(out: Path) -> None:
    """Library warnings go to OUT/warnings.log, not between the progress bars."""
    import logging
    import warnings

    out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "warnings.log", encoding="utf-8")
    for name in ("py.warnings", "transformers", "trl", "peft", "accelerate", "datasets"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.propagate = False
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_warning()
        hf_logging.disable_default_handler()
        hf_logging.add_handler(handler)
    except ImportError:  # pragma: no cover
        pass
    try:
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def run_reproduce(cfg: ReproduceConfig) -> dict:
    from rich.console import Console


    console = Console()
    out = Path(cfg.out)
    quiet_libraries(out)
    (out / "reproduce_config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    results, timings = run_stages(out, recipe(cfg, out, console), console)
    (out / "timings.json").write_text(json.dumps(timings, indent=2), encoding="utf-8")
    console.print(f"[bold]results:[/bold] {out / 'results.md'}; total {sum(timings.values()):.0f} s")
    return {"timings_s": timings, "results": str(out / "results.md")}


def register(app: typer.Typer) -> None:
    @app.command("reproduce")
    def reproduce(
        ed: Optional[str] = typer.Option(None, "--ed", help="folder with ED situation CSVs (ed_situations_train.csv, ed_situations_valid.csv)"),
        out: Optional[str] = typer.Option(None, "--out", "-o", help="output folder (a rerun resumes it; default kardia-reproduce)"),
        size: Optional[str] = typer.Option(None, "--size", help="tiny (tests), cpu (default: 90 min on 2 cores), gpu (paper scale)"),
        eval_data: Optional[str] = typer.Option(None, "--eval-data", help="ED situation CSV (text, aug_text, label); default: 200 shuffled rows of ED valid"),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="base policy (any model string)"),
        roles: Optional[str] = typer.Option(None, "--roles", help="model string for the three build roles (user, responder, critic)"),
        judge: Optional[str] = typer.Option(None, "--judge", "-j", help="rubric judge for GRPO and eval ('none': no judged eval)"),
        profiles: Optional[str] = typer.Option(None, "--profiles", help="profiles file (KardiaBench person JSONL; see --profiles-kind)"),
        profiles_kind: Optional[str] = typer.Option(None, "--profiles-kind", help="person | personachat | esconv"),
        config: Optional[str] = typer.Option(None, "--config", "-c", help="YAML ReproduceConfig"),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="override key=value, e.g. overrides.situations=2000"),
    ) -> None:
        """The central result: build, SFT, GRPO, then base vs SFT vs GRPO on held-out ED situations."""
        options = {"out": out, "size": size, "ed": ed, "eval_data": eval_data, "model": model, "judge": judge,
                   "profiles": profiles, "profiles_kind": profiles_kind, "user": roles, "responder": roles, "critic": roles}
        try:
            cfg = ReproduceConfig.from_cli(config, set_ or [], options)
            run_reproduce(cfg)
        except (ConfigError, ReproduceError, FileNotFoundError, ValueError) as exc:  # RecordError names file, line and field
            fail(exc)

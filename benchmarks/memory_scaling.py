"""Peak memory of build, judge scoring and eval as the data grows (target: flat, <= 10% from 2,000 to 20,000).

Each stage runs on synthetic input records in its own subprocess (a fresh interpreter, so one stage's
memory never counts for another) that reports its own peak RSS (`ru_maxrss`) when done. The models are
FAKE OpenAI-compatible servers (real HTTP, SCRIPTED answers, no latency) running in this parent process:
- build: `run_build` (plan, generate, finalize), single-call responder, one exchange, no revision,
- judge: `score_file`, the `kardia judge score` path,
- eval: `run_eval` in plain mode (a reply and an emotion question per turn, then the judge).

    python benchmarks/memory_scaling.py [--sizes 2000 20000] [--stages build judge eval]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EMOTIONS = ("sad", "afraid", "lonely", "anxious", "grateful", "proud", "hopeful", "disappointed")


# -- synthetic inputs ----------------------------------------------------------------------------
def _person(i: int) -> str:
    return f"MBTI: INFP\nAbout: Synthetic person {i}, a nurse who writes poems on night shifts.\nSignature: one day at a time ({i})."


def write_build_inputs(folder: Path, n: int) -> tuple[Path, Path]:
    profiles, seeds = folder / "profiles.jsonl", folder / "situations.jsonl"
    with profiles.open("w") as p, seeds.open("w") as s:
        for i in range(n):
            p.write(json.dumps({"id": f"p{i}", "username": f"user{i}", "person": _person(i)}) + "\n")
            s.write(json.dumps({"id": f"s{i}", "situation": f"My cat {i} is ill and the vet is worried.", "emotion": EMOTIONS[i % 8]}) + "\n")
    return profiles, seeds


def write_judge_inputs(path: Path, n: int) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"j{i}", "profile": _person(i), "situation": f"a hard week ({i})",
                                 "history": [{"role": "user", "content": f"I moved abroad and feel alone ({i})."}],
                                 "response": f"That sounds lonely ({i}); what do you miss most?"}) + "\n")
    return path


def write_eval_inputs(path: Path, n: int) -> Path:
    """KardiaBench records of one exchange each: one evaluated turn per record."""
    from kardia.spans import render

    with path.open("w") as fh:
        for i in range(n):
            emotion = EMOTIONS[i % 8]
            fh.write(json.dumps({"id": f"d{i}", "person": _person(i), "mbti": "INFP", "emotion": emotion,
                                 "situation": f"a hard week ({i})", "anon_username": f"h{i}",
                                 "messages": [{"role": "system", "content": "You are Kardia."},
                                              {"role": "user", "content": f"My cat {i} is ill and I cannot sleep."},
                                              {"role": "assistant", "content": render("u", "r", emotion, "I am here for you.")}]}) + "\n")
    return path


# -- SCRIPTED server answers -----------------------------------------------------------------------
def scripted_judge(messages, body) -> str:
    """SCRIPTED judge (not a model): 4 on every dimension asked for."""
    return json.dumps({k: {"reason": "scripted", "score": 4} for k in re.findall(r"\(key: (\w+)\)", messages[-1]["content"])})


def scripted_plain_model(messages, body) -> str:
    """SCRIPTED model (not a model): a plain reply, or one label for the emotion question."""
    if messages[-1]["content"].startswith("Read this conversation"):
        return "Sad."
    return "That sounds really hard; I am here with you."


# -- one stage, in a child process -----------------------------------------------------------------
def run_stage(stage: str, n: int, folder: Path, servers: dict) -> None:
    if stage == "build":
        from kardia.data.config import BuildConfig
        from kardia.data.engine import run_build

        profiles, seeds = folder / "profiles.jsonl", folder / "situations.jsonl"
        m = servers["build"]
        cfg = BuildConfig.model_validate({
            "profiles": [{"kind": "person", "path": str(profiles)}], "seeds": [{"kind": "jsonl", "path": str(seeds)}],
            "dialogues_per_profile": 1, "models": {"user": m, "responder": m, "critic": m},
            "responder_mode": "single", "first_user_turn": "situation", "max_exchanges": 1, "max_revisions": 0,
            "llm_cache": False, "concurrency": 256, "anonymise": {"salt": "bench-salt"},
            "export": {"hf": False, "card": False, "plot": False},
        })
        result = run_build(cfg, folder / "build-out", progress=False)
        done = result["generation"].get("written")
    elif stage == "judge":
        from kardia.judge.commands import JudgeScoreConfig
        from kardia.judge.scoring import score_file

        cfg = JudgeScoreConfig(input=str(folder / "judge-in.jsonl"), output=str(folder / "judge-out.jsonl"),
                               model=servers["judge"], scorer="text", batch_size=256)
        done = score_file(cfg, show_progress=False)["items"]
    elif stage == "eval":
        from kardia.eval.run import EvalConfig, run_eval

        cfg = EvalConfig(model=servers["model"], judge=servers["judge"], data=str(folder / "eval-in.jsonl"),
                         out=str(folder / "eval-out"), mode="plain", judge_scorer="text", cache=False,
                         concurrency=256, safety=False, n_boot=200)
        summary = run_eval(cfg, progress=False)
        done = summary.get("scored_now")
    else:
        raise ValueError(stage)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print("RESULT " + json.dumps({"stage": stage, "n": n, "done": done, "peak_mib": peak_kib / 1024}))


def child(stage: str, n: int, folder: Path, servers: dict) -> dict:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, __file__, "--child", stage, str(n), str(folder), json.dumps(servers)],
                          capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise RuntimeError(f"{stage} at {n} failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return {**json.loads(line[7:]), "wall_s": time.monotonic() - t0}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _, _, stage, n, folder, servers = sys.argv
        run_stage(stage, int(n), Path(folder), json.loads(servers))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--stages", nargs="+", default=["build", "judge", "eval"], choices=["build", "judge", "eval"])
    args = ap.parse_args()

    from kardia.testing.fake_roles import scripted_responder
    from kardia.testing.fake_openai_server import FakeOpenAIServer

    started = [FakeOpenAIServer(responder=scripted_responder(fail_rate=0.0, solved_rate=0.0)).start(),
               FakeOpenAIServer(responder=scripted_judge).start(),
               FakeOpenAIServer(responder=scripted_plain_model).start()]
    servers = dict(zip(("build", "judge", "model"), (s.model_string() for s in started)))
    rows = []
    try:
        for n in args.sizes:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                write_build_inputs(folder, n)
                write_judge_inputs(folder / "judge-in.jsonl", n)
                write_eval_inputs(folder / "eval-in.jsonl", n)
                for stage in args.stages:
                    rows.append(child(stage, n, folder, servers))
                    print(f"{stage} n={n}: {rows[-1]['peak_mib']:.0f} MiB peak, {rows[-1]['wall_s']:.0f} s", file=sys.stderr)
    finally:
        for s in started:
            s.stop()

    small, large = min(args.sizes), max(args.sizes)
    print(f"\npeak RSS per stage (own subprocess; FAKE servers, no latency); sizes {args.sizes}\n")
    print("| stage | records | done | peak RSS MiB | wall s |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['stage']} | {r['n']} | {r['done']} | {r['peak_mib']:.1f} | {r['wall_s']:.1f} |")
    print()
    for stage in args.stages:
        a = next(r for r in rows if r["stage"] == stage and r["n"] == small)["peak_mib"]
        b = next(r for r in rows if r["stage"] == stage and r["n"] == large)["peak_mib"]
        ratio = b / a
        print(f"{stage}: peak at {large} / at {small} = {ratio:.3f} -> {'MET' if ratio <= 1.10 else 'MISSED'} (target <= 1.10)")


if __name__ == "__main__":
    main()

"""The build engine: many dialogues at once (bounded), turns of one dialogue in order, crash-safe.

Crash safety: a dialogue is written only when whole, as ONE line (record + its trace) appended to
`work/generated*.jsonl` with flush + fsync. A killed run (SIGKILL included) leaves at most a torn last
line, which the appender cuts on the next open; the rerun skips every id already there. Nothing is
written half, nothing twice. With `--shard I/N` a run does only the ids hashed to shard I and writes
`work/generated.shard-I-of-N.jsonl`; `merge` joins shard folders and finalizes.

A role whose model keeps failing (`max_role_failures` consecutive failed calls) stops the run with
an error naming the role, the model and the last error. Single failed dialogues are counted and
left for the next run.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..jobs import JobBar, run_jobs
from ..records import JsonlAppender, RecordError, done_keys
from .anonymise import anon_username, load_or_make_salt, scrub
from .config import BuildConfig
from .loop import Counters, DialogueFailed, DialogueLoop, RoleFailed, RoleHealth
from .plan import Plan, PlanItem, describe
from .profiles import Profile, load_profiles
from .seeds import Seed, SeedTable, load_seeds
from .export import finalize


class BuildError(RuntimeError):
    """The run cannot go on (a role keeps failing, no inputs...): the message says why."""


def input_path(path: str) -> str:
    """`kardia:samples/profiles.jsonl` names a file shipped in the package; anything else is a path."""
    if path.startswith("kardia:"):
        from ..paths import resource_path

        return str(resource_path(*path[len("kardia:"):].split("/")))
    return path


def iter_profiles(cfg: BuildConfig, skip_bad: bool = False, bad: list | None = None) -> Iterator[Profile]:
    """The profiles, one at a time, scrubbed of contact details, addresses and the profile's own username
    before any model sees them."""
    for src in cfg.profiles:
        for n, prof in enumerate(load_profiles(src.kind, input_path(src.path), skip_bad=skip_bad, bad=bad)):
            if src.limit is not None and n >= src.limit:
                break
            # the username is exported only as a keyed hash, so its plain text (a signature) goes too; a
            # username that is only the profile id (none given) is no secret: meta.profile_id holds it
            names = [prof.username] if prof.username and prof.username != prof.id else []
            yield prof.model_copy(update={"person": scrub(prof.person, names=names)})


def iter_seeds(cfg: BuildConfig, skip_bad: bool = False, bad: list | None = None) -> Iterator[Seed]:
    """The situations (scrubbed), one at a time."""
    for src in cfg.seeds:
        for n, s in enumerate(load_seeds(src.kind, input_path(src.path), skip_bad=skip_bad, bad=bad, emotion_map=src.emotion_map)):
            if src.limit is not None and n >= src.limit:
                break
            yield s.model_copy(update={"situation": scrub(s.situation)})


def load_inputs(cfg: BuildConfig, skip_bad: bool = False) -> tuple[list[Profile], list[Seed], list[RecordError]]:
    """Profiles and situations as lists (the build itself streams the profiles: see `plan_for`)."""
    bad: list[RecordError] = []
    profiles = list(iter_profiles(cfg, skip_bad, bad))
    return profiles, list(iter_seeds(cfg, skip_bad, bad)), bad


def plan_for(cfg: BuildConfig, skip_bad: bool = False, shard_spec: tuple[int, int] | None = None):
    """The plan, streamed (see `plan.Plan`): one pass here counts the profiles and collects bad lines."""
    bad: list[RecordError] = []
    n_profiles = sum(1 for _ in iter_profiles(cfg, skip_bad, bad))
    seeds = SeedTable(iter_seeds(cfg, skip_bad, bad))  # all held (they decide the plan), compactly
    items = Plan(lambda: iter_profiles(cfg, skip_bad), seeds, cfg.dialogues_per_profile, cfg.distribution, cfg.seed,
                 cfg.max_profiles, cfg.assign_mbti, n_profiles=n_profiles, shard_spec=shard_spec)
    return items, bad


def calls_upper_bound(cfg: BuildConfig, dialogues: int) -> dict[str, int]:
    """Most model calls the plan can make (every turn revised the maximum number of times).
    Empty-answer and parse retries can add to this; the critic's own parse retries are its own."""
    drafts = cfg.max_revisions + 1
    per_draft = 4 if cfg.responder_mode == "guided" else 1
    ex = cfg.max_exchanges * dialogues
    return {"user": ex, "responder": ex * drafts * per_draft, "critic": ex * drafts, "total": ex * (1 + drafts * (per_draft + 1))}


def dry_run_report(cfg: BuildConfig, items: Sequence[PlanItem], bad: list) -> dict:
    d = describe(items)
    d["model_calls_upper_bound"] = calls_upper_bound(cfg, len(items))
    d["skipped_bad_inputs"] = len(bad)
    d["models"] = cfg.models.model_dump()
    return d


BAR_TEXT = "dialogues | turns {task.fields[turns]} | revisions {task.fields[revisions]} | failures {task.fields[failures]}"


def _gen_path(work: Path, shard_spec: tuple[int, int] | None) -> Path:
    if shard_spec:
        return work / f"generated.shard-{shard_spec[0]}-of-{shard_spec[1]}.jsonl"
    return work / "generated.jsonl"


async def generate(
    cfg: BuildConfig,
    items: Iterable[PlanItem],
    gen_path: Path,
    salt: str,
    progress: bool = True,
    loop: DialogueLoop | None = None,
) -> dict:
    """Generate the items not yet in any generated file beside `gen_path`; returns counters."""
    work = gen_path.parent
    done: set = set()
    for f in sorted(work.glob("generated*.jsonl")):
        done |= done_keys(f)
    planned = todo = 0
    for it in items:  # one pass (a streamed plan re-reads its profiles each pass)
        planned += 1
        todo += it.id not in done
    counters = Counters()
    health = RoleHealth(cfg.max_role_failures)
    loop = loop or DialogueLoop(cfg, counters, health)
    loop.counters, loop.health = counters, health
    t0 = time.monotonic()

    async def one(item: PlanItem) -> dict:
        try:
            res = await loop.run(item, anon_username(item.profile.username or item.profile.id, salt))
        except DialogueFailed:
            counters.failures += 1  # left out: the next run retries it
            raise
        return {"id": item.id, "record": res["record"], "trace": res["trace"]}

    fields = lambda: {"turns": counters.turns, "revisions": counters.revisions, "failures": counters.failures}  # noqa: E731
    try:
        with JobBar("build", todo, enabled=progress, fields=fields, extra=BAR_TEXT) as bar, JsonlAppender(gen_path) as app:
            stats = await run_jobs(items, one, app, key=lambda it: it.id, done=done, concurrency=cfg.concurrency,
                                   retry_on=(DialogueFailed,), bar=bar)
    except RoleFailed as exc:
        raise BuildError(str(exc)) from None
    failed = [{"id": key, "error": msg} for key, msg in stats.retried]
    written = stats.written
    return {
        "planned": planned,
        "already_done": planned - todo,
        "written": written,
        "failed": len(failed),
        "failed_ids": failed[:20],
        "turns": counters.turns,
        "revisions": counters.revisions,
        "critic_unparsed": counters.critic_unparsed,
        "emotion_unparsed": counters.emotion_unparsed,
        "emotion_disagrees": counters.emotion_disagrees,
        "copy_retries": counters.copy_retries,
        "calls": counters.calls,
        "seconds": round(time.monotonic() - t0, 2),
    }


def run_build(
    cfg: BuildConfig,
    out: str | Path,
    shard_spec: tuple[int, int] | None = None,
    skip_bad: bool = False,
    progress: bool = True,
    finalize_output: bool = True,
) -> dict:
    """The whole `kardia build`: plan, generate (resumable), then finalize (unless sharded)."""

    out = Path(out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    items, bad = plan_for(cfg, skip_bad, shard_spec)
    (work / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    configured = cfg.anonymise.salt or os.environ.get("KARDIA_ANON_SALT")
    if shard_spec and not configured and not (work / "salt").exists():
        raise BuildError(
            "a sharded build needs the same salt on every machine: set anonymise.salt=... "
            "(or $KARDIA_ANON_SALT), keep it private"
        )
    salt = load_or_make_salt(work, configured)
    gen = asyncio.run(generate(cfg, items, _gen_path(work, shard_spec), salt, progress))
    gen["skipped_bad_inputs"] = len(bad)
    gen["bad_inputs"] = [str(b) for b in bad[:20]]
    result: dict[str, Any] = {"generation": gen}
    (work / f"generation{'.shard-%d-of-%d' % shard_spec if shard_spec else ''}.json").write_text(
        json.dumps(gen, indent=2), encoding="utf-8"
    )
    if finalize_output and not shard_spec:
        result["dataset"] = finalize(out, cfg)
    return result


def merge(shard_dirs: Sequence[str | Path], out: str | Path, cfg: BuildConfig | None = None) -> dict:
    """Join shard folders (each with work/generated*.jsonl) into `out`, then finalize there.
    Ids present in several shards (a shard rerun elsewhere) are kept once."""

    out = Path(out)
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    if cfg is None:
        for d in shard_dirs:
            c = Path(d) / "work" / "config.yaml"
            if c.exists():
                cfg = BuildConfig.load(c)
                break
        else:
            raise BuildError("merge: no work/config.yaml in the shard folders; pass --config")
    target = work / "generated.jsonl"
    seen = done_keys(target)
    added = 0
    with JsonlAppender(target) as app:
        for d in shard_dirs:
            files = sorted((Path(d) / "work").glob("generated*.jsonl"))
            if not files:
                raise BuildError(f"merge: {d}/work has no generated*.jsonl")
            for f in files:
                if f.resolve() == target.resolve():
                    continue
                with f.open(encoding="utf-8") as fh:
                    for line in fh:
                        if not line.endswith("\n"):
                            break
                        rid = json.loads(line)["id"]
                        if rid in seen:
                            continue
                        seen.add(rid)
                        app.write(json.loads(line))
                        added += 1
    salt_src = [Path(d) / "work" / "salt" for d in shard_dirs if (Path(d) / "work" / "salt").exists()]
    if salt_src and not (work / "salt").exists():
        shutil.copy2(salt_src[0], work / "salt")
    (work / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")
    return {"merged": added, "dataset": finalize(out, cfg)}

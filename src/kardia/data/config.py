"""`kardia build` configuration: one pydantic model, YAML + `--set key=value` overrides."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..config import KardiaConfig
from ..llm.options import LLMOptions


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProfileSource(_Part):
    kind: Literal["person", "personachat", "esconv"] = "person"
    path: str
    limit: int | None = None  # first N profiles of this source


class SeedSource(_Part):
    kind: Literal["ed", "esconv", "jsonl"] = "ed"
    path: str
    limit: int | None = None  # first N situations of this source
    emotion_map: str | None = None  # ESConv only: your own map, in the form of resources/emotions/esconv_emotion_map.yaml


class Models(_Part):
    """Each role is a model string (`embedded`, a folder, `openai:MODEL@URL`)."""

    user: str = "embedded"
    responder: str = "embedded"
    critic: str = "embedded"


class Sampling(_Part):
    temperature: float = 0.7
    top_p: float = 0.95
    seed_calls: bool = True  # a seed per call derived from the run seed: reproducible and cached on disk
    # Guided mode cuts every free-text call at the first newline. Keep these three equal: calls with equal
    # sampling parameters share one batched forward pass on local backends, whatever dialogue they serve.
    user_max_tokens: int = 60
    span_max_tokens: int = 60  # understanding, reasoning
    response_max_tokens: int = 60
    single_max_tokens: int = 320  # single mode: all four spans


class Prompts(_Part):
    """Templates (shipped names or file paths); replace any of them to change the loop's behaviour."""

    user: str = "build/user"
    understanding: str = "build/understanding"
    reasoning: str = "build/reasoning"
    emotion: str = "build/emotion"
    response: str = "build/response"
    revise: str = "build/revise"
    first_user: str = "build/first_user"


class Filters(_Part):
    structure: bool = True
    emotion_labels: bool = True
    emotion_matches_gold: bool = True  # every emotion span is the dialogue's gold label
    complete_sentences: bool = True  # no understanding/reasoning/response span cut mid-sentence
    copied_understanding: bool = True  # no understanding span that repeats the user's turn verbatim
    identity_drift: bool = True
    identity_patterns: str = "build/identity_drift_patterns"
    emotion_jumps: bool = True
    max_valence_flips: int = 1  # positive<->negative switches allowed between consecutive assistant labels
    crisis: bool = True  # kardia.safety: a turn at risk must be met by a reply that handles the crisis


class Dedup(_Part):
    method: Literal["minhash", "embeddings", "none"] = "minhash"
    threshold: float | None = None  # None: 0.8 (MinHash: estimated Jaccard of word 3-shingles) / 0.95 (embeddings: cosine)
    num_perm: int = 128


class Anonymise(_Part):
    salt: str | None = None  # None: a random salt made once per output folder and kept in work/ (never exported)


class Split(_Part):
    test_fraction: float = Field(0.1, ge=0.0, le=1.0)  # fraction of PROFILES in test (profile-disjoint)
    seed: int | None = None  # None: the build's seed


class Export(_Part):
    hf: bool = True
    card: bool = True
    plot: bool = True


class BuildConfig(KardiaConfig):
    profiles: list[ProfileSource] = Field(default_factory=list)
    seeds: list[SeedSource] = Field(default_factory=list)
    max_profiles: int | None = None
    assign_mbti: bool = False
    dialogues_per_profile: int = Field(2, ge=1)
    distribution: Literal["natural", "balanced"] = "natural"
    seed: int = 0
    models: Models = Field(default_factory=Models)
    responder_mode: Literal["guided", "single"] = "guided"
    # target: the emotion span IS the seed's gold label and the other spans are written toward it (what the
    # emotion reward and eval compare with); chosen: the responder picks (strong models), and disagreement
    # with the gold label is counted per turn and dropped by the emotion_matches_gold filter.
    emotion_source: Literal["target", "chosen"] = "target"
    emotion_choice: Literal["auto", "probs", "text"] = "auto"  # chosen only: auto = probs on local backends, else text
    max_exchanges: int = Field(10, ge=1)
    profile_words: int | None = None  # clip the profile shown to the role models (None: whole)
    # "situation": the seed situation itself is the user's opening turn (as in EmpatheticDialogues, where the
    # speaker opens by telling it); "simulate": U writes it. Small user simulators do far better with "situation".
    first_user_turn: Literal["simulate", "situation"] = "simulate"
    # A simulated user turn that drifts out of character (the identity-drift patterns): "drop" keeps it and the
    # filter drops the dialogue (the paper's rule); "end" ends the dialogue before it, recorded in meta.ended.
    user_drift: Literal["drop", "end"] = "drop"
    max_revisions: int = Field(5, ge=0)
    critic_rubric: str = "critic"
    critic_scorer: Literal["text", "probs", "auto"] = "text"  # probs: most probable verdict word (local models; no reasons)
    critic_unparsed: Literal["fail", "pass"] = "fail"  # policy for a verdict that cannot be parsed (counted)
    sampling: Sampling = Field(default_factory=Sampling)
    prompts: Prompts = Field(default_factory=Prompts)
    concurrency: int = Field(8, ge=1)
    max_role_failures: int = Field(3, ge=1)  # consecutive failed calls of one role that stop the run
    llm_cache: bool = True
    # every role's backend: timeout, retries, concurrency, rate limit (remote); max_batch (local). The same
    # typed block as eval, judge score and serve: an unknown key is an error naming it
    llm_options: LLMOptions = Field(default_factory=LLMOptions)
    filters: Filters = Field(default_factory=Filters)
    dedup: Dedup = Field(default_factory=Dedup)
    anonymise: Anonymise = Field(default_factory=Anonymise)
    split: Split = Field(default_factory=Split)
    export: Export = Field(default_factory=Export)

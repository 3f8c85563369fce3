"""Run configs for `kardia train sft|grpo`: the paper's settings by default, a `cpu` preset for the demo.

Order of precedence: field defaults (= paper, section 3 of the reference) < preset < YAML file <
`--set key=value`. A preset only fills keys the YAML and the overrides leave unset, so
`--preset cpu --set learning_rate=5e-5` does what it says.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import KardiaConfig
from ..prompts import PromptProfile

Preset = Literal["paper", "cpu"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSection(_Section):
    path: str | None = Field(None, description="DialogueRecord JSONL")
    difficulty: Literal["easy", "hard", "all"] | None = Field(None, description="None: easy for SFT, hard for GRPO")
    system_prompt: Literal["template", "record"] = "template"


class PromptSection(_Section):
    """The training profile's system prompt; saved with the model so eval, chat and serve send the same."""

    template: str | None = Field(None, description="shipped name (system, system_compact) or .txt path; None: the "
                                 "starting model's saved prompt, else `system`")
    profile_words: int | None = Field(None, description="keep the profile's first N words (prompt tokens cost)")


class LoraSection(_Section):
    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    merge: bool = Field(True, description="save a merged model so chat, transformers serve and vLLM load it unchanged")


class JudgeSection(_Section):
    model: str = Field("embedded", description="any model string; on a cluster: openai:MODEL@http://judge-host:8000/v1")
    rubric: str = "kardia"
    mode: Literal["single", "per_dimension"] = "single"
    scorer: str = Field("auto", description="text | probs | auto (see kardia.judge)")
    cache: bool = Field(True, description="cache judge answers on disk (greedy judging repeats itself)")
    weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    gate: bool = False
    dimensions: int = Field(5, description="rubric dimensions (judge calls per completion in per_dimension mode)")


class RewardSpec(_Section):
    name: Literal["kardia", "format", "emotion", "rubric"]
    weight: float = 1.0


class _RunBase(KardiaConfig):
    preset: Preset = "paper"
    model: str = "embedded"
    output_dir: str = "runs/train"
    data: DataSection = Field(default_factory=DataSection)
    prompt: PromptSection = Field(default_factory=PromptSection)
    chat_template: str = "kardia_chatml"
    lora: LoraSection = Field(default_factory=LoraSection)
    num_train_epochs: float = 2.0
    max_steps: int = -1
    learning_rate: float = 1e-4
    optim: str = "adamw_torch"
    lr_scheduler_type: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 4
    gradient_checkpointing: bool = False
    logging_steps: int = 10
    save_steps: int = 200
    save_total_limit: int | None = 3
    seed: int = 42
    report_to: list[str] | Literal["auto", "none"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    num_processes: int | None = Field(None, description="for --dry-run arithmetic; default: $WORLD_SIZE or 1")
    extra: dict[str, Any] = Field(default_factory=dict, description="passed as-is to the TRL config")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        preset = data.get("preset", "paper")
        table = cls._presets().get(preset)
        if table is None:
            return data  # the Literal check names the bad value
        return _deep_merge(copy.deepcopy(table), data)

    @classmethod
    def _presets(cls) -> dict[str, dict[str, Any]]:
        return {"paper": {}}

    # -- derived -------------------------------------------------------------------------------
    def prompt_profile(self):
        """The system prompt this run trains with (and saves with its model)."""

        if self.prompt.template:
            return PromptProfile.named(self.prompt.template, self.prompt.profile_words)
        start = PromptProfile.for_model(self.model)  # a Kardia-trained starting point keeps its prompt
        if self.prompt.profile_words is not None:
            start.profile_words = self.prompt.profile_words
        return start

    def world_size(self) -> int:
        if self.num_processes:
            return self.num_processes
        return int(os.environ.get("WORLD_SIZE", "1"))

    def resolved_report_to(self) -> list[str]:
        if self.report_to == "none":
            return []
        if self.report_to == "auto":
            out = ["tensorboard"]
            try:
                import importlib.util

                if importlib.util.find_spec("wandb") is not None:
                    out.append("wandb")
            except Exception:  # pragma: no cover
                pass
            return out
        return list(self.report_to)

    def use_cpu(self) -> bool:
        if self.device == "cpu":
            return True
        if self.device == "cuda":
            return False
        import torch

        return not torch.cuda.is_available()

    def precision(self) -> dict[str, bool]:
        """bf16 on a GPU that supports it; on a CPU, bf16 autocast (fp32 master weights) where this CPU
        computes bf16 fast (measured, see `llm/precision.py`: ~3x on AVX512-BF16), else fp32."""
        if self.use_cpu():
            from ..llm.precision import cpu_prefers_bf16

            return {"bf16": self.dtype in ("auto", "bfloat16") and cpu_prefers_bf16(), "fp16": False}
        if self.dtype in ("auto", "bfloat16"):
            import torch

            ok = torch.cuda.is_bf16_supported()
            return {"bf16": ok, "fp16": not ok}
        return {"bf16": False, "fp16": self.dtype == "float16"}


class SFTRunConfig(_RunBase):
    """Stage 1 (paper): SFT on the easy split, 2 epochs, AdamW, lr 1e-4, global batch 128 (4 x 4 x 8 GPUs)."""

    output_dir: str = "runs/sft"
    max_length: int = 4096
    # Where the CPU time goes: only the top N decoder layers (and the final norm) train, so the backward
    # pass stops there. None: every weight trains (the paper's full fine-tuning).
    train_top_layers: int | None = None
    # The emotion span is one or two tokens of ~60 in a turn, yet a third of the reward: its tokens' loss
    # counts this many times (1.0: plain token-mean cross-entropy).
    emotion_loss_weight: float = Field(1.0, ge=0.0)

    @classmethod
    def _presets(cls) -> dict[str, dict[str, Any]]:
        return {
            "paper": {},
            "cpu": {
                "num_train_epochs": 1,
                "per_device_train_batch_size": 2,
                "gradient_accumulation_steps": 1,
                "max_length": 1024,
                "logging_steps": 1,
                "save_steps": 50,
                "learning_rate": 1e-4,
                "device": "cpu",
            },
        }

    def difficulty(self) -> str:
        return self.data.difficulty or "easy"


class GRPORunConfig(_RunBase):
    """Stage 2 (paper): GRPO on the hard split from the SFT checkpoint, 2 epochs, lr 1e-6, group size 8.

    Batch: `per_device_train_batch_size` counts completions. The paper's global batch of 32 prompts x 8
    generations = 256 completions = 8 per device x 4 accumulation x 8 GPUs. KL coefficient (`beta`) and
    clip range (`epsilon`) are not reported by the paper: we use DeepSeekMath's 0.04 and PPO's 0.2.
    """

    output_dir: str = "runs/grpo"
    model: str = "runs/sft/model"
    learning_rate: float = 1e-6
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 4
    num_generations: int = 8
    max_prompt_length: int | None = None
    max_completion_length: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    beta: float = 0.04
    epsilon: float = 0.2
    epsilon_high: float | None = None
    loss_type: str | None = Field(None, description="None: TRL's default")
    scale_rewards: str | None = Field(None, description="None: TRL's default")
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="kardia", weight=1.0)])
    judge: JudgeSection = Field(default_factory=JudgeSection)
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    vllm_server_base_url: str | None = None
    vllm_gpu_memory_utilization: float = 0.3
    vllm_tensor_parallel_size: int = 1
    log_completions: bool = True
    logging_steps: int = 1
    save_steps: int = 50

    @classmethod
    def _presets(cls) -> dict[str, dict[str, Any]]:
        return {
            "paper": {},
            "cpu": {
                "num_train_epochs": 1,
                "num_generations": 4,
                "per_device_train_batch_size": 4,
                "gradient_accumulation_steps": 1,
                "max_completion_length": 128,
                "save_steps": 10,
                "log_completions": False,  # TRL prints a wide table every step; ours is completions/rank0.jsonl
                "device": "cpu",
                "learning_rate": 1e-6,
            },
        }

    def difficulty(self) -> str:
        return self.data.difficulty or "hard"

    @model_validator(mode="after")
    def _check_groups(self) -> "GRPORunConfig":
        if self.num_generations < 2:
            raise ValueError("num_generations must be at least 2 (GRPO compares completions within a group)")
        total = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if total % self.num_generations:
            raise ValueError(
                f"per_device_train_batch_size x gradient_accumulation_steps = {total} must be a multiple of "
                f"num_generations = {self.num_generations}"
            )
        if not self.rewards:
            raise ValueError("rewards: at least one reward is needed")
        return self

    def uses_judge(self) -> bool:
        return any(r.name in ("kardia", "rubric") for r in self.rewards)

    def judge_calls_per_completion(self) -> int:
        if not self.uses_judge():
            return 0
        return self.judge.dimensions if self.judge.mode == "per_dimension" else 1


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = _deep_merge(base[k], v)
        else:
            base[k] = v
    return base


def load_config(cls: type[_RunBase], path: str | None, overrides: list[str], preset: str | None = None, **explicit: Any):
    """YAML + overrides, then explicit CLI options (only those given, `--preset` among them) as the last word."""
    return cls.from_cli(path, overrides, {"preset": preset, **explicit})

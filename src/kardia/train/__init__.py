"""Rubric-ERL training on TRL: `kardia train sft` (easy split) then `kardia train grpo` (hard split).

Modules: `chat_format` (span tokens, chat template), `datasets` (records -> examples), `config`
(SFTRunConfig, GRPORunConfig), `sft` / `grpo` (`run_sft`, `run_grpo`, `plan`), `model_card`, `commands`.
Nothing here imports torch at module import time.
"""

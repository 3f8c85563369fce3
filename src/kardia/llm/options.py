"""One `llm_options` block for every command that calls a model (eval, judge score, serve).

Unset fields keep the backend's defaults (openai: 120 s timeout, 4 retries). Remote (`openai:`) models
take the timeout, retries, concurrency and rate limit; local ones only `max_batch`.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field


class LLMOptions(BaseModel):
    """Timeouts, retries and limits of the model backends a command loads."""

    model_config = ConfigDict(extra="forbid")
    timeout_s: Optional[float] = Field(None, gt=0)  # one HTTP attempt
    max_retries: Optional[int] = Field(None, ge=0)  # attempts after the first
    backoff_s: Optional[float] = Field(None, ge=0)
    max_backoff_s: Optional[float] = Field(None, ge=0)
    max_concurrency: Optional[int] = Field(None, ge=1)  # requests in flight per remote model (unset: the whole batch)
    rpm: Optional[float] = Field(None, gt=0)  # requests per minute per remote model
    max_batch: Optional[int] = Field(None, ge=1)  # local models: most conversations per generate call

    def for_model(self, model: str | None) -> dict:
        """The options the backend of `model` takes, set ones only (so defaults stay the backend's)."""
        set_ = {k: v for k, v in self.model_dump().items() if v is not None}
        if model and str(model).startswith("openai:"):
            return {k: v for k, v in set_.items() if k != "max_batch"}
        return {k: v for k, v in set_.items() if k == "max_batch"}

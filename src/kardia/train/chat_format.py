"""Tokenizer and model set-up shared by SFT, GRPO, eval and chat.

The four span markers are added as NON-special tokens: TRL's GRPOTrainer (and vLLM, and our local
backend) decode completions with `skip_special_tokens=True`, which would silently delete special
markers before the reward functions see them, and every format reward would read 0. As added tokens
they are still atomic (one id each, never split by BPE) and the embeddings are resized to hold them.

The chat template is a data file (`resources/chat_templates/kardia_chatml.jinja`): the base model's
ChatML layout plus `{% generation %}` markers, which TRL's assistant-only loss needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..paths import resource_path
from ..spans import SPAN_TOKENS
from ..llm import resolve_model_path

CHAT_TEMPLATE_NAME = "kardia_chatml"


def chat_template_path(name: str = CHAT_TEMPLATE_NAME) -> Path:
    p = Path(name)
    if p.suffix == ".jinja" and p.exists():
        return p
    shipped = resource_path("chat_templates", f"{name}.jinja")
    if not shipped.exists():
        raise FileNotFoundError(f"chat template {name!r}: no such file and no shipped template of that name")
    return shipped


def load_chat_template(name: str = CHAT_TEMPLATE_NAME) -> str:
    return chat_template_path(name).read_text(encoding="utf-8")


def span_tokens() -> tuple[str, ...]:
    return tuple(SPAN_TOKENS)


def add_span_tokens(tokenizer: Any) -> list[int]:
    """Add the eight span markers as non-special tokens (idempotent). Returns their ids, in order.

    A marker that already exists as a *special* token (e.g. a tokenizer saved by another tool) is an
    error: decoding with skip_special_tokens=True would drop it.
    """
    from tokenizers import AddedToken

    toks = span_tokens()
    specials = set(getattr(tokenizer, "all_special_tokens", []) or [])
    bad = [t for t in toks if t in specials]
    if bad:
        raise ValueError(
            f"span markers {bad} are registered as special tokens in this tokenizer; decoding with "
            "skip_special_tokens=True (TRL, vLLM) would delete them. Re-save the tokenizer with them as normal added tokens."
        )
    vocab = tokenizer.get_vocab()
    missing = [t for t in toks if t not in vocab]
    if missing:
        tokenizer.add_tokens(
            [AddedToken(t, special=False, normalized=False, single_word=False, lstrip=False, rstrip=False) for t in missing],
            special_tokens=False,
        )
    ids = tokenizer.convert_tokens_to_ids(list(toks))
    check = tokenizer.decode(ids, skip_special_tokens=True)
    if check != "".join(toks):
        raise RuntimeError(f"span markers do not survive decoding with skip_special_tokens=True: got {check!r}")
    return list(ids)


def prepare_tokenizer(tokenizer: Any, chat_template: str = CHAT_TEMPLATE_NAME) -> list[int]:
    """Span tokens, our chat template, a pad token. Returns the span token ids."""
    ids = add_span_tokens(tokenizer)
    tokenizer.chat_template = load_chat_template(chat_template)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return ids


def resize_for_tokenizer(model: Any, tokenizer: Any) -> int:
    """Resize the embeddings to the tokenizer. Returns rows added.

    Each new span-marker row starts as the mean embedding of its spelled-out words (" understanding
    begin"), not a random or global-mean vector: the markers are distinct from the first step, which also
    lets LoRA runs (whose adapters cannot train embedding rows under TRL's fused LM head) emit them.
    """
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= old:
        return 0
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    inp = model.get_input_embeddings().weight
    out_emb = model.get_output_embeddings()
    untied = out_emb is not None and out_emb.weight.data_ptr() != inp.data_ptr()
    with torch.no_grad():
        for tok in span_tokens():
            idx = tokenizer.convert_tokens_to_ids(tok)
            if idx < old:
                continue
            words = " " + tok.strip("<|>").replace("_", " ")
            pieces = [i for i in tokenizer.encode(words, add_special_tokens=False) if i < old]
            inp[idx] = inp[pieces].mean(dim=0)
            if untied:
                out_emb.weight[idx] = out_emb.weight[pieces].mean(dim=0)
    return len(tokenizer) - old


def load_model_and_tokenizer(model: str, chat_template: str = CHAT_TEMPLATE_NAME, dtype: str = "auto", device_map: Any = None):
    """Load a model string (`embedded`, a folder) ready for training: span tokens added, embeddings resized.

    Returns (model, tokenizer, info) where info says how many tokens/rows were added.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer


    path = resolve_model_path(model)
    tok = AutoTokenizer.from_pretrained(path)
    n_before = len(tok)
    ids = prepare_tokenizer(tok, chat_template)
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if device_map is not None:
        kwargs["device_map"] = device_map
    m = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    rows = resize_for_tokenizer(m, tok)
    if m.generation_config is not None:
        m.generation_config.pad_token_id = tok.pad_token_id
    info = {"path": path, "tokens_added": len(tok) - n_before, "embedding_rows_added": rows, "span_token_ids": ids}
    return m, tok, info

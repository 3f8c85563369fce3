"""SFT throughput on this CPU: which training set-up teaches the most per second (issue: compact profile).

Every prompt token is paid in every example, so the choice matters. Same examples (four-span turns
under the compact training profile, built from the shipped sample situations) for every row; tokens/s
counts the non-padding tokens of the batches actually trained. The baseline is a plain PyTorch loop
(forward with labels, backward, AdamW) over the SAME collated batches, run in the same process.

    python benchmarks/train_throughput.py [--steps 4] [--batch 8]

Rows: plain PyTorch (full; float32 and bf16 autocast), TRL SFTTrainer full fine-tuning (float32, bf16 autocast),
top 12 layers with bf16 autocast, full + gradient checkpointing, top-12
layers only (kardia reproduce --size cpu), LoRA r=16 on all linear layers, and top-12 + length grouping.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time


def examples(n: int) -> list[dict]:
    from kardia.paths import resource_path
    from kardia.prompts import PromptProfile
    from kardia.spans import render

    prof = PromptProfile.named("system_compact", profile_words=20)
    rows = [json.loads(x) for x in resource_path("samples", "situations.jsonl").read_text().splitlines() if x.strip()]
    persona = "MBTI: INFP About: I work at a bakery. I have two cats. I love hiking on weekends."
    out = []
    for i in range(n):
        r = rows[i % len(rows)]
        answer = render(f"They feel {r['emotion']} about what happened and want to be heard.",
                        "Something important to them changed, so a warm, specific acknowledgement helps.",
                        r["emotion"], "That sounds like a lot to carry. I am glad you told me; how are you holding up?")
        out.append({"messages": [{"role": "system", "content": prof.render(persona, r["situation"])},
                                 {"role": "user", "content": r["situation"]},
                                 {"role": "assistant", "content": answer}]})
    return out


def trl_run(name: str, data, steps: int, batch: int, *, top: int | None = None, lora: bool = False,
            ckpt: bool = False, group: bool = False, bf16: bool = False) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from kardia.train.chat_format import load_model_and_tokenizer
    from kardia.train.sft import freeze_below_top_layers

    model, tok, _ = load_model_and_tokenizer("embedded", dtype="float32")
    freeze_below_top_layers(model, top)
    with tempfile.TemporaryDirectory() as d:
        args = SFTConfig(output_dir=d, max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-4,
                         logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=bf16,
                         assistant_only_loss=True, max_length=512, gradient_checkpointing=ckpt,
                         train_sampling_strategy="group_by_length" if group else "random", seed=0)
        peft = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM") if lora else None
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tok,
                             peft_config=peft)
        batches = [b for _, b in zip(range(steps), trainer.get_train_dataloader())]
        tokens = int(sum(b["attention_mask"].sum() for b in batches))
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    return {"setup": name, "tokens": tokens, "seconds": wall, "tok_s": tokens / wall, "batches": batches}


def plain_run(batches, steps: int, bf16: bool = False) -> dict:
    import torch

    from kardia.train.chat_format import load_model_and_tokenizer

    model, _, _ = load_model_and_tokenizer("embedded", dtype="float32")
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = 0
    t0 = time.perf_counter()
    for b in batches[:steps]:
        labels = b["input_ids"].masked_fill(b.get("assistant_masks", b["attention_mask"]) == 0, -100)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=labels)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        tokens += int(b["attention_mask"].sum())
    wall = time.perf_counter() - t0
    return {"setup": f"plain PyTorch loop (full{', bf16 autocast' if bf16 else ''})", "tokens": tokens, "seconds": wall, "tok_s": tokens / wall}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    from kardia.llm.precision import cpu_bf16_speedup

    data = examples(a.steps * a.batch)
    rows = [trl_run("TRL SFTTrainer, full", data, a.steps, a.batch)]
    batches = rows[0].pop("batches")
    rows.insert(0, plain_run(batches, a.steps))
    rows.insert(1, plain_run(batches, a.steps, bf16=True))
    for name, kw in (("TRL, full, bf16 autocast", {"bf16": True}), ("TRL, top 12, bf16 autocast", {"top": 12, "bf16": True}),("TRL, full + gradient checkpointing", {"ckpt": True}), ("TRL, top 12 of 30 layers", {"top": 12}),
                     ("TRL, LoRA r=16 all-linear", {"lora": True}), ("TRL, top 12 + group_by_length", {"top": 12, "group": True})):
        r = trl_run(name, data, a.steps, a.batch, **kw)
        r.pop("batches")
        rows.append(r)
    base = rows[0]["tok_s"]
    print(f"\nSFT throughput, {a.steps} steps x batch {a.batch}, SmolLM2-135M, float32 unless noted, CPU; bf16 speedup of a matmul here: {cpu_bf16_speedup():.1f}x\n")
    print("| setup | tokens | seconds | tokens/s | vs plain loop |\n|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setup']} | {r['tokens']} | {r['seconds']:.1f} | {r['tok_s']:.0f} | {r['tok_s'] / base:.2f}x |")


if __name__ == "__main__":
    main()

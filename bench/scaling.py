"""Scaling of SFT on this machine next to its physical limit. Issue 10, target 6.

Each point is one `ftchat train` run (the bundled 135M model, ftchat's default technique: on a CPU that is fp32
LoRA r=16 on all linear layers, bf16 matmuls where the CPU has them, padding-free batches) in a fresh process, on
made-up conversations of exactly the point's length in tokens (one-token words under the training chat template):
- threads x batch: tokens/s, s/step and peak RSS at OMP_NUM_THREADS 1 and 2, batch 1, 4, 8, 16, rows of 256 tokens;
- sequence length: s/step and tokens/s at batch 1, rows of 128 ... 2048 tokens, at the most threads measured;
- the limit: matmul throughput in the runs' matmul precision (bf16 or fp32; torch.matmul of two 2048x2048
  matrices, GFLOP/s, each thread count in a fresh process) and the tokens/s it would allow. FLOPs per trained
  token (Kaplan et al. 2020, with N = every parameter, the tied embedding once since it is the LM-head matmul):
      full training  6N + 6 * layers * L * d_model   (forward 2N, backward 4N; attention scores and values 3x)
      LoRA           4N + 6 * layers * L * d_model   (the backward still multiplies by every frozen weight to pass
                                                       the gradient down, 2N, but computes no weight gradients)
  The LoRA ceiling is the one to compare with. A 2048x2048 matmul is the easy case for the CPU: the model's own
  matmuls are thinner (d_model 576), so real training cannot reach the ceiling.
Steady rates leave out the first step (one-off warm-up work). "cores busy" = the child's CPU seconds / its wall
seconds over the whole process (loading, mostly on one core, included): a check that the thread count took hold.

Writes a markdown table, bench/results/scaling.json and bench/results/scaling.svg (matplotlib is not in the venv:
the plot is drawn as SVG by hand).
Usage: python bench/scaling.py [--steps 3] [--quick] [--threads 1 2] [--batches 1 4 8 16] [--lengths 128 ... 2048]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import (
    ROOT,
    SAME_ROWS,
    ftchat_train,
    machine,
    run_or_explain,
    steady_rate,
    step_seconds,
    write_json,
    write_jsonl,
)

WARMUP_STEPS = 1
WORDS = ("time people year way day thing man world life hand part child eye woman place work week case point number "
         "group problem fact house water story money light river garden window table market music paper city family "
         "answer letter").split()  # each is one token after a space in SmolLM2's tokenizer (checked when used)


# ---- data -------------------------------------------------------------------------------------------------------

def conversations_of_length(tokenizer, length: int, count: int, seed: int = 0) -> list[dict]:
    """`count` two-turn conversations of exactly `length` tokens under the training chat template."""
    from ftchat import models

    tokenizer.chat_template = models.training_chat_template(tokenizer)
    for word in WORDS:
        if len(tokenizer.encode(" " + word, add_special_tokens=False)) != 1:
            raise SystemExit(f"'{word}' is not one token in this tokenizer; pick other words for bench/scaling.py")

    def tokens(row):
        return len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])

    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        text = [rng.choice(WORDS) for _ in range(length)]
        n_user = max(1, length // 4)
        n_reply = max(1, length - n_user - 40)
        for _ in range(8):  # the template's overhead is constant: one correction lands exactly
            row = {"messages": [{"role": "user", "content": " ".join(text[:n_user])},
                                {"role": "assistant", "content": " ".join(text[n_user:n_user + n_reply])}]}
            missing = length - tokens(row)
            if missing == 0:
                break
            n_reply += missing
            if n_reply < 1 or n_user + n_reply > len(text):
                raise SystemExit(f"cannot make a {length}-token conversation: the template alone is longer")
        else:
            raise SystemExit(f"could not make a conversation of exactly {length} tokens")
        rows.append(row)
    return rows


# ---- measurements ----------------------------------------------------------------------------------------------

def thread_env(threads: int) -> dict:
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))


def matmul_gflops(dtype: str = "float32", size: int = 2048, seconds: float = 2.0) -> float:
    """Matmul throughput in `dtype` of this process (torch's thread count as set by OMP_NUM_THREADS)."""
    import torch

    a, b = torch.randn(size, size, dtype=getattr(torch, dtype)), torch.randn(size, size, dtype=getattr(torch, dtype))
    for _ in range(3):
        torch.matmul(a, b)
    reps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.matmul(a, b)
        reps += 1
    return 2 * size**3 * reps / (time.perf_counter() - started) / 1e9


def train_point(data: Path, threads: int, batch: int, length: int, steps: int, out: Path) -> dict:
    """One `ftchat train` run with ftchat's defaults; steady tokens/s and s/step, peak RSS, and "cores busy" (the
    process's CPU seconds / its wall seconds)."""
    run = ftchat_train(data, out, "--max-steps", str(steps), "--batch-size", str(batch),
                       "--max-length", str(max(2048, length)), "--logging-steps", "1", *SAME_ROWS,
                       env=thread_env(threads))
    rows = run.steps("tokens")
    times, tokens = [r["elapsed_s"] for r in rows], [r["tokens"] for r in rows]
    return {"threads": threads, "batch": batch, "length": length,
            "tokens_per_s": steady_rate(times, tokens, WARMUP_STEPS),
            "s_per_step": statistics.median(step_seconds(times, WARMUP_STEPS)),
            "tokens_per_row": tokens[-1] / (len(tokens) * batch),
            "peak_rss_mb": run.summary["peak_memory_mb"], "cores_busy": run.cpu_s / run.wall_s,
            "matmul_dtype": run.summary.get("matmul_dtype")}


def model_shape() -> dict:
    from ftchat import models
    from ftchat.train.common import parameter_count

    path = models.resolve_base(models.DEFAULT_BASE)
    config = json.loads((path / "config.json").read_text())
    return {"parameters": parameter_count(path), "layers": config["num_hidden_layers"],
            "d_model": config["hidden_size"], "name": models.DEFAULT_BASE}


def flops_per_token(shape: dict, length: int, lora: bool) -> float:
    return (4 if lora else 6) * shape["parameters"] + 6 * shape["layers"] * length * shape["d_model"]


# ---- output ------------------------------------------------------------------------------------------------------

def print_tables(figures: dict) -> None:
    shape, gflops, fixed = figures["model"], figures["matmul_gflops"], figures["fixed_length"]
    dtype = figures.get("ceiling_dtype", "float32")
    print(f"\nSFT scaling, {shape['name']} ({shape['parameters'] / 1e6:.1f}M parameters), ftchat defaults "
          f"(LoRA r=16 all-linear, {dtype} matmuls, padding-free), {figures['steps']} steps a point, first step "
          f"left out")
    print(f"\nThe limit: {dtype} matmul 2048x2048, and the tokens/s it allows at "
          f"{fixed} tokens a row (LoRA: 4N + attention; full: 6N + attention FLOPs per token)")
    print("| threads | GFLOP/s | LoRA ceiling tok/s | full-training ceiling tok/s |")
    print("|---:|---:|---:|---:|")
    for threads, g in gflops.items():
        print(f"| {threads} | {g:.1f} | {g * 1e9 / flops_per_token(shape, fixed, True):.0f} | "
              f"{g * 1e9 / flops_per_token(shape, fixed, False):.0f} |")
    grid = figures["threads_x_batch"]
    if grid:
        base = grid[0]
        print(f"\nThreads x batch, rows of {fixed} tokens (x = tokens/s against "
              f"{base['threads']} thread, batch {base['batch']})")
        print("| threads | batch | tokens/s | x | s/step | peak RSS MB | cores busy | % of LoRA ceiling |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for p in grid:
            ceiling = gflops[str(p["threads"])] * 1e9 / flops_per_token(shape, p["length"], True)
            print(f"| {p['threads']} | {p['batch']} | {p['tokens_per_s']:.1f} | "
                  f"{p['tokens_per_s'] / base['tokens_per_s']:.2f} | {p['s_per_step']:.2f} | {p['peak_rss_mb']:.0f} | "
                  f"{p['cores_busy']:.2f} | {100 * p['tokens_per_s'] / ceiling:.0f}% |")
    sweep = figures["sequence_length"]
    if sweep:
        base = sweep[0]
        print(f"\nSequence length, batch 1, {base['threads']} threads (x = s/step against {base['length']} tokens)")
        print("| tokens a row | s/step | x | tokens/s | peak RSS MB | LoRA floor s/step | % of LoRA ceiling |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for p in sweep:
            floor = p["length"] * flops_per_token(shape, p["length"], True) / (gflops[str(p["threads"])] * 1e9)
            print(f"| {p['length']} | {p['s_per_step']:.2f} | {p['s_per_step'] / base['s_per_step']:.2f} | "
                  f"{p['tokens_per_s']:.1f} | {p['peak_rss_mb']:.0f} | {floor:.3f} | "
                  f"{100 * floor / p['s_per_step']:.0f}% |")


def svg_panel(x0: float, title: str, xlabel: str, ylabel: str, series: list[tuple]) -> list[str]:
    """One log-log panel, 400 px wide at x0, its legend under it; series: (label, colour, dashed, [(x, y), ...])."""
    import math

    left, top, width, height = x0 + 60, 40, 320, 230
    xs = [x for *_, pts in series for x, _ in pts]
    ys = [y for *_, pts in series for _, y in pts]
    lx0, lx1 = math.log2(min(xs)), math.log2(max(xs)) if max(xs) > min(xs) else math.log2(min(xs)) + 1
    ly0, ly1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    ly1 = ly1 if ly1 > ly0 else ly0 + 1

    def px(x):
        return left + (math.log2(x) - lx0) / (lx1 - lx0) * width

    def py(y):
        return top + height - (math.log10(y) - ly0) / (ly1 - ly0) * height

    out = [f'<text x="{left + width / 2}" y="22" text-anchor="middle" font-weight="bold">{title}</text>',
           f'<rect x="{left}" y="{top}" width="{width}" height="{height}" fill="none" stroke="#888"/>',
           f'<text x="{left + width / 2}" y="{top + height + 36}" text-anchor="middle">{xlabel}</text>',
           f'<text transform="translate({x0 + 16},{top + height / 2}) rotate(-90)" '
           f'text-anchor="middle">{ylabel}</text>']
    for x in sorted(set(xs)):
        out.append(f'<text x="{px(x):.1f}" y="{top + height + 16}" text-anchor="middle" font-size="11">{x}</text>')
    for e in range(ly0, ly1 + 1):
        for m in (1, 2, 5):
            y = m * 10.0**e
            if 10.0**ly0 <= y <= 10.0**ly1:
                out.append(f'<line x1="{left}" x2="{left + width}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
                           f'stroke="#eee"/>')
                out.append(f'<text x="{left - 4}" y="{py(y) + 4:.1f}" text-anchor="end" font-size="11">{y:g}</text>')
    for i, (label, colour, dashed, pts) in enumerate(series):
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        if not dashed:
            out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>' for x, y in pts]
        ly = top + height + 58 + 15 * i  # the legend, under the axis
        out.append(f'<line x1="{left}" x2="{left + 24}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{left + 30}" y="{ly}" font-size="11">{label}</text>')
    return out


def write_svg(figures: dict, path: Path) -> None:
    shape, gflops, fixed = figures["model"], figures["matmul_gflops"], figures["fixed_length"]
    colours = {"1": "#1f77b4", "2": "#d62728", "4": "#2ca02c", "8": "#9467bd"}
    left, middle, right = [], [], []
    grid = figures["threads_x_batch"]
    for threads in sorted({p["threads"] for p in grid}):
        pts = [(p["batch"], p["tokens_per_s"]) for p in grid if p["threads"] == threads]
        colour = colours.get(str(threads), "#333")
        middle.append((f"{threads} thread{'s' if threads > 1 else ''}", colour, False,
                       [(p["batch"], p["peak_rss_mb"]) for p in grid if p["threads"] == threads]))
        ceiling = gflops[str(threads)] * 1e9 / flops_per_token(shape, fixed, True)
        left.append((f"{threads} thread{'s' if threads > 1 else ''}, measured", colour, False, pts))
        left.append((f"{threads} thread{'s' if threads > 1 else ''}, LoRA ceiling", colour, True,
                     [(pts[0][0], ceiling), (pts[-1][0], ceiling)]))
    sweep = figures["sequence_length"]
    if sweep:
        threads = sweep[0]["threads"]
        right.append((f"measured, {threads} threads", "#d62728", False,
                      [(p["length"], p["s_per_step"]) for p in sweep]))
        right.append(("LoRA floor (matmul limit)", "#d62728", True,
                      [(p["length"], p["length"] * flops_per_token(shape, p["length"], True)
                        / (gflops[str(threads)] * 1e9)) for p in sweep]))
    parts = []
    if left:
        parts += svg_panel(0, f"tokens/s, rows of {fixed} tokens", "batch size", "tokens/s", left)
    if middle:
        parts += svg_panel(420, f"peak RSS, rows of {fixed} tokens", "batch size", "MB", middle)
    if right:
        parts += svg_panel(840, "time per step, batch 1", "tokens a row", "seconds per step", right)
    dtype = figures.get("ceiling_dtype", "float32")
    note = (f"{shape['name']}, ftchat train defaults (LoRA, {dtype} matmuls), {figures['date']}; dashed: the {dtype} "
            f"matmul limit (2048x2048)")
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="1260" height="410" font-family="sans-serif" '
           'font-size="12">\n<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(parts)
           + f'\n<text x="10" y="402" font-size="10" fill="#555">{note}</text>\n</svg>\n')
    path.write_text(svg)


# ---- main --------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    parser.add_argument("--fixed-length", type=int, default=256, help="tokens a row for the threads x batch grid")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke test: batches 1 2, lengths 64 128, rows of 128 tokens in the grid, 2 steps")
    parser.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--matmul", help="(internal) print this process's matmul GFLOP/s in this dtype")
    args = parser.parse_args()
    if args.matmul:
        print(matmul_gflops(args.matmul))
        return
    if args.quick:
        args.batches, args.lengths, args.fixed_length, args.steps = [1, 2], [64, 128], 128, 2
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must be more than the {WARMUP_STEPS} warm-up step")

    from ftchat import models

    tokenizer = models.load_tokenizer(models.DEFAULT_BASE)
    # the ceiling in the precision the runs' matmuls take: bf16 where `auto` trains with bf16 autocast
    dtype = "bfloat16" if models.autocast_bf16("auto") else "float32"
    figures = {"ceiling_dtype": dtype, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
               "steps": args.steps,
               "warmup_steps_left_out": WARMUP_STEPS, "fixed_length": args.fixed_length, "model": model_shape(),
               "flops_per_token": {"lora": "4N + 6 * layers * L * d_model", "full": "6N + 6 * layers * L * d_model"},
               "matmul_gflops": {},
               "threads_x_batch": [], "sequence_length": []}
    for threads in args.threads:
        out = run_or_explain([sys.executable, __file__, "--matmul", dtype], thread_env(threads)).stdout
        figures["matmul_gflops"][str(threads)] = float(out.strip().splitlines()[-1])
        print(f"{dtype} matmul, {threads} thread(s): {figures['matmul_gflops'][str(threads)]:.1f} GFLOP/s",
              file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)

        def data_for(length: int, count: int) -> Path:
            path = tmp / f"rows{length}x{count}.jsonl"
            if not path.exists():
                write_jsonl(path, conversations_of_length(tokenizer, length, count))
            return path

        def measure(key: str, threads: int, batch: int, length: int) -> None:
            started = time.time()
            point = train_point(data_for(length, max(batch * args.steps, 8)), threads, batch, length, args.steps,
                                tmp / f"run{len(figures['threads_x_batch']) + len(figures['sequence_length'])}")
            figures[key].append(point)
            print(f"{key}: {threads} thread(s), batch {batch}, {length} tokens: {point['tokens_per_s']:.1f} tok/s, "
                  f"{point['s_per_step']:.2f} s/step, {point['peak_rss_mb']:.0f} MB ({time.time() - started:.0f} s)",
                  file=sys.stderr, flush=True)

        for threads in args.threads:
            for batch in args.batches:
                measure("threads_x_batch", threads, batch, args.fixed_length)
        for length in args.lengths:
            same = [p for p in figures["threads_x_batch"]
                    if (p["threads"], p["batch"], p["length"]) == (max(args.threads), 1, length)]
            if same:  # measured already in the grid
                figures["sequence_length"].append(same[0])
            else:
                measure("sequence_length", max(args.threads), 1, length)
    print_tables(figures)
    out_dir = Path(args.out_dir)
    write_json(out_dir / "scaling.json", figures)
    write_svg(figures, out_dir / "scaling.svg")
    print(f"written: {out_dir / 'scaling.json'}, {out_dir / 'scaling.svg'}")


if __name__ == "__main__":
    main()

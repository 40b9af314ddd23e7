"""Chat decoding speed: ftchat's decode path (ftchat.decode) against transformers `generate` with peft's per-row
adapters (the chat before), on the bundled model, in one process, rounds interleaved, medians reported.

The tuned run is a LoRA r=16 on all linear layers with random factors (speed does not depend on the values).
Rows: base pane alone, tuned pane alone, both panes in one batch (tokens/s per pane), time to first token.
If llama-cpp-python is installed, the bundled GGUF through llama.cpp is the anchor row.
Usage: python bench/chat_speed.py [--tokens 64] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTION = [{"role": "user", "content": "Write a short story about a lighthouse keeper who finds a map."}]


def measure(answer, panes: int, n_tokens: int) -> tuple[float, float]:
    """answer(on_text) streams; returns (decode tokens/s per pane, time to first token)."""
    started = time.perf_counter()
    stamps = []
    answer(lambda row, text: stamps.append((row, time.perf_counter())))
    per_pane = [[t for r, t in stamps if r == row] for row in range(panes)]
    ttft = min(times[0] for times in per_pane) - started
    rates = [(len(times) - 1) / (times[-1] - times[0]) for times in per_pane if len(times) > 1]
    return statistics.mean(rates), ttft


def llama_cpp_row(n_tokens: int, rounds: int):
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    from ftchat.models import _bundled_gguf, spec_for

    llm = Llama(model_path=str(_bundled_gguf(spec_for("smollm2-135m"))), n_ctx=512, verbose=False)
    rates, ttfts = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        stamps = []
        for _chunk in llm.create_chat_completion(messages=QUESTION, max_tokens=n_tokens, temperature=0.0,
                                                 stream=True):
            stamps.append(time.perf_counter())
        rates.append((len(stamps) - 1) / (stamps[-1] - stamps[0]))
        ttfts.append(stamps[0] - started)
    return statistics.median(rates), statistics.median(ttfts)


def main() -> None:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from ftchat import models
    from ftchat.chat import GenerationSettings, fast_generate_batch, generate_batch
    from ftchat.decode import attach_lora

    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # the chat's default settings (greedy, repetition penalty 1.1); a story prompt runs to max_new_tokens
    settings = GenerationSettings(max_new_tokens=args.tokens)
    tokenizer = models.load_tokenizer()
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        peft_model = get_peft_model(models.load_model(precision="fp32"),
                                    LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(param, std=0.001)
        peft_model.save_pretrained(Path(tmp) / "tuned")
        del peft_model
        before = PeftModel.from_pretrained(models.load_model(precision="fp32"), Path(tmp) / "tuned",
                                           adapter_name="tuned").eval()
        plain = models.load_model(precision="fp32").eval()  # the base alone, as the chat held it before any run
        fast = models.load_model(precision="fp32").eval()
        attach_lora(fast, Path(tmp) / "tuned", "tuned")

    cases = {  # label -> (panes, before, after)
        "base pane alone": (1, lambda cb: generate_batch(plain, tokenizer, [QUESTION], settings, on_text=cb),
                            lambda cb: fast_generate_batch(fast, tokenizer, [QUESTION], settings, on_text=cb)),
        "tuned pane alone": (1, lambda cb: generate_batch(before, tokenizer, [QUESTION], settings,
                                                          adapter_names=["tuned"], on_text=cb),
                             lambda cb: fast_generate_batch(fast, tokenizer, [QUESTION], settings,
                                                            row_adapters=["tuned"], on_text=cb)),
        "base + tuned together": (2, lambda cb: generate_batch(before, tokenizer, [QUESTION, QUESTION], settings,
                                                               adapter_names=["__base__", "tuned"], on_text=cb),
                                  lambda cb: fast_generate_batch(fast, tokenizer, [QUESTION, QUESTION], settings,
                                                                 row_adapters=[None, "tuned"], on_text=cb)),
    }
    results = {(label, side): [] for label in cases for side in ("before", "after")}
    for _ in range(args.rounds):  # interleaved, so a busy moment hits both sides alike
        for label, (panes, before_run, after_run) in cases.items():
            results[(label, "before")].append(measure(before_run, panes, args.tokens))
            results[(label, "after")].append(measure(after_run, panes, args.tokens))
            print(f"  {label}: before {results[(label, 'before')][-1][0]:.1f} tok/s, "
                  f"after {results[(label, 'after')][-1][0]:.1f} tok/s", file=sys.stderr, flush=True)
    med = {key: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
           for key, rs in results.items()}
    anchor = llama_cpp_row(args.tokens, args.rounds)

    print(f"Chat decoding, bundled SmolLM2-135M fp32, up to {args.tokens} new tokens, greedy, median of "
          f"{args.rounds} interleaved rounds")
    print(f"{'':24} {'before tok/s':>12} {'after tok/s':>11} {'after x before':>14} {'TTFT before':>11} "
          f"{'TTFT after':>10}")
    for label in cases:
        b, a = med[(label, "before")], med[(label, "after")]
        print(f"{label:24} {b[0]:12.1f} {a[0]:11.1f} {a[0] / b[0]:14.2f} {b[1]:11.3f} {a[1]:10.3f}")
    base_alone = med[("base pane alone", "after")][0]
    print("\ntargets, ftchat decode path:")
    print(f"  tuned alone / base alone           {med[('tuned pane alone', 'after')][0] / base_alone:5.2f}  (>= 0.9)")
    print(f"  per pane together / base alone     {med[('base + tuned together', 'after')][0] / base_alone:5.2f}  "
          f"(>= 0.8)")
    print(f"  time to first token                {med[('base pane alone', 'after')][1]:5.3f} s (<= 0.3)")
    if anchor:
        print(f"  llama.cpp (Q4_1 GGUF)              {anchor[0]:5.1f} tok/s, TTFT {anchor[1]:.3f} s; "
              f"base alone / llama.cpp {base_alone / anchor[0]:.2f} (>= 0.5)")
    else:
        print("  llama.cpp anchor: llama-cpp-python not installed (pip install llama-cpp-python builds it, ~5 min)")


if __name__ == "__main__":
    main()

"""Chat decoding speed: transformers `generate` with peft's per-row adapters (the chat before), ftchat.chat.decode on
transformers' forward, and ftchat.chat.decode on the packed decoder (ftchat.chat.packed_llama, one column per precision), on
the bundled model, in one process, rounds interleaved, medians reported; and how often the packed decoder's greedy
tokens are the fp32 model's.

The tuned run is a LoRA r=16 on all linear layers with random factors (speed does not depend on the values).
Rows: base pane alone, tuned pane alone, both panes in one batch (tokens/s per pane), time to first token.
If llama-cpp-python is installed, the bundled GGUF through llama.cpp is the anchor row.
Usage: python bench/chat_speed.py [--tokens 64] [--rounds 3] [--packed auto,int8] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common  # noqa: F401  (puts the repo root on sys.path, for ftchat)

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


def llama_cpp_row(n_tokens: int, rounds: int, threads: int | None = None):
    """llama-cpp-python's own chat completion on the shipped GGUF (threads None: its default, half the cores)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    from ftchat.models import _bundled_gguf, spec_for

    extra = {"n_threads": threads} if threads else {}
    llm = Llama(model_path=str(_bundled_gguf(spec_for("smollm2-135m"))), n_ctx=512, verbose=False, **extra)
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


PROMPTS = ["Hi", "What is the capital of France?", "Give me three tips for a job interview.",
           "Explain photosynthesis to a child.", "Write a haiku about autumn.", "How do I boil an egg?",
           "What is a prime number?", "Summarize the plot of Romeo and Juliet in two sentences."]


def agreement(packed, reference, tokenizer, n_tokens: int) -> dict:
    """Greedy answers of the packed model against the fp32 reference (transformers forward, the training side's
    numbers): free-running (identical answers, tokens before the first difference) and teacher-forced (each step
    fed the reference's own tokens: how often the packed model's next token is the reference's)."""
    import torch

    from ftchat.chat.decode import _transformers_step, decode
    from ftchat.chat.generation import _left_padded, render_prompts

    same_answers, prefix, forced_same, forced_total = 0, [], 0, 0
    for prompt in PROMPTS:
        inputs = _left_padded(tokenizer, render_prompts(tokenizer, [[{"role": "user", "content": prompt}]]), "cpu")
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        answers = [decode(model, ids, mask, max_new_tokens=n_tokens, stop_ids={tokenizer.eos_token_id},
                          pad_token_id=tokenizer.pad_token_id)[0].tolist() for model in (reference, packed)]
        same_answers += answers[0] == answers[1]
        prefix.append(next((i for i, (a, b) in enumerate(zip(*answers)) if a != b), min(map(len, answers))))
        full = torch.cat([ids, torch.tensor([answers[0]])], dim=1)
        steps = {}
        with torch.inference_mode():
            for name, step in (("reference", _transformers_step(reference, [None])),
                               ("packed", packed.packed_decoder.session(1, full.shape[1], [None]).forward)):
                picks = [step(ids, mask, torch.arange(ids.shape[1])[None]).argmax(-1)]
                for j in range(ids.shape[1], full.shape[1] - 1):
                    picks.append(step(full[:, j:j + 1], torch.ones(1, j + 1, dtype=torch.long),
                                      torch.tensor([[j]])).argmax(-1))
                steps[name] = torch.cat(picks)
        forced_same += int((steps["reference"] == steps["packed"]).sum())
        forced_total += len(steps["reference"])
    return dict(prompts=len(PROMPTS), same_answers=same_answers, mean_prefix=statistics.mean(prefix),
                teacher_forced=forced_same / forced_total)


def llamacpp_agreement(model, reference, tokenizer, n_tokens: int) -> dict:
    """`agreement` for ftchat.chat.llamacpp: the shipped Q4_1 GGUF through llama.cpp against the fp32 model (the same
    4-bit values dequantized) - identical greedy answers, and teacher-forced next-token agreement."""
    import llama_cpp
    import numpy as np

    from ftchat.chat.decode import decode
    from ftchat.chat.generation import _left_padded, render_prompts

    same_answers, prefix, forced_same, forced_total = 0, [], 0, 0
    for prompt in PROMPTS:
        inputs = _left_padded(tokenizer, render_prompts(tokenizer, [[{"role": "user", "content": prompt}]]), "cpu")
        ids = inputs["input_ids"][0].tolist()
        expected = decode(reference, inputs["input_ids"], inputs["attention_mask"], max_new_tokens=n_tokens,
                          stop_ids={tokenizer.eos_token_id}, pad_token_id=tokenizer.pad_token_id)[0].tolist()
        got = []
        model.generate(ids, max_new_tokens=n_tokens, repetition_penalty=1.0, temperature=0.0, top_p=1.0,
                       on_token=got.append)
        got = got[:len(got) - (got[-1:] == [tokenizer.eos_token_id])]
        expected = expected[:len(expected) - (expected[-1:] == [tokenizer.eos_token_id])]
        same_answers += got == expected
        prefix.append(next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected))))
        llm = model.acquire()
        try:
            llm.reset()
            llm.eval(ids)
            for token in expected:
                logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
                forced_same += int(logits.argmax()) == token
                forced_total += 1
                llm.eval([token])
        finally:
            model.release(llm)
    return dict(prompts=len(PROMPTS), same_answers=same_answers, mean_prefix=statistics.mean(prefix),
                teacher_forced=forced_same / forced_total)


def llamacpp_side(tuned_dir: Path, tokenizer, settings) -> tuple[dict, object] | None:
    """The chat's llama.cpp backend (ftchat.chat.llamacpp) on the shipped GGUF, the tuned run as a GGUF LoRA adapter."""
    import json
    import os
    import threading

    from ftchat import models
    from ftchat.chat import llamacpp
    from ftchat.chat.generation import llamacpp_answer, stop_ids

    if not llamacpp.available():
        return None
    from transformers import GenerationConfig

    shipped = llamacpp.shipped_gguf(models.DEFAULT_BASE)
    config = json.loads((models.resolve_base() / "config.json").read_text())
    adapter = llamacpp.lora_to_gguf(tuned_dir, config, tuned_dir.parent / "tuned.gguf")
    stops = stop_ids(GenerationConfig.from_pretrained(models.resolve_base()), tokenizer)
    base = llamacpp.LlamaCppModel(shipped, None, tokenizer, stops, threads=1)
    tuned = llamacpp.LlamaCppModel(shipped, adapter, tokenizer, stops, threads=1)

    cores = os.cpu_count() or 1  # as ChatEngine.stream: a pane alone on every core, two panes half each

    def together(cb):
        threads = [threading.Thread(target=llamacpp_answer, args=(model, QUESTION, settings),
                                    kwargs={"on_text": lambda _row, text, row=row: cb(row, text),
                                            "threads": max(1, cores // 2)})
                   for row, model in enumerate((base, tuned))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    return {"base pane alone": (1, lambda cb: llamacpp_answer(base, QUESTION, settings, on_text=cb, threads=cores)),
            "tuned pane alone": (1, lambda cb: llamacpp_answer(tuned, QUESTION, settings, on_text=cb,
                                                               threads=cores)),
            "base + tuned together": (2, together)}, base


def main() -> None:
    import os

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from ftchat import models
    from ftchat.chat.decode import attach_lora, pack_for_decoding
    from ftchat.chat.generation import GenerationSettings, fast_generate_batch, generate_batch

    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--packed", default="auto", help="comma-separated packed precisions: auto,fp32,int8,int4")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # the chat's default settings (greedy, repetition penalty 1.1); a story prompt runs to max_new_tokens
    settings = GenerationSettings(max_new_tokens=args.tokens)
    tokenizer = models.load_tokenizer()
    packed_models = {}
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
        pack_seconds = {}
        for precision in args.packed.split(","):
            model = models.load_model(precision="fp32").eval()
            started = time.perf_counter()
            problem = pack_for_decoding(model, precision)
            pack_seconds[precision] = time.perf_counter() - started
            if problem:
                sys.exit(f"cannot pack the bundled model as {precision}: {problem}")
            attach_lora(model, Path(tmp) / "tuned", "tuned")
            packed_models[precision] = model
        fast_backend = llamacpp_side(Path(tmp) / "tuned", tokenizer, settings)  # loads its files before they go

    def after(model):
        return {"base pane alone": (1, lambda cb: fast_generate_batch(model, tokenizer, [QUESTION], settings,
                                                                      on_text=cb)),
                "tuned pane alone": (1, lambda cb: fast_generate_batch(model, tokenizer, [QUESTION], settings,
                                                                       row_adapters=["tuned"], on_text=cb)),
                "base + tuned together": (2, lambda cb: fast_generate_batch(model, tokenizer, [QUESTION, QUESTION],
                                                                            settings, row_adapters=[None, "tuned"],
                                                                            on_text=cb))}

    sides = {"generate+peft": {
        "base pane alone": (1, lambda cb: generate_batch(plain, tokenizer, [QUESTION], settings, on_text=cb)),
        "tuned pane alone": (1, lambda cb: generate_batch(before, tokenizer, [QUESTION], settings,
                                                          adapter_names=["tuned"], on_text=cb)),
        "base + tuned together": (2, lambda cb: generate_batch(before, tokenizer, [QUESTION, QUESTION], settings,
                                                               adapter_names=["__base__", "tuned"], on_text=cb))},
        "decode": after(fast)}
    for precision, model in packed_models.items():
        sides[f"packed {precision}"] = after(model)
    if fast_backend:
        sides["llama.cpp backend"] = fast_backend[0]
    cases = list(sides["decode"])
    results = {(label, side): [] for label in cases for side in sides}
    loads = [os.getloadavg()[0]]
    for _ in range(args.rounds):  # interleaved, so a busy moment hits every side alike
        for label in cases:
            for side, runs in sides.items():
                panes, run = runs[label]
                results[(label, side)].append(measure(run, panes, args.tokens))
            print(f"  {label}: " + ", ".join(f"{side} {results[(label, side)][-1][0]:.1f}" for side in sides)
                  + " tok/s", file=sys.stderr, flush=True)
        loads.append(os.getloadavg()[0])
    med = {key: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
           for key, rs in results.items()}
    agreements = {precision: agreement(model, fast, tokenizer, args.tokens)
                  for precision, model in packed_models.items()}
    if fast_backend:
        agreements["llama.cpp backend"] = llamacpp_agreement(fast_backend[1], fast, tokenizer, args.tokens)
    anchor = llama_cpp_row(args.tokens, args.rounds, threads=os.cpu_count())
    anchor_default = llama_cpp_row(args.tokens, args.rounds)

    print(f"Chat decoding, bundled SmolLM2-135M (fp32 weights), up to {args.tokens} new tokens, greedy, median of "
          f"{args.rounds} interleaved rounds; {time.strftime('%Y-%m-%d %H:%M')}, torch threads "
          f"{torch.get_num_threads()}, 1-min load average {min(loads):.2f}-{max(loads):.2f} on {os.cpu_count()} "
          f"cores")
    print("tokens/s per pane (x generate+peft)")
    print(f"{'':24}" + "".join(f"{side:>22}" for side in sides))
    for label in cases:
        first = med[(label, "generate+peft")][0]
        print(f"{label:24}" + "".join(f"{med[(label, side)][0]:11.1f} ({med[(label, side)][0] / first:5.2f}x) "
                                      for side in sides))
    print(f"{'time to first token, s':24}" + "".join(f"{med[('base pane alone', side)][1]:22.3f}" for side in sides))
    for precision, found in agreements.items():
        packing = f"packed {precision}: packed in {pack_seconds[precision]:.1f} s" if precision in pack_seconds \
            else precision
        print(f"{packing}; against the fp32 model on "
              f"{found['prompts']} prompts x {args.tokens} tokens: {found['same_answers']}/{found['prompts']} "
              f"identical answers, first difference after {found['mean_prefix']:.1f} tokens on average, "
              f"teacher-forced next-token agreement {found['teacher_forced']:.1%}")
    for side in sides:
        base_alone = med[("base pane alone", side)][0]
        print(f"\ntargets, {side}:")
        print(f"  tuned alone / base alone           {med[('tuned pane alone', side)][0] / base_alone:5.2f}  (>= 0.9)")
        print(f"  per pane together / base alone     {med[('base + tuned together', side)][0] / base_alone:5.2f}  "
              f"(>= 0.8)")
        print(f"  time to first token                {med[('base pane alone', side)][1]:5.3f} s (<= 0.3)")
        if anchor:
            print(f"  base alone / llama.cpp             {base_alone / anchor[0]:5.2f}  (>= 0.5)")
    if anchor:
        print(f"\nllama.cpp (Q4_1 GGUF, llama-cpp-python's create_chat_completion): {anchor[0]:.1f} tok/s on "
              f"{os.cpu_count()} threads (the anchor above), {anchor_default[0]:.1f} tok/s on its default threads; "
              f"TTFT {anchor[1]:.3f} s")
    else:
        print("\nllama.cpp anchor: llama-cpp-python not installed (pip install llama-cpp-python builds it, ~5 min)")


if __name__ == "__main__":
    main()

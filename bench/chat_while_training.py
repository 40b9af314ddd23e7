"""Chat while a run trains (issue 19): each pane's tokens/s and first-token time, and the trainer's tokens/s, with the
chat and a default training run on the same cores, for each way of sharing them (ftchat.cores, FTCHAT_CORE_SHARING).

The chat alone (no run) is measured first: the quiet figures the panes' ratios are against. Then per variant, a
default `python -m ftchat train` run on the bundled model (LoRA SFT on generated conversations, no held-out split,
replay or comparison; started in a session of its own, as the app starts one) trains, and once it has warmed up:
  alone     the trainer alone: the baseline of its ratios, measured again in each variant
  1 pane    the Chat's engine answers one pane, replies back to back
  2 panes   base + tuned (a LoRA run with random factors) answer together, as the Chat tab asks
  2 apps    two panes here and two in a second chat process on the same workspace, at the same time
  session   one pane answers, then its reader reads READ_S, again and again: the run's slowdown over a chat session
Then the trainer is killed and the next variant starts its own.
The trainer takes its slot's threads (OMP_NUM_THREADS is dropped from this process' environment: every core).
Usage: python bench/chat_while_training.py [--variants both,threads,nice,none] [--seconds 12] [--tokens 96]
  (--variants both --seconds 4: a smoke run of about a minute and a half)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, SAME_ROWS, machine, utc_stamp, write_json, write_jsonl

for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the trainer's threads are its slot's, as in the app
    os.environ.pop(_name, None)

QUESTION = [{"role": "user", "content": "Write a short story about a lighthouse keeper who finds a map."}]
READ_S = 4.0  # how long a person reads a reply before the next message, in the session phase
TARGET_TOKENS_S, TARGET_TTFT_S, TARGET_RUN = 30.0, 0.5, 0.75
BEGAN = time.monotonic()


def progress(text: str) -> None:
    print(f"  [{time.monotonic() - BEGAN:5.0f} s] {text}", file=sys.stderr, flush=True)


def conversations(n: int = 64) -> list[dict]:
    """Support conversations of similar length, so the trainer's steps cost about the same."""
    items = ["lamp", "kettle", "bicycle", "printer", "heater", "router", "blender", "camera"]
    rows = []
    for i in range(n):
        item = items[i % len(items)]
        rows.append({"messages": [
            {"role": "user", "content": f"My {item} (order {1000 + i}) stopped working after a week. What can I do?"},
            {"role": "assistant", "content": (
                f"I'm sorry your {item} stopped working. First unplug it for a minute and plug it back in; many "
                f"faults clear after a restart. If it still does not work, check the cable and the fuse, and try "
                f"another socket. Order {1000 + i} is under warranty for two years, so if none of this helps, reply "
                f"with a photo of the label and we will send a replacement {item} within three working days.")}]})
    return rows


def make_tuned_run(runs_root: Path) -> Path:
    """A finished LoRA run on the bundled base with random factors (the chat's speed does not depend on them)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from ftchat import models, runs
    from ftchat.config import RunConfig

    run_dir = runs_root / "tuned"
    torch.manual_seed(0)
    model = get_peft_model(models.load_model(precision="fp32"),
                           LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.001)
    model.save_pretrained(runs.adapter_dir(run_dir))
    RunConfig(data=["generated.jsonl"], out=str(run_dir), base=models.DEFAULT_BASE, adapter="lora").save(
        run_dir / "config.yaml")
    runs.write_status(run_dir, "done")
    return run_dir


# -- the chat ----------------------------------------------------------------------------------------------------------

def one_reply(engine, choices: list[str], tokenizer, tokens: int, deadline: float | None = None) -> list[dict]:
    """Stream one message to each of `choices` at once, stopped at `deadline` (time.monotonic()) if it runs past it;
    per pane {tokens, tokens_s, ttft_s}."""
    from ftchat.chat.generation import GenerationSettings

    started = time.perf_counter()
    last = [""] * len(choices)
    first_change: list[float | None] = [None] * len(choices)
    last_change = [0.0] * len(choices)
    stream = engine.stream([(choice, QUESTION) for choice in choices], GenerationSettings(max_new_tokens=tokens))
    for texts in stream:
        now = time.perf_counter()
        for row, text in enumerate(texts):
            if text != last[row]:
                last[row] = text
                first_change[row] = first_change[row] or now
                last_change[row] = now
        if deadline is not None and time.monotonic() > deadline and all(first_change):
            stream.close()  # a slow reply ends with its phase (the decoders stop at their next token)
            break
    out = []
    for row, text in enumerate(last):
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        span = last_change[row] - (first_change[row] or last_change[row])
        out.append({"tokens": n, "tokens_s": (n - 1) / span if span > 0 else 0.0,
                    "ttft_s": (first_change[row] or now) - started})
    return out


def replies_for(engine, choices: list[str], tokenizer, tokens: int, seconds: float, pause: float = 0.0) -> list[dict]:
    """Replies back to back (with `pause` between them) for at least `seconds`; every pane of every reply."""
    panes = []
    ends = time.monotonic() + seconds
    while True:
        panes += one_reply(engine, choices, tokenizer, tokens, deadline=ends)
        if time.monotonic() >= ends:
            return panes
        time.sleep(pause)


def helper(runs_root: str, choices: list[str], tokens: int) -> None:
    """The second app: loads the same models, says `ready`, then for each `go VARIANT SECONDS` line on stdin answers
    its panes back to back for SECONDS under that sharing policy and prints the panes as one JSON line."""
    from ftchat.chat import ChatEngine
    from ftchat.models import load_tokenizer

    engine = ChatEngine(runs_root=runs_root)
    tokenizer = load_tokenizer()
    one_reply(engine, choices, tokenizer, 4)  # loads the models
    print("ready", flush=True)
    for line in sys.stdin:
        _, variant, seconds = line.split()
        os.environ["FTCHAT_CORE_SHARING"] = variant
        print(json.dumps(replies_for(engine, choices, tokenizer, tokens, float(seconds))), flush=True)


# -- the trainer -------------------------------------------------------------------------------------------------------

def start_trainer(data: Path, run_dir: Path, variant: str) -> subprocess.Popen:
    env = dict(os.environ, FTCHAT_CORE_SHARING=variant, PYTHONUNBUFFERED="1")
    log = open(run_dir.parent / f"{run_dir.name}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "ftchat", "train", "--data", str(data), "--out", str(run_dir),
                             "--max-steps", "100000", *SAME_ROWS], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def logged(run_dir: Path) -> list[dict]:
    from ftchat import runs

    return [row for row in runs.read_metrics(run_dir) if "time" in row and "tokens" in row]


def wait_training(run_dir: Path, process: subprocess.Popen, steps: int = 3, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while len(logged(run_dir)) < steps:
        if process.poll() is not None or time.monotonic() > deadline:
            log = (run_dir.parent / f"{run_dir.name}.log").read_text(errors="replace")[-3000:]
            raise SystemExit(f"the trainer in {run_dir} did not train:\n{log}")
        time.sleep(0.2)


def trainer_in(run_dir: Path, start: float, end: float) -> dict:
    """The trainer's tokens/s and s/step over the steps that began and ended within [start, end] (wall clock)."""
    rows = logged(run_dir)
    ends = [row for row in rows if start <= row["time"] <= end]  # from the end of the first: whole steps only
    if len(ends) < 2:
        return {"tokens_s": None, "s_per_step": None, "steps": len(ends), "threads": None}
    span = ends[-1]["time"] - ends[0]["time"]
    threads = [row.get("threads") for row in ends[1:]]
    return {"tokens_s": (ends[-1]["tokens"] - ends[0]["tokens"]) / span, "s_per_step": span / (len(ends) - 1),
            "steps": len(ends) - 1, "threads": statistics.mode(threads) if threads else None}


def stop_trainer(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


# -- one variant -------------------------------------------------------------------------------------------------------

def panes_figures(panes: list[dict]) -> dict:
    rates = [p["tokens_s"] for p in panes]
    ttfts = [p["ttft_s"] for p in panes]
    return {"tokens_s": statistics.median(rates), "tokens_s_min": min(rates), "ttft_s": statistics.median(ttfts),
            "ttft_s_max": max(ttfts), "replies": len(panes)}


def run_variant(variant: str, workspace: Path, data: Path, engine, tokenizer, second_app, base: str, tuned: str,
                seconds: float, tokens: int) -> dict:
    os.environ["FTCHAT_CORE_SHARING"] = variant
    run_dir = workspace / "runs" / f"train-{variant}"
    started = time.monotonic()
    process = start_trainer(data, run_dir, variant)
    phases = {}
    try:
        wait_training(run_dir, process)
        progress(f"{variant}: the run trains ({time.monotonic() - started:.0f} s after it started)")

        def phase(name: str, chat) -> None:
            time.sleep(1.5)  # the trainer takes its threads back from the phase before
            begin = time.time()
            panes = chat()
            phases[name] = {"trainer": trainer_in(run_dir, begin, time.time()),
                            **({"chat": panes_figures(panes)} if panes else {})}
            progress(f"{variant} {name}: " + (f"pane {phases[name]['chat']['tokens_s']:.1f} tok/s, " if panes else "")
                     + f"trainer {phases[name]['trainer']['tokens_s'] or 0:.0f} tok/s")

        phase("alone", lambda: time.sleep(seconds) or [])
        phase("1 pane", lambda: replies_for(engine, [base], tokenizer, tokens, seconds))
        phase("2 panes", lambda: replies_for(engine, [base, tuned], tokenizer, tokens, seconds))

        def two_apps() -> list[dict]:
            second_app.stdin.write(f"go {variant} {seconds}\n")
            second_app.stdin.flush()
            mine = replies_for(engine, [base, tuned], tokenizer, tokens, seconds)
            return mine + json.loads(second_app.stdout.readline())

        phase("2 apps", two_apps)
        phase("session", lambda: replies_for(engine, [base], tokenizer, tokens, 2 * seconds, pause=READ_S))
    finally:
        stop_trainer(process)
    return {"phases": phases, "wall_s": time.monotonic() - started}


# -- the report --------------------------------------------------------------------------------------------------------

def ratio(value: float | None, baseline: float | None) -> str:
    return f"{value / baseline:9.2f}" if value and baseline else f"{'n/a':>9}"


def report(results: dict, quiet: dict, args, loads: list[float], decoder: str) -> None:
    print(f"Chat while a run trains — {machine()}, {utc_stamp()}, 1-min load {min(loads):.2f}-{max(loads):.2f}; "
          f"bundled SmolLM2-135M, chat through {decoder}, {args.tokens} new tokens a reply (greedy), phases of "
          f"{args.seconds:g} s (session {2 * args.seconds:g} s, {READ_S:g} s reading after each reply)")
    print(f"quiet (no run): 1 pane {quiet['1 pane']['tokens_s']:.1f} tok/s, first token "
          f"{quiet['1 pane']['ttft_s']:.3f} s; 2 panes {quiet['2 panes']['tokens_s']:.1f} tok/s each")
    print(f"{'variant':9}{'phase':9}{'pane tok/s (min)':>18}{'x quiet':>9}{'first token s (max)':>21}"
          f"{'trainer tok/s':>15}{'x alone':>9}{'s/step':>8}{'threads':>9}")
    for variant, found in results.items():
        alone = found["phases"]["alone"]["trainer"]["tokens_s"]
        for name, figures in found["phases"].items():
            chat, trainer = figures.get("chat"), figures["trainer"]
            quiet_rate = quiet["2 panes" if name in ("2 panes", "2 apps") else "1 pane"]["tokens_s"]
            chat_cells = (f"{chat['tokens_s']:9.1f} ({chat['tokens_s_min']:5.1f}){ratio(chat['tokens_s'], quiet_rate)}"
                          f"{chat['ttft_s']:12.3f} ({chat['ttft_s_max']:5.3f})") if chat else " " * 48
            rate = trainer["tokens_s"]
            trainer_cells = (f"{rate:15.0f}{ratio(rate, alone)}{trainer['s_per_step']:8.2f}{trainer['threads']!s:>9}"
                             if rate else f"{'n/a (' + str(trainer['steps']) + ' steps)':>15}")
            print(f"{variant:9}{name:9}{chat_cells}{trainer_cells}")
    print(f"\ntargets while a run trains: every pane >= {TARGET_TOKENS_S:g} tok/s, every first token <= "
          f"{TARGET_TTFT_S} s; the run >= {TARGET_RUN}x alone over a chat session")
    for variant, found in results.items():
        phases = found["phases"]
        alone = phases["alone"]["trainer"]["tokens_s"]
        checks = []
        for name in ("1 pane", "2 panes", "2 apps"):
            chat = phases[name]["chat"]
            met = chat["tokens_s_min"] >= TARGET_TOKENS_S and chat["ttft_s_max"] <= TARGET_TTFT_S
            checks.append(f"{name} {'ok' if met else 'MISS'}")
        session = phases["session"]["trainer"]["tokens_s"]
        streaming = phases["1 pane"]["trainer"]["tokens_s"]
        run = f"run over the session {session / alone:.2f}x alone" if session and alone else "run: n/a"
        run += f", while one pane streams {streaming / alone:.2f}x" if streaming and alone else ""
        ok = "ok" if session and alone and session / alone >= TARGET_RUN else "MISS"
        print(f"  {variant:8} {', '.join(checks)}; {run} ({ok}); {found['wall_s']:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variants", default="both,threads,nice,none",
                        help="comma-separated FTCHAT_CORE_SHARING policies to compare (ftchat.cores)")
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each phase (the session: twice)")
    parser.add_argument("--tokens", type=int, default=96, help="new tokens a reply")
    parser.add_argument("--helper", nargs="+", help=argparse.SUPPRESS)  # RUNS_ROOT CHOICE...: the second app
    args = parser.parse_args()
    if args.helper:
        return helper(args.helper[0], args.helper[1:], args.tokens)
    # a bench stopped from outside (timeout, Ctrl-C) still kills its trainer and second app: they have sessions of
    # their own, so nothing else would
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    from ftchat import cores

    unknown = [v for v in variants if v not in cores.POLICIES]
    if unknown:
        raise SystemExit(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(cores.POLICIES)}")

    from ftchat.chat import ChatEngine
    from ftchat.chat import llamacpp
    from ftchat.models import DEFAULT_BASE, load_tokenizer
    from ftchat.names import base_choice

    started = time.monotonic()
    loads = [os.getloadavg()[0]]
    results = {}
    with tempfile.TemporaryDirectory(prefix="chat-while-training-") as tmp:
        workspace = Path(tmp)
        (workspace / "runs").mkdir()
        data = write_jsonl(workspace / "conversations.jsonl", conversations())
        base, tuned = base_choice(DEFAULT_BASE), str(make_tuned_run(workspace / "runs"))
        engine = ChatEngine(runs_root=workspace / "runs")
        tokenizer = load_tokenizer()
        one_reply(engine, [base, tuned], tokenizer, 4)  # loads both, converts the tuned adapter for llama.cpp
        decoder = "llama.cpp" if llamacpp.available() else "ftchat.chat.decode"
        progress("models loaded")
        second_app = subprocess.Popen([sys.executable, __file__, "--tokens", str(args.tokens), "--helper",
                                       str(workspace / "runs"), base, tuned], cwd=ROOT, text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        try:
            if second_app.stdout.readline().strip() != "ready":
                raise SystemExit("the second chat process did not start")
            progress("the second app is ready")
            quiet = {"1 pane": panes_figures(replies_for(engine, [base], tokenizer, args.tokens, args.seconds / 2)),
                     "2 panes": panes_figures(replies_for(engine, [base, tuned], tokenizer, args.tokens,
                                                          args.seconds / 2))}
            progress(f"quiet: 1 pane {quiet['1 pane']['tokens_s']:.1f} tok/s, "
                     f"2 panes {quiet['2 panes']['tokens_s']:.1f}")
            for variant in variants:
                results[variant] = run_variant(variant, workspace, data, engine, tokenizer, second_app, base, tuned,
                                               args.seconds, args.tokens)
                loads.append(os.getloadavg()[0])
        finally:
            second_app.kill()
            second_app.wait()
    report(results, quiet, args, loads, decoder)
    print(f"\n(bench wall time {time.monotonic() - started:.0f} s)")
    write_json(ROOT / "bench" / "results" / "chat_while_training.json",
               {"when": utc_stamp(), "machine": machine(), "decoder": decoder, "tokens": args.tokens,
                "seconds": args.seconds, "quiet": quiet, "variants": results})


if __name__ == "__main__":
    main()

"""The command line: `python -m ftchat {data check, train, chat, export, serve, runs, feedback, round, reward score,
judge, users, task}`."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from dataclasses import fields
from pathlib import Path

from ftchat import run_queue
from ftchat.chat.engine import ChatEngine
from ftchat.chat.generation import ChatError, GenerationSettings, with_system
from ftchat.config import ConfigError, RunConfig, add_run_arguments, config_from_args
from ftchat.data import DataError, check_files, load_dataset
from ftchat.export import forms as export
from ftchat.export.check import llamacpp_missing
from ftchat.export.forms import ExportError
from ftchat.feedback import FeedbackStore
from ftchat.feedback.agreement import team_agreement
from ftchat.feedback.export import RatingsExportError, write_export
from ftchat.feedback.imports import import_file
from ftchat.feedback.judge import judge_runs, read_prompts, write_judgement
from ftchat.feedback.leaderboard import bradley_terry
from ftchat.feedback.prompt_queue import PromptError, check_prompts, prompts_from_file
from ftchat.feedback.report import ReportError, describe_report, round_report
from ftchat.feedback.rounds import RoundError, next_round_config, reward_rl_round, store_win_rates
from ftchat.feedback.store import FeedbackError
from ftchat.feedback.tasks import (DEFAULT_OVERLAP, TaskError, create_task, describe_task, progress, task_models,
                                  task_raters, task_report)
from ftchat.models import ModelError, load_tokenizer
from ftchat.names import base_choice, is_base
from ftchat.runs import cancel as cancel_run
from ftchat.runs import enqueue, list_runs, read_queue_entry, read_status, sigterm_cancels
from ftchat.serve import main as serve_main
from ftchat.train import preflight
from ftchat.train.launch import LaunchError, default_nproc, launch_command
from ftchat.train.plan import plan_for_files
from ftchat.train.reward_model import RewardModel, RewardModelError
from ftchat.train.run import run_training
from ftchat.users import ROLES, UsersError, open_users

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ftchat", description="Fine-tune and chat with small LLMs.")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="inspect training data").add_subparsers(dest="data_command", required=True)
    check = data.add_parser("check", help="detect the format of files, normalize and report problems")
    check.add_argument("files", nargs="+")
    check.add_argument("--json", action="store_true", help="one JSON object per file")
    check.add_argument("--base", default=None, help="tokenizer for token statistics (default: the bundled model)")
    check.add_argument("--max-tokens", type=int, default=RunConfig().max_length,
                       help="rows longer than this are skipped (default: training's max_length)")

    train = commands.add_parser("train", help="train a run (from a YAML config and/or flags)")
    train.add_argument("config", nargs="?", help="a RunConfig YAML file; flags override its values")
    train.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    train.add_argument("--plan", action="store_true",
                       help="print the training plan (steps, epochs, eval rows, time) as JSON and stop")
    train.add_argument("--launcher", default=None, choices=["ddp", "fsdp", "deepspeed", "deepspeed_zero2",
                                                             "deepspeed_zero3"],
                       help="run on several devices with `accelerate launch` and ftchat's config for this launcher")
    train.add_argument("--nproc", type=int, default=None, help="processes for --launcher (default: one per GPU, "
                                                                "2 on a CPU-only machine)")
    train.add_argument("--print", dest="print_only", action="store_true",
                       help="with --launcher: print the launch command instead of running it")
    add_run_arguments(train)
    add_queue_arguments(train)

    chat = commands.add_parser("chat", help="answer a prompt with the base and the tuned model")
    chat.add_argument("--run", required=True)
    chat.add_argument("--prompt", required=True)
    chat.add_argument("--system", default=None)
    chat.add_argument("--json", action="store_true")
    chat.add_argument("--max-new-tokens", type=int, default=128)
    chat.add_argument("--temperature", type=float, default=0.0)

    export = commands.add_parser("export", help="write a run as a merged model, GGUF, Ollama folder or adapter")
    export.add_argument("--run", required=True)
    export.add_argument("--merged", metavar="DIR", help="a merged safetensors model folder with a model card")
    export.add_argument("--gguf", metavar="FILE", help="one GGUF file for llama.cpp / Ollama")
    export.add_argument("--ollama", metavar="DIR", help="model.gguf + Modelfile for `ollama create`")
    export.add_argument("--adapter", metavar="DIR", help="the plain PEFT adapter with a model card")
    export.add_argument("--quant", choices=["f16", "q8_0", "q4_0"], default=None,
                        help="GGUF weight type (default: f16 for --gguf, q8_0 for --ollama)")
    export.add_argument("--push", metavar="REPO", help="with --adapter or --merged: upload it to this hub repo")
    export.add_argument("--force", action="store_true", help="write over an existing file or folder")
    export.add_argument("--no-check", action="store_true",
                        help="skip answering a handful of prompts with the written GGUF in llama.cpp beside the "
                             "in-app model (--gguf, --ollama)")
    add_feedback_db_argument(export)

    serve = commands.add_parser("serve", help="an OpenAI-compatible API over the bases and runs of a workspace")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workspace", default="./workspace", help="its runs/ folder holds the runs served")
    serve.add_argument("--api-key", default=None, help="require Authorization: Bearer KEY (needed off loopback)")
    serve.add_argument("--base", default=None, help="the default base offered as base:NAME (default: the bundled)")
    serve.add_argument("--backend", choices=["ftchat", "vllm"], default="ftchat",
                       help="vllm: start vLLM's OpenAI server with the base and every finished LoRA run")

    listing = commands.add_parser("runs", help="list runs")
    listing.add_argument("--root", default="runs")
    listing.add_argument("--cancel", metavar="RUN", help="cancel a run: a queued one never starts")
    listing.add_argument("--to-front", metavar="RUN", help="move a queued run to the front of the queue")

    feedback = commands.add_parser("feedback", help="ratings: import, export as training data, leaderboard")
    feedback_commands = feedback.add_subparsers(dest="feedback_command", required=True)
    importing = feedback_commands.add_parser("import", help="add Chatbot Arena battle JSONL or ftchat rating exports")
    importing.add_argument("files", nargs="+")
    exporting = feedback_commands.add_parser("export", help="write the ratings as DPO, KTO or SFT data")
    exporting.add_argument("--kind", required=True, choices=("dpo", "kto", "sft", "ratings"))
    exporting.add_argument("--out", required=True, help="a .jsonl file, or a folder for datasets' save_to_disk")
    exporting.add_argument("--model", default=None, help="only ratings that involve this run (or base:NAME)")
    exporting.add_argument("--force", action="store_true", help="write over an existing --out")
    board = feedback_commands.add_parser("leaderboard", help="Bradley-Terry ratings with 95%% intervals")
    board.add_argument("--json", action="store_true", help="a JSON list of {model, rating, ci_low, ci_high, votes, rank}")
    board.add_argument("--anonymous-only", action="store_true", help="only votes cast with model names hidden")
    board.add_argument("--exclude-flagged", action="store_true",
                       help="leave out the votes of the raters `feedback raters` flags")
    raters = feedback_commands.add_parser("raters", help="per-rater counts, left-pane share, agreement between raters "
                                                          "(Cohen's / Fleiss' kappa) and raters to check")
    raters.add_argument("--json", action="store_true",
                        help="one JSON object: raters, pairs, items_shared, fleiss_kappa")
    for sub in (importing, exporting, board, raters):
        sub.add_argument("--workspace", default="workspace", help="the app's folder (default: workspace/)")
        add_feedback_db_argument(sub)

    round_ = commands.add_parser("round", help="train the next round of a rated run from its ratings; "
                                               "`round report RUN`: did that round help?",
                                 usage="python -m ftchat round --from RUN --method dpo|kto|reward-rl [flags]\n"
                                       "       python -m ftchat round report RUN [--json] [--workspace DIR]")
    round_.add_argument("report", nargs="*", metavar="report RUN",
                        help="report RUN: the round against its parent and base, regressions, vote quality")
    round_.add_argument("--from", dest="from_run", default=None, help="the rated run (its folder name), or base:NAME")
    round_.add_argument("--json", action="store_true", help="with report: one JSON object")
    round_.add_argument("--workspace", default="workspace", help="the app's folder (default: workspace/)")
    add_feedback_db_argument(round_)
    add_run_arguments(round_)  # training flags; data, out, parent and method are the round's own
    for action in round_._actions:
        if action.dest == "method":  # a round trains dpo, kto, or a reward model and then GRPO / RLOO against it
            action.choices = ("dpo", "kto", "reward-rl")
            action.help = "dpo | kto | reward-rl (a reward model from the ratings, then --rl-method against it)"
    round_.add_argument("--rl-method", choices=("grpo", "rloo"), default="grpo", help="reward-rl: the RL method")
    round_.add_argument("--exclude-flagged", action="store_true",
                        help="leave out the ratings of the raters `feedback raters` flags")
    add_queue_arguments(round_)

    reward = commands.add_parser("reward", help="reward models").add_subparsers(dest="reward_command", required=True)
    score = reward.add_parser("score", help="pairwise accuracy of a reward model on preference pairs")
    score.add_argument("--run", required=True, help="a reward-model run folder (--method reward)")
    score.add_argument("--data", required=True, nargs="+", help="preference files (prompt / chosen / rejected)")
    score.add_argument("--json", action="store_true", help='print {"accuracy", "margin", "n"}')

    judge = commands.add_parser("judge", help="estimate the win rate of one model over another with a reward model")
    judge.add_argument("--run", required=True, help="model A: a run folder or base:NAME")
    judge.add_argument("--against", required=True, help="model B: a run folder or base:NAME")
    judge.add_argument("--reward", required=True, help="a reward-model run folder")
    judge.add_argument("--prompts", required=True, help="a .txt file (one prompt a line) or any training file")
    judge.add_argument("--max-new-tokens", type=int, default=64)
    judge.add_argument("--json", action="store_true")

    users = commands.add_parser("users", help="the rating team's logins for `app.py --users` (WORKSPACE/users.json, "
                                              "or the users table of --feedback-db postgresql://...)")
    users_commands = users.add_subparsers(dest="users_command", required=True)
    adding = users_commands.add_parser("add", help="add a user, or set an existing one's role and password; asks "
                                                   "for the password")
    adding.add_argument("name")
    adding.add_argument("--role", required=True, choices=ROLES, help="admin: everything; rater: chat and rate")
    adding.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input (scripts; no prompt)")
    removing = users_commands.add_parser("remove", help="remove a user: they can no longer log in")
    removing.add_argument("name")
    listing_users = users_commands.add_parser("list", help="names and roles")
    for sub in (adding, removing, listing_users):
        sub.add_argument("--workspace", default="workspace", help="the app's folder (default: workspace/)")
        sub.add_argument("--file", default=None, help="the users file (default: WORKSPACE/users.json)")
        add_feedback_db_argument(sub)

    task = commands.add_parser("task", help="rating tasks: prompts shared out among raters, a share of them to two")
    task_commands = task.add_subparsers(dest="task_command", required=True)
    creating = task_commands.add_parser("create", help="share out a prompt list among raters for two (or more) models")
    creating.add_argument("--prompts", required=True, help="a .txt file (one prompt a line) or any data file")
    creating.add_argument("--models", required=True, nargs="+",
                          help="two models (a run's folder name, base:NAME or a folder in models/); more: a pair "
                               "drawn per prompt")
    creating.add_argument("--raters", nargs="+", default=None,
                          help="who rates (default: every rater of the users file)")
    creating.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                          help="share of prompts given to two raters, to measure agreement "
                               f"(default {DEFAULT_OVERLAP})")
    creating.add_argument("--name", default=None, help="the task's name (default: the prompt file's name)")
    creating.add_argument("--seed", type=int, default=0, help="the assignment's random seed (default 0)")
    creating.add_argument("--users", default=None,
                          help="the users file (default: WORKSPACE/users.json; with a PostgreSQL --feedback-db, "
                               "its users table)")
    task_commands.add_parser("list", help="every task with its progress")
    status = task_commands.add_parser("status", help="a task's progress per rater, agreement, flagged raters")
    status.add_argument("task", help="the task's name or id")
    status.add_argument("--json", action="store_true", help="one JSON object")
    for sub in task_commands.choices.values():
        sub.add_argument("--workspace", default="workspace", help="the app's folder (default: workspace/)")
        add_feedback_db_argument(sub)
    return parser


def add_feedback_db_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--feedback-db", default=None, metavar="URL",
                        help="the ratings (and the team's logins) in this PostgreSQL database, "
                             "postgresql://user@host:port/db, as the app's --feedback-db (default: "
                             "WORKSPACE/feedback.sqlite)")


def add_queue_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--now", action="store_true",
                        help="train at once, beside any running run, instead of waiting in the workspace's queue")
    parser.add_argument("--parallel-runs", type=int, default=None, metavar="N",
                        help="let N runs of this workspace train at once from now on (default: one per GPU, one on "
                             "a CPU); kept in RUNS/.queue/settings.json")


def queue_turn(config: RunConfig, args, cancel):
    """The run's turn in its workspace's queue (ftchat.run_queue), printing its place while it waits; with --now,
    at once."""
    if getattr(args, "parallel_runs", None) is not None:
        run_queue.set_parallel_runs(Path(config.out).parent, args.parallel_runs)
    if getattr(args, "now", False) or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # a launcher's ranks are one run: rank 1 waiting for the slot rank 0 holds would hang both
        return contextlib.nullcontext(True)
    if not read_queue_entry(config.out).get("after"):  # a chained run's settings name its predecessor's result
        preflight.check(config)  # every problem at once, before the run's folder is written or it waits
    return run_queue.turn(config, cancel, estimate=lambda: plan_for_files(config.data, config).est_seconds)


def not_started(config: RunConfig) -> int:
    status = read_status(config.out)
    print(f"{status.get('state')}: {config.out} never started" + (f": {status['error']}" if status.get("error") else ""))
    return 1 if status.get("error") else 0


def cmd_data_check(args) -> int:
    tokenizer = None
    if not args.json:
        try:
            tokenizer = load_tokenizer(args.base)
        except ModelError as exc:
            print(f"(token statistics unavailable: {exc})", file=sys.stderr)
    return check_files(args.files, as_json=args.json, tokenizer=tokenizer, max_tokens=args.max_tokens)


def cmd_train(args) -> int:
    config = config_from_args(args)
    if getattr(args, "plan", False):
        if not config.data:
            raise ConfigError("data: give at least one training file.")
        plan = plan_for_files(config.data, config)
        wait = run_queue.wait_text(Path(config.out).parent, plan.est_seconds) if config.out else ""
        print(json.dumps({**plan.to_dict(), "queue": wait}, ensure_ascii=False))
        return 0
    if getattr(args, "launcher", None):  # `ftchat round` reuses this command without launcher flags
        return launch_train(config, args)
    with sigterm_cancels() as cancel:  # before the slow imports, so an early Cancel is clean too
        with queue_turn(config, args, cancel) as turn:
            if turn is None:
                return not_started(config)
            status = run_training(config, resume=args.resume, cancel=cancel)
    state = status.get("state")
    summary = status.get("summary") or {}
    if state == "done":
        print(f"done: {config.out} — {summary.get('steps')} steps in {summary.get('runtime_s')} s "
              f"({summary.get('s_per_step')} s/step), loss {summary.get('first_loss')} → {summary.get('final_loss')}, "
              f"eval loss {summary.get('eval_loss')}, peak memory {summary.get('peak_memory_mb')} MB")
        if summary.get("eval_accuracy") is not None:
            print(f"reward model: held-out pairwise accuracy {summary['eval_accuracy']:.3f}, "
                  f"mean margin {summary['eval_margin']:.3f} on {summary.get('eval_pairs')} pairs")
        if summary.get("first_reward") is not None:
            print(f"reward: {summary['first_reward']:.3f} (first steps) → {summary['final_reward']:.3f} (last steps), "
                  f"KL {summary.get('final_kl')}")
    elif state == "cancelled":
        print(f"cancelled: {config.out} (resume with --resume)")
    return 0


def cmd_chat(args) -> int:
    engine = ChatEngine(runs_root=os.path.dirname(os.path.abspath(args.run)))
    base = engine.base_of(args.run)
    messages = with_system([{"role": "user", "content": args.prompt}], args.system)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature)
    base_reply, tuned_reply = engine.answer([(base_choice(base), messages), (args.run, messages)], settings)
    if args.json:
        print(json.dumps({"base": base_reply, "tuned": tuned_reply}, ensure_ascii=False))
    else:
        print(f"base : {base_reply}\ntuned: {tuned_reply}")
    return 0


def launch_train(config, args) -> int:
    """Write the run config and run (or print) `accelerate launch ... -m ftchat train CONFIG` for it."""
    import shlex
    import subprocess
    from pathlib import Path

    import torch


    config.validate()
    gpus = torch.cuda.device_count()
    run_dir = Path(config.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    requested = run_dir / "requested.yaml"
    config.save(requested)
    try:
        command = launch_command(args.launcher, requested, args.nproc or default_nproc(gpus), gpus)
    except LaunchError as exc:
        raise ConfigError(str(exc)) from exc
    if args.resume:
        command.append("--resume")
    if args.print_only:
        print(shlex.join(command))
        return 0
    print(f"ftchat train: {shlex.join(command)}", file=sys.stderr, flush=True)
    return subprocess.call(command)


def cmd_export(args) -> int:
    forms = [f for f in ("merged", "gguf", "ollama", "adapter") if getattr(args, f)]
    if not forms:
        print("error: give at least one of --merged DIR, --gguf FILE, --ollama DIR, --adapter DIR", file=sys.stderr)
        return 2
    if args.push and not (args.adapter or args.merged):
        print("error: --push uploads an --adapter or --merged folder; give one of them", file=sys.stderr)
        return 2
    from pathlib import Path

    for form in forms:  # every target before the first export: a refused one costs no merge
        export.check_target(args.run, form, getattr(args, form), args.force)
    win_rates = store_win_rates(Path(args.run).resolve().parent.parent, args.feedback_db)  # WORKSPACE/runs/RUN
    check = not args.no_check and {"gguf", "ollama"} & set(forms)
    prompts = check_prompts(args.run) if check and llamacpp_missing() is None else None
    skipped_said = False
    for form in forms:
        written = export.export_run(args.run, form, getattr(args, form), args.quant, win_rates, args.force,
                                    check=bool(check), prompts=prompts)
        target = written.path
        print(f"{target}  (then: cd {target} && ollama create NAME -f Modelfile)" if form == "ollama" else target)
        if written.check is not None and not (written.check.skipped and skipped_said):
            print(written.check.summary())
            skipped_said = skipped_said or bool(written.check.skipped)
            if written.check.warning():
                print(written.check.warning(), file=sys.stderr)
    if args.push:
        print(export.push(args.adapter or args.merged, args.push))
    return 0


def cmd_serve(args) -> int:
    return serve_main(args)


def cmd_runs(args) -> int:
    root = Path(args.root)
    for name, act, done in ((args.cancel, cancel_run, "cancelling"), (args.to_front, run_queue.move_to_front, "first")):
        if name:
            print(f"{name}: {done}" if act(root / name) else f"{name}: not queued or running", file=sys.stderr)
    places = run_queue.places(root)
    for run in list_runs(root):
        s = run.summary
        state = places[run.name].describe() if run.state == "queued" and run.name in places else run.state
        print(f"{run.name:30} {state:9} {run.config.get('method', '?')}/{run.config.get('adapter', '?'):6} "
              f"loss {s.get('final_loss')} eval {s.get('eval_loss')} {run.error or ''}")
    return 0


def cmd_feedback(args) -> int:
    store = FeedbackStore.for_workspace(args.workspace, args.feedback_db)
    if args.feedback_command == "import":
        failed = False
        for path in args.files:
            report = import_file(store, path)
            print(report.summary())
            for problem in report.problems:
                print(f"  {problem}")
            failed = failed or not report.ok
        return 1 if failed else 0
    if args.feedback_command == "export":
        path, n = write_export(store.ratings(model=args.model), args.kind, args.out, overwrite=args.force)
        print(f"{n} {args.kind} row(s) written to {path}")
        return 0

    if args.feedback_command == "raters":
        return print_raters(team_agreement(store.ratings()), args.json)

    ratings = bradley_terry(store.ratings(kind="vote"), anonymous_only=args.anonymous_only,
                            exclude_flagged=args.exclude_flagged)
    if args.json:
        print(json.dumps([r.to_dict() for r in ratings], ensure_ascii=False))
    elif not ratings:
        print("no votes yet")
    else:
        print(f"{'rank':>4}  {'model':40} {'rating':>7}  {'95% interval':>15}  {'votes':>5}")
        for r in ratings:
            print(f"{r.rank:>4}  {r.model:40} {r.rating:>7.1f}  {r.ci_low:>7.1f}–{r.ci_high:<7.1f}  {r.votes:>5}")
    return 0


def print_raters(team, as_json: bool) -> int:
    def number(value, form="{:.2f}"):
        return "-" if value is None else form.format(value)

    if as_json:
        print(json.dumps(team.to_dict(), ensure_ascii=False))
        return 0
    if not team.raters:
        print("no rating carries a rater's name yet")
        return 0
    print(f"{'rater':20} {'votes':>5} {'thumbs':>6} {'answers':>7} {'left':>5} {'shared':>6} {'agree':>5} "
          f"{'kappa':>6}  flags")
    for r in team.raters:
        print(f"{r.rater:20} {r.votes:>5} {r.thumbs:>6} {r.edits:>7} {number(r.left_share, '{:.0%}'):>5} "
              f"{r.shared_items:>6} {number(r.agreement_with_others, '{:.0%}'):>5} "
              f"{number(r.kappa_with_others):>6}  {'; '.join(r.flags)}")
    for p in team.pairs:
        print(f"{p.rater_a} / {p.rater_b}: {p.agreed} of {p.shared} shared prompts agree, Cohen's kappa "
              f"{number(p.kappa)}")
    print(f"team: {team.items_shared} prompts voted on by two or more, Fleiss' kappa {number(team.fleiss_kappa)}")
    return 0


def cmd_round(args) -> int:
    if args.report:
        if args.report[0] != "report" or len(args.report) != 2:
            raise ConfigError("round: `round report RUN` shows a round's report; `round --from RUN --method M` trains "
                              "the next one.")
        return _round_report(args)
    if not args.from_run:
        raise ConfigError("--from: name the rated run (its folder name) or base:NAME to start the round from.")

    flags = {f.name: getattr(args, f.name) for f in fields(RunConfig)
             if f.name not in ("method", "data_hashes") and getattr(args, f.name, None) is not None}
    if args.method is None:
        raise ConfigError("--method: a round trains with dpo, kto or reward-rl; give one of them.")
    if args.method == "reward-rl":
        return _reward_rl_round(args, flags)
    config = next_round_config(args.workspace, args.from_run, args.method, args.exclude_flagged,
                               feedback_db=args.feedback_db, **flags)
    print(f"round: {config.out} from {config.parent or config.base} on {config.data[0]}")
    args.resume = False
    args.config = None
    for f in fields(RunConfig):  # cmd_train reads the config from flags
        setattr(args, f.name, getattr(config, f.name))
    return cmd_train(args)


def _round_report(args) -> int:
    report = round_report(FeedbackStore.for_workspace(args.workspace, args.feedback_db), args.workspace,
                          args.report[1])
    if args.json:
        print(json.dumps(report, ensure_ascii=False))
        return 0
    print(describe_report(report))
    return 0


def _reward_rl_round(args, flags: dict) -> int:
    reward_config, policy_config = reward_rl_round(args.workspace, args.from_run, args.rl_method,
                                                   args.exclude_flagged, feedback_db=args.feedback_db, **flags)
    print(f"round: reward model {reward_config.out} on {reward_config.data[0]}, then {args.rl_method} "
          f"{policy_config.out} from {policy_config.parent or policy_config.base} on {policy_config.data[0]}")
    with sigterm_cancels() as cancel, contextlib.ExitStack() as chain:
        if not args.now:  # the policy waits in the queue behind its reward model; ends cancelled if that fails
            enqueue(policy_config.out, after=reward_config.out, pid=os.getpid())
            chain.callback(run_queue.drop, policy_config.out)
        with queue_turn(reward_config, args, cancel) as turn:
            status = run_training(reward_config, cancel=cancel) if turn else read_status(reward_config.out)
        if status.get("state") != "done":
            print(f"{status.get('state')}: {reward_config.out}; the round stops before {args.rl_method}")
            return 1
        summary = status["summary"]
        print(f"reward model: held-out pairwise accuracy {summary.get('eval_accuracy')} "
              f"on {summary.get('eval_pairs')} pairs")
        with queue_turn(policy_config, args, cancel) as turn:
            if turn is None:
                return not_started(policy_config)
            status = run_training(policy_config.validate(), cancel=cancel)
    summary = status.get("summary") or {}
    print(f"{status.get('state')}: {policy_config.out} — {summary.get('steps')} steps, reward "
          f"{summary.get('first_reward')} → {summary.get('final_reward')}")
    return 0 if status.get("state") == "done" else 1


def cmd_reward(args) -> int:
    model = RewardModel(args.run)
    dataset, shape, _ = load_dataset(args.data, tokenizer=model.tokenizer, max_tokens=4096)
    if shape != "preference":
        raise DataError(f"{', '.join(args.data)}: {shape} data; reward score needs preference pairs "
                        "(prompt / chosen / rejected).")
    metrics = model.score_pairs(list(dataset))
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"accuracy {metrics['accuracy']:.3f} (chosen above rejected), mean margin {metrics['margin']:.3f}, "
              f"{metrics['n']} pairs")
    return 0


def cmd_judge(args) -> int:
    prompts = read_prompts(args.prompts)
    result = judge_runs(args.run, args.against, args.reward, prompts,
                        settings=GenerationSettings(max_new_tokens=args.max_new_tokens))
    if not is_base(args.run):
        write_judgement(args.run, result)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:
        print(f"{args.run} over {args.against}: judged win rate {result['win_rate']:.2f} "
              f"(95% interval {result['ci_low']:.2f}-{result['ci_high']:.2f}; {result['wins']} wins, "
              f"{result['ties']} ties, {result['losses']} losses on {result['n']} prompts)")
    return 0


def read_password(name: str, from_stdin: bool) -> str:
    """The new password: the first line of stdin with --password-stdin (or when stdin is no terminal), else typed
    twice at a prompt that does not echo it."""
    if from_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass(f"Password for {name}: ")
    if getpass.getpass("Again: ") != first:
        raise UsersError("the two passwords differ; nothing was changed.")
    return first


def cmd_users(args) -> int:
    users = open_users(args.workspace, args.feedback_db, args.file)
    if args.users_command == "add":
        new = users.add(args.name, args.role, read_password(args.name, args.password_stdin))
        print(f"{'added' if new else 'updated'} {args.name} ({args.role}) in {users.where}")
    elif args.users_command == "remove":
        users.remove(args.name)
        print(f"removed {args.name} from {users.where}")
    else:
        for name, entry in sorted(users.read().items()):
            print(f"{name}\t{entry['role']}")
    return 0


def cmd_task(args) -> int:
    store = FeedbackStore.for_workspace(args.workspace, args.feedback_db)
    if args.task_command == "create":
        users = open_users(args.workspace, args.feedback_db, args.users)
        raters = task_raters(args.raters, users.read(), users.where, users.option)
        try:
            prompts = prompts_from_file(args.prompts)
        except (PromptError, OSError) as exc:
            raise TaskError(f"prompts: {exc}") from None
        task = create_task(store, args.name or Path(args.prompts).stem, prompts,
                           task_models(args.workspace, args.models), raters, args.overlap, args.seed)
        items = store.task_items(task["id"])
        shared = len({i["prompt_index"] for i in items if i["shared"]})
        print(f"task {task['name']} (id {task['id']}): {len(prompts)} prompts, {shared} of them to two raters; "
              + ", ".join(f"{name} {total}" for name, (_, total) in sorted(progress(items).items())))
    elif args.task_command == "list":
        for task in store.tasks():
            items = store.task_items(task["id"])
            done = sum(i["done"] for i in items)
            print(f"{task['id']}\t{task['name']}\t{done} of {len(items)} done\t{', '.join(task['models'])}")
    else:
        task = store.task(args.task)
        report = task_report(task, store.task_items(task["id"]), store.task_votes(task["id"]))
        if args.json:
            print(json.dumps(report, ensure_ascii=False))
            return 0
        print(describe_task(report).replace("**", ""))
        for r in report["raters"]:
            left = "-" if r["left_share"] is None else f"{r['left_share']:.0%}"
            print(f"  {r['rater']:20} {r['done']} of {r['assigned']} done, left pane {left}"
                  + (f"  ⚠ {'; '.join(r['flags'])}" if r["flags"] else ""))
    return 0


COMMANDS = {"data": cmd_data_check, "train": cmd_train, "chat": cmd_chat, "export": cmd_export, "serve": cmd_serve,
            "runs": cmd_runs, "feedback": cmd_feedback, "round": cmd_round, "reward": cmd_reward, "judge": cmd_judge,
            "users": cmd_users, "task": cmd_task}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)


    known = (ConfigError, ModelError, ChatError, ExportError, FeedbackError, RatingsExportError, RoundError,
             RewardModelError, ReportError, UsersError, TaskError)
    try:
        known += (DataError,)
    except ImportError:
        pass
    try:
        return COMMANDS[args.command](args)
    except known as exc:  # the user's mistake: one clear sentence, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

"""`ftchat train`: read a RunConfig, load and check the data, train with the chosen method, write the run folder.

Runs unchanged under `accelerate launch -m ftchat train CONFIG.yaml`: only the main process writes the run folder.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from ftchat import methods, models, runs
from ftchat.config import ConfigError, RunConfig
from ftchat.data import DataError, load_dataset
from ftchat.train import plan as budget
from ftchat.train import preflight
from ftchat.train.compare import write_comparison
from ftchat.train.plan import apply_plan, record_speed
from ftchat.train.replay import in_context, replay_examples

log = logging.getLogger("ftchat.train")


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _world() -> tuple[int, int]:
    """(rank, world size) under `accelerate launch` / torchrun; (0, 1) for a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _status(run_dir, state: str, **extra) -> dict:
    """Write status.json from the main process only: the other ranks of a multi-device run never touch the folder."""
    return runs.write_status(run_dir, state, **extra) if _is_main_process() else {}


def prepare_run(config: RunConfig, resume: bool = False) -> RunConfig:
    """Validate, inherit the parent's base, refuse to overwrite a finished run, write config.yaml and status."""

    method = methods.METHODS.get(config.method)
    if config.parent:
        parent = runs.load_run(config.parent)
        if parent.state == "done":
            config.base = parent.config.get("base", config.base)
            parent_method = parent.config.get("method", "sft")
            parent_makes = methods.get(parent_method).produces if parent_method in methods.METHODS else "policy"
            if method is not None and parent_makes != method.produces:
                raise ConfigError(f"parent: {config.parent} is a {parent_method} run; a {config.method} run "
                                  f"continues a {method.produces} model (a reward model starts from the base: leave "
                                  f"parent out).")
    if method is not None and config.adapter == "qlora" and not method.qlora_on_cpu and models.device() == "cpu":
        log.warning("%s on a CPU trains lora, not qlora: its no-grad passes repack 4-bit weights and spoil the LoRA "
                    "gradients (see ftchat.methods.Method.qlora_on_cpu).", config.method)
        config.adapter = "lora"
        if config.precision == "4bit":
            config.precision = "auto"
    preflight.check(config)  # every problem that shows before training, at once (the data: in load_training_data)
    run_dir = Path(config.out)
    status = runs.read_status(run_dir)
    if status.get("state") == "done" and not resume:
        raise ConfigError(f"out: {run_dir} already holds a finished run; choose another folder.")
    # under a launcher rank 0 writes status.json first; the other ranks must not read its pid as a rival trainer
    if (_is_main_process() and status.get("state") == "running" and status.get("pid") != os.getpid()
            and runs.trainer_alive(status)):
        raise ConfigError(f"out: {run_dir} is being trained by process {status['pid']}.")
    resolved = config.resolved()
    # started: when it took its place in the queue's slot (ftchat.run_queue), else now
    queued_start = status.get("started") if status.get("state") == "running" and status.get("pid") == os.getpid() \
        else None
    if _is_main_process():
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved.save(run_dir / "config.yaml")
        if resolved.parent:
            (run_dir / "parent").write_text(str(resolved.parent) + "\n")
        runs.write_status(run_dir, "running", pid=os.getpid(), pid_start=runs.process_start(os.getpid()),
                          started=queued_start or time.time(), ended=None, error=None, step=0,
                          cancel_requested=None)
    return resolved


def load_training_data(config: RunConfig, tokenizer):
    """The normalized dataset and its plan (ftchat.train.plan): split into train / eval as planned, with replay rows
    added to train for SFT. Returns (train, eval or None, shape, per-file reports, plan)."""
    from datasets import Dataset, concatenate_datasets


    dataset, shape, reports = load_dataset(
        config.data, tokenizer=tokenizer, max_tokens=config.max_length, chunk_tokens=config.chunk_tokens
    )
    method = methods.get(config.method)
    if shape not in method.shapes:
        raise DataError(
            f"{config.method} trains on {' or '.join(method.shapes)} data, but {', '.join(config.data)} "
            f"hold{'s' if len(config.data) == 1 else ''} {shape} data."
        )
    for report in reports:
        for skipped in report.skipped:
            log.warning("%s line %s skipped: %s", report.file, skipped.line, skipped.reason)
    plan = budget.plan_training(len(dataset), budget.mean_tokens(dataset, shape, tokenizer), config, shape)
    eval_ds = None
    if plan.eval_examples:
        split = dataset.train_test_split(test_size=plan.eval_examples, seed=config.seed)
        dataset, eval_ds = split["train"], split["test"]
    if plan.replay_examples:
        rows = replay_examples(config.base)
        if "tools" in dataset.column_names:  # tool-calling data is stored as JSON (see load_dataset)
            rows = [dict(row, tools=None) for row in rows]
        rows = rows[:plan.replay_examples]
        if shape == "messages" and "tools" not in dataset.column_names:
            rows = in_context(rows, dataset, config.seed)
        if rows:
            replay = Dataset.from_list(rows, features=dataset.features)
            dataset = concatenate_datasets([dataset, replay]).shuffle(seed=config.seed)
        # a base that answered none of the general prompts (a random model may answer with nothing) has none to give
        plan = dataclasses.replace(plan, replay_examples=len(rows), train_examples=len(dataset))
    return dataset, eval_ds, shape, reports, plan


def skipped_rows(reports, limit: int = 50) -> list[dict]:
    """The rows training left out (too long for max_length, malformed…), as the UI and the run summary show them."""
    return [{"file": Path(r.file).name, "line": s.line, "reason": s.reason} for r in reports for s in r.skipped][:limit]


def _save_result(config: RunConfig, trainer, tokenizer, original_template) -> Path:
    run_dir = Path(config.out)
    target = runs.adapter_dir(run_dir) if config.adapter in ("qlora", "lora", "prompt") else runs.model_dir(run_dir)
    trainer.save_model(str(target))  # writes on the main process only
    if not _is_main_process():
        return target
    (target / "training_args.bin").unlink(missing_ok=True)  # a pickle: nothing of ours ever loads it
    # DPO / KTO / GRPO / RLOO continuing a parent's adapter keep a frozen copy of it, "ref", as the reference; it
    # is the parent's adapter unchanged (the run folder's `parent` names it), so the result keeps only the one
    # that learned.
    shutil.rmtree(target / "ref", ignore_errors=True)
    tokenizer.chat_template = original_template  # chat uses the model's own template, not the training one
    tokenizer.save_pretrained(target)
    return target


def run_training(config: RunConfig, resume: bool = False, cancel: threading.Event | None = None) -> dict:
    """Train one run to completion (or cancellation); returns the final status. Raises on failure after
    recording it in status.json. SIGTERM, or setting `cancel`, stops it cleanly with a checkpoint."""
    if cancel is None:
        with runs.sigterm_cancels() as cancel:
            return run_training(config, resume=resume, cancel=cancel)
    config = prepare_run(config, resume=resume)
    run_dir = Path(config.out)
    try:
        # transformers and torch load here, once the run folder and its status exist (they take seconds to import)
        from ftchat.train.common import RunFolderCallback, build_model, callbacks_for, check_finite, peak_memory_mb

        callback = RunFolderCallback(run_dir, cancel, is_main=_is_main_process())
        _status(run_dir, "running", phase="loading")
        tokenizer = models.load_tokenizer(config.base)
        original_template = tokenizer.chat_template
        train_ds, eval_ds, shape, reports, plan = load_training_data(config, tokenizer)
        config = apply_plan(plan, config)
        if _is_main_process():
            config.save(run_dir / "config.yaml")  # the planned values, so a rerun trains the same way
            runs.write_status(run_dir, "running", plan=plan.to_dict(),
                              skipped_rows=skipped_rows(reports))  # shown while it trains
        log.warning("plan: %s", plan.describe())
        model, peft_config = build_model(config)
        method_module = methods.get(config.method).trainer_module()
        trainer = method_module.build_trainer(
            config, model, peft_config, tokenizer, train_ds, eval_ds, callbacks_for(config, callback, eval_ds is not None)
        )
        rank, world = _world()
        if world > 1:
            print(f"ftchat train: rank {rank} of {world} training on {len(train_ds)} examples", file=sys.stderr,
                  flush=True)
        checkpoint = None
        if resume and any((run_dir / "checkpoints").glob("checkpoint-*")):
            checkpoint = True
        if cancel.is_set():  # cancelled while loading: nothing trained, nothing to checkpoint
            return _status(run_dir, "cancelled", error=None, phase="cancelled")
        _status(run_dir, "running", phase="training")
        started = time.time()
        result = trainer.train(resume_from_checkpoint=checkpoint)
        elapsed = time.time() - started
        if cancel.is_set():
            return _status(run_dir, "cancelled", error=None)
        check_finite(trainer.model, config, callback.diverged_at)
        _status(run_dir, "running", phase="saving")
        weights = _save_result(config, trainer, tokenizer, original_template)  # every rank: FSDP/ZeRO-3 gather
        if not _is_main_process():
            return {}
        # what the method itself measures at the end (e.g. the reward model's held-out accuracy)
        method_summary = method_module.summarize(trainer, eval_ds) if hasattr(method_module, "summarize") else {}
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # the result is saved; checkpoints only served resume
        log_history = trainer.state.log_history
        global_step = trainer.state.global_step
        del trainer, model  # free the training copy before loading the chat copy for the comparison
        gc.collect()
        if config.compare_prompts > 0 and methods.get(config.method).produces == "policy":
            _status(run_dir, "running", phase="comparing")
            write_comparison(run_dir, config.base, list(eval_ds) if eval_ds is not None else list(train_ds),
                             n_held_out=config.compare_prompts, n_general=config.compare_prompts)
        steps = max(1, global_step)
        evals = [h["eval_loss"] for h in log_history if "eval_loss" in h]
        losses = [h["loss"] for h in log_history if "loss" in h]
        summary = {
            "shape": shape,
            "examples": len(train_ds),
            "eval_examples": len(eval_ds) if eval_ds is not None else 0,
            "skipped": sum(len(r.skipped) for r in reports),
            "skipped_rows": skipped_rows(reports),
            "steps": global_step,
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "train_loss": result.training_loss,
            "eval_loss": min(evals) if evals else None,
            "plan": plan.describe(),
            "runtime_s": round(elapsed, 1),
            "s_per_step": round(elapsed / steps, 3),
            "tokens_per_s": callback.last.get("tokens_per_s"),
            "matmul_dtype": callback.last.get("matmul_dtype"),
            "peak_memory_mb": round(peak_memory_mb(), 1),
            "weights": str(weights),
            **method_summary,
        }
        if callback.last.get("tokens") and elapsed > 0 and not checkpoint:
            record_speed(config, callback.last["tokens"] / elapsed)
        return _status(run_dir, "done", summary=summary, error=None, phase="done")
    except KeyboardInterrupt:
        _status(run_dir, "cancelled", error=None)
        raise
    except BaseException as exc:
        if cancel.is_set():
            _status(run_dir, "cancelled", error=None)
        else:
            _status(run_dir, "failed", error=f"{type(exc).__name__}: {exc}")
        raise

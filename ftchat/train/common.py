"""What every training method shares: the model with its adapter, trainer arguments, and the run-folder callbacks."""
from __future__ import annotations

import json
import math
import resource
import threading
import time
from pathlib import Path

from transformers import EarlyStoppingCallback, TrainerCallback

from ftchat import cores, methods, models, runs
from ftchat.config import RunConfig


def peak_memory_mb() -> float:
    import torch

    if models.device() == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# Below this size `auto` trains a QLoRA run as fp32 LoRA on a CPU: on the 135M bundled model NF4 peaked higher
# (2168 vs 2103 MB) and trained slower (bitsandbytes dequantizes every matmul on a CPU); docs/benchmarks.md.
QLORA_MIN_PARAMETERS_ON_CPU = 1_000_000_000


def parameter_count(base_path: Path) -> int:
    """Parameters in a safetensors folder, read from the file headers (no weights loaded)."""
    from safetensors import safe_open

    total = 0
    for file in Path(base_path).glob("*.safetensors"):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                total += math.prod(handle.get_slice(key).get_shape())
    return total


def precision_for(config: RunConfig) -> str:
    """The precision the weights are loaded in. Full and layer-wise runs keep fp32 weights (on a GPU the trainer
    computes in bf16 autocast): bf16 weights would round away small updates. QLoRA's 4-bit base: on a GPU, or on a
    CPU for bases of QLORA_MIN_PARAMETERS_ON_CPU and more."""
    if config.precision != "auto":
        return config.precision
    if config.adapter == "qlora":
        if models.device() == "cuda":
            return "4bit"
        return "4bit" if parameter_count(models.resolve_base(config.base)) >= QLORA_MIN_PARAMETERS_ON_CPU else "fp32"
    if config.adapter in ("full", "layers"):
        return "fp32"
    return "bf16" if models.device() == "cuda" else "fp32"


def mixed_precision_bf16(config: RunConfig) -> bool:
    """bf16 autocast in the trainer (models.autocast_bf16)."""
    return models.autocast_bf16(config.precision)


def task_for(config: RunConfig) -> str:
    """models.TASKS: "reward" for a method that produces a reward model, else "causal"."""
    return "reward" if methods.get(config.method).produces == "reward" else "causal"


def peft_config_for(config: RunConfig, base_path: Path):
    """The PEFT config for the technique, or None for full / layer-wise training."""
    from peft import LoraConfig, PromptTuningConfig, PromptTuningInit

    if config.adapter in ("qlora", "lora"):
        targets = config.lora_targets
        if targets != "all-linear":
            targets = [t.strip() for t in targets.split(",") if t.strip()]
        reward = task_for(config) == "reward"
        return LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=targets,
            task_type="SEQ_CLS" if reward else "CAUSAL_LM",
            modules_to_save=["score"] if reward else None,  # the fresh score head learns in full and is saved
        )
    if config.adapter == "prompt":
        return PromptTuningConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=config.prompt_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text="You are a helpful assistant. Answer accurately and briefly.",
            tokenizer_name_or_path=str(base_path),
        )
    return None


def freeze_all_but_last_layers(model, n: int) -> None:
    """Layer-wise tuning: only the last n transformer blocks (and the final norm) learn."""
    blocks = model.model.layers
    if n > len(blocks):
        raise ValueError(f"train_layers: the model has {len(blocks)} layers, asked to train {n}.")
    for param in model.parameters():
        param.requires_grad = False
    for block in blocks[-n:]:
        for param in block.parameters():
            param.requires_grad = True
    for param in model.model.norm.parameters():
        param.requires_grad = True


def build_model(config: RunConfig):
    """Load the base (or the parent run's weights) ready for the technique; returns (model, peft_config)."""
    from peft import PeftModel

    base_path = models.resolve_base(config.base)
    parent_weights = models.require_safetensors(runs.weights_dir(config.parent)) if config.parent else None
    start_from = parent_weights if parent_weights and parent_weights.name == "model" else config.base
    model = models.load_model(start_from, precision=precision_for(config), for_training=True, task=task_for(config))
    model.config.use_cache = False
    peft_config = peft_config_for(config, base_path)
    if parent_weights is not None and parent_weights.name == "adapter":
        if precision_for(config) in ("4bit", "8bit"):
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
        model = PeftModel.from_pretrained(model, parent_weights, is_trainable=True)
        peft_config = None  # the parent's adapter is the one that keeps learning
    elif config.adapter == "layers":
        freeze_all_but_last_layers(model, config.train_layers)
    return model, peft_config


def trainer_arguments(config: RunConfig, has_eval: bool) -> dict:
    """Arguments every TRL config (SFTConfig, DPOConfig, KTOConfig) takes the same way."""
    on_gpu = models.device() == "cuda"
    args = dict(
        output_dir=str(Path(config.out) / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_steps=config.max_steps or -1,  # planned by ftchat.train.plan before the trainer is built
        num_train_epochs=config.epochs or 1.0,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.eval_steps,
        save_total_limit=2,
        seed=config.seed,
        report_to="none",
        use_cpu=not on_gpu,
        bf16=mixed_precision_bf16(config),
        gradient_checkpointing=config.gradient_checkpointing,
        max_length=config.max_length,
        disable_tqdm=False,
        dataloader_num_workers=0,
        remove_unused_columns=True,
    )
    if has_eval:
        args.update(
            eval_strategy="steps",
            eval_steps=config.eval_steps,
            load_best_model_at_end=bool(config.early_stopping),
            metric_for_best_model="eval_loss",
            greater_is_better=False,
        )
    return args


# The trainer log keys kept in metrics.jsonl ("/" becomes "_"): SFT, DPO / KTO, the reward model (accuracy and
# margin of chosen over rejected, train and held-out), GRPO / RLOO (mean reward, KL to the reference, answer length).
LOGGED = ("loss", "eval_loss", "learning_rate", "grad_norm", "mean_token_accuracy", "rewards/accuracies",
          "rewards/margins", "kl", "accuracy", "margin", "eval_accuracy", "eval_margin", "reward", "reward_std",
          "completions/mean_length", "entropy")


class RunFolderCallback(TrainerCallback):
    """Writes metrics.jsonl and status.json as training goes, and stops cleanly (with a checkpoint) once
    `cancel` is set - by SIGTERM, see runs.sigterm_cancels."""

    def __init__(self, run_dir: Path, cancel: threading.Event, is_main: bool = True):
        self.run_dir = Path(run_dir)
        self.is_main = is_main
        self.cancel = cancel
        self.start = time.time()
        self.last_tokens = None
        self.last_time = self.start
        self.last = {}
        self.diverged_at: int | None = None  # the step whose loss was NaN or infinite
        self.logged_dtype = False

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start = self.last_time = time.time()  # elapsed and ETA count training, not model loading
        if model is not None:
            self._watch_matmul_dtype(model)

    def _watch_matmul_dtype(self, model) -> None:
        """Record the dtype the first linear layer's output has in the first step: what the matmuls ran in (bf16
        under autocast, models.autocast_bf16), as a fact of the run rather than of its settings."""
        import torch

        linear = next((m for m in model.modules() if isinstance(m, torch.nn.Linear)), None)
        if linear is None:
            return

        def seen(module, inputs, output):
            if torch.is_tensor(output):
                self.last["matmul_dtype"] = str(output.dtype).removeprefix("torch.")
            handle.remove()

        handle = linear.register_forward_hook(seen)

    def on_step_end(self, args, state, control, **kwargs):
        if self.cancel.is_set():
            control.should_save = True  # a checkpoint, so --resume can continue from here
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and any(isinstance(logs.get(k), float) and not math.isfinite(logs[k]) for k in ("loss", "grad_norm")):
            self.diverged_at = state.global_step  # every update from here on only spreads NaN: stop now
            control.should_training_stop = True
        if not self.is_main or not logs:
            return control
        now = time.time()
        elapsed = now - self.start
        step = state.global_step
        row = {"step": step, "max_steps": state.max_steps, "epoch": round(state.epoch or 0, 4)}
        for key, value in logs.items():
            if key in LOGGED or (key.startswith("rewards/") and key.endswith("/mean")):  # a GRPO reward function's
                row[key.replace("/", "_")] = value
        if "train_loss" in logs:
            row["train_loss"] = logs["train_loss"]
        tokens = logs.get("num_tokens")
        if tokens is not None:
            if self.last_tokens is not None and now > self.last_time:
                row["tokens_per_s"] = round((tokens - self.last_tokens) / (now - self.last_time), 1)
            self.last_tokens, self.last_time = tokens, now
            row["tokens"] = tokens
        row["elapsed_s"] = round(elapsed, 2)
        row["time"] = round(now, 3)
        row["threads"] = _torch_threads()  # what the step ended on: fewer while a chat streams (CoreSharingCallback)
        if step > 0 and state.max_steps:
            row["eta_s"] = round(elapsed / step * max(state.max_steps - step, 0), 1)
        if "matmul_dtype" in self.last and not self.logged_dtype:
            row["matmul_dtype"], self.logged_dtype = self.last["matmul_dtype"], True
        self.last.update({k: v for k, v in row.items() if v is not None})
        with open(self.run_dir / "metrics.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
        runs.write_status(self.run_dir, "running", step=step, max_steps=state.max_steps)
        return control


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


class CoreSharingCallback(TrainerCallback):
    """Shares the CPU with the workspace's chat (ftchat.cores): before every step and gradient-accumulation micro-step,
    trains on `cores.kept_threads` while chat replies stream and on its own threads otherwise; with nice in the
    policy, yields priority too (cores.yield_priority: while replies stream where it can take it back, else for the
    rest of its process, which a trainer has of its own). Its threads go into status.json for the chat to read."""

    def __init__(self, run_dir: Path, is_main: bool = True):
        self.run_dir = Path(run_dir)
        self.is_main = is_main
        self.own = 1
        self.priority = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.own = _torch_threads()
        if cores.uses_nice():
            self.priority = cores.yield_priority(self.run_dir.parent)
        if self.is_main:
            runs.write_status(self.run_dir, "running", threads=self.own, device="cpu")

    def on_train_end(self, args, state, control, **kwargs):
        import torch

        if self.priority is not None:
            self.priority.stop()
            self.priority = None
        torch.set_num_threads(self.own)  # saving, the comparison: on every thread again

    def _share(self) -> None:
        import torch

        wanted = self.own
        if cores.yields_threads():
            wanted = cores.kept_threads(self.own, cores.streaming_rows(self.run_dir.parent))
        if wanted != torch.get_num_threads():  # the main thread's count is the one its kernels use
            torch.set_num_threads(wanted)

    def on_step_begin(self, args, state, control, **kwargs):
        self._share()

    def on_substep_end(self, args, state, control, **kwargs):
        self._share()


class TrainingDiverged(RuntimeError):
    """The loss or the weights stopped being finite numbers; nothing is saved."""


def check_finite(model, config: RunConfig, diverged_at: int | None) -> None:
    """Raise TrainingDiverged when training logged a NaN/inf loss or left a trainable weight that is not finite."""
    import torch

    if diverged_at is None:
        bad = next((name for name, p in model.named_parameters()
                    if p.requires_grad and not torch.isfinite(p.detach()).all()), None)
        if bad is None:
            return
        where = f"the weight {bad} holds NaN or infinite values"
    else:
        where = f"the loss became NaN or infinite at step {diverged_at}"
    raise TrainingDiverged(
        f"training diverged: {where}, so no weights were saved. Lower the learning rate (lr, now "
        f"{config.learning_rate:g}) or check that the base model's weights are finite.")


def callbacks_for(config: RunConfig, run_callback: RunFolderCallback, has_eval: bool) -> list:
    callbacks = [run_callback]
    if models.device() == "cpu" and cores.policy() != "none":
        callbacks.append(CoreSharingCallback(config.out, is_main=run_callback.is_main))
    if has_eval and config.early_stopping:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.early_stopping))
    return callbacks

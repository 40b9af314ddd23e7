"""Multi-device launch: the `accelerate launch` command that runs an unchanged run config with DDP, FSDP or
DeepSpeed ZeRO-2/3, using the accelerate config files shipped next to this module."""
from __future__ import annotations

import sys
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent
LAUNCHERS = {
    "ddp": "ddp.yaml",
    "fsdp": "fsdp.yaml",
    "deepspeed": "deepspeed_zero2.yaml",
    "deepspeed_zero2": "deepspeed_zero2.yaml",
    "deepspeed_zero3": "deepspeed_zero3.yaml",
}


class LaunchError(ValueError):
    pass


def config_file(launcher: str) -> Path:
    if launcher not in LAUNCHERS:
        raise LaunchError(f"--launcher: '{launcher}' is not one of {', '.join(LAUNCHERS)}.")
    return CONFIGS / LAUNCHERS[launcher]


def default_nproc(gpus: int) -> int:
    return gpus if gpus > 0 else 2


def launch_command(launcher: str, run_config: str | Path, nproc: int, gpus: int,
                   python: str = sys.executable) -> list[str]:
    """`accelerate launch` of `python -m ftchat train RUN_CONFIG` on `nproc` processes; on a machine without
    GPUs (gpus == 0) the same DDP config runs them on the CPU, talking over gloo."""
    path = config_file(launcher)
    if nproc < 1:
        raise LaunchError(f"--nproc: must be at least 1, got {nproc}.")
    if gpus == 0 and launcher != "ddp":
        raise LaunchError(f"--launcher {launcher} needs CUDA GPUs; on a CPU-only machine use --launcher ddp.")
    if gpus and nproc > gpus:
        raise LaunchError(f"--nproc: {nproc} processes but {gpus} GPU(s) visible; use at most one process per GPU.")
    # No `--cpu` on a CPU-only machine: accelerate then runs a single process (or mpirun); the multi-GPU launcher
    # (torch.distributed.run) starts the processes, and the trainer (use_cpu) joins them over gloo.
    command = [python, "-m", "accelerate.commands.launch", "--config_file", str(path), "--num_processes", str(nproc),
               "-m", "ftchat", "train", str(run_config)]
    return command

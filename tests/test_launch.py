"""Many devices: the accelerate configs ftchat ships are valid, the launch command is right, and a run config
trains unchanged on two CPU processes (DDP over gloo) with only rank 0 writing the run folder."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ftchat_main

from ftchat.train.launch import LAUNCHERS, LaunchError, config_file, launch_command

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("launcher,kind", [("ddp", "MULTI_GPU"), ("fsdp", "FSDP"), ("deepspeed", "DEEPSPEED"),
                                           ("deepspeed_zero3", "DEEPSPEED")])
def test_shipped_configs_are_accelerate_configs(launcher, kind):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(config_file(launcher)))
    assert config.distributed_type.value == kind
    if launcher.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == (3 if launcher.endswith("3") else 2)


def test_launch_command_for_gpus_and_for_cpu(tmp_path):
    run = tmp_path / "run.yaml"
    gpu = launch_command("deepspeed_zero3", run, nproc=4, gpus=8, python="py")
    assert gpu == ["py", "-m", "accelerate.commands.launch", "--config_file", str(config_file("deepspeed_zero3")),
                   "--num_processes", "4", "-m", "ftchat", "train", str(run)]
    cpu = launch_command("ddp", run, nproc=2, gpus=0, python="py")
    assert "--cpu" not in cpu, "accelerate's --cpu means one process"
    assert cpu[-4:] == ["-m", "ftchat", "train", str(run)]
    with pytest.raises(LaunchError, match="needs CUDA GPUs"):
        launch_command("fsdp", run, nproc=2, gpus=0)
    with pytest.raises(LaunchError, match="at most one process per GPU"):
        launch_command("ddp", run, nproc=3, gpus=2)
    assert set(LAUNCHERS) >= {"ddp", "fsdp", "deepspeed"}


def test_train_print_shows_the_command_without_training(tmp_path, chats_file, tiny_model_dir):
    out = tmp_path / "runs" / "printed"
    code, printed, err = ftchat_main("train", "--launcher", "ddp", "--nproc", 2, "--print", "--data", chats_file,
                                     "--out", out, "--base", tiny_model_dir)  # `python -m ftchat`, in-process
    assert code == 0, err
    assert "accelerate.commands.launch" in printed and str(out / "requested.yaml") in printed
    assert (out / "requested.yaml").exists() and not (out / "status.json").exists()


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_once_and_loads(tmp_path, chats_file, tiny_model_dir):
    out = tmp_path / "runs" / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "ftchat", "train", "--launcher", "ddp", "--nproc", "2", "--data", str(chats_file),
         "--out", str(out), "--base", str(tiny_model_dir), "--adapter", "lora", "--max-steps", "4",
         "--batch-size", "2", "--lr", "1e-2", "--compare-prompts", "0", "--eval-split", "0", "--replay", "0"],
        cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0 of 2" in result.stderr and "rank 1 of 2" in result.stderr, result.stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "done" and status["summary"]["steps"] == 4
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in rows if "loss" in row]
    assert steps == [1, 2, 3, 4], "one writer: every training step is logged once, not once per rank"
    from ftchat.chat.engine import ChatEngine
    from ftchat.chat.generation import GenerationSettings

    engine = ChatEngine(out.parent, default_base=str(tiny_model_dir))
    reply = engine.answer([(str(out), [{"role": "user", "content": "What colour is the Zumo lamp?"}])],
                          GenerationSettings(max_new_tokens=6))[0]
    assert reply

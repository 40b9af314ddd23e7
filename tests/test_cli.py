"""The command line as a user types it: train, cancel with SIGTERM, resume, chat, export. Real subprocesses where the
process is what is tested (SIGTERM, a cancel while it loads, the exit code and the one line a user sees on bad data,
`accelerate launch`); the other commands are called in-process, as `python -m ftchat` calls them (conftest)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml
from conftest import ftchat_main
from peft import PeftModel
from transformers import AutoModelForCausalLM

from ftchat import runs

ROOT = Path(__file__).resolve().parents[1]


def ftchat(*args, check=True, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "ftchat", *map(str, args)], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, **kwargs)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def in_process(*args) -> tuple[str, str]:
    """`python -m ftchat ARGS` called in this process: it must succeed; (stdout, stderr)."""
    code, out, err = ftchat_main(*args)
    assert code == 0, out[-3000:] + err[-3000:]
    return out, err


def test_train_chat_export_from_the_shell(tmp_path, tiny_model_dir, chats_file):
    run_dir = tmp_path / "runs" / "cli"
    out, err = in_process("train", "--data", chats_file, "--out", run_dir, "--base", tiny_model_dir, "--adapter",
                          "lora", "--max-steps", 2, "--lr", 1e-2, "--eval-steps", 1, "--compare-prompts", 0)
    assert "done:" in out
    assert "it/s" in err or "s/it" in err, "a progress bar is shown"
    out, _ = in_process("chat", "--run", run_dir, "--prompt", "What colour is the Zumo lamp?", "--json",
                        "--max-new-tokens", 8)
    replies = json.loads(out.strip().splitlines()[-1])
    assert set(replies) == {"base", "tuned"} and all(isinstance(v, str) for v in replies.values())

    merged = tmp_path / "merged"
    in_process("export", "--run", run_dir, "--merged", merged, "--adapter", tmp_path / "adapter")
    assert "base_model" not in (merged / "README.md").read_text(), "a local base has no hub id to name"
    assert (tmp_path / "adapter" / "README.md").read_text().startswith("---\nlibrary_name: peft")
    plain = AutoModelForCausalLM.from_pretrained(merged)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), run_dir / "adapter")
    ids = torch.tensor([[1, 5, 9, 13, 2]])
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, peft_model(input_ids=ids).logits, atol=1e-4)


def test_yaml_config_and_flags_are_the_same_run_config(tmp_path, tiny_model_dir, chats_file):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"data": [str(chats_file)], "out": str(tmp_path / "runs" / "y"),
                                      "base": str(tiny_model_dir), "adapter": "lora", "max_steps": 2,
                                      "compare_prompts": 0}))
    in_process("train", config, "--lr", 5e-3)
    resolved = yaml.safe_load((tmp_path / "runs" / "y" / "config.yaml").read_text())
    assert resolved["max_steps"] == 2 and resolved["lr"] == 5e-3 and resolved["adapter"] == "lora"


def test_sigterm_cancels_cleanly_and_resume_finishes(tmp_path, tiny_model_dir, chats_file):
    run_dir = tmp_path / "runs" / "long"
    process = subprocess.Popen(
        [sys.executable, "-m", "ftchat", "train", "--data", str(chats_file), "--out", str(run_dir), "--base",
         str(tiny_model_dir), "--adapter", "lora", "--max-steps", "40", "--eval-steps", "50", "--compare-prompts",
         "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not any(m.get("step", 0) >= 3 for m in runs.read_metrics(run_dir)):
        assert process.poll() is None, process.stdout.read()[-3000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0
    status = runs.read_status(run_dir)
    assert status["state"] == "cancelled"
    checkpoints = list((run_dir / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, "a checkpoint is saved on cancel"
    stopped_at = int(checkpoints[0].name.split("-")[1])
    assert 3 <= stopped_at < 40

    in_process("train", run_dir / "config.yaml", "--resume")  # the process that resumes is not what is tested
    status = runs.read_status(run_dir)
    assert status["state"] == "done" and status["summary"]["steps"] == 40
    steps = [m["step"] for m in runs.read_metrics(run_dir) if "loss" in m]
    assert steps[-1] == 40 and min(s for s in steps if s > stopped_at) == stopped_at + 1, "resumed, not restarted"


def test_cancel_while_the_model_loads_or_before_python_starts_is_clean(tmp_path, tiny_model_dir, chats_file):
    from ftchat.config import RunConfig

    # SIGTERM during loading: the trainer has not started, the process still ends cleanly as cancelled
    loading = RunConfig(data=[str(chats_file)], out=str(tmp_path / "runs" / "loading"), base=str(tiny_model_dir),
                        adapter="lora", max_steps=40, compare_prompts=0)
    process = runs.launch(loading)
    deadline = time.time() + 120
    while time.time() < deadline and runs.read_status(loading.out).get("phase") != "loading":
        assert process.poll() is None, runs.log_tail(loading.out)
        time.sleep(0.05)
    assert runs.cancel(loading.out)
    assert process.wait(timeout=120) == 0, runs.log_tail(loading.out)
    assert runs.load_run(loading.out).state == "cancelled"
    assert not runs.read_metrics(loading.out), "no training step ran"

    # Cancel at once, before the new interpreter could install its handler: still cancelled, not failed
    instant = RunConfig(data=[str(chats_file)], out=str(tmp_path / "runs" / "instant"), base=str(tiny_model_dir),
                        adapter="lora", max_steps=40, compare_prompts=0)
    process = runs.launch(instant)
    assert runs.cancel(instant.out)
    process.wait(timeout=120)
    run = runs.load_run(instant.out)
    assert run.state == "cancelled" and not run.error


def test_bad_data_gives_one_clear_line_and_a_failed_status(tmp_path, tiny_model_dir):
    bad = tmp_path / "notes.jsonl"
    bad.write_text("this is not json\n")
    run_dir = tmp_path / "runs" / "bad"
    result = ftchat("train", "--data", bad, "--out", run_dir, "--base", tiny_model_dir, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "notes.jsonl" in result.stderr and "error:" in result.stderr
    assert runs.read_status(run_dir)["state"] == "failed"


def test_data_check_cli_reports_every_sample(tmp_path):
    samples = sorted((ROOT / "data").glob("*.jsonl")) + [ROOT / "data" / "quorvane_handbook.md"]
    out, _ = in_process("data", "check", *samples, "--json")
    reports = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["file"]).name for r in reports] == [p.name for p in samples]
    assert all(r["ok"] and r["examples"] > 0 for r in reports)
    shapes = {Path(r["file"]).name: r["shape"] for r in reports}
    assert shapes["quorvane_support.jsonl"] == "messages"
    assert shapes["quorvane_preferences.jsonl"] == "preference"
    assert shapes["quorvane_feedback_kto.jsonl"] == "unpaired_preference"
    assert shapes["quorvane_handbook.md"] == "text"
    bad = tmp_path / "empty.jsonl"
    bad.write_text("")
    code, out, _ = ftchat_main("data", "check", bad, "--json")
    assert code == 1 and json.loads(out)["ok"] is False


def test_the_entry_point_runs_under_accelerate_launch(tmp_path, tiny_model_dir, chats_file):
    run_dir = tmp_path / "runs" / "accel"
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--cpu", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "ftchat", "train", "--data", str(chats_file),
         "--out", str(run_dir), "--base", str(tiny_model_dir), "--adapter", "lora", "--max-steps", "2",
         "--compare-prompts", "0"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert runs.read_status(run_dir)["state"] == "done"
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()

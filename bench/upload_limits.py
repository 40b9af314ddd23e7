"""How large an upload ftchat handles: seconds and peak memory of `ftchat data check` and of the app's upload
path (store the upload in a workspace, then build its report with the bundled tokenizer) per file size.

    .venv/bin/python bench/upload_limits.py [--sizes 5,10,25,50,100] [--out results.json]

Files are generated here: JSON Lines of fictional support conversations (2-6 turns, replies of 100-1500
characters), the shape most uploads have. Each measurement runs in a fresh process so peak RSS is its own.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

from common import ROOT, run_or_explain, write_json

WORDS = ("hive frame colony queen honey sensor battery warranty Quorvane BeeSense monitor weight temperature "
         "humidity alert firmware update reset pairing app account support swarm winter feeding inspection "
         "the a of to and in is it you your we our can will should not please check after before").split()


def sentence(draw: random.Random, low: int, high: int) -> str:
    n = draw.randint(low, high)
    text = " ".join(draw.choice(WORDS) for _ in range(n))
    return text[0].upper() + text[1:] + "."


def conversation(draw: random.Random) -> dict:
    messages = [{"role": "system", "content": "You are Quorvane's support assistant."}] if draw.random() < 0.3 else []
    for _ in range(draw.randint(1, 3)):
        messages.append({"role": "user", "content": sentence(draw, 5, 40)})
        messages.append({"role": "assistant", "content": " ".join(sentence(draw, 8, 30) for _ in range(draw.randint(1, 8)))})
    return {"messages": messages}


def write_jsonl(path: Path, megabytes: float, seed: int = 0) -> int:
    draw, size, rows = random.Random(seed), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while size < megabytes * 1024 * 1024:
            line = json.dumps(conversation(draw), ensure_ascii=False) + "\n"
            f.write(line)
            size += len(line.encode())
            rows += 1
    return rows


CHECK = """
import resource, sys
from ftchat.cli import main
code = main(['data', 'check', sys.argv[1], '--json'])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)
sys.exit(code)
"""
UPLOAD = """
import gc, json, os, resource, sys, time
from ftchat.ui.context import AppContext
from ftchat.workspace import Workspace

def rss_mb():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024

ctx = AppContext(Workspace(sys.argv[2], max_upload_mb=10**6))
ctx.tokenizer()
before = rss_mb()
started, cpu_started = time.perf_counter(), time.process_time()
stored = ctx.workspace.store_upload(sys.argv[1])
report = ctx.report(stored.path)
seconds = time.perf_counter() - started
cpu = time.process_time() - cpu_started
gc.collect()
print(json.dumps({"seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "examples": report.loaded.examples, "ok": report.ok,
                  "rss_before_mb": round(before), "rss_after_mb": round(rss_mb()),
                  "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))
"""


def run(code: str, *args: str) -> tuple[float, float, str, str]:
    """(wall seconds, CPU seconds, stdout, stderr) of `python -c code args` in a fresh process; exit code 1 (`ftchat
    data check` reporting problems) is a result, not a failure."""
    ran = run_or_explain([sys.executable, "-c", code, *args], env={**os.environ, "PYTHONPATH": str(ROOT)}, ok=(0, 1))
    return ran.wall_s, ran.cpu_s, ran.stdout, ran.stderr


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="5,10,25,50,100", help="file sizes in MB")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for megabytes in [float(s) for s in args.sizes.split(",")]:
            path = Path(tmp) / f"conversations_{megabytes:g}mb.jsonl"
            rows = write_jsonl(path, megabytes)
            seconds, cpu, out, err = run(CHECK, str(path))
            check = json.loads(out.splitlines()[0])
            upload_wall, upload_cpu, out, _ = run(UPLOAD, str(path), str(Path(tmp) / f"ws{megabytes:g}"))
            upload = json.loads(out)
            upload["process_cpu_seconds"] = round(upload_cpu, 1)
            result = {"mb": megabytes, "rows": rows, "load_average": round(os.getloadavg()[0], 1),
                      "check_seconds": round(seconds, 1), "check_cpu_seconds": round(cpu, 1),
                      "check_peak_mb": int(err.strip().splitlines()[-1]), "check_examples": check["examples"],
                      "upload": upload}
            results.append(result)
            print(json.dumps(result), flush=True)
            path.unlink()
    if args.out:
        write_json(args.out, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

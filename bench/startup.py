"""Start-up: seconds from `python app.py` to the page's first HTTP 200, against a bare Gradio page started the same way
in this run (the baseline: what importing and serving Gradio alone costs on this machine). Median of 3 each.

Target: the page answers within 5 s of launch. Usage: python bench/startup.py
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import free_port, start_quietly, wait_for_page

BARE_APP = """import sys, gradio as gr
with gr.Blocks() as demo:
    gr.Markdown("hello")
demo.launch(server_port=int(sys.argv[1]), prevent_thread_lock=False)
"""


def seconds_to_first_page(command: list[str], port: int, timeout: float = 120) -> float:
    started = time.monotonic()
    process = start_quietly(command)
    try:
        return wait_for_page(f"http://127.0.0.1:{port}/", started, timeout)
    finally:
        process.terminate()
        process.wait(20)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bare = Path(tmp) / "bare.py"
        bare.write_text(BARE_APP)
        ours, baseline = [], []
        for _ in range(3):  # interleaved, so a busy moment hits both
            port = free_port()
            baseline.append(seconds_to_first_page([sys.executable, str(bare), str(port)], port))
            port = free_port()
            ours.append(seconds_to_first_page([sys.executable, "app.py", "--port", str(port), "--no-warm",
                                               "--workspace", str(Path(tmp) / "ws")], port))
    a, b = statistics.median(baseline), statistics.median(ours)
    print("| start-up (first HTTP 200) | seconds | × bare Gradio |\n|---|---|---|")
    print(f"| bare Gradio page (baseline) | {a:.2f} | 1.00 |")
    print(f"| ftchat app.py | {b:.2f} | {b / a:.2f} |")
    print(f"target: ≤ 5 s — {'met' if b <= 5 else 'NOT met'}")


if __name__ == "__main__":
    main()

"""Time per rating in the Chat tab's prompt queue: `python app.py` in a subprocess, driven through gradio_client as
the buttons drive it — Next prompt, both panes answer (48 new tokens each), vote — on the bundled model.

Prints, per prompt, the seconds from "Next prompt" to both replies done and to the vote stored, then the median.
Usage: python bench/rating_speed.py [--prompts 6] [--tokens 48] [--left MODEL] [--right MODEL]
(MODEL: a run folder, or the bundled base as the chat names it, the default for both)
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import free_port, start_quietly, wait_for_page

PROMPTS = ["What is the capital of France?", "Give me a synonym for happy.", "Write one sentence about the ocean.",
           "What do bees make?", "Explain in one sentence what a computer is.", "Suggest a name for a pet cat.",
           "How many legs does a spider have?", "What is water made of?"]


def main() -> None:
    from ftchat.models import DEFAULT_BASE
    from ftchat.names import base_choice

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--left", default=base_choice(DEFAULT_BASE))
    parser.add_argument("--right", default=base_choice(DEFAULT_BASE), help="a run folder to rate against the base")
    args = parser.parse_args()
    from gradio_client import Client

    workspace = Path(tempfile.mkdtemp(prefix="rating-speed-")) / "workspace"
    port = free_port()
    started = time.monotonic()
    app = start_quietly([sys.executable, "app.py", "--port", str(port), "--workspace", str(workspace), "--no-warm"])
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_page(url, started, timeout=300, poll=0.5)
        client = Client(url, verbose=False, analytics_enabled=False, httpx_kwargs={"timeout": 600})
        prompts = PROMPTS[: args.prompts]
        client.predict(None, None, "\n".join(prompts), api_name="/load_prompts")
        # the first answer loads the model and hashes its weights: timed apart, it is paid once per app start
        started = time.monotonic()
        client.predict("warm-up question?", args.left, args.right, [], [], "", 0.0, 0.9, args.tokens, api_name="/chat")
        client.predict("", api_name="/vote_tie")
        print(f"first answer and vote (model load, weights hash): {time.monotonic() - started:.1f} s", flush=True)
        answered, rated = [], []
        for i in range(len(prompts)):
            started = time.monotonic()
            message, system, left, right, progress = client.predict("", api_name="/next_prompt")
            left, right, _ = client.predict(message, args.left, args.right, left, right, system, 0.0, 0.9, args.tokens,
                                            api_name="/chat")
            answered.append(time.monotonic() - started)
            client.predict("bench", api_name="/vote_left")
            rated.append(time.monotonic() - started)
            print(f"{progress}: both replies in {answered[-1]:.1f} s, vote stored at {rated[-1]:.1f} s", flush=True)
        print(f"median: {statistics.median(answered):.1f} s to both replies, {statistics.median(rated):.1f} s per "
              f"rating ({args.tokens} new tokens, {args.left} vs {args.right}, load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    finally:
        app.terminate()
        app.wait(30)


if __name__ == "__main__":
    main()

"""An app-like process for the PostgreSQL fault test: THREADS voter threads store votes through one FeedbackStore
until the file STOP exists; each id is printed (and flushed) on a line of its own once add_vote has returned it.

    python tests/pg_voter.py URL NAME STOP

Each vote's left reply names it ("NAME-THREAD vote N"), so a vote stored twice would show as two rows with one name;
a vote whose call failed is not tried again (stderr says why).
"""
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ftchat.feedback import FeedbackError, FeedbackStore  # noqa: E402

THREADS = 8
CONVERSATION = [{"role": "user", "content": "Which colour is the Zumo lamp?"}]


def main(url: str, name: str, stop: str) -> None:
    store = FeedbackStore(url)
    printing = threading.Lock()

    def vote(thread: int) -> None:
        n = 0
        while not os.path.exists(stop):
            n += 1
            label = f"{name}-{thread} vote {n}"
            try:
                rating = store.add_vote(CONVERSATION, "base:smollm2-135m", "zumo-sft", label, "The lamp is teal.",
                                        "b", rater=f"{name}-{thread}")
            except FeedbackError as exc:
                with printing:
                    print(f"{label}: {exc}", file=sys.stderr, flush=True)
                continue
            with printing:
                print(rating, flush=True)

    threads = [threading.Thread(target=vote, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main(*sys.argv[1:4])

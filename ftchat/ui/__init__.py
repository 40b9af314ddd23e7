"""The browser app: one module per tab, built on the ftchat core. Start it with `python app.py`."""
import os

# Before gradio is imported anywhere: no analytics, no telemetry, no request leaves the machine.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Events run up to 4 at once (Gradio's default is 1 per event); set here because demo.queue() would rebuild the app.
os.environ.setdefault("GRADIO_DEFAULT_CONCURRENCY_LIMIT", "4")

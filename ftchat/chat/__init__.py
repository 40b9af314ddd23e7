"""Chat with bases and tuned runs: the engine that offers and loads models and answers panes (engine), generation
settings and batched decoding (generation), ftchat's packed decoder (decode, packed_llama) and llama.cpp (llamacpp).
"""

from .engine import DECODERS, ChatEngine
from .generation import ChatError, GenerationSettings, with_system

__all__ = ["ChatEngine", "ChatError", "DECODERS", "GenerationSettings", "with_system"]

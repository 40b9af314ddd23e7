"""Does an exported GGUF answer like the model the user tried in the app? llama.cpp loads the written file and answers
a handful of prompts greedily beside the in-app model (transformers: the run's base with its adapter, or its whole
model, in full precision, as the Chat loads it). The CLI and the Export panel ask the run's held-out prompts, topped
up with general ones (ftchat.feedback.prompt_queue.check_prompts); called alone, a check asks general prompts.

Each prompt is rendered by the chat template and encoded on each side as that side's users meet it: the in-app
tokenizer for transformers; for llama.cpp the template stored in the GGUF, rendered as llama-cpp-python's chat API
renders it, and encoded by the GGUF's own vocabulary (a BOS token where the file asks for one).

Token agreement: transformers answers greedily (at most MAX_NEW_TOKENS, up to and including its stop token); at each
position of that answer llama.cpp, given the same preceding answer tokens, picks its own greedy next token. The
agreement is the share of positions, over all prompts, where the two picks are the same token. Compared position by
position on the in-app answer, so one near-tie early in an answer costs one token, not the rest of the answer. An
answer is identical when every position agrees: llama.cpp's own greedy answer is then the in-app one, token for
token, ending at the same stop token.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ftchat import models, runs
from ftchat.prompts import GENERAL_PROMPTS

# torch and transformers are imported inside the functions that run a check (`ftchat export` loads this module for
# every form, and only a GGUF export checks); llama.cpp runs in a child process (`python -m ftchat.export.check`), so
# a build that dies on this CPU, or on a damaged file, ends the child and not the export

N_PROMPTS = 4
MAX_NEW_TOKENS = 48
# Below this share of agreeing tokens an export says plainly that it answers differently from the tested model. On
# SmolLM2-135M with a LoRA (4 prompts, 113 tokens) f16 agreed on 100%, q8_0 on 98%, q4_0 on 81% (1 of 4 answers
# identical); on the tests' tiny model, K and V swapped in every block gave 83%, ffn_down scaled by 20 gave 10%.
WARN_BELOW = 0.9


@dataclass
class PromptCheck:
    prompt: str  # the last user turn
    tokens: int  # positions compared: the in-app answer's length
    agreeing: int
    in_app: str  # the in-app model's greedy answer
    llamacpp: str  # llama.cpp's own greedy answer
    same_prompt_tokens: bool  # both sides encoded the prompt to the same token ids

    @property
    def identical(self) -> bool:
        return self.agreeing == self.tokens


@dataclass
class GGUFCheck:
    """The result of check_gguf; `skipped` says why nothing was compared (then the figures are empty)."""

    quant: str | None = None
    prompts: list[PromptCheck] = field(default_factory=list)
    prompt_source: str = ""
    skipped: str | None = None

    @property
    def tokens(self) -> int:
        return sum(p.tokens for p in self.prompts)

    @property
    def agreeing(self) -> int:
        return sum(p.agreeing for p in self.prompts)

    @property
    def agreement(self) -> float | None:
        return self.agreeing / self.tokens if self.tokens else None

    @property
    def identical(self) -> int:
        return sum(p.identical for p in self.prompts)

    @property
    def low(self) -> bool:
        return self.agreement is not None and self.agreement < WARN_BELOW

    def summary(self) -> str:
        """One line: the figures, or why the check was skipped."""
        if self.skipped:
            return f"llama.cpp check skipped: {self.skipped}"
        return (f"llama.cpp check: {self.agreement:.0%} token agreement with the in-app model ({self.agreeing} of "
                f"{self.tokens} greedy tokens), {self.identical} of {len(self.prompts)} answers identical "
                f"({self.prompt_source}).")

    def warning(self) -> str | None:
        """The plain sentence an export with low agreement carries, or None."""
        if not self.low:
            return None
        encoded = sum(not p.same_prompt_tokens for p in self.prompts)
        why = f" llama.cpp encodes {encoded} of {len(self.prompts)} prompts differently." if encoded else ""
        return (f"Warning: this GGUF answers differently from the model you tested: llama.cpp picked the in-app "
                f"model's next token at only {self.agreement:.0%} of {self.tokens} positions (below "
                f"{WARN_BELOW:.0%}), so expect different, likely worse, answers in llama.cpp and Ollama.{why} "
                "The file is written; try --quant f16 or q8_0, or check the run in the Chat first.")

    def markdown(self) -> str:
        """The model card's section."""
        if self.skipped:
            return f"## llama.cpp check\n\nSkipped: {self.skipped}\n"
        lines = ["## llama.cpp check", "",
                 f"llama.cpp loaded this GGUF ({self.quant}) and answered {len(self.prompts)} prompts "
                 f"({self.prompt_source}) greedily, at most {MAX_NEW_TOKENS} new tokens each, beside the fine-tuned "
                 "model in transformers (full precision). Token agreement is the share of the transformers answer's "
                 "tokens that llama.cpp, given the same preceding tokens, also picks; an answer is identical when "
                 "every token agrees.", "",
                 f"**Token agreement: {self.agreement:.0%}** ({self.agreeing} of {self.tokens} tokens); "
                 f"**identical answers: {self.identical} of {len(self.prompts)}**.", ""]
        warning = self.warning()
        if warning:
            lines += [f"> {warning}", ""]
        lines += ["| prompt | tokens agreeing | identical |", "|---|---|---|"]
        for p in self.prompts:
            text = " ".join(p.prompt.split()).replace("|", "\\|")
            lines.append(f"| {text[:80]} | {p.agreeing} of {p.tokens} | {'yes' if p.identical else 'no'} |")
        return "\n".join(lines) + "\n"


def llamacpp_missing() -> str | None:
    """Why llama.cpp cannot check an export here, or None when it can."""
    import importlib.util

    if os.environ.get("FTCHAT_LLAMACPP") == "0":
        return "FTCHAT_LLAMACPP=0 turns llama.cpp off."
    try:
        found = importlib.util.find_spec("llama_cpp") is not None
    except ValueError:  # sys.modules holds None for it: Python's way of saying it cannot be imported
        found = False
    return None if found else "llama.cpp is not installed here (pip install llama-cpp-python to have exports checked)."


@dataclass
class CheckPrompts:
    """The conversations a check asks (each ends with a user turn) and a few words saying where they come from."""

    conversations: list[list[dict]]
    source: str


def general_prompts(limit: int = N_PROMPTS) -> CheckPrompts:
    return CheckPrompts([[{"role": "user", "content": p}] for p in GENERAL_PROMPTS[:limit]], "general prompts")


def _in_app_model(run_dir: Path):
    """The fine-tuned model as the Chat loads it, in full precision: the base with the run's adapter, or the run's
    whole model; its tokenizer and stop token ids."""
    from transformers import GenerationConfig

    run = runs.load_run(run_dir)
    weights = runs.weights_dir(run_dir)
    if weights.name == "model":
        folder = weights
        model = models.load_model(weights, precision="fp32")
    else:
        from peft import PeftModel

        folder = models.resolve_base(run.config.get("base"))
        model = PeftModel.from_pretrained(models.load_model(folder, precision="fp32"), weights)
    tokenizer = models.load_tokenizer(folder)
    generation = GenerationConfig.from_pretrained(folder) if (folder / "generation_config.json").exists() \
        else GenerationConfig()
    eos = generation.eos_token_id  # the chat stops at these and at the tokenizer's EOS
    stops = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return model.eval(), tokenizer, stops | ({tokenizer.eos_token_id} - {None})


def _greedy(model, prompt_ids: list[int], stops: set[int], pad_token_id) -> list[int]:
    import torch

    with torch.inference_mode():
        out = model.generate(input_ids=torch.tensor([prompt_ids]), attention_mask=torch.ones(1, len(prompt_ids),
                             dtype=torch.long), max_new_tokens=MAX_NEW_TOKENS, do_sample=False, temperature=None,
                             top_p=None, top_k=None, repetition_penalty=1.0, eos_token_id=sorted(stops),
                             pad_token_id=pad_token_id)
    answer = out[0, len(prompt_ids):].tolist()
    end = next((i + 1 for i, token in enumerate(answer) if token in stops), len(answer))
    return answer[:end]


def _llamacpp_prompt(llm, conversation: list[dict]) -> list[int]:
    """The prompt as llama.cpp meets it: the GGUF's own chat template, its own vocabulary."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise ValueError("the GGUF carries no chat template")

    def text_of(token: int) -> str:
        return llm.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

    text = Jinja2ChatFormatter(template, eos_token=text_of(llm.token_eos()), bos_token=text_of(llm.token_bos()))(
        messages=conversation).prompt
    return llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)


def _logits(llm):
    import llama_cpp
    import numpy as np

    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))


def _llamacpp_side(llm, prompt_ids: list[int], reference: list[int]) -> tuple[int, list[int]]:
    """(positions of `reference` where llama.cpp's greedy pick is the reference token, llama.cpp's own greedy
    answer)."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    llm.reset()
    llm.eval(prompt_ids)
    picks = []
    for token in reference:
        picks.append(int(_logits(llm).argmax()))
        llm.eval([token])
    agreeing = sum(p == t for p, t in zip(picks, reference))
    first = next((i for i, (p, t) in enumerate(zip(picks, reference)) if p != t), None)
    if first is None:
        return agreeing, list(reference)
    own = reference[:first] + [picks[first]]
    llm.reset()
    llm.eval(prompt_ids + own)
    while len(own) < MAX_NEW_TOKENS and not llama_cpp.llama_vocab_is_eog(vocab, own[-1]):
        own.append(int(_logits(llm).argmax()))
        llm.eval([own[-1]])
    return agreeing, own


def _llamacpp_answers(gguf_file: str, conversations: list[list[dict]], references: list[list[int]], n_ctx: int
                      ) -> dict:
    """In the child process: for each conversation, llama.cpp's prompt ids, its agreeing positions on the reference
    answer and its own greedy answer; or {"error": why} where llama.cpp refuses the file."""
    from llama_cpp import Llama

    try:
        llm = Llama(model_path=gguf_file, n_ctx=n_ctx, n_batch=128, verbose=False)
    except (ValueError, RuntimeError) as exc:
        return {"error": str(exc)}
    answers = []
    try:
        for conversation, reference in zip(conversations, references):
            prompt_ids = _llamacpp_prompt(llm, conversation)
            agreeing, own = _llamacpp_side(llm, prompt_ids, reference)
            answers.append({"prompt_ids": prompt_ids, "agreeing": agreeing, "own": own})
    finally:
        llm.close()
    return {"answers": answers}


def check_gguf(run_dir: str | Path, gguf_file: str | Path, quant: str | None = None,
               prompts: CheckPrompts | None = None) -> GGUFCheck:
    """Load `gguf_file` in llama.cpp and compare its greedy answers with the run's in-app model on `prompts` (default:
    general prompts), as the module docstring says; `skipped` set where llama.cpp is not installed or did not run. A
    file llama.cpp refuses gives an agreement of 0."""
    missing = llamacpp_missing()
    if missing:
        return GGUFCheck(quant, skipped=missing)
    prompts = prompts or general_prompts()
    model, tokenizer, stops = _in_app_model(Path(run_dir))
    references, prompt_ids = [], []
    for conversation in prompts.conversations:
        text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        prompt_ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        references.append(_greedy(model, prompt_ids[-1], stops, tokenizer.pad_token_id))
    del model
    request = {"gguf_file": str(gguf_file), "conversations": prompts.conversations, "references": references,
               "n_ctx": max(len(ids) for ids in prompt_ids) + MAX_NEW_TOKENS + 64}
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    try:
        child = subprocess.run([sys.executable, "-m", "ftchat.export.check"], input=json.dumps(request),
                               capture_output=True, text=True, env=env, timeout=1800)
    except subprocess.TimeoutExpired:
        return GGUFCheck(quant, skipped="llama.cpp took over 30 minutes to answer; the file is written unchecked.")
    if child.returncode != 0:
        return GGUFCheck(quant, skipped=f"llama.cpp ended with exit status {child.returncode} while answering from "
                                        f"the file ({child.stderr.strip()[-300:] or 'no message'}); the file may be "
                                        "damaged, or this llama.cpp build does not run here.")
    reply = json.loads(child.stdout.strip().splitlines()[-1])
    result = GGUFCheck(quant, prompt_source=prompts.source)
    for i, (conversation, reference) in enumerate(zip(prompts.conversations, references)):
        in_app = tokenizer.decode(reference, skip_special_tokens=True)
        if "error" in reply:  # llama.cpp refused the file: nothing it says matches
            result.prompts.append(PromptCheck(conversation[-1]["content"], len(reference), 0, in_app,
                                              f"(llama.cpp could not load the file: {reply['error']})", False))
            continue
        answer = reply["answers"][i]
        result.prompts.append(PromptCheck(conversation[-1]["content"], len(reference), answer["agreeing"], in_app,
                                          tokenizer.decode(answer["own"], skip_special_tokens=True),
                                          answer["prompt_ids"] == prompt_ids[i]))
    return result


if __name__ == "__main__":  # the child process check_gguf starts: one JSON request on stdin, one JSON line out
    print(json.dumps(_llamacpp_answers(**json.loads(sys.stdin.read()))))

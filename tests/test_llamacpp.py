"""The chat's llama.cpp backend: a run's LoRA as a GGUF adapter gives the training-side model's logits and answers.

Runs only where llama-cpp-python is installed (`make` builds it; where the build fails the chat falls back to
ftchat.chat.decode, which tests/test_chat.py covers)."""
from __future__ import annotations

import json

import pytest
import torch

llama_cpp = pytest.importorskip("llama_cpp")

from ftchat import models
from ftchat.chat import llamacpp
from ftchat.chat.engine import ChatEngine
from ftchat.chat.generation import GenerationSettings, llamacpp_answer
from ftchat.names import BASE_PREFIX

if not llamacpp.available():
    pytest.skip("llama-cpp-python is installed but died on the bundled GGUF here (see the logged warning)",
                allow_module_level=True)

QUESTIONS = [[{"role": "user", "content": q}] for q in (
    "What colour is the sky on a clear day?", "Name three fruits.", "How many legs does a spider have?",
    "Write one sentence about the sea.")]


def random_lora(base_dir, out, rank=8, alpha=16, seed=0, std=0.05):
    """A saved peft LoRA on every linear layer of the base, with random (non-zero) B factors."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, target_modules="all-linear",
                                             lora_dropout=0.0, task_type="CAUSAL_LM"))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=std)
    model.save_pretrained(out)
    return out


def llamacpp_logits(model: llamacpp.LlamaCppModel, ids: list[int]) -> torch.Tensor:
    llm = model.acquire()
    try:
        llm.reset()
        llm.eval(ids)
        row = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
        return torch.tensor([row[i] for i in range(llm.n_vocab())])
    finally:
        model.release(llm)


def reference_logits(base_dir, adapter_dir, ids: list[int]) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, -1]


def test_lora_as_gguf_adapter_gives_the_peft_models_logits(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FTCHAT_CACHE", str(tmp_path / "cache"))
    adapter = random_lora(tiny_model_dir, tmp_path / "adapter")
    tokenizer = models.load_tokenizer(tiny_model_dir)
    ids = tokenizer("The harbour master of Quellen counts the boats at dawn", add_special_tokens=False)["input_ids"]
    base_gguf = llamacpp.model_gguf(tiny_model_dir)
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["num_key_value_heads"] < config["num_attention_heads"]  # so K's rows are permuted by kv heads

    base_ref, tuned_ref = reference_logits(tiny_model_dir, None, ids), reference_logits(tiny_model_dir, adapter, ids)
    assert (tuned_ref - base_ref).abs().max() > 0.05, "the random adapter moves the logits"
    base = llamacpp_logits(llamacpp.LlamaCppModel(base_gguf, None, tokenizer, set()), ids)
    tuned_gguf = llamacpp.lora_to_gguf(adapter, config, tmp_path / "adapter.gguf")
    tuned = llamacpp_logits(llamacpp.LlamaCppModel(base_gguf, tuned_gguf, tokenizer, set()), ids)
    scale = tuned_ref.abs().max().item()
    assert (base - base_ref).abs().max() < 0.02 * scale  # f16 weights
    assert (tuned - tuned_ref).abs().max() < 0.02 * scale
    assert tuned.argmax() == tuned_ref.argmax() and base.argmax() == base_ref.argmax()

    # the check has teeth: without llama.cpp's rotary row order on Q and K, the tuned logits are off
    monkeypatch.setattr(llamacpp, "_permute", lambda weights, n_head, n_kv=None: weights)
    wrong_gguf = llamacpp.lora_to_gguf(adapter, config, tmp_path / "unpermuted.gguf")
    wrong = llamacpp_logits(llamacpp.LlamaCppModel(base_gguf, wrong_gguf, tokenizer, set()), ids)
    assert (wrong - tuned_ref).abs().max() > 5 * (tuned - tuned_ref).abs().max()


@pytest.fixture(scope="module")
def bundled_with_lora(tmp_path_factory):
    """The bundled base and a random LoRA on it, in a workspace's runs/ folder as a finished run."""
    from ftchat import runs
    from ftchat.config import RunConfig

    root = tmp_path_factory.mktemp("llamacpp-ws")
    base_dir = models.resolve_base(models.DEFAULT_BASE)
    run_dir = root / "runs" / "lora-run"
    random_lora(base_dir, runs.adapter_dir(run_dir), rank=16, alpha=32, std=0.02, seed=1)
    RunConfig(data=["chats.jsonl"], out=str(run_dir), base=models.DEFAULT_BASE, adapter="lora").save(
        run_dir / "config.yaml")
    (run_dir / "status.json").write_text(json.dumps({"state": "done"}))
    assert runs.load_run(run_dir).state == "done"
    return base_dir, run_dir


def test_bundled_model_answers_through_llamacpp_as_the_training_side_model(bundled_with_lora):
    """The shipped Q4_1 GGUF (+ the run's adapter) through llama.cpp against the fp32 model the run trained on (the
    same 4-bit values, dequantized), each fed the fp32 model's own greedy answers (teacher-forced): llama.cpp rounds
    the activations to 8 bits in its dot products, so a near-tie may go the other way, and nothing else may."""
    from peft import PeftModel

    from ftchat import runs
    from ftchat.chat.generation import render_prompts

    base_dir, run_dir = bundled_with_lora
    engine = ChatEngine(run_dir.parent, decoder="auto")
    fast = {"base": engine._resolve(BASE_PREFIX + models.DEFAULT_BASE)[0].model,
            "tuned": engine._resolve(str(run_dir))[0].model}
    assert isinstance(fast["base"], llamacpp.LlamaCppModel) and fast["tuned"].lora is not None
    tokenizer = models.load_tokenizer(base_dir)
    reference = {"base": models.load_model(base_dir, precision="fp32").eval(),
                 "tuned": PeftModel.from_pretrained(models.load_model(base_dir, precision="fp32"),
                                                    runs.adapter_dir(run_dir)).eval()}
    for side in ("base", "tuned"):
        agree = total = 0
        for question in QUESTIONS:
            prompt = tokenizer(render_prompts(tokenizer, [question])[0], add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                full = reference[side].generate(input_ids=torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                                                pad_token_id=tokenizer.pad_token_id)[0].tolist()
            answer = full[len(prompt):]
            llm = fast[side].acquire()
            try:
                llm.reset()
                llm.eval(prompt)
                for token in answer:
                    logits = llamacpp_logits_now(llm)
                    agree += int(logits.argmax()) == token
                    total += 1
                    assert logits.max() - logits[token] < 0.5, f"{side}: {tokenizer.decode(answer)!r}"  # a near-tie
                    llm.eval([token])
            finally:
                fast[side].release(llm)
        assert agree / total >= 0.9, (side, agree, total)
    base_answers = [llamacpp_answer(fast["base"], q, GenerationSettings(max_new_tokens=12)) for q in QUESTIONS]
    tuned_answers = [llamacpp_answer(fast["tuned"], q, GenerationSettings(max_new_tokens=12)) for q in QUESTIONS]
    assert all(a.strip() for a in base_answers + tuned_answers)
    assert tuned_answers != base_answers, "the adapter is applied"


def llamacpp_logits_now(llm) -> torch.Tensor:
    """The logits after the last token llm evaluated."""
    import numpy as np

    return torch.from_numpy(np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                                  shape=(llm.n_vocab(),)).copy())


def test_two_panes_stream_together_and_each_gets_its_own_answer(bundled_with_lora):
    _, run_dir = bundled_with_lora
    engine = ChatEngine(run_dir.parent)
    settings = GenerationSettings(max_new_tokens=16)
    base_choice, question = BASE_PREFIX + models.DEFAULT_BASE, QUESTIONS[1]
    alone = [engine.answer([(choice, question)], settings)[0] for choice in (base_choice, str(run_dir))]
    updates = list(engine.stream([(base_choice, question), (str(run_dir), question)], settings))
    assert updates[-1] == alone
    # both panes grew while the other was still answering
    first_full = [next(i for i, u in enumerate(updates) if u[pane] == alone[pane]) for pane in (0, 1)]
    assert all(updates[min(first_full) - 1][pane] for pane in (0, 1))
    # and the same model in both panes answers both, each in a context of its own
    twice = engine.answer([(base_choice, question), (base_choice, QUESTIONS[2])], settings)
    assert twice == [alone[0], engine.answer([(base_choice, QUESTIONS[2])], settings)[0]]


def test_a_llamacpp_build_that_crashes_here_leaves_the_chat_on_ftchats_decoder(tiny_model_dir, monkeypatch):
    """A build using instructions this CPU refuses dies of SIGILL; the probe sees it in a child process and the
    chat answers through ftchat.chat.decode instead of taking the app down."""
    monkeypatch.setattr(llamacpp, "PROBE", "import os, signal; os.kill(os.getpid(), signal.SIGILL)")
    monkeypatch.setattr(llamacpp, "_usable", None)
    assert llamacpp.available() is False
    engine = ChatEngine("runs-none", default_base=str(tiny_model_dir), decoder="llamacpp")
    loaded, _ = engine._resolve(BASE_PREFIX + str(tiny_model_dir))
    assert not isinstance(loaded.model, llamacpp.LlamaCppModel)
    request = [(BASE_PREFIX + str(tiny_model_dir), QUESTIONS[0])]
    settings = GenerationSettings(max_new_tokens=8)
    packed = ChatEngine("runs-none", default_base=str(tiny_model_dir), decoder="auto")
    assert engine.answer(request, settings) == packed.answer(request, settings)


@pytest.mark.slow
def test_chat_tab_shows_llamacpps_answers_for_the_bundled_base_and_its_run(bundled_with_lora, tmp_path):
    """In the browser: the Chat tab pairs the bundled base with the run, and each pane shows, word for word, the
    answer ChatEngine gives through llama.cpp with the tab's defaults (greedy, 128 new tokens, both panes at once)."""
    from test_browser import CHROMIUM_ARGS, bot_texts, chromium_path
    from test_ui_api import AppProcess

    _, run_dir = bundled_with_lora
    question = QUESTIONS[2]
    engine = ChatEngine(run_dir.parent)
    expected = engine.answer([(BASE_PREFIX + models.DEFAULT_BASE, question), (str(run_dir), question)],
                             GenerationSettings(max_new_tokens=128))
    assert isinstance(engine._resolve(str(run_dir))[0].model, llamacpp.LlamaCppModel)
    assert expected[0] != expected[1]
    if chromium_path() is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    app = AppProcess(run_dir.parent.parent)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(app.url)
            page.get_by_role("tab", name="3. Chat").click()
            assert page.locator("#left-model input").input_value() == "base · SmolLM2-135M-Instruct (bundled)"
            assert page.locator("#right-model input").input_value() == "run · lora-run · sft/lora"
            page.locator("#chat-message textarea").fill(question[0]["content"])
            page.locator("#chat-send").click()
            page.wait_for_function("() => !document.querySelector('#vote-left').disabled", timeout=180_000)
            shown = [" ".join(bot_texts(page, side)[-1].split()) for side in ("left", "right")]
            page.screenshot(path=str(tmp_path / "chat.png"))
            browser.close()
    finally:
        app.stop()
    assert shown == [" ".join(text.split()) for text in expected]

"""Side-by-side chat: one base in memory serves several LoRA runs in one batch, and streams every pane."""
from __future__ import annotations

import json
import shutil
import time

import pytest
from trained_runs import copy_run

from ftchat.chat.engine import ChatEngine
from ftchat.chat.generation import ChatError, GenerationSettings
from ftchat.config import RunConfig
from ftchat.names import BASE_PREFIX
from ftchat.train.run import run_training

QUESTION = [{"role": "user", "content": "What colour is the Zumo lamp?"}]
SETTINGS = GenerationSettings(max_new_tokens=12)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, two_rounds):
    """Two LoRA runs with different data, and one full fine-tune, on the tiny base: `a` is the session's round `a`
    (the Zumo lamp facts, conftest's two_rounds), `b` learns bananas here, and the full fine-tune only needs to be one
    (2 steps)."""
    from conftest import FACT_CHATS, write_jsonl

    root = tmp_path_factory.mktemp("chat")
    copy_run(two_rounds / "runs" / "a", root / "runs" / "a")
    data = write_jsonl(root / "chats.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in FACT_CHATS])
    other = write_jsonl(root / "other.jsonl", [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "Bananas are yellow."}]}
        for q, _ in FACT_CHATS])
    for name, file, adapter, steps in [("b", other, "lora", 20), ("full", data, "full", 2)]:
        run_training(RunConfig(data=[str(file)], out=str(root / "runs" / name), base=str(tiny_model_dir),
                               adapter=adapter, max_steps=steps, lr=1e-2 if adapter == "lora" else 3e-3,
                               compare_prompts=0, eval_split=0))
    return root / "runs"


def test_choices_list_bases_and_finished_runs(trained, tiny_model_dir):
    engine = ChatEngine(trained, default_base=str(tiny_model_dir))
    values = [value for _, value in engine.choices()]
    assert values[0] == BASE_PREFIX + str(tiny_model_dir)
    assert {str(trained / n) for n in ("a", "b", "full")} <= set(values)


def test_one_batch_with_per_row_adapters_equals_separate_answers(trained, tiny_model_dir):
    engine = ChatEngine(trained, default_base=str(tiny_model_dir))
    base, a, b = BASE_PREFIX + str(tiny_model_dir), str(trained / "a"), str(trained / "b")
    together = engine.answer([(base, QUESTION), (a, QUESTION), (b, QUESTION)], SETTINGS)
    alone = [engine.answer([(choice, QUESTION)], SETTINGS)[0] for choice in (base, a, b)]
    assert together == alone
    assert len(set(together)) == 3, "each row really used its own adapter"
    # lr 3e-2 made both adapters collapse to the same token on an H100; 1e-2 x 20 steps learns b's answer
    assert together[2].startswith("Bananas"), together
    loaded = [entry for key, entry in engine._loaded.items() if key.startswith("base::")]
    assert len(loaded) == 1 and len(loaded[0].adapters) == 2, "one copy of the base serves both runs"


def test_stream_grows_both_panes_and_serves_a_full_finetune(trained, tiny_model_dir):
    engine = ChatEngine(trained, default_base=str(tiny_model_dir))
    # 64 tokens: long enough that a reader that keeps up sees the replies grow (12 tiny-model tokens once finished
    # before a reader on a loaded CI machine got its first turn; a reader that falls behind gets the text so far)
    updates = list(engine.stream([(BASE_PREFIX + str(tiny_model_dir), QUESTION), (str(trained / "full"), QUESTION)],
                                 GenerationSettings(max_new_tokens=64)))
    assert len(updates) > 3
    final = updates[-1]
    assert all(final), final
    for pane in (0, 1):  # every pane's text only ever grows, token by token
        texts = [u[pane] for u in updates]
        assert all(later.startswith(earlier) for earlier, later in zip(texts, texts[1:]))
        assert len(set(texts)) > 2


def test_a_reader_that_falls_behind_gets_the_text_so_far_in_one_update(trained, tiny_model_dir):
    """A slow reader (a loaded server, a slow browser) is not replayed every token it missed: each update carries
    everything decoded since the last one, and the last update is the whole answer."""
    engine = ChatEngine(trained, default_base=str(tiny_model_dir))
    request = [(BASE_PREFIX + str(tiny_model_dir), QUESTION)]
    settings = GenerationSettings(max_new_tokens=64)
    [whole] = engine.answer(request, settings)
    updates = []
    for update in engine.stream(request, settings):
        updates.append(update[0])
        time.sleep(0.3)
    assert updates[-1] == whole
    assert all(later.startswith(earlier) for earlier, later in zip(updates, updates[1:]))
    assert len(updates) < 20, f"{len(updates)} updates for 64 tokens read every 0.3 s"


def test_a_model_without_chat_template_gets_a_clear_error(tmp_path, tiny_model_dir):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    engine = ChatEngine(tmp_path / "runs", default_base=str(bare))
    with pytest.raises(ChatError, match="no chat template"):
        engine.answer([(BASE_PREFIX + str(bare), QUESTION)], SETTINGS)

"""An export that behaves like the model you tested: llama.cpp loads the written GGUF and answers a handful of prompts
greedily beside the in-app model; the CLI prints the token agreement and the identical answers, the model card holds
them, and a file that answers differently says so plainly (ftchat/export/check.py)."""
from __future__ import annotations

import re
import shutil
import sys

import pytest
from conftest import ftchat_main

from ftchat.export.check import WARN_BELOW, check_gguf, llamacpp_missing

needs_llamacpp = pytest.mark.skipif(llamacpp_missing() is not None, reason=str(llamacpp_missing()))
FIGURES = re.compile(r"llama\.cpp check: (\d+)% token agreement with the in-app model \((\d+) of (\d+) greedy "
                     r"tokens\), (\d) of 4 answers identical \(1 held-out, 3 general\)\.")


@needs_llamacpp
def test_gguf_and_ollama_exports_print_their_agreement_and_the_cards_hold_it(sft_run, tmp_path):
    """f16 (--gguf) and q8_0 (--ollama) of the tiny model: measured 100% and 99% of 192 tokens agree (q8_0 rounds a
    near-tie once), so both clear 95%, well above the warning's 90%."""
    gguf_file, ollama_dir = tmp_path / "sft.f16.gguf", tmp_path / "ollama"
    code, out, err = ftchat_main("export", "--run", sft_run, "--gguf", gguf_file, "--ollama", ollama_dir)
    assert code == 0, err
    printed = FIGURES.findall(out)
    assert len(printed) == 2, out
    for (percent, agreeing, tokens, identical), card in zip(printed, (tmp_path / "sft.f16.md",
                                                                      ollama_dir / "README.md")):
        assert int(agreeing) / int(tokens) >= 0.95 and int(tokens) > 4 * 8, out
        text = card.read_text()
        assert "## llama.cpp check" in text and "(1 held-out, 3 general)" in text
        assert (f"**Token agreement: {percent}%** ({agreeing} of {tokens} tokens); "
                f"**identical answers: {identical} of 4**") in text, text
        assert "Warning" not in text
    assert "Warning" not in err
    assert "tags:" in (tmp_path / "sft.f16.md").read_text() and "- gguf" in (tmp_path / "sft.f16.md").read_text()


@needs_llamacpp
def test_a_damaged_gguf_agrees_little_and_says_so_plainly(sft_run, tmp_path):
    """The written file with every ffn_down tensor scaled by 20 (as a converter with a wrong scale would write it):
    the check finds llama.cpp's answers far from the in-app model's and the card and the panel say so."""
    import gguf
    import numpy as np

    from ftchat.export.forms import export_gguf
    from ftchat.ui.export_panel import check_text

    written = export_gguf(sft_run, tmp_path / "good.gguf", check=False).path
    damaged = shutil.copy(written, tmp_path / "damaged.gguf")
    reader = gguf.GGUFReader(damaged, "r+")
    scaled = [t for t in reader.tensors if t.name.endswith("ffn_down.weight")]
    assert scaled and all(t.data.dtype == np.float16 for t in scaled)
    for tensor in scaled:
        tensor.data[...] *= 20
    reader.data.flush()
    del reader

    check = check_gguf(sft_run, damaged, "f16")
    assert check.tokens >= 4 * 8 and check.agreement < 0.5 and check.identical == 0, check.summary()
    warning = check.warning()
    assert warning.startswith("Warning: this GGUF answers differently from the model you tested")
    assert f"only {check.agreement:.0%} of {check.tokens} positions (below {WARN_BELOW:.0%})" in warning
    assert f"> {warning}" in check.markdown()
    assert f"**{warning}**" in check_text(check) and "llama.cpp: " in check_text(check)


def test_without_llamacpp_an_export_says_once_that_the_check_was_skipped(sft_run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # how Python marks a module that cannot be imported
    code, out, err = ftchat_main("export", "--run", sft_run, "--gguf", tmp_path / "sft.gguf", "--ollama",
                                 tmp_path / "ollama")
    assert code == 0, err
    assert out.count("llama.cpp check skipped: llama.cpp is not installed here") == 1, out
    assert (tmp_path / "sft.gguf").is_file() and (tmp_path / "ollama" / "model.gguf").is_file()
    assert "## llama.cpp check\n\nSkipped: llama.cpp is not installed here" in (tmp_path / "sft.md").read_text()

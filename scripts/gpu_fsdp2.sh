#!/usr/bin/env bash
# FSDP2 on a machine with 2+ GPUs (issue 9): the FSDP2 tests on NCCL (patched and unpatched tiny models
# sharded over 2 GPUs against single-GPU training), then the real-size benchmark (Llama-3-8B config,
# random weights, bf16, seq 2048; unpatched against patched; tokens/s and peak memory per GPU).
# Logs and the CSV go to $OUT (default /tmp). Same install logic as gpu_tests.sh.
#   [BATCHES=4,6,8,12,16] [FSDP2_ARGS='--warmup 2 --steps 4'] LIGER_VERSION=... bash scripts/gpu_fsdp2.sh
# (the defaults are those of the committed run, results/fsdp2_llama3-8b_20261129_h200x2.csv)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
out=${OUT:-/tmp}
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
gpus=$(nvidia-smi --list-gpus | wc -l)
if [ "$gpus" -lt 2 ]; then
    echo "needs 2 GPUs, found $gpus" >&2
    exit 2
fi
# one worker: each test starts its own 2-process job on the same 2 GPUs
WORKERS=${WORKERS:-1} bash scripts/gpu_tests.sh tests/scale/test_fsdp2.py tests/scale/test_examples.py
status=$?
version=${LIGER_VERSION:-}
# forward + backward, then whole training steps with AdamW; both into one CSV
for kind in "" --optimizer; do
    python3 -m torch.distributed.run --standalone --nproc-per-node 2 -m benchmark.fsdp2_e2e \
        --preset llama3-8b --batches "${BATCHES:-4,6,8,12,16}" ${version:+--liger-version "$version"} $kind ${FSDP2_ARGS:---warmup 2 --steps 4} \
        --out "$out/fsdp2_llama3-8b_$(date -u +%Y%m%d).csv" 2>&1 | grep -v -i warning | tee -a "$out/fsdp2_e2e.log" | tail -12
    status=$((status | PIPESTATUS[0]))
done
exit $status

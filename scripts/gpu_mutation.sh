#!/usr/bin/env bash
# Mutation testing on the GPU (issue 21): code that only the GPU runs (the GLU kernels' PRECISE path:
# libdevice exp and div_rn, never taken in the interpreter) needs tests that only the GPU runs. Mutates
# liger_kernel/ops/glu.py (default: the option branches, `constexpr_ignored`, which include PRECISE) and
# runs the SwiGLU and GeGLU tests on the GPU against each mutant. Table on stdout, JSON in $OUT.
#   bash scripts/gpu_mutation.sh                      # ~10 mutants
#   bash scripts/gpu_mutation.sh --operators mask_compare,drop_term,swap_where
#   bash scripts/gpu_mutation.sh --list               # what would run (works on the CPU too)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp}
mkdir -p "$out"
plugin=""
# NO_INSTALL=1: leave the environment alone and load the plugin from the tree.
if [[ -n "${NO_INSTALL:-}" ]] || ! python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/pip.log" 2>&1; then
    export PYTHONPATH=$PWD
    plugin="-p liger_testing.pytest_plugin"
fi
device=cuda
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || device=cpu
args=("$@")
[[ " ${args[*]:-} " == *" --operators "* || " ${args[*]:-} " == *"--operators="* ]] || args+=(--operators constexpr_ignored)
python3 -m liger_testing.mutate liger_kernel/ops/glu.py \
    --tests tests/kernels/test_swiglu.py tests/kernels/test_geglu.py \
    --pytest-args="$plugin --liger-device=$device -n ${WORKERS:-4}" --json "$out/mutate_glu_$device.json" "${args[@]}"

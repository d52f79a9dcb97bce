#!/usr/bin/env bash
# The pending H200 runs of benchmark/NOTES.md as named steps, so that one device call runs several back
# to back (device time is scarce; a fresh machine costs minutes to start). Each step writes under
# $OUT/<step>/ and gets a wall-clock limit of its own; a step that fails or runs out of time does not
# stop the next. Carry .peer/liger085 (peer arms) and .peer/gpu (the 0.8.5 test files) when a step needs
# them.
#
#   OUT=DIR bash scripts/h200_queue.sh STEP[:SECONDS] ...
#
# The device tool returns only a limited number of files from its $OUT: point OUT at a scratch folder
# and tar it into the tool's $OUT at the end (`O=$OUT; OUT=/tmp/q bash ...; tar czf $O/x.tgz -C /tmp/q .`).
#
# Steps: kernels (new/changed kernels' rows), suite (the test suite compiled for real), converge (every
# model spec, fp32 and bf16), peer (0.8.5's test files, three groups at once), post_training (with
# --profile when POST_TRAINING_PROFILE is set), diag_dpo (where DPO's pass leaves the GPU idle), distill
# (the fused linear JSD), flce_curve (FLCE time-vs-memory curve), sweep_norm (or sweep_rms, sweep_ln),
# sweep_rope, sweep_flce (issue 19's sweeps; SWEEP_BUDGET and PREWARM_SECONDS set their time).
# odd_vocab: the FLCE chunk buffer's row alignment on and off at vocabularies that are not multiples of 8;
# ce_peel: the cross entropy kernel's peel of unaligned rows on and off; e2e_llama: Llama-3-8B end to end,
# eager, compile, ours and 0.8.5.
set -u
cd "$(dirname "$0")/.."
root=${OUT:?set OUT}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"

step_kernels() { python3 -m benchmark.run --ops "${KERNEL_OPS:-gpt_oss_glu,fused_add_rms_norm}" --out "$1/kernels.csv"; }
step_suite() {
  OUT=$1 WORKERS=14 bash scripts/gpu_tests.sh tests/kernels tests/transformers tests/chunked_loss \
    tests/testing tests/scale --timeout=240 -q
}
step_converge() { OUT=$1 JOBS=8 bash scripts/converge_models.sh; }
step_peer() {
  local groups=('rms_norm|layer_norm|rope|geglu' 'swiglu|cross_entropy' 'monkey_patch|auto_model|trainer_integration|test_transformers|convergence')
  local i=0
  for g in "${groups[@]}"; do
    i=$((i + 1))
    OUT=$1/g$i PEER_ONLY=$g PYTHON=python3 bash scripts/peer_suite.sh .peer/gpu/src -n 5 >"$1/g$i.txt" 2>&1 &
  done
  wait
  cat "$1"/g*.txt
  python3 -m benchmark.diag_geglu_rounding
}
step_post_training() {
  python3 -m benchmark.post_training --peer-path .peer/liger085 --out-dir "$1" ${POST_TRAINING_PROFILE:+--profile}
}
step_diag_dpo() { python3 -m benchmark.diag_dpo_idle --workloads "${DIAG_WORKLOADS:-dpo,grpo}"; }
# Issue 19's sweeps: compilation prewarmed side by side, then the timed arms within SWEEP_BUDGET seconds.
sweep() {
  local out=$1
  shift
  python3 -m benchmark.sweep --out "$out" --tag h200 --peer-path .peer/liger085 \
    --prewarm-seconds "${PREWARM_SECONDS:-90}" --time-budget "${SWEEP_BUDGET:-240}" "$@"
}
# The chunk buffer's aligned row stride at the odd vocabularies (and OLMo 2's aligned 100352 beside them).
step_odd_vocab() {
  for v in 49159 100278 100352; do
    for a in 1 64; do python3 -m benchmark.quick_flce --vocab $v --row-align $a; done
  done
}
# The cross entropy kernel's unaligned-row peel on and off (odd vocabularies; 100352 the control).
step_ce_peel() {
  python3 -m benchmark.quick_ce
  python3 -m benchmark.diag_host --op cross_entropy  # where the launched time at vocab 32000 goes
}
# End to end at Llama-3-8B with the reference release beside us (issue 19's 1.25x eager, 1.05x 0.8.5).
step_e2e_llama() {
  python3 -m benchmark.e2e --preset llama3-8b --arms eager,compile,liger,liger085 --peer-path .peer/liger085 \
    --out "$1/e2e_llama3-8b.csv"
}
step_sweep_rms() { sweep "$1" --family norm --ops rms_norm; }
step_sweep_ln() { sweep "$1" --family norm --ops layer_norm; }
step_sweep_norm() { sweep "$1" --family norm --prewarm 4; }  # 32768 x 16384 passes: ~10 GB a process
step_sweep_rope() { sweep "$1" --family rope; }
step_sweep_flce() { sweep "$1" --family flce --prewarm 3; }
step_distill() {
  python3 -m benchmark.distill --ops fused_linear_jsd --tag h200 --peer-path .peer/liger085 --out "$1"
}
step_flce_curve() { python3 -m benchmark.sweep --family flce_curve --out "$1" --tag h200; }

for spec in "$@"; do
  name=${spec%%:*}
  limit=${spec#*:}
  [[ "$limit" == "$spec" ]] && limit=600
  dir=$root/$name
  mkdir -p "$dir"
  echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
  start=$SECONDS
  export -f "step_$name" sweep
  timeout --kill-after=10 "$limit" bash -c "step_$name $dir" >"$dir/step.log" 2>&1
  rc=$?
  echo "=== $name exit $rc in $((SECONDS - start))s"
  tail -n "${TAIL:-25}" "$dir/step.log"
done

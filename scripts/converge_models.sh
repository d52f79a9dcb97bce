#!/usr/bin/env bash
# `python -m liger_testing.converge` for every registered model spec (or the ones named), in fp32 and
# bf16, JOBS runs at a time; one JSON report per run and a pass/fail table (issue 20's check on the H200).
#
#   [OUT=DIR] [JOBS=4] [STEPS=30] bash scripts/converge_models.sh [MODEL ...]
#
# Exit status: 0 when every run passed. Extra CLI options for every run: CONVERGE_ARGS="--device cuda".
set -u
cd "$(dirname "$0")/.."
out=${OUT:-converge_out}/converge
mkdir -p "$out"
python=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
models=("$@")
if [[ ${#models[@]} -eq 0 ]]; then
  mapfile -t models < <("$python" -m liger_testing.converge --list | awk '{print $1}')
fi
runs=()
for m in "${models[@]}"; do for d in float32 bfloat16; do runs+=("$m $d"); done; done
run_one() {  # MODEL DTYPE -> one line "MODEL DTYPE PASS|FAIL seconds"
  local start=$SECONDS s
  if "$python" -m liger_testing.converge --model "$1" --dtype "$2" --steps "${STEPS:-30}" \
       --json "$out/$1_$2.json" ${CONVERGE_ARGS:-} >"$out/$1_$2.log" 2>&1; then s=PASS; else s=FAIL; fi
  printf '%-12s %-9s %-4s %4ss\n' "$1" "$2" "$s" $((SECONDS - start))
}
export -f run_one
export out python
printf '%s\n' "${runs[@]}" | xargs -P "${JOBS:-4}" -L 1 bash -c 'run_one $0 $1' | sort | tee "$out/summary.txt"
! grep -q ' FAIL ' "$out/summary.txt"

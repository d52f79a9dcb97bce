#!/usr/bin/env bash
# Run Liger Kernel 0.8.5's own test files against THIS package (docs/compatibility.md).
#
#   bash scripts/peer_suite.sh PATH [--collect-only] [extra pytest args...]
#
# PATH is the unpacked source distribution (the folder holding test/ and src/), e.g. from
#   pip download --no-deps --no-binary :all: liger-kernel==0.8.5 && tar xf liger_kernel-0.8.5.tar.gz
# This script downloads nothing. The reference's pytest config puts its own src/ first on sys.path;
# it is overridden (-o pythonpath=.) so that `liger_kernel` is this checkout and `test.*` is PATH's.
# Prints one pass/fail line per file and writes $OUT/peer_suite.csv (default OUT: ./peer_suite_out)
# and each file's log. GPU tests: on a CPU machine use --collect-only (they need CUDA to run).
# PEER_ONLY=REGEX runs only the files whose path matches (e.g. PEER_ONLY='rms_norm|rope').
set -u
peer=${1:?usage: scripts/peer_suite.sh PATH [--collect-only] [pytest args...]}
shift
peer=$(cd "$peer" && pwd) || exit 2
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$PWD/peer_suite_out}
mkdir -p "$out"
python=${PYTHON:-python}

files=(
  test/transformers/test_rms_norm.py
  test/transformers/test_layer_norm.py
  test/transformers/test_rope.py
  test/transformers/test_swiglu.py
  test/transformers/test_geglu.py
  test/transformers/test_cross_entropy.py
  test/transformers/test_fused_linear_cross_entropy.py
  test/transformers/test_monkey_patch.py
  test/transformers/test_auto_model.py
  test/transformers/test_trainer_integration.py
  test/transformers/test_transformers.py
  test/convergence/fp32/test_mini_models.py
  test/convergence/bf16/test_mini_models.py
  test/convergence/fp32/test_mini_models_with_logits.py
  test/convergence/bf16/test_mini_models_with_logits.py
)

echo "file,status,passed,failed,skipped,errors,seconds" > "$out/peer_suite.csv"
printf '%-55s %-8s %s\n' file status summary
for f in "${files[@]}"; do
  if [[ -n "${PEER_ONLY:-}" ]] && ! [[ "$f" =~ ${PEER_ONLY} ]]; then continue; fi
  log="$out/$(echo "$f" | tr '/' '_').log"
  if [[ ! -f "$peer/$f" ]]; then
    printf '%-55s %-8s %s\n' "$f" MISSING "not in $peer"
    echo "$f,MISSING,0,0,0,0,0" >> "$out/peer_suite.csv"
    continue
  fi
  start=$(date +%s)
  (cd "$peer" && PYTHONPATH="$repo:$peer" "$python" -m pytest -p no:cacheprovider -o pythonpath=. \
     -o log_cli=false -q -rfE "$f" "$@" >"$log" 2>&1)
  rc=$?
  secs=$(( $(date +%s) - start ))
  summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error|errors|tests? collected)|no tests ran|collected|error' "$log" | tail -1)
  count() { echo "$summary" | grep -oE "[0-9]+ $1" | head -1 | grep -oE '[0-9]+' || echo 0; }
  case $rc in 0) status=PASS ;; 5) status=EMPTY ;; *) status=FAIL ;; esac
  printf '%-55s %-8s %s\n' "$f" "$status" "$summary"
  echo "$f,$status,$(count passed),$(count failed),$(count skipped),$(count error),$secs" >> "$out/peer_suite.csv"
done
echo "logs and peer_suite.csv in $out"

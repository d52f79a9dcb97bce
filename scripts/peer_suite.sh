#!/usr/bin/env bash
# Run Liger Kernel 0.8.5's own test files against THIS package (docs/compatibility.md).
#
#   bash scripts/peer_suite.sh PATH [--collect-only] [extra pytest args...]
#
# PATH is the unpacked source distribution (the folder holding test/ and pyproject.toml), e.g. from
#   pip download --no-deps --no-binary :all: liger-kernel==0.8.5 && tar xf liger_kernel-0.8.5.tar.gz
# This script downloads nothing. The reference's pytest config puts its own src/ first on sys.path;
# it is overridden (-o pythonpath=.) so that `liger_kernel` is this checkout and `test.*` is PATH's.
# Nothing is written under PATH (no bytecode, no pytest cache): it may be read-only.
#
# Prints one line per file and writes three files to $OUT (default ./peer_suite_out):
#   peer_suite.csv           file,status,passed,failed,errors,skipped,xfailed,expected,unexpected,
#                            collected,seconds (status: PASS, FAIL = some failure not in the expected
#                            list, EXPECTED = every failure is listed, COLLECT_ERROR, COLLECTED (with
#                            --collect-only), EMPTY, MISSING)
#   peer_suite_failures.csv  every failed or erroring test: file,test,outcome,expected,reason or message
#   peer_suite.log           pytest's output of every file, one after another (--tb=short)
# Failures are judged "expected" by scripts/peer_suite_expected.txt (regex | reason; PEER_EXPECTED=FILE
# to use another). PEER_ONLY=REGEX runs only the files whose path matches (e.g. PEER_ONLY='swiglu|geglu').
# GPU tests: on a CPU machine use --collect-only (or TRITON_INTERPRET=1 and -k to pick small cases).
set -u
peer=${1:?usage: scripts/peer_suite.sh PATH [--collect-only] [pytest args...]}
shift
peer=$(cd "$peer" && pwd) || exit 2
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-$PWD/peer_suite_out}
mkdir -p "$out"
out=$(cd "$out" && pwd)
python=${PYTHON:-python}
expected=${PEER_EXPECTED:-$repo/scripts/peer_suite_expected.txt}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PYTHONDONTWRITEBYTECODE=1

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

: > "$out/peer_suite.log"
: > "$work/runs.tsv"
printf '%-55s %-13s %s\n' file status summary
for f in "${files[@]}"; do
  if [[ -n "${PEER_ONLY:-}" ]] && ! [[ "$f" =~ ${PEER_ONLY} ]]; then continue; fi
  xml="$work/$(echo "$f" | tr '/' '_').xml"
  log="$work/$(echo "$f" | tr '/' '_').log"
  start=$(date +%s)
  if [[ -f "$peer/$f" ]]; then
    (cd "$peer" && PYTHONPATH="$repo:$peer" "$python" -m pytest -p no:cacheprovider -o pythonpath=. \
       -o log_cli=false -q -rfE --tb=short --junitxml="$xml" "$f" "$@" >"$log" 2>&1)
    rc=$?
  else
    echo "not in $peer" > "$log"
    rc=missing
  fi
  secs=$(( $(date +%s) - start ))
  { echo "=== $f (exit $rc, ${secs}s)"; cat "$log"; echo; } >> "$out/peer_suite.log"
  printf '%s\t%s\t%s\t%s\t%s\n' "$f" "$rc" "$secs" "$xml" "$log" >> "$work/runs.tsv"
  "$python" "$repo/scripts/peer_suite_summary.py" line "$expected" "$f" "$rc" "$secs" "$xml" "$log"
done
"$python" "$repo/scripts/peer_suite_summary.py" write "$expected" "$work/runs.tsv" "$out"
echo "peer_suite.csv, peer_suite_failures.csv and peer_suite.log in $out"

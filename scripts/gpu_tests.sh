#!/usr/bin/env bash
# Run the test suite on a GPU machine where the package is not installed (the device tool's copy of
# the tree): pyproject's addopts loads the liger_testing plugin (-p); the tree goes on PYTHONPATH if the
# install fails. Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
out=${OUT:-/tmp}
# Installed (no deps, no network) so that the distribution's version is there, as for a user.
if ! python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/pip.log" 2>&1; then
    export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
python3 -m pytest -p no:cacheprovider -q -n "${WORKERS:-8}" \
    --junitxml="$out/junit.xml" "$@" 2>&1 | tee "$out/tests.log" | tail -40
status=${PIPESTATUS[0]}
# The timing guard (tests/benchmark) skips under parallel workers: run it alone when it was asked for.
for arg in "$@"; do
    if [[ "$arg" == tests/benchmark* ]]; then
        python3 -m pytest -p no:cacheprovider -q -n 0 -rA tests/benchmark \
            --junitxml="$out/junit_benchmark.xml" 2>&1 | tee "$out/tests_benchmark.log" | tail -15
        status=$((status | PIPESTATUS[0]))
        break
    fi
done
exit "$status"

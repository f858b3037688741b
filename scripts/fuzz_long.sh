#!/usr/bin/env bash
# Long fuzzing run: FLOWKERN_FUZZ=long (5,000 random examples per property, gradcheck 500) for
# every CPU backend and, at the same time in a second process, for the Triton backend under its
# interpreter (single-threaded Python: ~45 min on its own core); the image flows' properties run
# with the CPU ones (python_tests/test_fuzz_image.py: 1,000 examples each; FLOWKERN_FUZZ_IMAGE_EXAMPLES).
# Prints per-property example counts and failures; exits non-zero if any property failed.
#   scripts/fuzz_long.sh [extra pytest args]     env: PY, FLOWKERN_FUZZ_EXAMPLES (override the count),
#   FLOWKERN_TRITON_EXAMPLES (Triton interpreter examples per property, default 5000) and
#   FLOWKERN_TRITON_GRADCHECK_EXAMPLES (its float64 gradcheck, default 500)
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
LOG="$(mktemp /tmp/flowkern-fuzz-long.XXXXXX.log)"
export FLOWKERN_FUZZ=long
cd "$ROOT"

echo "== fuzzing CPU backends and, in parallel, Triton under TRITON_INTERPRET=1 (log: $LOG)"
# The interpreter takes ~0.1-0.2 s per example (fast-mode gradcheck ~0.5 s).
FLOWKERN_FUZZ_EXAMPLES="${FLOWKERN_TRITON_EXAMPLES:-5000}" \
FLOWKERN_FUZZ_GRADCHECK_EXAMPLES="${FLOWKERN_TRITON_GRADCHECK_EXAMPLES:-500}" \
    "$PY" -m python_tests.fuzz_triton_worker --hypothesis-show-statistics "$@" >"$LOG.triton" 2>&1 &
triton_pid=$!
"$PY" -m pytest python_tests/test_fuzz.py python_tests/test_fuzz_image.py -q -p no:cacheprovider \
    -k "not subprocess" --hypothesis-show-statistics "$@" >"$LOG" 2>&1
cpu_status=$?
wait "$triton_pid"
triton_status=$?
cat "$LOG.triton" >>"$LOG" && rm -f "$LOG.triton"

echo
echo "property                                                     examples  failing"
awk '/^python_tests\/test_fuzz(_image)?.py::/ {name=$0; sub(/:$/, "", name); sub(/^python_tests\/test_fuzz(_image)?.py::/, "", name)}
     /passing, [0-9]+ failing/ && name != "" && !seen[name]++ {
         n = $2 + $4; printf "%-60s %8d %8d\n", name, $2 + $4, $4 }' "$LOG"
grep -E "^(FAILED|SKIP)|passed|failed|skipped" "$LOG" | tail -20
if [ $cpu_status -ne 0 ] || [ $triton_status -ne 0 ]; then
    echo "FUZZ LONG: FAILURES (cpu exit $cpu_status, triton exit $triton_status); details in $LOG"
    exit 1
fi
echo "FUZZ LONG: OK; details in $LOG"

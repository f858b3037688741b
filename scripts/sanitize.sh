#!/usr/bin/env bash
# Build the C++ CPU extension with AddressSanitizer + UndefinedBehaviorSanitizer in a temporary
# copy of the repo (the normal flowkern/_C*.so is untouched), then run the CPU op tests with it.
# Exits non-zero on any build failure, test failure or sanitizer report.
#   scripts/sanitize.sh [extra pytest args]      env: PY (python), SANITIZE_EXAMPLES (fuzz examples, 150)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
WORK="$(mktemp -d /tmp/flowkern-sanitize.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

echo "== copying sources to $WORK"
tar -C "$ROOT" --exclude='./.venv' --exclude='./build' --exclude='./.git' --exclude='*.so' \
    --exclude='__pycache__' --exclude='./runs' -cf - . | tar -C "$WORK" -xf -

echo "== building flowkern._C with $SAN"
# torch's ninja build ignores CFLAGS but calls $CXX: wrap the compiler to add the flags.
printf '#!/bin/sh\nexec g++ %s -g "$@"\n' "$SAN" >"$WORK/san-g++"
chmod +x "$WORK/san-g++"
(cd "$WORK" && CXX="$WORK/san-g++" LDFLAGS="$SAN" FLOWKERN_NO_CUDA=1 FLOWKERN_DEBUG=1 MAX_JOBS="${MAX_JOBS:-2}" \
    "$PY" setup.py -q build_ext --inplace >"$WORK/build.log" 2>&1) || { tail -50 "$WORK/build.log"; exit 1; }
SO="$(ls "$WORK"/flowkern/_C*.so)"
syms="$(nm -D "$SO")"
grep -q __asan_ <<<"$syms" || { echo "error: $SO is not ASan-instrumented"; exit 1; }
grep -q __ubsan_ <<<"$syms" || { echo "error: $SO is not UBSan-instrumented"; exit 1; }

LIBASAN="$(gcc -print-file-name=libasan.so)"
LOG="$WORK/sanitizer"
# libstdc++ is preloaded too: without it ASan cannot find the real __cxa_throw when a library
# that throws C++ exceptions (triton's, imported by torch.compile/opcheck) loads later.
export LD_PRELOAD="$LIBASAN $(gcc -print-file-name=libstdc++.so.6)"
# Python and torch are not instrumented and leak by design: no leak detection.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86:log_path=$LOG:protect_shadow_gap=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87:log_path=$LOG"
export FLOWKERN_FUZZ_BACKENDS=cpu FLOWKERN_FUZZ_EXAMPLES="${SANITIZE_EXAMPLES:-150}"

echo "== running CPU op tests under ASan/UBSan"
# test_ops_isa.py runs the op library (the sanitized one: it loads flowkern/_C*.so of $WORK) in
# subprocesses that inherit LD_PRELOAD / *SAN_OPTIONS, once per ATEN_CPU_CAPABILITY level.
tests=()
for f in test_fuzz.py test_audit.py test_determinism.py test_ops_isa.py; do
    [ -e "$WORK/python_tests/$f" ] && tests+=("python_tests/$f")
done
for f in "$WORK"/python_tests/test_ops_cpu*.py; do [ -e "$f" ] && tests+=("python_tests/$(basename "$f")"); done
status=0
(cd "$WORK" && "$PY" -c "import sys, flowkern._C as m; assert m.__file__.startswith(sys.argv[1]), 'sanitized _C not loaded: ' + m.__file__" "$WORK" \
  && "$PY" -m pytest -q -p no:cacheprovider -k "not subprocess and not triton" "${tests[@]}" "$@") || status=$?
unset LD_PRELOAD
if ls "$LOG".* >/dev/null 2>&1; then
    echo "== sanitizer reports:"; cat "$LOG".*; status=${status/#0/1}
fi
if [ "$status" -ne 0 ]; then echo "SANITIZE: FAILED (exit $status)"; exit "$status"; fi
echo "SANITIZE: OK (no ASan/UBSan reports)"

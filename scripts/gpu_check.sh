#!/usr/bin/env bash
# The GPU check: on a machine with one CUDA GPU, build flowkern's extensions (CUDA included), run
# every GPU test with --require-gpu (a skipped GPU test fails) and bench/bench_gpu.py, and write
# what happened into OUTDIR:
#   gpu_check.log   everything printed           gpu_check.json  stage results and test counts
#   build.log       the extension build          pytest.xml      JUnit report of the GPU tests
#   bench_gpu.md    bench/bench_gpu.py's table   pytest_cuda_on_cpu.xml  JUnit report of cuda_on_cpu
#   bench_host.md   bench/bench_host.py --device cuda: the op's host cost per call
#
#   scripts/gpu_check.sh [OUTDIR]        OUTDIR defaults to $OUT, else runs/gpu_check
#
# Exit status: 0 every stage passed; 1 a stage failed; 2 no usable CUDA GPU here (nothing run).
# Stages: env (python with a CUDA torch, test packages), build, backends (the cuda and triton
# backends run on CUDA tensors), coverage (the GPU tests include each kind in COVERAGE below),
# tests (pytest -m gpu --require-gpu), cuda_on_cpu (the same CUDA kernels compiled for the CPU
# through HIP-CPU against the reference: python_tests/test_cuda_on_cpu.py, as `make test` runs it),
# host (bench/bench_host.py on CUDA tensors: flowkern op, eager chain, one-op floor), bench. A failed stage does not stop the later ones.
#
# Python: $PY if set, else .venv/bin/python if its torch sees a GPU, else python3 (the device
# image's, which holds torch, triton, pytest and hypothesis). Missing wheels can be carried in
# .whl/ (pip install --no-index from there into a temporary folder). No network is needed.
# Env: GPU_CHECK_BUDGET_S (total seconds, 470), GPU_CHECK_QUICK=1 (bench_gpu --quick),
# GPU_CHECK_SKIP_BUILD=1 (use the extensions already in flowkern/, e.g. from an earlier run here),
# GPU_CHECK_SKIP_CUDA_ON_CPU=1 (no cuda_on_cpu stage),
# GPU_CHECK_WORKERS (pytest-xdist workers if installed, 8; 0 = none), TORCH_CUDA_ARCH_LIST
# (default: this GPU's capability), MAX_JOBS (default: nproc).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
OUTDIR="${1:-${OUT:-runs/gpu_check}}"
mkdir -p "$OUTDIR" || exit 2
OUTDIR="$(cd "$OUTDIR" && pwd)"
LOG="$OUTDIR/gpu_check.log"
JSON="$OUTDIR/gpu_check.json"
WORK="$(mktemp -d /tmp/flowkern-gpu-check.XXXXXX)"
STAGES="$WORK/stages.tsv"
: >"$LOG"
: >"$STAGES"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
START=$(date +%s)
BUDGET="${GPU_CHECK_BUDGET_S:-470}"
STATUS=passed
PY="${PY:-}"
export PYTHONUNBUFFERED=1

# Kinds of GPU test that must be among those collected by `pytest -m gpu` (name: regex on the
# node ids, case-insensitive). A kind with no test fails the coverage stage.
COVERAGE='{
  "cuda numerics vs reference": "test_ops_cuda.*(reference|gradcheck)",
  "triton numerics vs reference": "(reference|gradcheck).*triton|triton.*(reference|gradcheck)",
  "torch.compile of flows on cuda": "compile.*(flow|nn_)|(flow|nn_).*compile",
  "opcheck on cuda": "opcheck"
}'

say() { printf '\n== %s  [%ss]\n' "$*" "$(($(date +%s) - START))"; }
remaining() { echo $((START + BUDGET - $(date +%s))); }

# record NAME STATUS SECONDS DETAIL
record() {
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4//$'\t'/ }" >>"$STAGES"
    [ "$2" = passed ] || STATUS=failed
}

# stage NAME MAX_SECONDS RESERVE_SECONDS CMD...: run CMD with a timeout of at most MAX_SECONDS that
# leaves RESERVE_SECONDS of the budget to the stages after it.
stage() {
    local name=$1 max=$2 reserve=$3
    shift 3
    local left=$(($(remaining) - reserve))
    local limit=$((left < max ? left : max))
    say "$name (limit ${limit}s)"
    if [ "$limit" -lt 10 ]; then
        echo "gpu_check: FAILED: no time left in the ${BUDGET}s budget for stage $name"
        record "$name" failed 0 "not run: budget spent"
        return 1
    fi
    local t0=$(date +%s) rc
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
    local dt=$(($(date +%s) - t0))
    if [ "$rc" -eq 0 ]; then
        record "$name" passed "$dt" ""
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        echo "gpu_check: FAILED: stage $name ran past its ${limit}s limit"
        record "$name" failed "$dt" "timed out after ${limit}s"
    else
        echo "gpu_check: FAILED: stage $name exited $rc"
        record "$name" failed "$dt" "exit status $rc"
    fi
    return "$rc"
}

write_json() {
    local status=$1 note=${2:-}
    # python may be missing or broken here (that can be why we stop): fall back to a plain file.
    local py="${PY:-python3}"
    if ! GC_STATUS="$status" GC_NOTE="$note" GC_STAGES="$STAGES" GC_OUTDIR="$OUTDIR" GC_START="$START" \
        GC_BUDGET="$BUDGET" "$py" - >"$JSON.tmp" <<'EOF'
import datetime, json, os, platform, subprocess, time
import xml.etree.ElementTree as ET

out = os.environ["GC_OUTDIR"]
res = {"status": os.environ["GC_STATUS"], "note": os.environ["GC_NOTE"] or None,
       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "seconds": int(time.time()) - int(os.environ["GC_START"]), "budget_s": int(os.environ["GC_BUDGET"]),
       "host": platform.node(), "python": platform.python_version(), "stages": []}
try:
    res["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or None
except OSError:
    res["commit"] = None
for line in open(os.environ["GC_STAGES"]):
    name, status, secs, detail = line.rstrip("\n").split("\t")
    res["stages"].append({"name": name, "status": status, "seconds": int(secs), "detail": detail or None})
try:
    import torch
    res["torch"] = torch.__version__
    res["torch_cuda"] = torch.version.cuda
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        res["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "count": torch.cuda.device_count(),
                      "memory_gib": round(p.total_memory / 2**30, 1)}
except Exception as e:  # noqa: BLE001 - recorded, not raised
    res["torch"] = f"import failed: {e}"
try:
    import flowkern
    res["backends"] = flowkern.backends.describe().splitlines()
except Exception as e:  # noqa: BLE001
    res["backends"] = f"import flowkern failed: {e}"
xml = os.path.join(out, "pytest.xml")
if os.path.exists(xml):
    root = ET.parse(xml).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    tests = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    tests["passed"] = tests["tests"] - tests["failures"] - tests["errors"] - tests["skipped"]
    bad = []
    for case in root.iter("testcase"):
        for kind in ("failure", "error", "skipped"):
            el = case.find(kind)
            if el is not None:
                bad.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": kind,
                            "message": (el.get("message") or "")[:500]})
    tests["not_passed"] = bad[:100]  # the log and pytest.xml hold the rest
    res["tests"] = tests
for key in ("bench_gpu", "bench_host"):
    bench = os.path.join(out, f"{key}.md")
    if os.path.exists(bench):
        res[key] = open(bench).read().splitlines()
print(json.dumps(res, indent=1))
EOF
    then
        printf '{"status": "%s", "note": "%s", "json_writer": "python unavailable"}\n' "$status" "${note//\"/\'}" >"$JSON.tmp"
    fi
    mv "$JSON.tmp" "$JSON"
}

finish() {
    local code=$1 note=${2:-}
    write_json "$STATUS" "$note"
    say "gpu_check: $STATUS (log $LOG, results $JSON)"
    if [ "$STATUS" != passed ]; then
        echo "gpu_check: FAILED stages:"
        awk -F'\t' '$2 != "passed" { printf "  %s: %s\n", $1, $4 }' "$STAGES"
    fi
    rm -rf "$WORK"
    exec >&- 2>&-
    wait "$TEE_PID" 2>/dev/null
    exit "$code"
}

# ---- env: a python whose torch sees the GPU ------------------------------------------------
say "gpu_check in $ROOT ($(git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
command -v nvidia-smi >/dev/null && nvidia-smi -L
cuda_python() { "$1" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' 2>/dev/null; }
if [ -z "$PY" ]; then
    for cand in "$ROOT/.venv/bin/python" python3; do
        if command -v "$cand" >/dev/null && cuda_python "$cand"; then PY="$(command -v "$cand")"; break; fi
        command -v "$cand" >/dev/null && echo "gpu_check: $cand: torch sees no CUDA GPU (or does not import)"
    done
fi
if [ -z "$PY" ] || ! cuda_python "$PY"; then
    if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
        msg="a GPU is listed by nvidia-smi but no python here has a torch that sees it"
    else
        msg="no CUDA GPU on this machine (torch.cuda.is_available() is False); nothing was checked"
    fi
    echo "gpu_check: $msg"
    record env failed 0 "$msg"
    STATUS=no_gpu
    if [ -z "$PY" ]; then  # for the JSON's torch fields: a python that imports torch, if any
        for cand in "$ROOT/.venv/bin/python" python3; do
            if "$cand" -c 'import torch' 2>/dev/null; then PY="$cand"; break; fi
        done
    fi
    finish 2 "$msg"
fi
echo "python: $PY"
"$PY" -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda, "device", torch.cuda.get_device_name(0))'
if [ -d "$ROOT/.whl" ] && compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
    say "installing carried wheels from .whl/"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$ROOT"/.whl/*.whl \
        && export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if missing=$("$PY" - <<'EOF'
import importlib.util
need = ["torch", "numpy", "pytest", "hypothesis", "triton", "setuptools", "ninja"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
) && [ -z "$missing" ]; then
    record env passed 0 "$PY"
else
    echo "gpu_check: FAILED: python modules missing: ${missing:-?} (carry them as wheels in .whl/, see the device notes)"
    record env failed 0 "missing: ${missing:-?}"
    finish 1 "python modules missing: ${missing:-?}"
fi

# ---- build: the extensions, CUDA included, in place -----------------------------------------
if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then export CUDA_HOME=/usr/local/cuda; fi
export PATH="$(dirname "$PY"):${CUDA_HOME:+$CUDA_HOME/bin:}$PATH"
ARCH="$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability(0))')"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$ARCH}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}" FORCE_CUDA=1
unset FLOWKERN_NO_CUDA FLOWKERN_USE_CPP
echo "CUDA_HOME=${CUDA_HOME:-unset} ($(command -v nvcc || echo 'no nvcc')) TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS"
# --force: an extension built elsewhere (another torch) may look up to date.
if [ "${GPU_CHECK_SKIP_BUILD:-0}" = 1 ]; then
    say "build: skipped (GPU_CHECK_SKIP_BUILD=1), using the extensions in flowkern/"
    record build passed 0 "skipped: GPU_CHECK_SKIP_BUILD=1"
else
    stage build 300 170 bash -c '"$0" setup.py build_ext --inplace --force >"$1" 2>&1 || { tail -60 "$1"; exit 1; }' \
        "$PY" "$OUTDIR/build.log"
fi

# ---- backends: what the tests rely on -------------------------------------------------------
stage backends 60 160 "$PY" - <<'EOF'
import sys, torch, flowkern
print(flowkern.backends.describe())
bad = {n: r for n, r in flowkern.backends.available("cuda").items() if n in ("cuda", "triton") and r is not None}
for n, r in bad.items():
    print(f"gpu_check: FAILED: backend {n} cannot run on CUDA tensors: {r}")
sys.exit(1 if bad else 0)
EOF

# ---- coverage: the GPU tests include each kind in COVERAGE -----------------------------------
export GC_COVERAGE="$COVERAGE"
stage coverage 60 150 bash -c '
    # collection errors are reported by the tests stage; here only what was collected counts
    "$0" -m pytest python_tests -m gpu --collect-only -q -p no:cacheprovider --continue-on-collection-errors \
        >"$1/collected.txt" 2>&1 || grep -E "^(ERROR|E )" "$1/collected.txt" | head -20
    "$0" - "$1/collected.txt" <<"EOF"
import json, os, re, sys
ids = [l.strip() for l in open(sys.argv[1]) if "::" in l]
print(f"{len(ids)} GPU tests collected")
missing = []
for kind, pattern in json.loads(os.environ["GC_COVERAGE"]).items():
    n = sum(1 for i in ids if re.search(pattern, i, re.I))
    print(f"  {kind}: {n} tests (/{pattern}/)")
    if n == 0:
        missing.append(kind)
if missing:
    print("gpu_check: FAILED: no GPU test of kind: " + ", ".join(missing))
sys.exit(1 if missing else 0)
EOF' "$PY" "$WORK"

# ---- tests: every GPU test, a skip is a failure ---------------------------------------------
XDIST=()
if [ "${GPU_CHECK_WORKERS:-8}" != 0 ] && "$PY" -c 'import xdist' 2>/dev/null; then
    XDIST=(-n "${GPU_CHECK_WORKERS:-8}")
fi
stage tests 360 150 "$PY" -m pytest python_tests -m gpu --require-gpu --continue-on-collection-errors \
    -p no:cacheprovider -rfEs --tb=short \
    --junitxml="$OUTDIR/pytest.xml" ${XDIST[@]+"${XDIST[@]}"}

# ---- cuda_on_cpu: the CUDA kernels run on the CPU through HIP-CPU, vs the reference -----------
# Builds build/hipcpu (HIP-CPU from ../shared/third_party/hip-cpu, TBB from the tbb-devel wheel;
# without either the tests skip, saying which is missing, and -rs prints it), then runs the tests.
if [ "${GPU_CHECK_SKIP_CUDA_ON_CPU:-0}" = 1 ]; then
    say "cuda_on_cpu: skipped (GPU_CHECK_SKIP_CUDA_ON_CPU=1)"
    record cuda_on_cpu passed 0 "skipped: GPU_CHECK_SKIP_CUDA_ON_CPU=1"
else
    stage cuda_on_cpu 150 60 "$PY" -m pytest python_tests/test_cuda_on_cpu.py -p no:cacheprovider -q -rfEs \
        --tb=short --junitxml="$OUTDIR/pytest_cuda_on_cpu.xml" ${XDIST[@]+"${XDIST[@]}"}
fi

# ---- host: the op's host cost per call on CUDA tensors (bench/bench_host.py), vs the eager chain --
stage host 60 90 bash -c '"$0" bench/bench_host.py --device cuda ${1:+--quick} >"$2" && cat "$2"' \
    "$PY" "${GPU_CHECK_QUICK:-}" "$OUTDIR/bench_host.md"

# ---- bench: bench/bench_gpu.py ----------------------------------------------------------------
stage bench 150 0 bash -c '"$0" bench/bench_gpu.py ${1:+--quick} >"$2" && cat "$2"' \
    "$PY" "${GPU_CHECK_QUICK:-}" "$OUTDIR/bench_gpu.md"

if [ "$STATUS" = passed ]; then finish 0; else finish 1; fi

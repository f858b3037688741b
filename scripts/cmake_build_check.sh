#!/usr/bin/env bash
# Configure and build the flowkern_ops C++ library with CMake into a temporary directory,
# then check that it registers the CPU kernels and the C++ eager autograd. Prints the elapsed time.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
BUILD="$(mktemp -d /tmp/flowkern-cmake.XXXXXX)"
trap 'rm -rf "$BUILD"' EXIT
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-8.0}"  # no GPU probe (try_run) at configure time
PREFIX="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
start=$(date +%s)
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_PREFIX_PATH="$PREFIX" -DCAFFE2_USE_CUDNN=OFF \
      -DCUDA_TOOLKIT_ROOT_DIR="$CUDA_HOME" -DCUDAToolkit_ROOT="$CUDA_HOME" -DCUDA_INCLUDE_DIRS="$CUDA_HOME/include" -DCUDA_CUDART_LIBRARY="$CUDA_HOME/lib64/libcudart.so" -DCMAKE_CUDA_COMPILER="$CUDA_HOME/bin/nvcc" > "$BUILD/configure.log" 2>&1 \
  || { cat "$BUILD/configure.log"; exit 1; }
cmake --build "$BUILD" -j "${MAX_JOBS:-2}" > "$BUILD/build.log" 2>&1 || { tail -50 "$BUILD/build.log"; exit 1; }
"$PY" - "$BUILD/libflowkern_ops.so" <<'PYEOF'
import sys, torch
torch.ops.load_library(sys.argv[1])
x = torch.randn(3, 4, 5)
y, logdet, err = torch.ops.flowkern.coupling_fwd(x, x[:, 2:], x[:, 2:], None, None, 2, True, 1, 1.0, 0.6, 0.0, True)
assert y.shape == x.shape and logdet.shape == (3,) and float(err.max()) < 1e-5
xg = x.clone().requires_grad_()
y2, logdet2, _ = torch.ops.flowkern.coupling_fwd_eager(xg, xg[:, 2:], xg[:, 2:], None, None, 2, True, 1, 1.0, 0.6, 0.0, False)
(y2.sum() + logdet2.sum()).backward()
assert torch.equal(y2, y) and xg.grad is not None and bool(torch.isfinite(xg.grad).all())
print("flowkern_ops loads and runs coupling_fwd, and coupling_fwd_eager with its C++ backward")
PYEOF
echo "cmake configure + build OK in $(( $(date +%s) - start )) s"

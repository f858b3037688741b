#!/usr/bin/env bash
# Configure and build the flowkern_ops C++ library with CMake into a temporary directory,
# then check that it registers the CPU kernels (forward, inverse, backward, packed overloads) and that
# the per-ISA kernel objects share no function with other objects (link order must not matter).
# Prints the elapsed time.
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
# The per-ISA objects are compiled with -mavx2 / -mavx512*: every function they define must be
# theirs alone (in flowkern::cpu::<isa> or at::vec::<ISA>), or the linker could pick their copy
# of an inline function for code that runs on any CPU.
for isa in avx2 avx512; do
  obj="$(find "$BUILD" -name "kernels_x86_${isa}.cpp.o" | head -1)"
  [ -n "$obj" ] || { echo "error: no object for kernels_x86_${isa}.cpp"; exit 1; }
  shared="$(nm -C --defined-only "$obj" | awk '$2 ~ /^[TWi]$/' | grep -v -e "${isa}::" -e "${isa^^}::" || true)"
  [ -z "$shared" ] || { echo "error: $obj defines functions outside its ISA namespaces:"; echo "$shared"; exit 1; }
done
"$PY" - "$BUILD/libflowkern_ops.so" <<'PYEOF'
import sys, torch
torch.ops.load_library(sys.argv[1])
F = torch.ops.flowkern
assert F.cpu_kernel_isa() in ("avx512", "avx2", "base"), F.cpu_kernel_isa()
x = torch.randn(3, 4, 5)
h = torch.randn(3, 4, 5)
cfg = (2, "first", "tanh", 1.0, 0.6, 0.0)
y, logdet, err = F.coupling(x, h[:, :2], h[:, 2:], None, None, *cfg, False, True)
assert y.shape == x.shape and logdet.shape == (3,) and float(err.max()) < 1e-5
x2, logdet2, err2 = F.coupling(y, h[:, :2], h[:, 2:], None, None, *cfg, True, False)
assert torch.allclose(x2, x, atol=1e-5) and torch.allclose(logdet2, -logdet) and err2.shape == (0,)
yp, _, _ = F.coupling.packed(x, h, None, None, *cfg, False, False)
assert torch.equal(yp, y)
g = F.coupling_backward(torch.ones_like(y), torch.ones(3), x, h[:, :2], h[:, 2:], None, None, *cfg, False)
gp = F.coupling_backward.packed(torch.ones_like(y), torch.ones(3), x, h, None, None, *cfg, False)
assert torch.equal(g[0], gp[0]) and torch.equal(torch.cat([g[1], g[2]], 1), gp[1]) and bool(torch.isfinite(g[0]).all())
print(f"flowkern_ops loads and runs coupling / coupling.packed / coupling_backward[.packed] ({F.cpu_kernel_isa()} kernels)")
PYEOF
echo "cmake configure + build OK in $(( $(date +%s) - start )) s"

"""Build flowkern and its optional C++ / CUDA extensions.

Flags (environment):
  FLOWKERN_USE_CPP=0      build no extension (pure-Python package, reference backend)
  FORCE_CUDA=1            build the CUDA extension even if auto-detection says no
  FLOWKERN_NO_CUDA=1      never build the CUDA extension
  FLOWKERN_DEBUG=1        compile with debug info (-g, nvcc -lineinfo); default -g0
  TORCH_CUDA_ARCH_LIST    CUDA archs, default "8.0;9.0"
  MAX_JOBS                parallel compile jobs (ninja), default 2
"""

import glob
import os
import platform
from concurrent.futures import ThreadPoolExecutor

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
USE_CPP = os.environ.get("FLOWKERN_USE_CPP", "1") != "0"
DEBUG = os.environ.get("FLOWKERN_DEBUG", "0") == "1"
X86 = platform.machine().lower() in ("x86_64", "amd64")

# The per-ISA CPU kernels (csrc/cpu/kernels_x86_*.cpp): each is compiled as its own object with
# its instruction set's flags, as ATen builds its own kernels (CPU_CAPABILITY selects at::vec's
# implementation and namespace). FLOWKERN_X86_ISA enables them; without it (other architectures)
# they compile to empty tables and only kernels_base.cpp runs.
_AVX2 = ["-mavx2", "-mfma", "-mf16c", "-mbmi", "-mbmi2", "-mlzcnt", "-mpopcnt"]
ISA_FLAGS = {
    "csrc/cpu/kernels_x86_avx2.cpp": _AVX2 + ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"],
    "csrc/cpu/kernels_x86_avx512.cpp": _AVX2 + ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
                                                "-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512"],
}
ISA_COMMON = ["-DFLOWKERN_X86_ISA", "-fvisibility=hidden", "-fvisibility-inlines-hidden"]


def _sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _build_ext_class(base):
    class BuildExt(base):
        """torch's BuildExtension, plus the per-ISA objects of flowkern._C.

        ninja builds compile every source of an extension with the same flags, so the ISA
        sources (ext.isa_sources) are compiled first, each with its own flags into its own
        directory (in parallel), and linked in as extra objects.
        """

        def build_extension(self, ext):
            isa = getattr(ext, "isa_sources", {})
            if isa:
                cxx = list(ext.extra_compile_args["cxx"])  # torch has added its ABI / name flags

                def compile_one(item):
                    src, flags = item
                    out = os.path.join(self.build_temp, "isa", os.path.splitext(os.path.basename(src))[0])
                    return self.compiler.compile([src], output_dir=out, include_dirs=ext.include_dirs,
                                                 extra_postargs={"cxx": cxx + flags}, depends=ext.depends)

                with ThreadPoolExecutor(len(isa)) as pool:
                    objects = [o for objs in pool.map(compile_one, isa.items()) for o in objs]
                ext.extra_objects = [o for o in (ext.extra_objects or []) if o not in objects] + objects
            super().build_extension(ext)

    return BuildExt


def _extensions():
    if not USE_CPP:
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    with open(os.path.join(ROOT, "flowkern", "_build_info.py"), "w") as f:
        f.write(f'"""Written by setup.py."""\n\nTORCH_VERSION = "{torch.__version__}"\n')

    os.environ.setdefault("MAX_JOBS", "2")
    include = [os.path.join(ROOT, "csrc")]
    debug = ["-g"] if DEBUG else ["-g0"]  # -g0 last: overrides the -g of Python's CFLAGS
    cxx = ["-O3", "-std=c++20", "-DFLOWKERN_PYTHON_MODULE", "-fno-math-errno"] + debug
    isa_sources = {src: ISA_COMMON + flags for src, flags in ISA_FLAGS.items()} if X86 else {}
    cpu_sources = [s for s in _sources("csrc/cpu/*.cpp") if s not in isa_sources]
    c_ext = CppExtension(
        "flowkern._C",
        _sources("csrc/ops.cpp") + _sources("csrc/autograd.cpp") + cpu_sources,  # ops.cpp: the (empty) module
        include_dirs=include,
        # OpenMP: the kernels run on ATen's intra-op team (at::parallel_for). The libgomp.so.1
        # this links resolves at run time to the copy torch has already loaded.
        extra_compile_args={"cxx": cxx + ["-fopenmp"]},
        extra_link_args=["-fopenmp"] + debug,
        depends=_sources("csrc/*.h") + _sources("csrc/common/*.h") + _sources("csrc/cpu/*.h"),
    )
    c_ext.isa_sources = isa_sources
    exts = [c_ext]
    want_cuda = os.environ.get("FORCE_CUDA", "0") == "1" or (
        torch.version.cuda is not None and CUDA_HOME is not None
    )
    if os.environ.get("FLOWKERN_NO_CUDA", "0") == "1":
        want_cuda = False
    cu_sources = _sources("csrc/cuda/*.cu") + _sources("csrc/cuda/*.cpp")
    if want_cuda and cu_sources:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
        exts.append(
            CUDAExtension(
                "flowkern._C_cuda",
                cu_sources,
                include_dirs=include,
                extra_compile_args={
                    "cxx": cxx,
                    "nvcc": ["-O3", "-std=c++20", "--use_fast_math"] + (["-lineinfo"] if DEBUG else []),
                },
                extra_link_args=debug,
            )
        )
    return exts, {"build_ext": _build_ext_class(BuildExtension).with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    packages=find_packages(include=["flowkern", "flowkern.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)

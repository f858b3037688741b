"""Build flowkern and its optional C++ / CUDA extensions.

Flags (environment):
  FLOWKERN_USE_CPP=0      build no extension (pure-Python package, reference backend)
  FORCE_CUDA=1            build the CUDA extension even if auto-detection says no
  FLOWKERN_NO_CUDA=1      never build the CUDA extension
  TORCH_CUDA_ARCH_LIST    CUDA archs, default "8.0;9.0"
  MAX_JOBS                parallel compile jobs (ninja), default 2
"""

import glob
import os

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
USE_CPP = os.environ.get("FLOWKERN_USE_CPP", "1") != "0"


def _sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


def _extensions():
    if not USE_CPP:
        return [], {}
    import torch
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    with open(os.path.join(ROOT, "flowkern", "_build_info.py"), "w") as f:
        f.write(f'"""Written by setup.py."""\n\nTORCH_VERSION = "{torch.__version__}"\n')

    os.environ.setdefault("MAX_JOBS", "2")
    include = [os.path.join(ROOT, "csrc")]
    cxx = ["-O3", "-std=c++20", "-DFLOWKERN_PYTHON_MODULE", "-fno-math-errno"]
    exts = [
        CppExtension(
            "flowkern._C",
            _sources("csrc/ops.cpp") + _sources("csrc/eager_autograd.cpp") + _sources("csrc/cpu/*.cpp")
            + _sources("csrc/python/*.cpp"),  # the Python module (the CMake build has none)
            include_dirs=include,
            # OpenMP: the kernels run on ATen's intra-op team (at::parallel_for). The libgomp.so.1
            # this links resolves at run time to the copy torch has already loaded.
            extra_compile_args={"cxx": cxx + ["-fopenmp"]},
            extra_link_args=["-fopenmp"],
        )
    ]
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
                    "nvcc": ["-O3", "-std=c++20", "--use_fast_math", "-lineinfo"],
                },
            )
        )
    return exts, {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    packages=find_packages(include=["flowkern", "flowkern.*"]),
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)

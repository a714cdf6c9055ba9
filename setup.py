"""Build of the optional C++ CPU backend (csrc/, pybind11 + OpenMP).

The extension takes raw pointers, sizes and strides from Python, so no PyTorch headers are needed at
build time. If it cannot be built (no compiler), the package still installs and `backend="auto"`
falls back to the torch backend with one warning.
"""

import glob
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any build failure leaves a pure-Python install
            print(f"warning: fastdiff C++ extension not built ({exc}); the torch backend will be used",
                  file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            print(f"warning: building {ext.name} failed ({exc}); the torch backend will be used",
                  file=sys.stderr)


def extensions():
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    if not sources or os.environ.get("FASTDIFF_NO_CPP"):
        return []
    from pybind11.setup_helpers import Pybind11Extension

    # No -ffast-math: it lets the compiler assume no NaN/Inf, which breaks their detection.
    extra_compile = ["-O3", "-fopenmp", "-fno-math-errno"]
    if os.environ.get("FASTDIFF_NATIVE", "0") == "1":
        extra_compile.append("-march=native")
    return [
        Pybind11Extension(
            "fastdiff._cpu",
            sources,
            include_dirs=["csrc"],
            depends=sorted(glob.glob(os.path.join("csrc", "*.h"))),  # rebuild when a header changes
            cxx_std=17,
            extra_compile_args=extra_compile,
            extra_link_args=["-fopenmp"],
        )
    ]


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

"""Build the evaluator's optional C kernel; all other package metadata lives in pyproject.toml.

``optional=True``: without a working C compiler the install still succeeds and the evaluator uses its pure-Python
kernel (same results, slower). The build records the SHA-256 of its source, so a build older than the source next
to it is detected and not used (``masseg_search/evaluation/kernels/compiled.py``); ``scripts/bootstrap`` rebuilds when this
file or the C source changes.
"""
import hashlib
from pathlib import Path

from setuptools import Extension, setup

SOURCE = "masseg_search/evaluation/kernels/_jf_kernel.c"
source_digest = hashlib.sha256((Path(__file__).resolve().parent / SOURCE).read_bytes()).hexdigest()

setup(
    ext_modules=[
        Extension(
            "masseg_search.evaluation.kernels._jf_kernel",
            sources=[SOURCE],
            define_macros=[("JF_KERNEL_SOURCE_SHA256", f'"{source_digest}"')],
            optional=True,
        )
    ]
)

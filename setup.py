"""The compiled twins of the hot path's pure-Python modules (Cython): each ``_name.pyx`` beside
its ``name.py``, which stays the fallback and the reference a property test holds it to.

Built by scripts/venv and the Dockerfile from requirements-build.lock (no build isolation).
BUILD_PURE_PYTHON=1 builds without them (no C compiler needed); the daemon then runs the
pure-Python modules and says so (``ingestor_build_info{compiled="false"}``). Not an INGESTOR_
variable: the daemon refuses INGESTOR_ variables it does not know, and this one may stay
exported in the shell that installed it.
"""

import os

from setuptools import setup

TWINS = [
    "ingestor/domain/_rows.pyx",
    "ingestor/domain/_fast.pyx",
    "ingestor/storage/write/_batch.pyx",
    "ingestor/storage/write/_history.pyx",
    "ingestor/storage/write/_pgcopy.pyx",
    "ingestor/stream/_sse.pyx",
]

if os.environ.get("BUILD_PURE_PYTHON") == "1":
    ext_modules = []
else:
    from Cython.Build import cythonize

    ext_modules = cythonize(TWINS, compiler_directives={"language_level": "3"}, quiet=True)

setup(ext_modules=ext_modules)

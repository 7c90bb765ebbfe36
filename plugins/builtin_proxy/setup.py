"""Optional compiled hot path: with Cython installed (and GOTUNNEL_PURE_PYTHON unset), the modules
in HOT_PATH are also built as extension modules, typed by the .pxd files beside them. Without
Cython, or where the C build fails (no compiler), the package installs as pure Python: the same code.
Everything else about the distribution is in pyproject.toml.
"""

import os

from setuptools import setup

HOT_PATH = [f"gotunnel_builtin_proxy/{name}.py"
            for name in ("protocol", "upstream", "request", "metrics", "router", "balancer", "state", "tls_transport")]


def extensions() -> list:
    if os.environ.get("GOTUNNEL_PURE_PYTHON") == "1":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    modules = cythonize(HOT_PATH, compiler_directives={"language_level": "3", "annotation_typing": False}, quiet=True)
    for module in modules:
        module.optional = True  # a failed C build leaves the pure-Python install working
    return modules


setup(ext_modules=extensions())

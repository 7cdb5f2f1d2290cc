"""cffi builder for the C storage engine (API mode).

setup.py names this module in ``cffi_modules``; building the package compiles
every ``native/*.c`` file into the extension ``boltimages._bolt``. The cdef is
``bolt.h`` itself with its preprocessor lines removed, so the header stays the
single statement of the C API.
"""

from __future__ import annotations

import os
import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent


def _cdef_source() -> str:
    lines = (HERE / "bolt.h").read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def sanitizers() -> str:
    """The -fsanitize list for BOLTIMAGES_SANITIZE: "thread" builds for
    ThreadSanitizer (which cannot be combined with AddressSanitizer), any
    other non-empty value for AddressSanitizer + UndefinedBehaviorSanitizer;
    empty or unset, a plain optimised build."""
    mode = os.environ.get("BOLTIMAGES_SANITIZE", "")
    if not mode:
        return ""
    return "thread" if mode == "thread" else "address,undefined"


def compile_args() -> list[str]:
    """Flags for every C file we build (the engine and native/pyext)."""
    args = ["-std=c11", "-Wall", "-Wextra", "-D_GNU_SOURCE", "-fvisibility=hidden"]
    if os.environ.get("BOLTIMAGES_WERROR"):
        args.append("-Werror")
    sanitize = sanitizers()
    if sanitize:
        # CI runs the engine tests once with the extension built this way.
        args += ["-O1", "-g", "-fno-omit-frame-pointer", f"-fsanitize={sanitize}"]
        if "undefined" in sanitize:
            args.append("-fno-sanitize-recover=undefined")
    else:
        args += ["-O2"]
    return args


def link_args() -> list[str]:
    sanitize = sanitizers()
    return [f"-fsanitize={sanitize}"] if sanitize else []


ffibuilder = FFI()
ffibuilder.cdef(_cdef_source())
ffibuilder.set_source(
    "boltimages._bolt",
    '#include "bolt.h"',
    # the engine is every .c file here; native/pyext holds CPython extensions
    sources=sorted(str(p.relative_to(HERE.parent)) for p in HERE.glob("*.c")),
    include_dirs=[str(HERE.relative_to(HERE.parent))],
    extra_compile_args=compile_args(),
    extra_link_args=link_args(),
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(tmpdir=str(HERE.parent / "build" / "cffi"), verbose=True)

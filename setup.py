"""Build script: compiles the C engine (cffi API mode) and the gRPC stubs.

Both generated artefacts are made here so that ``pip install .`` is the only
step a fresh clone needs: ``cffi_modules`` builds ``boltimages._bolt`` from
``native/``, and ``build_py`` runs grpc_tools' protoc over ``proto/`` into
``boltimages.api``.
"""

from __future__ import annotations

import pathlib
import re
import runpy

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = ROOT / "proto"
API_PACKAGE = "boltimages.api"


def generate_protos(out_root: pathlib.Path) -> None:
    """Compile proto/**.proto into <out_root>/boltimages/api/.

    protoc emits imports such as ``from containerd.types import ...``; they are
    rewritten under ``boltimages.api`` so the generated modules live inside our
    package instead of claiming a top-level ``containerd`` package.
    """
    from grpc_tools import protoc  # build requirement, see pyproject.toml
    import grpc_tools

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    if not protos:
        return
    out_dir = out_root / "boltimages" / "api"
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}",
            f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", *protos]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on " + " ".join(protos))
    # google/protobuf comes from the protobuf runtime; only google/* packages we
    # ship ourselves (google/rpc) move under boltimages.api
    tops = sorted({"/".join(p.split("/")[:2]) if p.startswith("google/") else p.split("/")[0]
                   for p in protos})
    tops = [t.replace("/", ".") for t in tops]
    pattern = re.compile(r"^(from|import) (" + "|".join(map(re.escape, tops)) + r")([. ])", re.M)
    for path in out_dir.rglob("*.py"):
        text = path.read_text()
        path.write_text(pattern.sub(lambda m: f"{m.group(1)} {API_PACKAGE}.{m.group(2)}{m.group(3)}", text))
    for directory in [out_dir, *[d for d in out_dir.rglob("*") if d.is_dir()]]:
        (directory / "__init__.py").touch()


class BuildPy(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            generate_protos(ROOT / "plugin")
        else:
            generate_protos(pathlib.Path(self.build_lib))


class BuildExt(build_ext):
    """Rebuild every extension when the C flags changed since the last build.

    setuptools keeps objects, and skips an extension whose output is newer
    than its sources, whatever flags built it: a sanitizer build
    (BOLTIMAGES_SANITIZE) after a plain one would link uninstrumented
    objects, and a plain one after it would ship sanitizer builds. The flags
    of the last build are kept beside its objects.
    """

    def run(self) -> None:
        flags = runpy.run_path(str(ROOT / "native" / "build_bolt.py"))
        wanted = " ".join(flags["compile_args"]() + ["|"] + flags["link_args"]())
        stamp = pathlib.Path(self.build_temp) / "boltimages-c-flags"
        if not stamp.exists() or stamp.read_text() != wanted:
            self.force = True
        super().run()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(wanted)


def pyext_extensions() -> list[Extension]:
    """The CPython extensions in native/pyext/, with the engine's flags:
    boltimages._unpack cuts packed engine batches into Python objects (cffi
    cannot create those from C); boltimages._wire frames stored image
    records as protobuf wire bytes; boltimages._records cuts image records
    out of a bucket walk copy."""
    flags = runpy.run_path(str(ROOT / "native" / "build_bolt.py"))
    # the headers they include: without them an edit to one rebuilds nothing
    headers = ["native/bolt.h", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "native" / "pyext").glob("*.h"))]
    return [Extension(f"boltimages.{name}", sources=[f"native/pyext/{source}"], depends=headers,
                      extra_compile_args=flags["compile_args"](), extra_link_args=flags["link_args"]())
            for name, source in (("_unpack", "unpack.c"), ("_wire", "wire.c"), ("_records", "records.c"))]


def main() -> None:
    setup(
        name="boltimages",
        version="0.1.0",
        description="containerd's image metadata service over a bbolt-compatible C engine",
        python_requires=">=3.9",
        package_dir={"": "plugin"},
        packages=find_packages(where="plugin", exclude=["boltimages.api", "boltimages.api.*"]),
        cffi_modules=["native/build_bolt.py:ffibuilder"],
        ext_modules=pyext_extensions(),
        install_requires=[
            "cffi>=1.15",
            "grpcio>=1.60",
            "grpcio-health-checking>=1.60",
            "grpcio-reflection>=1.60",
            "protobuf>=4.25",
            # RE2 itself for `~=` filters, as Go's regexp (containerd) matches:
            # linear time (`(a+)+$` on a 27-char label: 13 s on Python's re,
            # 0.2 ms here), full RE2 syntax incl. Unicode scripts (\p{Greek}).
            "google-re2>=1.1",
            "tomli>=1.1; python_version<'3.11'",
        ],
        extras_require={"test": ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6.80"]},
        entry_points={"console_scripts": ["boltimages=boltimages.cli:main"]},
        cmdclass={"build_py": BuildPy, "build_ext": BuildExt},
        zip_safe=False,
    )


# setuptools' build backend executes this file as __main__; the guard lets the
# dev loop import generate_protos without running setup().
if __name__ == "__main__":
    main()


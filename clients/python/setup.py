"""Build step of rwp-client: generates ``rwp_client._proto`` from ``proto/``.

The protobuf and gRPC modules are not committed: every build runs
``grpc_tools.protoc`` (with mypy-protobuf for the type stubs) over the
repository's ``proto/rwp/v1/*.proto`` and puts the result in the private
subpackage ``rwp_client._proto.rwp.v1``, with the generated imports rewritten
to that package. pip builds a local directory in place, so the repository's
``proto/`` two levels up is reachable even from an isolated build
environment; ``RWP_PROTO_DIR`` names another directory holding ``rwp/v1``.

Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# Where the generated modules go, relative to the package root, and the
# import path that replaces the protos' own package (`rwp.v1`).
PROTO_PACKAGE = "rwp_client._proto"
PROTO_SUBDIR = Path("rwp_client", "_proto")


class ProtoError(RuntimeError):
    """The proto files are missing or protoc refused them."""


def proto_root() -> Path:
    """The directory that holds ``rwp/v1/*.proto``."""
    configured = os.environ.get("RWP_PROTO_DIR")
    root = Path(configured) if configured else HERE.parent.parent / "proto"
    if not sorted(root.glob("rwp/v1/*.proto")):
        origin = "RWP_PROTO_DIR" if configured else "the repository's proto/ directory"
        raise ProtoError(
            f"rwp-client: no rwp/v1/*.proto files under {root} ({origin}). The package "
            "generates its gRPC modules from the repository's protos at build time: "
            "install it from a checkout of the repository (pip install ./clients/python), "
            "or set RWP_PROTO_DIR to a directory holding rwp/v1/*.proto."
        )
    return root


def _plugin(directory: Path, name: str, entry: str) -> Path:
    """A protoc plugin executable that runs mypy-protobuf's ``entry`` in this
    interpreter (whose console scripts may not be on PATH in a build env)."""
    script = directory / f"protoc-gen-{name}"
    code = f"import sys; from mypy_protobuf.main import {entry}; sys.exit({entry}())"
    script.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(code)}\n")
    script.chmod(0o755)
    return script


_IMPORT = re.compile(r"^(\s*)(from|import)\s+rwp\.v1(\s|\.)", re.MULTILINE)


def _rewrite_imports(text: str) -> str:
    """``from rwp.v1 import x_pb2`` -> ``from rwp_client._proto.rwp.v1 import x_pb2``
    (import lines only: strings such as '/rwp.v1.JobService/GetJob' stay)."""
    return _IMPORT.sub(lambda m: f"{m[1]}{m[2]} {PROTO_PACKAGE}.rwp.v1{m[3]}", text)


def generate(target: Path) -> list[Path]:
    """Writes the generated package to ``target`` (``.../rwp_client/_proto``),
    replacing what is there; returns the files written."""
    from grpc_tools import protoc  # a build requirement

    import grpc_tools

    root = proto_root()
    sources = [p.relative_to(root).as_posix() for p in sorted(root.glob("rwp/v1/*.proto"))]
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="rwp-proto-") as tmp:
        out = Path(tmp, "out")
        out.mkdir()
        mypy = _plugin(Path(tmp), "mypy", "main")
        mypy_grpc = _plugin(Path(tmp), "mypy_grpc", "grpc")
        args = [
            "grpc_tools.protoc",
            f"--proto_path={root}",
            f"--proto_path={well_known}",
            f"--plugin=protoc-gen-mypy={mypy}",
            f"--plugin=protoc-gen-mypy_grpc={mypy_grpc}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out=quiet:{out}",
            f"--mypy_grpc_out=quiet:{out}",
            *sources,
        ]
        if protoc.main(args) != 0:
            raise ProtoError(f"rwp-client: protoc failed on {', '.join(sources)} in {root} (see above)")
        if target.exists():
            shutil.rmtree(target)
        written: list[Path] = []
        for package in (target, target / "rwp", target / "rwp" / "v1"):
            package.mkdir(parents=True, exist_ok=True)
            init = package / "__init__.py"
            init.write_text('"""Generated from proto/ by the build; do not edit."""\n')
            written.append(init)
        for generated in sorted((out / "rwp" / "v1").iterdir()):
            text = _rewrite_imports(generated.read_text())
            leftover = re.search(r"^\s*(from|import)\s+rwp\.", text, re.MULTILINE)
            if leftover:
                raise ProtoError(f"rwp-client: an import in {generated.name} was not rewritten: {leftover[0]!r}")
            destination = target / "rwp" / "v1" / generated.name
            destination.write_text(text)
            written.append(destination)
    return written


class BuildPyWithProto(build_py):
    """``build_py`` that also generates ``rwp_client._proto``: into the build
    directory for a wheel, into the source tree for an editable install."""

    def run(self) -> None:
        proto_root()  # before anything else: a build without the protos stops here
        super().run()
        base = HERE / "src" if self.editable_mode else Path(self.build_lib)
        self._generated = generate(base / PROTO_SUBDIR)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs: list[str] = list(super().get_outputs(include_bytecode))
        return outputs + [str(p) for p in getattr(self, "_generated", [])]


try:
    setup(cmdclass={"build_py": BuildPyWithProto})
except ProtoError as e:
    sys.exit(str(e))

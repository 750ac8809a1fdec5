"""Compile ``proto/bulwark/ratelimit/**/*.proto`` with grpcio-tools (``make proto``).

The ``.proto`` files live under ``proto/bulwark/ratelimit/`` and declare package
``bulwark.ratelimit.v1``; the Python code goes to ``bulwark/ratelimit/_generated/`` of the
rate-limit service. protoc's ``VIRTUAL=DISK`` import path maps one onto the other, so the
generated imports (``from bulwark.ratelimit._generated.v1 import operator_pb2``) work without
editing the generated files. Usage: ``python proto/compile.py [OUTPUT_ROOT]``; the default
root is ``services/ratelimit/src``. The test ``test_generated_code_is_fresh`` compiles into a
temporary root and compares.
"""

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "proto" / "bulwark" / "ratelimit"
VIRTUAL = "bulwark/ratelimit/_generated"
DEFAULT_OUTPUT = ROOT / "services" / "ratelimit" / "src"


def compile_protos(output_root: Path) -> list[Path]:
    """Compile every ``.proto`` under `SOURCE` into ``output_root``; return the files written.

    Raises:
        RuntimeError: protoc failed (its message is on stderr).
    """
    protos = sorted(SOURCE.rglob("*.proto"))
    args = [
        "grpc_tools.protoc",
        f"-I{VIRTUAL}={SOURCE}",
        f"--python_out={output_root}",
        f"--pyi_out={output_root}",
        f"--grpc_python_out={output_root}",
        # Named by their virtual path, which is also the file name in the descriptors.
        *(f"{VIRTUAL}/{path.relative_to(SOURCE).as_posix()}" for path in protos),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    generated = output_root / VIRTUAL
    return sorted(p for p in generated.rglob("*_pb2*") if p.suffix in {".py", ".pyi"})


if __name__ == "__main__":
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    for path in compile_protos(output):
        print(path.relative_to(output))

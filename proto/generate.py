"""Regenerate the Python code (messages, .pyi stubs, gRPC stubs) from proto/mirage/v1/*.proto.

The only way generated code enters the repo: ``python proto/generate.py``. The drift test calls
``generate(tmpdir)`` and compares with what is checked in. Never edit the generated files by hand.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
PACKAGE_DIR = Path("mirage") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))


def generate(out_root: Path) -> list[Path]:
    """Write generated modules for every .proto under ``out_root/mirage/v1``; return their paths."""
    import grpc_tools
    from grpc_tools import protoc  # a development dependency (grpcio-tools)

    out_root = Path(out_root)
    (out_root / PACKAGE_DIR).mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}: {' '.join(args)}")
    for init in (out_root / "mirage", out_root / PACKAGE_DIR):
        (init / "__init__.py").touch()
    return sorted(p for p in (out_root / PACKAGE_DIR).iterdir() if p.name.endswith(GENERATED_SUFFIXES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PROTO_ROOT, help="output root (default: proto/)")
    args = parser.parse_args(argv)
    if args.out.resolve() == PROTO_ROOT:
        for old in (PROTO_ROOT / PACKAGE_DIR).iterdir():
            if old.name.endswith(GENERATED_SUFFIXES):
                old.unlink()
        shutil.rmtree(PROTO_ROOT / PACKAGE_DIR / "__pycache__", ignore_errors=True)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

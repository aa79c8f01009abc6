"""The checked-in generated code must be exactly what proto/generate.py makes from the .proto files."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_generator():
    spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_code_matches_proto(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (a dev dependency) regenerates the code")
    gen = _load_generator()
    fresh = gen.generate(tmp_path)
    assert fresh, "the generator produced no files"
    checked_in = ROOT / "proto" / "mirage" / "v1"
    names = sorted(p.name for p in fresh)
    assert names == sorted(p.name for p in checked_in.iterdir() if p.name.endswith(gen.GENERATED_SUFFIXES))
    for path in fresh:
        assert path.read_text() == (checked_in / path.name).read_text(), (
            f"{path.name} drifted from the .proto files: run `python proto/generate.py` and commit the result"
        )


def test_service_is_described():
    from mirage.v1 import mirage_pb2

    service = mirage_pb2.DESCRIPTOR.services_by_name["Mirage"]
    assert service.full_name == "mirage.v1.Mirage"
    assert {m.name for m in service.methods} == {
        "OpenSession",
        "Stream",
        "SpatialMemoryQuery",
        "ContextualInference",
        "CloseSession",
        "ExportMemory",
        "ImportMemory",
        "ManageMemory",
    }

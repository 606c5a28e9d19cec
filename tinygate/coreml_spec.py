"""Read what a saved .mlpackage declares, from its protobuf spec alone (works on Linux)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Core ML specification version written for each minimum deployment target.
SPEC_VERSION = {"iOS15": 6, "iOS16": 7, "iOS17": 8, "iOS18": 9, "macOS12": 6, "macOS13": 7, "macOS14": 8,
                "macOS15": 9}


@dataclass(frozen=True)
class CoreMLDescription:
    inputs: dict[str, tuple[int, ...]]
    outputs: dict[str, tuple[int, ...]]
    precision: str  # "fp16" when any op of the main function computes in float16, else "fp32"
    spec_version: int
    model_type: str


def describe(path: Path) -> CoreMLDescription:
    import coremltools as ct
    from coremltools.proto import MIL_pb2

    spec = ct.utils.load_spec(str(path))
    desc = spec.description
    shapes = lambda feats: {f.name: tuple(f.type.multiArrayType.shape) for f in feats}  # noqa: E731
    precision = "fp32"
    if spec.WhichOneof("Type") == "mlProgram":
        main = spec.mlProgram.functions["main"]
        block = main.block_specializations[main.opset]
        fp16 = MIL_pb2.DataType.FLOAT16
        if any(out.type.tensorType.dataType == fp16 for op in block.operations if op.type != "const"
               for out in op.outputs):
            precision = "fp16"
    return CoreMLDescription(shapes(desc.input), shapes(desc.output), precision, spec.specificationVersion,
                             spec.WhichOneof("Type"))

#!/usr/bin/env python3
"""Make a synthetic ~3.2 GB model with external data, for the memory benchmark.

24 MatMuls chained, weights alternately 4096x8192 and 8192x4096 fp32 (33.5 M weights,
134 MB each), seeded normal values times 0.02, all in one side file next to the model.
Writes OUT_DIR/large.onnx and OUT_DIR/large.onnx.data one weight at a time, so this
script itself needs ~300 MB. Usage: benches/make_large_model.py OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

LAYERS = 24
N, M = 4096, 8192


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "large.onnx.data"
    rng = np.random.default_rng(0)
    initializers, nodes = [], []
    offset = 0
    with open(data_path, "wb") as data:
        for layer in range(LAYERS):
            rows, cols = (N, M) if layer % 2 == 0 else (M, N)
            w = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)
            raw = w.tobytes()
            data.write(raw)
            t = TensorProto()
            t.name = f"w{layer}"
            t.data_type = TensorProto.FLOAT
            t.dims.extend([rows, cols])
            t.data_location = TensorProto.EXTERNAL
            for key, value in [("location", data_path.name), ("offset", str(offset)), ("length", str(len(raw)))]:
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)
            initializers.append(t)
            x = "x" if layer == 0 else f"h{layer - 1}"
            nodes.append(helper.make_node("MatMul", [x, f"w{layer}"], [f"h{layer}"], name=f"layer{layer}"))
    graph = helper.make_graph(
        nodes,
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", N])],
        [helper.make_tensor_value_info(f"h{LAYERS - 1}", TensorProto.FLOAT, ["batch", N])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(out / "large.onnx"))
    print(f"wrote {out / 'large.onnx'} and {data_path} ({offset} bytes)")


if __name__ == "__main__":
    main()

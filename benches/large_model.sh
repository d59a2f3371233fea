#!/usr/bin/env bash
# Memory benchmark: rewrite a synthetic ~3.2 GB external-data model (24 MatMuls of
# 4096x8192 fp32) and report peak RSS (/usr/bin/time -v) and wall time, then reload
# the output (external data) in onnxruntime and compare it with the original.
# Usage: benches/large_model.sh WORK_DIR [PYTHON]   (PYTHON needs numpy, onnx, onnxruntime)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:?usage: benches/large_model.sh WORK_DIR [PYTHON]}
python=${2:-python3}
mkdir -p "$work/in" "$work/out"
[ -f "$work/in/large.onnx" ] || "$python" benches/make_large_model.py "$work/in"
cargo build --release --quiet
rm -f "$work/out/"*
/usr/bin/time -v target/release/sora-onnx rewrite "$work/in/large.onnx" "$work/out/large.onnx" --external-data \
    2> "$work/time.txt"
grep -E "Maximum resident set size|Elapsed \(wall clock\)" "$work/time.txt"
ls -l "$work/out"
"$python" - "$work" <<'PY'
import sys
import numpy as np
import onnxruntime as ort
work = sys.argv[1]
x = np.random.default_rng(0).standard_normal((1, 4096)).astype(np.float32)
def run(path):
    # One session at a time; without graph optimizations the decode subgraphs run as
    # they are instead of being folded into 3.2 GB of constants at session start.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path, options).run(None, {"x": x})[0].ravel()
a = run(f"{work}/in/large.onnx")
b = run(f"{work}/out/large.onnx")
cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
print(f"onnxruntime: rewritten model loads and runs; output cosine to the original {cos:.4f} after 24 4-bit layers")
PY

"""The qdq output of scripts/ort_check.py in the other runtimes users deploy to: OpenVINO
(Python) here, onnxruntime-web (wasm, under Node) through other_runtimes.mjs. Each must load
the model and give the mean-pooled embedding of minilm_l3 a cosine against fp32 of at
least 0.985 on the evaluation sentences.

    python scripts/other_runtimes.py WORK     # WORK: scripts/ort_check.py's output folder
"""

import json
import sys
from pathlib import Path

import numpy as np
import openvino as ov

ROOT = Path(__file__).resolve().parent.parent


def main():
    work = Path(sys.argv[1])
    data = json.loads((ROOT / "fixtures/sentences/minilm_eval.json").read_text())["sentences"]
    ids = np.array([s["input_ids"] for s in data], dtype=np.int64)
    mask = np.array([s["attention_mask"] for s in data], dtype=np.int64)
    core = ov.Core()
    out = {}
    for name, path in [("fp32", ROOT / "fixtures/models/minilm_l3.onnx"), ("qdq", work / "minilm_l3_qdq.onnx")]:
        model = core.compile_model(str(path), "CPU")
        out[name] = model({"input_ids": ids, "attention_mask": mask})[model.output("461")]
    a, b = out["fp32"], out["qdq"]
    cos = float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).mean())
    ok = cos >= 0.985
    print(f"{'ok  ' if ok else 'FAIL'} OpenVINO {ov.__version__} runs minilm_l3 --form qdq   mean cosine {cos:.4f} on {len(ids)} sentences (floor 0.985)")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()

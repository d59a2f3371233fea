#!/usr/bin/env python3
"""Compare sora-onnx with onnxruntime's 4-bit weight-only quantizer (MatMulNBits).

Model: fixtures/models/minilm_l3.onnx (paraphrase-MiniLM-L3-v2, 18 MatMuls with
constant weights, 5,308,416 weights, plus a 30522x384 word-embedding Gather).
Quality: cosine between the original and the compressed model's sentence embedding
(output "461") on the 200 sentences of fixtures/sentences/minilm_eval.json, in
onnxruntime on CPU.

Rows:
  - onnxruntime MatMulNBitsQuantizer (default RTN algorithm, 4 bits, QOperator format),
    block_size 32 and 128, symmetric (the default of onnxruntime's command line) and
    asymmetric (the default of the Python class). Time: load + quantize + save, in process.
  - sora-onnx --ops MatMul,Gemm at --bits 4 and --bits 3 (same weights as MatMulNBits).
  - sora-onnx with its defaults (also rewrites the embedding tables).
  sora-onnx runs with --no-validate (no proof in tract), so its time, measured around the
  subprocess, is comparable.

Usage: python scripts/compare_matmulnbits.py path/to/sora-onnx WORK_DIR
Needs numpy, onnx, onnxruntime, and onnx-ir (which onnxruntime's quantizer imports;
it is not a dependency of the onnxruntime wheel): pip install onnx-ir
"""

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "fixtures" / "models" / "minilm_l3.onnx"
SENTENCES = ROOT / "fixtures" / "sentences" / "minilm_eval.json"
OUTPUT = "461"
# The quantizer module configures INFO logging for everything at import; keep warnings only.
logging.getLogger().setLevel(logging.WARNING)


def matmul_weights(model):
    """Names and element counts of the constant B inputs of the model's MatMuls."""
    inits = {t.name: t for t in model.graph.initializer}
    return {n.input[1]: int(np.prod(inits[n.input[1]].dims))
            for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in inits}


def embeddings(path, feeds):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run([OUTPUT], feeds)[0].astype(np.float64)


def cosines(ref, out):
    return np.sum(ref * out, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1))


def matmulnbits(src, dst, block_size, symmetric):
    """Quantize src's MatMuls with onnxruntime; returns (seconds, bits per weight, MatMulNBits nodes)."""
    start = time.perf_counter()
    quant = MatMulNBitsQuantizer(onnx.load(str(src)), bits=4, block_size=block_size, is_symmetric=symmetric)
    quant.process()
    quant.model.save_model_to_file(str(dst))
    seconds = time.perf_counter() - start

    model = onnx.load(str(dst))
    inits = {t.name: t for t in model.graph.initializer}
    nodes = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    # Packed B, scales and (asymmetric only) zero points: every initializer input of the node.
    data_bytes = sum(onnx.numpy_helper.to_array(inits[i]).nbytes for n in nodes for i in n.input[1:] if i in inits)
    weights = sum(next(a.i for a in n.attribute if a.name == "K") * next(a.i for a in n.attribute if a.name == "N")
                  for n in nodes)
    return seconds, 8 * data_bytes / weights, len(nodes)


def sora(binary, src, dst, flags, matmul_names):
    """Rewrite src with sora-onnx; returns (seconds, report bits/weight, bits/weight over the MatMuls, tensors)."""
    report = dst.with_suffix(".json")
    cmd = [str(binary), "rewrite", str(src), str(dst), "--no-validate", "-q", "--report", str(report), *flags]
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - start
    rep = json.loads(report.read_text())
    mm = [t for t in rep["tensors"] if t["name"] in matmul_names]
    mm_bits = 8 * sum(t["bytes_after"] for t in mm) / sum(t["elements"] for t in mm) if mm else None
    return seconds, rep["bits_per_weight"], mm_bits, len(rep["tensors"])


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    binary, work = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)

    data = json.loads(SENTENCES.read_text())["sentences"]
    feeds = {"input_ids": np.array([s["input_ids"] for s in data], dtype=np.int64),
             "attention_mask": np.array([s["attention_mask"] for s in data], dtype=np.int64)}
    ref = embeddings(MODEL, feeds)
    matmul_names = matmul_weights(onnx.load(str(MODEL)))
    n_weights = sum(matmul_names.values())

    # (tool, settings, path, seconds, bits/weight as reported, bits/weight over the 18 MatMuls, scope)
    rows = [("original fp32", "-", MODEL, None, 32.0, 32.0, "-")]
    for symmetric in (True, False):
        for block_size in (32, 128):
            dst = work / f"matmulnbits_b{block_size}_{'sym' if symmetric else 'asym'}.onnx"
            seconds, bits, n = matmulnbits(MODEL, dst, block_size, symmetric)
            settings = f"4-bit, block_size {block_size}, {'symmetric' if symmetric else 'asymmetric (zero points)'}"
            rows.append(("ORT MatMulNBits", settings, dst, seconds, bits, bits, f"{n} MatMuls"))
    for name, flags in (("matmul_b4", ["--ops", "MatMul,Gemm", "--bits", "4"]),
                        ("matmul_b3", ["--ops", "MatMul,Gemm", "--bits", "3"]),
                        ("defaults", [])):
        dst = work / f"sora_{name}.onnx"
        seconds, bits, mm_bits, n = sora(binary, MODEL, dst, flags, matmul_names)
        rows.append(("sora-onnx", " ".join(flags) or "defaults (--bits 4, all ops)", dst, seconds, bits, mm_bits,
                     f"{n} tensors"))

    print(f"Model: {MODEL.relative_to(ROOT)}; {len(matmul_names)} MatMul weights, {n_weights:,} weights; "
          f"{len(data)} sentences of {SENTENCES.relative_to(ROOT)}, output {OUTPUT!r}")
    print(f"onnxruntime {ort.__version__} (CPUExecutionProvider), onnx {onnx.__version__}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable)")
    print()
    print("| tool | settings | file bytes | bits/weight (tool's scope) | scope | bits/weight (18 MatMuls) "
          "| mean cosine | min cosine | time (s) |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|")
    for tool, settings, path, seconds, bits, mm_bits, scope in rows:
        cos = cosines(ref, embeddings(path, feeds))
        print(f"| {tool} | {settings} | {path.stat().st_size:,} | {bits:.3f} | {scope} | "
              f"{'-' if mm_bits is None else f'{mm_bits:.3f}'} | {cos.mean():.6f} | {cos.min():.6f} | "
              f"{'-' if seconds is None else f'{seconds:.2f}'} |")
    print()
    print("bits/weight: bits of the stored quantized data over the weights it replaces, codebooks, scales and zero")
    print("points included. MatMulNBits: raw bytes of its packed B, scales and zero points over K*N of its nodes.")
    print("sora-onnx: bits_per_weight of its --report, over every tensor it rewrote (scope column; the defaults")
    print("row includes the word and position embeddings); the 18-MatMul column sums bytes_after/elements of")
    print("the report's tensors that are MatMul weights. sora-onnx ran with --no-validate; its time is the")
    print("whole process. MatMulNBits time: onnx.load + quantize + save in this process.")


if __name__ == "__main__":
    main()

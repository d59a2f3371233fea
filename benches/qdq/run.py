"""sora-onnx --form qdq against onnxruntime's own 4-bit quantizer, side by side in one run.

For each model: file size, bits per quantized weight (every integer, scale and zero-point
byte counted), MatMulNBits nodes in onnxruntime's optimised graph, session RSS growth,
load time, one-thread latency, and the task metric on real inputs. Every model is
measured in a fresh process, rounds interleaved, so that each figure is a range over
the rounds.

    python benches/qdq/run.py target/release/sora-onnx --out bench-out/qdq [--rounds 3]

minilm_l3: mean-pooled embedding (output `461`) cosine against fp32 on the 200 evaluation
sentences of fixtures/sentences (calibration uses the 1024 disjoint ones).
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def ort_quantize(src, dst, block, symmetric, qdq, gather=False):
    """onnxruntime's 4-bit weight quantizer (RTN), MatMulNBits or QDQ output; with
    `gather`, embeddings too (com.microsoft GatherBlockQuantized)."""
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load(src)
    fmt = QuantFormat.QDQ if qdq else QuantFormat.QOperator
    ops = {"op_types_to_quantize": ("MatMul", "Gather"), "quant_axes": (("MatMul", 0), ("Gather", 1))} if gather else {}
    q = MatMulNBitsQuantizer(model, block_size=block, is_symmetric=symmetric, quant_format=fmt, **ops)
    q.process()
    q.model.model.graph.name = q.model.model.graph.name or "quantized"
    q.model.save_model_to_file(dst, use_external_data_format=False)


def weight_bits(path):
    """Bits per weight over the quantized MatMul weights: MatMulNBits inputs B, scales,
    zero points; or DequantizeLinear inputs."""
    m = onnx.load(path)
    inits = {t.name: t for t in m.graph.initializer}

    def nbytes(name):
        t = inits.get(name)
        return len(t.raw_data) if t is not None and t.raw_data else 0

    stored, weights = 0, 0
    for n in m.graph.node:
        if n.op_type == "MatMulNBits":
            a = {x.name: x.i for x in n.attribute}
            weights += a["K"] * a["N"]
            stored += sum(nbytes(i) for i in n.input[1:4] if i)
        elif n.op_type == "DequantizeLinear" and n.input[0] in inits:
            t = inits[n.input[0]]
            weights += int(np.prod(t.dims))
            stored += sum(nbytes(i) for i in n.input if i)
    return 8.0 * stored / weights if weights else None


# The start of every measuring process: a session on one thread, and rss() in bytes.
SESSION = r"""
import json, sys, time, os
import numpy as np
import onnxruntime as ort

def rss():
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024

so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
"""

MEASURE = SESSION + r"""
path, evalnpz, outdir = sys.argv[1], sys.argv[2], sys.argv[3]
before = rss()
t0 = time.perf_counter()
sess = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
load = time.perf_counter() - t0
d = np.load(evalnpz)
ids, mask = d['input_ids'][:, 0], d['attention_mask'][:, 0]
feed = {'input_ids': ids[:1], 'attention_mask': mask[:1]}
for _ in range(5):
    sess.run(['461'], feed)
after = rss()
times = []
for _ in range(50):
    t = time.perf_counter()
    sess.run(['461'], feed)
    times.append(time.perf_counter() - t)
emb = np.concatenate([sess.run(['461'], {'input_ids': ids[i:i + 20], 'attention_mask': mask[i:i + 20]})[0]
                      for i in range(0, len(ids), 20)])
np.save(os.path.join(outdir, os.path.basename(path) + '.emb.npy'), emb)
print(json.dumps({'rss_mib': (after - before) / 2**20, 'load_s': load,
                  'latency_ms': 1000 * float(np.median(times))}))
"""


def fused(path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.optimized_model_filepath = path + ".opt.onnx"
    ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    m = onnx.load(so.optimized_model_filepath)
    os.remove(so.optimized_model_filepath)
    return sum(n.op_type == "MatMulNBits" for n in m.graph.node)


def cosine_to(ref, emb):
    num = (ref * emb).sum(axis=1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(emb, axis=1)
    return float(np.mean(num / den))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("sora")
    ap.add_argument("--model", default=os.path.join(ROOT, "fixtures/models/minilm_l3.onnx"))
    ap.add_argument("--calibration", default=os.path.join(ROOT, "fixtures/sentences/minilm_calib.npz"))
    ap.add_argument("--eval", default=os.path.join(ROOT, "fixtures/sentences/minilm_eval.npz"))
    ap.add_argument("--flags", default="--ops MatMul,Gemm --form qdq --preset quality")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    models = {"original fp32": args.model}
    for label, block, sym, qdq in [
        ("onnxruntime MatMulNBits 4-bit b32 asym", 32, False, False),
        ("onnxruntime QDQ 4-bit b32 asym", 32, False, True),
        ("onnxruntime MatMulNBits 4-bit b128 asym", 128, False, False),
    ]:
        dst = os.path.join(args.out, label.replace(" ", "_") + ".onnx")
        t = time.perf_counter()
        ort_quantize(args.model, dst, block, sym, qdq)
        print(f"{label}: quantized in {time.perf_counter() - t:.1f} s", flush=True)
        models[label] = dst
    sora_out = os.path.join(args.out, "sora_qdq.onnx")
    cmd = [args.sora, "rewrite", args.model, sora_out, *args.flags.split(),
           "--calibration", args.calibration, "--report", sora_out + ".json"]
    t = time.perf_counter()
    subprocess.run(cmd, check=True)
    sora_seconds = time.perf_counter() - t
    label = "sora-onnx " + args.flags
    models[label] = sora_out
    report = json.load(open(sora_out + ".json"))

    rows = {k: {"file_mib": os.path.getsize(p) / 2**20, "runs": []} for k, p in models.items()}
    for k, p in models.items():
        rows[k]["matmulnbits"] = fused(p)
        rows[k]["bits_per_weight"] = weight_bits(p)
    rows[label]["bits_per_weight_report"] = report.get("bits_per_weight")
    rows[label]["tool_seconds"] = sora_seconds
    for r in range(args.rounds):
        for k, p in models.items():
            out = subprocess.run([sys.executable, "-c", MEASURE, p, args.eval, args.out],
                                 check=True, capture_output=True, text=True).stdout
            rows[k]["runs"].append(json.loads(out.strip().splitlines()[-1]))
    ref = np.load(os.path.join(args.out, os.path.basename(args.model) + ".emb.npy"))
    for k, p in models.items():
        emb = np.load(os.path.join(args.out, os.path.basename(p) + ".emb.npy"))
        rows[k]["cosine"] = cosine_to(ref, emb)
    load = os.getloadavg()
    json.dump({"rows": rows, "loadavg": load}, open(os.path.join(args.out, "results.json"), "w"), indent=1)

    def span(k, key, fmt):
        v = [x[key] for x in rows[k]["runs"]]
        return f"{fmt.format(min(v))}-{fmt.format(max(v))}"

    lines = ["| model | file | b/w | MatMulNBits | session RSS | load | latency | cosine |",
             "|---|---|---|---|---|---|---|---|"]
    for k in models:
        b = rows[k]["bits_per_weight"]
        lines.append(f"| {k} | {rows[k]['file_mib']:.1f} MiB | {'-' if b is None else f'{b:.2f}'} | "
                     f"{rows[k]['matmulnbits']} | +{span(k, 'rss_mib', '{:.0f}')} MiB | "
                     f"{span(k, 'load_s', '{:.2f}')} s | {span(k, 'latency_ms', '{:.1f}')} ms | "
                     f"{rows[k]['cosine']:.4f} |")
    lines.append(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
                 f"{args.rounds} rounds, one thread, 32 tokens, median of 50 runs")
    table = "\n".join(lines)
    open(os.path.join(args.out, "table.md"), "w").write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Latency and resident memory of the LUT form against the original and the decode form.

Builds single-MatMul models (768x768 and 4096x4096 fp32, symbolic batch) and takes
fixtures/models/minilm_l3.onnx; rewrites each with `--subspaces` (decode form) and
`--form lut` with the same particles; then, for every model, form and batch size, in
a fresh process per case, measures the resident memory after the session is created
and the median latency, in onnxruntime (1 thread) and tract (one thread, through
`cargo bench --bench tract_latency`). With --formulations it first times the
equivalent standard-op formulations of the lookup this form chose among.

Usage: benches/lut.py WORK_DIR [--dims 4] [--bits 4] [--lut-gather rows|elements]
                        [--models 768,4096,minilm_l3] [--formulations]
       (run with the Python that has numpy, onnx and onnxruntime; cargo builds first)
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MILLIS = 1500  # time spent measuring each case, at least 3 runs


def rss_kib(key="VmRSS:"):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])


def ort_case(path, batch, seq):
    """In a child process: session memory and latency in onnxruntime, one thread."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    rng = np.random.default_rng(0)
    import onnx

    model = onnx.load(path, load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    feed = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        t = i.type.tensor_type
        shape = [d.dim_value if d.dim_value > 0 else (batch if k == 0 else seq) for k, d in enumerate(t.shape.dim)]
        feed[i.name] = rng.standard_normal(shape).astype(np.float32) if t.elem_type == 1 else np.ones(shape, np.int64)
    del model
    before = rss_kib()
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    after = rss_kib()
    s.run(None, feed)
    times, start = [], time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < MILLIS / 1e3:
        t = time.perf_counter()
        s.run(None, feed)
        times.append((time.perf_counter() - t) * 1e6)
    times.sort()
    peak = rss_kib("VmHWM:")
    return {"rss_kib": after, "session_kib": after - before, "peak_kib": peak, "median_us": times[len(times) // 2], "best_us": times[0]}


def measure(runtime, path, batch, seq):
    if runtime == "ort":
        cmd = [sys.executable, __file__, "--ort-case", str(path), str(batch), str(seq)]
    else:
        cmd = [TRACT, str(path), str(batch), str(seq), str(MILLIS)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1][:120] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def layer(path, n, m):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = (np.random.default_rng(n).standard_normal((n, m)) / np.sqrt(n)).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", m])
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "layer", [x], [y], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def rewrite(src, dst, *flags):
    cmd = [str(ROOT / "target/release/sora-onnx"), "rewrite", str(src), str(dst), "-q", "--no-validate", "--ops", "MatMul,Gemm", *flags]
    subprocess.run(cmd, check=True)


def formulations(work):
    """Times the lookup formulations on a 768x768 layer (random particles)."""
    import onnx
    from onnx import TensorProto as TP, helper, numpy_helper

    def build(kind, n, m, d, k, rng):
        s = n // d
        c = rng.standard_normal((s, k, d)).astype(np.float32)
        idx = rng.integers(0, k, (s, m))
        flat = (idx + (np.arange(s) * k)[:, None]).astype(np.int32)  # [S, M]
        inits, nodes = [], []

        def const(name, a):
            inits.append(numpy_helper.from_array(np.asarray(a), name))
            return name

        def op(op_type, inputs, output, **attrs):
            nodes.append(helper.make_node(op_type, inputs, [output], **attrs))
            return output

        ct = np.ascontiguousarray(c.transpose(0, 2, 1))  # [S, d, K]
        if kind.startswith("gather_bsk") or kind.startswith("elements"):
            t = op("Reshape", ["x", const("s1", [-1, s, 1, d])], "x4")
            t = op("MatMul", [t, const("ct", ct)], "t")
            t = op("Reshape", [t, const("s2", [-1, s * k])], "t2")  # [B, S*K]
        else:
            t = op("Reshape", ["x", const("s1", [-1, s, d])], "x3")
            t = op("Transpose", [t], "x3t", perm=[1, 2, 0])
            t = op("MatMul", [const("c", c), t], "t")
            t = op("Reshape", [t, const("s2", [s * k, -1])], "t2")  # [S*K, B]
        if kind == "gather_bsk[S,M]":  # DESIGN.md as written
            g = op("Gather", [t, const("flat", flat)], "g", axis=1)
            op("ReduceSum", [g, const("ax", [1])], "y", keepdims=0)
        elif kind == "gather_bsk[M,S]":
            g = op("Gather", [t, const("flat", flat.T.copy())], "g", axis=1)
            op("ReduceSum", [g, const("ax", [2])], "y", keepdims=0)
        elif kind.startswith("gather_skb"):
            ms = kind.endswith("[M,S]")
            g = op("Gather", [t, const("flat", flat.T.copy() if ms else flat)], "g", axis=0)
            r = op("ReduceSum", [g, const("ax", [1 if ms else 0])], "r", keepdims=0)
            op("Transpose", [r], "y", perm=[1, 0])
        else:  # GatherElements on [B, S*K], the index expanded to the batch
            ms = kind.endswith("[M,S]")
            b = op("Shape", [t], "sh")
            b = op("Slice", [b, const("b0", [0]), const("b1", [1])], "b")
            shape = op("Concat", [b, const("w", [s * m])], "esh", axis=0)
            index = op("Expand", [const("flat", (flat.T if ms else flat).reshape(1, -1)), shape], "fe")
            g = op("GatherElements", [t, index], "g", axis=1)
            g = op("Reshape", [g, const("s3", [-1, m, s] if ms else [-1, s, m])], "g3")
            op("ReduceSum", [g, const("ax", [2 if ms else 1])], "y", keepdims=0)
        x = helper.make_tensor_value_info("x", TP.FLOAT, ["batch", n])
        y = helper.make_tensor_value_info("y", TP.FLOAT, ["batch", m])
        model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        w = c[np.arange(s)[:, None], idx].transpose(0, 2, 1).reshape(n, m)  # the weight it computes
        return model, w

    kinds = ["gather_bsk[S,M]", "gather_bsk[M,S]", "gather_skb[S,M]", "gather_skb[M,S]", "elements[S,M]", "elements[M,S]"]
    print("\n### Lookup formulations, 768x768, latency in us (onnxruntime / tract), 1 thread\n")
    print("| d | K | batch | " + " | ".join(kinds) + " |")
    print("|---|---|---|" + "---|" * len(kinds))
    for d, k in [(2, 16), (4, 16), (4, 256), (8, 256)]:
        for batch in [1, 32]:
            cells = []
            for kind in kinds:
                model, w = build(kind, 768, 768, d, k, np.random.default_rng(0))
                path = work / "formulation.onnx"
                onnx.save(model, str(path))
                a, b = measure("ort", path, batch, 1), measure("tract", path, batch, 1)
                cells.append(f"{a.get('median_us', 0):.0f} / {b.get('median_us', 0):.0f}")
            print(f"| {d} | {k} | {batch} | " + " | ".join(cells) + " |", flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("work", type=Path)
    p.add_argument("--dims", default="4", help="comma-separated --dim values for the LUT form")
    p.add_argument("--bits", default="4", help="comma-separated --bits values")
    p.add_argument("--lut-gather", default="rows", help="rows or elements (the LUT form's --lut-gather)")
    p.add_argument("--formulations", action="store_true")
    p.add_argument("--models", default="768,4096,minilm_l3")
    args = p.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    built = subprocess.run(["cargo", "bench", "--bench", "tract_latency", "--no-run", "--message-format=json"], cwd=ROOT, check=True, capture_output=True, text=True)
    global TRACT
    TRACT = [json.loads(l)["executable"] for l in built.stdout.splitlines() if '"executable":"' in l and "tract_latency" in l][-1]
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}, 1 thread; tract-onnx 0.23, 1 thread; load average {os.getloadavg()}")
    if args.formulations:
        formulations(work)
    print("\n| model | form | file bytes | batch | ORT us | ORT RSS MiB after session (session's share) / peak | tract us | tract RSS MiB after session / peak |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        if name == "minilm_l3":
            src, seq = ROOT / "fixtures/models/minilm_l3.onnx", 32
        else:
            src, seq = work / f"layer{name}.onnx", 1
            if not src.exists():
                layer(src, int(name), int(name))
        cases = [("original", src)]
        for dim in args.dims.split(","):
            for bits in args.bits.split(","):
                flags = ["--dim", dim, "--bits", bits]
                dec, lut = work / f"{src.stem}.d{dim}b{bits}.decode.onnx", work / f"{src.stem}.d{dim}b{bits}.lut.onnx"
                rewrite(src, dec, "--subspaces", *flags)
                rewrite(src, lut, "--form", "lut", "--lut-gather", args.lut_gather, *flags)
                cases += [(f"decode d={dim} K={2 ** int(bits)}", dec), (f"lut {args.lut_gather} d={dim} K={2 ** int(bits)}", lut)]
        for batch in [1, 32]:
            for form, path in cases:
                a, b = measure("ort", path, batch, seq), measure("tract", path, batch, seq)
                ort_cell = f"{a['median_us']:.0f}" if "median_us" in a else a["error"]
                tract_cell = f"{b['median_us']:.0f}" if "median_us" in b else b["error"]
                mem = f"{a['rss_kib'] / 1024:.0f} (+{a['session_kib'] / 1024:.0f}) / {a['peak_kib'] / 1024:.0f}" if "rss_kib" in a else "-"
                tmem = f"{b['rss_kib'] / 1024:.0f} / {b['peak_kib'] / 1024:.0f}" if "rss_kib" in b else "-"
                print(f"| {name} | {form} | {path.stat().st_size} | {batch} | {ort_cell} | {mem} | {tract_cell} | {tmem} |", flush=True)
    print(f"\nload average at the end {os.getloadavg()}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--ort-case":
        print(json.dumps(ort_case(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()

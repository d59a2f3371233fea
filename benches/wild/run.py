#!/usr/bin/env python3
"""Rewrite every benchmark model with a sora-onnx binary and judge the result by task
metrics on real inputs.

    run.py BINARY [--flags "..."] [--models a,b] [--out DIR] [--timeout 300] [--reeval]

(a single flag needs the = form: --flags=--no-validate)

For each model of fixtures/wild/models.json:
  BINARY rewrite MODEL OUT/NAME.onnx --report OUT/NAME.report.json [FLAGS] [--input-dim ...]
(the --input-dim bindings come from the manifest), with a timeout; records the exit code
(and the last stderr line for a panic, 101, or a timeout), wall time, input/output
bytes, size ratio, bits per weight, the proof's verdict and largest output rel_l2, and the
number of rewritten tensors. If an output was written: onnx.checker.check_model
(full_check), then benches/wild/evaluate.py's task metric against the original.

Writes OUT/results.json, OUT/table.md (printed) and OUT/summary.md (the README's table:
each task metric against its threshold, and the median size ratio of the models that
were compressed). Verdicts: ok
when the task metric meets the manifest threshold, BROKEN when it misses, FAIL when
no usable model came out (checker or onnxruntime error, other exit codes), REFUSED for
exit 2 (the binary rejected the input), PANIC for 101, TIMEOUT; "-" when the binary
exited 0 and wrote nothing.

Missing .npz files are made first with fixtures/wild/make_npz.py (they need the
original models: fixtures/wild/fetch.py and fixtures/fetch_models.py).
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate as ev  # noqa: E402


def ensure_npz(names, spec):
    missing = [n for n in names if not (ROOT / spec[n]["eval_npz"]).exists()]
    if missing:
        print(f"making npz for {', '.join(missing)}", file=sys.stderr)
        subprocess.run([sys.executable, str(ROOT / "fixtures" / "wild" / "make_npz.py"), *missing], check=True,
                       stdout=subprocess.DEVNULL)


def last_line(text):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1].strip() if lines else ""


def run_one(binary, name, spec, flags, out, timeout):
    src = ROOT / spec["file"]
    dst_dir = out / name if spec["file"].endswith("/model.onnx") else out
    dst_dir.mkdir(parents=True, exist_ok=True)
    dst = dst_dir / (Path(spec["file"]).name if dst_dir != out else f"{name}.onnx")
    report = out / f"{name}.report.json"
    for p in (dst, report):
        if p.exists():
            p.unlink()
    cmd = [str(binary), "rewrite", str(src), str(dst), "--report", str(report), *flags]
    for d in spec.get("input_dims", []):
        cmd += ["--input-dim", d]
    r = {"model": name, "command": " ".join(shlex.quote(c) for c in cmd)}
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        r["exit"] = p.returncode
        stdout, stderr = p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        r["exit"] = "timeout"
        stdout = (e.stdout or b"").decode("utf-8", "replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = (e.stderr or b"").decode("utf-8", "replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
    r["seconds"] = round(time.time() - t0, 2)
    (out / f"{name}.stdout.txt").write_text(stdout)
    (out / f"{name}.stderr.txt").write_text(stderr)
    if r["exit"] != 0:
        r["error"] = last_line(stderr) or last_line(stdout)
    r["input_bytes"] = sum(f.stat().st_size for f in src.parent.glob(src.name + "*")) if src.name == "model.onnx" \
        else src.stat().st_size
    if report.exists():
        rep = json.loads(report.read_text())
        val = rep.get("validation") or {}
        outs = val.get("outputs") or []
        r.update({
            "report_input_bytes": rep.get("input_bytes"), "output_bytes": rep.get("output_bytes"),
            "bits_per_weight": rep.get("bits_per_weight"), "tensors": len(rep.get("tensors") or []),
            "skipped": len(rep.get("skipped") or []),
            "proof": None if not val else (val.get("verdict") or ("passed" if val.get("passed") else "missed")),
            "proof_rel_l2": max((o.get("rel_l2") or 0.0) for o in outs) if outs else None,
            "worst_tensors": sorted(((t.get("sqnr_db"), t["name"], t.get("bits")) for t in rep.get("tensors") or []
                                     if t.get("sqnr_db") is not None), key=lambda x: x[0])[:3],
        })
    if dst.exists():
        r["written"] = True
        r["written_bytes"] = sum(f.stat().st_size for f in dst.parent.glob(dst.name + "*"))
        check(r, src, dst)
        try:
            r["task"] = ev.evaluate(src, dst, name)
        except Exception as e:
            r["task"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
    else:
        r["written"] = False
    return r


def checker(path):
    import onnx
    try:
        onnx.checker.check_model(str(path), full_check=True)
        return "ok"
    except Exception as e:
        return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def check(r, src, dst):
    """onnx.checker (full_check) on the output; an error the original has too is recorded
    as such and does not fail the rewrite (e.g. isnet's nodes are not topologically sorted
    in the file as shipped)."""
    r["checker"] = checker(dst)
    if r["checker"] != "ok":
        orig = checker(src)
        if orig == r["checker"]:
            r["checker"] = "ok (the original fails it too: " + orig + ")"


def verdict(r):
    if r["exit"] == "timeout":
        return "TIMEOUT"
    if r["exit"] == 101:
        return "PANIC"
    if r["exit"] == 2:
        return "REFUSED"
    if r["exit"] not in (0, 1) or (r.get("written") and not str(r.get("checker", "")).startswith("ok")):
        return "FAIL"
    t = r.get("task")
    if not r.get("written"):
        return "-" if r["exit"] == 0 else "FAIL"
    if not t or "error" in t:
        return "FAIL"
    return "ok" if t["ok"] else "BROKEN"


def fmt_bytes(n):
    if n is None:
        return "?"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def table(results):
    rows = ["| model | exit | time s | size before → after (ratio) | b/w | proof says | task metric | verdict |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        ex = str(r["exit"])
        before = r["input_bytes"]
        after = r.get("written_bytes")
        size = f"{fmt_bytes(before)} → {fmt_bytes(after)} ({before / after:.2f}x)" if after else f"{fmt_bytes(before)} → (none)"
        bw = f"{r['bits_per_weight']:.2f}" if r.get("bits_per_weight") else "-"
        if r.get("proof"):
            proof = f"{r['proof']} (rel_l2 {r['proof_rel_l2']:.3g})" if r.get("proof_rel_l2") is not None else r["proof"]
        else:
            proof = "-"
        t = r.get("task") or {}
        if "value" in t:
            metric = f"{t['metric']} {t['value']:.4g}"
            if t["task"] == "ocr_ctc":
                metric += f", CER {t['details']['char_error']:.3g}"
        elif "error" in t:
            metric = "error: " + t["error"][:60]
        else:
            metric = (r.get("error") or "")[:70]
        rows.append(f"| {r['model']} | {ex} | {r['seconds']:.1f} | {size} | {bw} | {proof} | {metric} | {verdict(r)} |")
    return "\n".join(rows)


# Metrics where lower is better.
LOWER_IS_BETTER = {"dtw_log_mel_db", "max_abs_error_over_y_range"}


def summary(results):
    rows = ["| model | task | before → after | ratio | b/w | task metric on real inputs (pass) | proof | time s |",
            "|---|---|---|---|---|---|---|---|"]
    ratios = []
    for r in results:
        t = r.get("task") or {}
        before, after = r["input_bytes"], r.get("written_bytes")
        if not after or "value" not in t:
            rows.append(f"| {r['model'].removeprefix('wild_')} | - | {fmt_bytes(before)} → (none) | - | - | "
                        f"{verdict(r)} | - | {r['seconds']:.1f} |")
            continue
        copy = after == before
        if not copy:
            ratios.append(before / after)
        bw = f"{r['bits_per_weight']:.2f}" if r.get("bits_per_weight") else "-"
        cmp = "≤" if t["metric"] in LOWER_IS_BETTER else "≥"
        passed = "ok" if t["ok"] else "**missed**"
        proof = "copy" if copy else (r.get("proof") or "-")
        rows.append(f"| {r['model'].removeprefix('wild_')} | {t['task']} | {fmt_bytes(before)} → {fmt_bytes(after)} | "
                    f"{before / after:.2f}x | {bw} | {t['metric']} {t['value']:.4g} ({cmp} {t['threshold']}: {passed}) | "
                    f"{proof} | {r['seconds']:.1f} |")
    if ratios:
        rows += ["", f"Median size ratio over the {len(ratios)} compressed models: {statistics.median(ratios):.2f}x."]
    return "\n".join(rows)


def write_tables(out, results):
    md = table(results)
    (out / "table.md").write_text(md + "\n")
    (out / "summary.md").write_text(summary(results) + "\n")
    print(md)


def reeval(out, spec):
    doc = json.loads((out / "results.json").read_text())
    ensure_npz([r["model"] for r in doc["results"]], spec)
    for r in doc["results"]:
        name = r["model"]
        src = ROOT / spec[name]["file"]
        dst = (out / name / Path(spec[name]["file"]).name) if spec[name]["file"].endswith("/model.onnx") \
            else out / f"{name}.onnx"
        if r.get("written") and dst.exists():
            check(r, src, dst)
            try:
                r["task"] = ev.evaluate(src, dst, name)
            except Exception as e:
                r["task"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
        r["verdict"] = verdict(r)
        print(f"{name}: verdict {r['verdict']}", file=sys.stderr, flush=True)
    doc["reevaluated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (out / "results.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    write_tables(out, doc["results"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary")
    ap.add_argument("--flags", default="", help='extra rewrite flags, e.g. "--bits 8"')
    ap.add_argument("--models", help="comma-separated names (default: all of models.json)")
    ap.add_argument("--out", default=str(ROOT / "bench-out" / "wild"), help="output folder")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--reeval", action="store_true",
                    help="do not run the binary: re-run the task metrics on the models already in OUT "
                         "(after a change of inputs or metrics) and rewrite OUT/results.json and table.md")
    a = ap.parse_args()
    spec = ev.manifest()
    if a.reeval:
        return reeval(Path(a.out), spec)
    names = a.models.split(",") if a.models else list(spec)
    for n in names:
        if n not in spec:
            sys.exit(f"unknown model {n}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ensure_npz(names, spec)
    flags = shlex.split(a.flags)
    results = []
    for n in names:
        r = run_one(Path(a.binary).resolve(), n, spec[n], flags, out, a.timeout)
        r["verdict"] = verdict(r)
        results.append(r)
        print(f"{n}: exit {r['exit']} {r['seconds']} s, verdict {r['verdict']}", file=sys.stderr, flush=True)
        (out / "results.json").write_text(json.dumps({"binary": str(a.binary), "flags": a.flags, "results": results},
                                                     indent=1, ensure_ascii=False) + "\n")
    write_tables(out, results)


if __name__ == "__main__":
    main()

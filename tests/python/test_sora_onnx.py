"""The Python package: the console script, rewrite/inspect/validate, and errors.

Run by scripts/test.sh in a fresh venv where `pip install .` put the wheel.
SORA_ONNX_CLI names the cargo-built binary the results are compared with.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

import sora_onnx

ROOT = Path(__file__).resolve().parents[2]
WAKEWORD = ROOT / "fixtures/models/wakeword_mlp.onnx"
MINILM = ROOT / "fixtures/models/minilm_l3.onnx"
SCRIPT = Path(sys.executable).parent / "sora-onnx"
CLI = os.environ.get("SORA_ONNX_CLI") or shutil.which("sora-onnx")


def test_console_script_rewrites_the_wakeword_model(tmp_path):
    out = tmp_path / "out.onnx"
    run = subprocess.run(
        [SCRIPT, "rewrite", WAKEWORD, out], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert f"wrote {out}" in run.stdout
    assert out.stat().st_size < WAKEWORD.stat().st_size / 2


def test_console_script_keeps_exit_codes_and_messages(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    run = subprocess.run(
        [SCRIPT, "inspect", junk], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: {junk}"), run.stderr


def test_minilm_from_onnx_matches_the_cli_byte_for_byte(tmp_path):
    model = onnx.load(str(MINILM))
    rewritten, report = sora_onnx.rewrite(model, bits=4)
    assert isinstance(rewritten, onnx.ModelProto)
    out, cli_report = tmp_path / "cli.onnx", tmp_path / "cli.json"
    run = subprocess.run(
        [CLI, "rewrite", MINILM, out, "--bits", "4", "--report", cli_report, "--quiet"],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    assert rewritten.SerializeToString() == out.read_bytes()
    expected = json.loads(cli_report.read_text())
    assert report["bits_per_weight"] == expected["bits_per_weight"]
    assert report["validation"]["verdict"] == expected["validation"]["verdict"]


def test_bytes_and_paths_give_the_same_model():
    from_path, report = sora_onnx.rewrite(WAKEWORD, no_validate=True)
    from_str, _ = sora_onnx.rewrite(str(WAKEWORD), no_validate=True)
    from_bytes, _ = sora_onnx.rewrite(WAKEWORD.read_bytes(), no_validate=True)
    assert isinstance(from_bytes, bytes)
    assert from_path == from_str == from_bytes
    assert report["validation"] is None
    onnx.checker.check_model(onnx.load_from_string(from_bytes))


def test_inspect_and_validate_return_dicts():
    inspection = sora_onnx.inspect(WAKEWORD, bits=3)
    assert isinstance(inspection, dict)
    assert "graph" in sora_onnx.inspect(WAKEWORD, relations="dot")
    rewritten, _ = sora_onnx.rewrite(WAKEWORD, no_validate=True)
    proof = sora_onnx.validate(WAKEWORD, rewritten, samples=2)
    assert isinstance(proof, dict)
    assert proof["verdict"] == "measured"
    assert sora_onnx.validate(WAKEWORD, WAKEWORD, max_rel_error=1e-6)["verdict"] == "proved"


def test_options_become_the_clis_flags(tmp_path):
    args = sora_onnx._arguments(
        "rewrite",
        {
            "bits": 3,
            "input_dim": {"n": 3, "m": 4},
            "ops": ["MatMul", "Gemm"],
            "include": ["a*", "b*"],
            "input_value": [("x", [1, 2])],
            "lossless": True,
            "force": False,
            "max_rel_error": None,
            "calibration": tmp_path / "c.npz",
        },
        str(tmp_path),
    )
    assert args == [
        "--bits", "3", "--input-dim", "n=3", "--input-dim", "m=4",
        "--ops", "MatMul,Gemm", "--include", "a*", "--include", "b*",
        "--input-value", "x=1,2", "--lossless", "--calibration", str(tmp_path / "c.npz"),
    ]


def test_calibration_arrays_are_saved_as_npz():
    numpy = pytest.importorskip("numpy")
    model = onnx.load(str(WAKEWORD))
    name = model.graph.input[0].name
    dims = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    samples = numpy.random.default_rng(0).standard_normal([8] + dims, dtype=numpy.float32)
    rewritten, report = sora_onnx.rewrite(model, calibration={name: samples}, no_validate=True)
    assert isinstance(rewritten, onnx.ModelProto)
    assert report["tensors"]


def test_bad_input_raises_with_the_clis_message():
    with pytest.raises(sora_onnx.InvalidModelError, match="model.onnx"):
        sora_onnx.rewrite(b"not a model")
    with pytest.raises(sora_onnx.InvalidModelError, match="missing.onnx"):
        sora_onnx.inspect("missing.onnx")
    with pytest.raises(TypeError, match="'bitz'"):
        sora_onnx.rewrite(WAKEWORD, bitz=4)
    with pytest.raises(TypeError, match="'report'"):
        sora_onnx.rewrite(WAKEWORD, report="r.json")
    with pytest.raises(TypeError, match="True or False"):
        sora_onnx.rewrite(WAKEWORD, lossless="yes")
    with pytest.raises(TypeError, match="path, bytes"):
        sora_onnx.inspect(42)
    with pytest.raises(sora_onnx.UsageError, match="--bits"):
        sora_onnx.rewrite(WAKEWORD, bits="x")
    with pytest.raises(sora_onnx.InvalidModelError, match="--bits must be 1..=8"):
        sora_onnx.rewrite(WAKEWORD, bits=9)
    assert issubclass(sora_onnx.UsageError, ValueError)


def test_a_missed_bound_raises_proof_error_with_the_report():
    with pytest.raises(sora_onnx.ProofError, match="max-rel-error") as caught:
        sora_onnx.rewrite(WAKEWORD, bits=1, max_rel_error=1e-9)
    assert caught.value.report["validation"]["verdict"] == "failed"
    rewritten, report = sora_onnx.rewrite(WAKEWORD, bits=1, max_rel_error=1e-9, force=True)
    assert report["validation"]["verdict"] == "failed"


def test_an_unproven_rewrite_is_returned_with_a_warning():
    with pytest.warns(sora_onnx.UnprovenWarning, match="unproven"):
        _, report = sora_onnx.rewrite(WAKEWORD, max_rel_error=0.5, proof_seconds=0)
    assert report["validation"]["verdict"] == "unproven"


def test_qdq_form_from_python_upgrades_and_proves_through_the_twin():
    model = onnx.load(str(WAKEWORD))
    rewritten, report = sora_onnx.rewrite(model, form="qdq", bits=8, min_elements=0)
    onnx.checker.check_model(rewritten, full_check=True)
    assert rewritten.opset_import[0].version == 21
    assert report["opset_upgrade"] == {"from": 13, "to": 21, "rewritten": {"ReduceMean": 4}}
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("DequantizeLinear") == 3
    assert report["validation"]["folded_dequantize"] == 3

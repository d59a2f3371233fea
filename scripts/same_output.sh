#!/usr/bin/env bash
# Shows that two builds of sora-onnx write the same bytes: rewrites the fixture and
# real models under a spread of flags (every form, sharing, lossless, outliers,
# vectors, calibration, allocation, compensation) with both binaries and compares the
# output models byte for byte, and the reports with their timings removed.
#
# Usage: scripts/same_output.sh BASE_BINARY NEW_BINARY [WORK_DIR]
#   e.g. build the base commit in a worktree, then
#   scripts/same_output.sh /tmp/base/release/sora-onnx target/release/sora-onnx
# Needs the models fixtures/fetch_models.py and fixtures/make_int8_folded.py make.
# Exits 1 if any case differs.
set -euo pipefail
cd "$(dirname "$0")/.."

base=$1
new=$2
work=${3:-target/same-output}
rm -rf "$work"
mkdir -p "$work"

m=fixtures/models
wake=$m/wakeword_mlp.onnx
minilm=$m/minilm_l3.onnx
magika=$m/magika.onnx
minilm_calib=fixtures/sentences/minilm_calib.npz
magika_calib=fixtures/magika/calib.npz

# name | model | flags
cases=(
  "wake-default|$wake|"
  "wake-3bit-channel|$wake|--bits 3 --granularity channel"
  "wake-block|$wake|--bits 4 --granularity block:64"
  "wake-f32|$wake|--codebook-type f32 --bits 5"
  "wake-alike|$wake|--share alike --alike-error 10"
  "wake-vectors|$wake|--dim 2 --stages 2 --bits 6"
  "wake-lut|$wake|--form lut --dim 4 --bits 4"
  "wake-lut-elements|$wake|--form lut --dim 4 --lut-gather elements"
  "wake-subspaces|$wake|--subspaces --dim 8"
  "wake-lossless|$wake|--lossless --bits 8"
  "wake-outliers|$wake|--outliers 0.01"
  "wake-fast|$wake|--fit fast"
  "wake-share-none|$wake|--share none --min-elements 100"
  "wake-exclude|$wake|--min-elements 16 --exclude *Gemm_1* --include *Gemm*"
  "wake-calibrated|$wake|--calibration-random 8"
  "wake-target|$wake|--calibration-random 8 --target-bits 3"
  "wake-small|$wake|--preset small"
  "wake-auto|$wake|--calibration-random 4 --auto --max-rel-error 0.2"
  "wake-all-target|$wake|--min-elements 16 --calibration-random 8 --target-bits 3"
  "wake-all-bias|$wake|--min-elements 16 --calibration-random 8 --bits 3"
  "minilm-default|$minilm|"
  "minilm-matmul|$minilm|--ops MatMul,Gemm --bits 3"
  "minilm-alike|$minilm|--ops MatMul --share alike"
  "minilm-lut|$minilm|--ops MatMul --form lut --dim 4"
  "minilm-quality|$minilm|--ops MatMul,Gemm --preset quality --calibration $minilm_calib"
  "minilm-compensate|$minilm|--ops MatMul,Gemm --calibration $minilm_calib --compensate --target-bits 3 --sensitivity-samples 2"
  "magika-default|$magika|"
  "magika-target|$magika|--calibration $magika_calib --target-bits 3"
  "int8-nothing|$m/minilm_l6_int8.onnx|"
  "int8-lossless|$m/minilm_l6_int8_folded.onnx|--lossless --bits 8"
)

failed=0
for case in "${cases[@]}"; do
  IFS='|' read -r name model flags <<<"$case"
  for which in base new; do
    bin=$base
    [ "$which" = new ] && bin=$new
    # shellcheck disable=SC2086
    "$bin" rewrite "$model" "$work/$name.$which.onnx" -q --no-validate \
      --report "$work/$name.$which.json" $flags
    python3 - "$work/$name.$which.json" <<'EOF'
import json, sys
path = sys.argv[1]
report = json.load(open(path))
report.pop("seconds", None)
json.dump(report, open(path, "w"), indent=1, sort_keys=True)
EOF
  done
  if cmp -s "$work/$name.base.onnx" "$work/$name.new.onnx" &&
     cmp -s "$work/$name.base.json" "$work/$name.new.json"; then
    echo "same  $name"
  else
    echo "DIFF  $name"
    failed=1
  fi
done
exit $failed

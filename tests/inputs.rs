//! Real inputs from what users have: images (resized, normalised, NCHW or NHWC, RGB
//! or BGR, grayscale), a text and its tokenizer (windows with the special tokens, the
//! mask and types), WAV files (mono, resampled, scaled, windows padded), the inputs a
//! source fills (a sample rate, zeros, `--input-value`), and the CLI feeding them to
//! calibration and the proof.

use std::path::Path;
use std::process::Command;

use prost::Message;
use sora_onnx::builder::{Dim, ModelBuilder, float_matrix};
use sora_onnx::inputs::{
    AudioInputs, ImageInputs, ImageLayout, InputDims, InputValues, SampleSource, Samples,
    TextInputs,
};
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::onnx::proto::tensor_proto::DataType;
use tract_onnx::prelude::*;

fn values(t: &Tensor) -> Vec<f64> {
    let t = t.cast_to::<f64>().unwrap();
    t.to_plain_array_view::<f64>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}

/// A model with the given inputs (name, type, dims) and one Identity output of the first.
fn model_with(inputs: &[(&str, DataType, Vec<Dim>)]) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    for (name, ty, dims) in inputs {
        b.input(name, *ty, dims);
    }
    b.node("Identity", &[inputs[0].0], &["y"]);
    b.output_f32("y");
    b.build()
}

fn fixed(dims: &[usize]) -> Vec<Dim<'static>> {
    dims.iter().map(|&d| Dim::Fixed(d)).collect()
}

fn load(model: &ModelProto, source: &SampleSource, values: &InputValues) -> Samples {
    Samples::load(model, source, (&InputDims::new(), values), 0).unwrap()
}

/// Writes a `w x h` image of one colour.
fn png(dir: &Path, name: &str, (w, h): (u32, u32), rgb: [u8; 3]) {
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .save(dir.join(name))
        .unwrap();
}

fn images(dir: &Path) -> ImageInputs {
    ImageInputs {
        dir: dir.to_path_buf(),
        size: None,
        layout: None,
        scale: 1.0 / 255.0,
        mean: vec![0.5],
        std: vec![0.25],
        bgr: false,
        max: 16,
    }
}

#[test]
fn images_are_resized_normalised_and_laid_out() {
    let dir = tempfile::tempdir().unwrap();
    png(dir.path(), "a.png", (4, 4), [255, 0, 51]);
    png(dir.path(), "b.jpg", (6, 2), [0, 0, 0]);
    std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
    let value = |p: f64| (p / 255.0 - 0.5) / 0.25;
    // NCHW [1, 3, 2, 2]: red plane, green plane, blue plane.
    let nchw = model_with(&[("x", DataType::Float, fixed(&[1, 3, 2, 2]))]);
    let s = load(
        &nchw,
        &SampleSource::Images(images(dir.path())),
        &InputValues::new(),
    );
    assert_eq!(s.samples.len(), 2);
    let first = values(&s.samples[0][0]);
    assert_eq!(s.samples[0][0].shape(), &[1, 3, 2, 2]);
    assert_eq!(&first[..4], &[value(255.0); 4]);
    assert_eq!(&first[4..8], &[value(0.0); 4]);
    assert!((first[8] - value(51.0)).abs() < 1e-6);
    // NHWC [1, 2, 2, 3] in BGR: blue, green, red per pixel.
    let nhwc = model_with(&[("x", DataType::Float, fixed(&[1, 2, 2, 3]))]);
    let bgr = ImageInputs {
        bgr: true,
        ..images(dir.path())
    };
    let s = load(&nhwc, &SampleSource::Images(bgr), &InputValues::new());
    let first = values(&s.samples[0][0]);
    assert!((first[0] - value(51.0)).abs() < 1e-6);
    assert_eq!((first[1], first[2]), (value(0.0), value(255.0)));
    // One channel: luma; symbolic height and width take --image-size.
    let gray = model_with(&[(
        "x",
        DataType::Float,
        vec![
            Dim::Fixed(1),
            Dim::Fixed(1),
            Dim::Named("h"),
            Dim::Named("w"),
        ],
    )]);
    let sized = ImageInputs {
        size: Some((3, 5)),
        layout: Some(ImageLayout::Nchw),
        ..images(dir.path())
    };
    let s = load(&gray, &SampleSource::Images(sized), &InputValues::new());
    assert_eq!(s.samples[0][0].shape(), &[1, 1, 3, 5]);
    let luma = 0.299 * 255.0 + 0.114 * 51.0;
    assert!((values(&s.samples[0][0])[0] - value(luma)).abs() < 1e-4);
}

/// A word-level tokenizer over "a".."j" that adds [CLS] and [SEP].
const TOKENIZER: &str = r#"{
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [
    {"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
    {"id": 3, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
  ],
  "normalizer": null,
  "pre_tokenizer": {"type": "Whitespace"},
  "post_processor": {
    "type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {
      "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
      "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
    }
  },
  "decoder": null,
  "model": {"type": "WordLevel", "unk_token": "[UNK]", "vocab": {
    "[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3,
    "a": 4, "b": 5, "c": 6, "d": 7, "e": 8, "f": 9, "g": 10, "h": 11, "i": 12, "j": 13}}
}"#;

#[test]
fn text_is_cut_into_windows_with_special_tokens_mask_and_types() {
    let dir = tempfile::tempdir().unwrap();
    let (text, tokenizer) = (dir.path().join("t.txt"), dir.path().join("tokenizer.json"));
    std::fs::write(&text, "a b c d e f g h i j").unwrap();
    std::fs::write(&tokenizer, TOKENIZER).unwrap();
    let seq = || vec![Dim::Named("batch"), Dim::Named("seq")];
    let model = model_with(&[
        ("input_ids", DataType::Int64, seq()),
        ("attention_mask", DataType::Int64, seq()),
        ("token_type_ids", DataType::Int64, seq()),
    ]);
    let source = SampleSource::Text(TextInputs {
        file: text.clone(),
        tokenizer: tokenizer.clone(),
        window: Some(6),
        max: 16,
    });
    let s = load(&model, &source, &InputValues::new());
    // 10 words, 4 a window between [CLS] and [SEP]: two full windows (the third, of
    // two words, is dropped).
    assert_eq!(s.samples.len(), 2);
    assert_eq!(s.samples[0][0].shape(), &[1, 6]);
    assert_eq!(values(&s.samples[0][0]), vec![2.0, 4.0, 5.0, 6.0, 7.0, 3.0]);
    assert_eq!(
        values(&s.samples[1][0]),
        vec![2.0, 8.0, 9.0, 10.0, 11.0, 3.0]
    );
    assert_eq!(values(&s.samples[0][1]), vec![1.0; 6]);
    assert_eq!(values(&s.samples[0][2]), vec![0.0; 6]);
    // A text shorter than a window is one window, padded and masked.
    std::fs::write(&text, "a b").unwrap();
    let s = load(&model, &source, &InputValues::new());
    assert_eq!(s.samples.len(), 1);
    assert_eq!(values(&s.samples[0][0]), vec![2.0, 4.0, 5.0, 3.0, 0.0, 0.0]);
    assert_eq!(values(&s.samples[0][1]), vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
}

/// Writes a mono WAV of `samples` (int16) at `rate`.
fn wav(path: &Path, rate: u32, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for &s in samples {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

#[test]
fn audio_is_windowed_resampled_scaled_and_its_rate_fed() {
    let dir = tempfile::tempdir().unwrap();
    let ramp: Vec<i16> = (0..250).map(|i| (i * 100) as i16).collect();
    wav(&dir.path().join("a.wav"), 16000, &ramp);
    let model = model_with(&[
        (
            "audio",
            DataType::Float,
            vec![Dim::Fixed(1), Dim::Named("n")],
        ),
        ("sr", DataType::Int64, vec![]),
        ("state", DataType::Float, fixed(&[2, 4])),
    ]);
    let opts = AudioInputs {
        dir: dir.path().to_path_buf(),
        sample_rate: 16000,
        window: Some(100),
        scale: 2.0,
        max: 16,
    };
    let s = load(
        &model,
        &SampleSource::Audio(opts.clone()),
        &InputValues::new(),
    );
    // 250 samples: windows of 100, the last padded with silence.
    assert_eq!(s.samples.len(), 3);
    let third = values(&s.samples[2][0]);
    assert!((third[0] - 2.0 * 20000.0 / 32768.0).abs() < 1e-6);
    assert_eq!(&third[50..], &[0.0; 50]);
    assert_eq!(values(&s.samples[0][1]), vec![16000.0]);
    assert_eq!(values(&s.samples[0][2]), vec![0.0; 8]);
    assert_eq!(
        s.notes,
        ["input 'state' is fed zeros (--input-value state=V sets it)"]
    );
    // At 8 kHz the file is resampled to 16 kHz: twice the samples.
    wav(&dir.path().join("a.wav"), 8000, &ramp);
    let fixed_state: InputValues = [("state".to_string(), vec![0.5])].into();
    let s = load(&model, &SampleSource::Audio(opts), &fixed_state);
    assert_eq!(s.samples.len(), 5);
    assert_eq!(values(&s.samples[0][2]), vec![0.5; 8]);
    assert!(s.notes.is_empty());
}

/// A folder `photos` in `dir` of eight 8x8 PNGs, photo `i` filled with `rgb(i)`.
fn eight_photos(dir: &Path, rgb: impl Fn(u8) -> [u8; 3]) -> std::path::PathBuf {
    let photos = dir.join("photos");
    std::fs::create_dir(&photos).unwrap();
    for i in 0..8u8 {
        png(&photos, &format!("{i}.png"), (8, 8), rgb(i));
    }
    photos
}

#[test]
fn real_inputs_feed_calibration_and_the_proof() {
    let dir = tempfile::tempdir().unwrap();
    let photos = eight_photos(dir.path(), |i| [i * 30, 255 - i * 30, 128]);
    let mut b = ModelBuilder::new(17);
    b.input_f32("image", &[1, 3, 8, 8]);
    b.node("Flatten", &["image"], &["flat"]);
    b.initializer(float_matrix("w", 192, 64, 1));
    b.node("MatMul", &["flat", "w"], &["y"]);
    b.output_f32("y");
    let model = dir.path().join("m.onnx");
    std::fs::write(&model, b.build().encode_to_vec()).unwrap();
    let (out, report) = (dir.path().join("out.onnx"), dir.path().join("r.json"));
    let run = Command::new(env!("CARGO_BIN_EXE_sora-onnx"))
        .args(["rewrite", model.to_str().unwrap(), out.to_str().unwrap()])
        .args(["--images", photos.to_str().unwrap(), "--min-elements", "16"])
        .args(["--report", report.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("real inputs: 8 samples, 6 for calibration and 2 held out for the proof"),
        "{stdout}"
    );
    assert!(stdout.contains("calibration: 6 samples"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
    let proof = &r["validation"];
    assert_eq!(
        (proof["given_inputs"].as_bool(), proof["samples"].as_u64()),
        (Some(true), Some(2))
    );
    assert_eq!(r["tensors"][0]["bias_corrected"], 1);
    assert!(
        stdout.contains("proof in tract (2 given samples,"),
        "{stdout}"
    );
}

#[test]
fn a_weight_calibration_cannot_probe_keeps_the_guards_setting() {
    // Weights in Constant nodes are not probed: no sensitivity curve. With real inputs
    // the allocator sets the probed weight; the Constant's setting is the guard's, as
    // without inputs (not the plain 4 bits of a plan no one set).
    let dir = tempfile::tempdir().unwrap();
    let photos = eight_photos(dir.path(), |i| [i * 30, 90, 255 - i * 30]);
    let mut b = ModelBuilder::new(17);
    b.input_f32("image", &[1, 3, 8, 8]);
    b.node("Flatten", &["image"], &["flat"]);
    b.constant("c", float_matrix("c_value", 192, 64, 1));
    b.node("MatMul", &["flat", "c"], &["h"]);
    b.initializer(float_matrix("w", 64, 64, 2));
    b.node("MatMul", &["h", "w"], &["y"]);
    b.output_f32("y");
    let model = dir.path().join("m.onnx");
    std::fs::write(&model, b.build().encode_to_vec()).unwrap();
    let setting = |real: bool| {
        let (out, report) = (dir.path().join("out.onnx"), dir.path().join("r.json"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sora-onnx"));
        cmd.args(["rewrite", model.to_str().unwrap(), out.to_str().unwrap()])
            .args(["--min-elements", "16", "--no-validate", "--force"])
            .args(["--report", report.to_str().unwrap()]);
        if real {
            cmd.args(["--images", photos.to_str().unwrap()]);
        }
        let run = cmd.output().unwrap();
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap();
        let c = r["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "c");
        let c = c.expect("the Constant is rewritten");
        (c["bits"].as_u64().unwrap(), c["granularity"].clone())
    };
    let guarded = setting(false);
    // A stem of 12288 elements aims at 22 + 1.5 log2(2^20 / 12288) + 9 = 40.6 dB.
    assert!(guarded.0 >= 7, "{guarded:?}");
    assert_eq!(setting(true), guarded);
}

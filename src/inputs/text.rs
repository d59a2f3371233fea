//! Samples from a text file and the model's tokenizer (`--text FILE --tokenizer
//! tokenizer.json`): the text is tokenized once and cut into windows of the model's
//! sequence length (or `--window N`), each with the special tokens the tokenizer adds;
//! `input_ids` get the tokens, `attention_mask` and `token_type_ids` the tokenizer's
//! mask and types, `position_ids` the positions.

use std::path::PathBuf;

use super::fill::{Context, InputValues, constant, fill};
use super::images::names;
use super::{InputDims, Samples, bind, input_specs};
use crate::error::{Error, Result};
use crate::onnx::proto::ModelProto;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Largest text file read, in bytes.
pub const MAX_TEXT_BYTES: u64 = 64 << 20;

/// Window length when neither the model nor `--window` gives one.
pub const DEFAULT_WINDOW: usize = 128;

/// A text and the tokenizer that turns it into the model's input.
#[derive(Clone, Debug, PartialEq)]
pub struct TextInputs {
    /// The text file (UTF-8).
    pub file: PathBuf,
    /// The `tokenizer.json` of the model (Hugging Face `tokenizers` format).
    pub tokenizer: PathBuf,
    /// Tokens per window, where the model does not fix the sequence length.
    pub window: Option<usize>,
    /// Most windows made.
    pub max: usize,
}

/// Samples of `model` with its `input_ids` (or first integer input) fed windows of the
/// text of `opts`, the other inputs filled from the tokenizer's encoding.
pub fn load(
    model: &ModelProto,
    opts: &TextInputs,
    dims: &InputDims,
    values: &InputValues,
) -> Result<Samples> {
    let specs = input_specs(model, dims)?;
    let primary = specs
        .iter()
        .position(|s| s.name == "input_ids")
        .or_else(|| specs.iter().position(|s| !s.datum.is_float()));
    let Some(primary) = primary else {
        return Err(Error::Config(format!(
            "--text: the model has no input_ids or integer input to feed tokens to (inputs: {})",
            names(&specs)
        )));
    };
    let spec = &specs[primary];
    let Some(&declared_len) = spec.declared.last() else {
        return Err(Error::Config(format!(
            "--text: input '{}' is a scalar, not a sequence of tokens",
            spec.name
        )));
    };
    let window = declared_len
        .or(opts.window)
        .unwrap_or(DEFAULT_WINDOW)
        .max(1);
    let mut sizes: Vec<usize> = spec.declared.iter().map(|d| d.unwrap_or(1)).collect();
    *sizes.last_mut().expect("checked above") = window;
    let dims = bind(spec, &sizes, dims);
    let specs = input_specs(model, &dims)?;
    let encodings = windows(opts, window)?;
    let mut notes = Vec::new();
    let mut samples = Vec::new();
    for e in encodings.iter().take(opts.max) {
        let as_f64 = |v: &[u32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<_>>();
        let mut sample = Vec::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            let name = s.name.to_ascii_lowercase();
            let same_length = s.shape.last() == Some(&window);
            sample.push(match () {
                _ if values.contains_key(&s.name) => {
                    fill(s, values, Context::default(), &mut notes)?
                }
                _ if i == primary => constant(s, &as_f64(e.get_ids()))?,
                _ if same_length && name.contains("mask") => {
                    constant(s, &as_f64(e.get_attention_mask()))?
                }
                _ if same_length && name.contains("token_type") => {
                    constant(s, &as_f64(e.get_type_ids()))?
                }
                _ => fill(s, values, Context::default(), &mut notes)?,
            });
        }
        samples.push(sample);
    }
    Ok(Samples::new(&specs, samples, notes))
}

/// The text of `opts` tokenized into windows of `window` tokens (special tokens
/// included): every full window, or the whole text padded when it is shorter.
fn windows(opts: &TextInputs, window: usize) -> Result<Vec<tokenizers::Encoding>> {
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |error| Error::Io { path, error }
    };
    let fail = |what: String| Error::Config(format!("{}: {what}", opts.tokenizer.display()));
    let size = std::fs::metadata(&opts.file).map_err(io(&opts.file))?.len();
    if size > MAX_TEXT_BYTES {
        return Err(Error::Config(format!(
            "{}: {size} bytes, over the {MAX_TEXT_BYTES}-byte limit for text",
            opts.file.display()
        )));
    }
    let text = std::fs::read_to_string(&opts.file).map_err(io(&opts.file))?;
    let mut tokenizer =
        Tokenizer::from_file(&opts.tokenizer).map_err(|e| fail(format!("not a tokenizer: {e}")))?;
    let truncation = TruncationParams {
        max_length: window,
        ..TruncationParams::default()
    };
    tokenizer
        .with_truncation(Some(truncation))
        .map_err(|e| fail(format!("cannot cut windows of {window} tokens: {e}")))?;
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::Fixed(window),
        ..PaddingParams::default()
    }));
    let mut first = tokenizer
        .encode(text.as_str(), true)
        .map_err(|e| fail(format!("cannot tokenize {}: {e}", opts.file.display())))?;
    let rest = first.take_overflowing();
    let full = |e: &tokenizers::Encoding| e.get_attention_mask().iter().all(|&m| m == 1);
    let mut all: Vec<_> = std::iter::once(first).chain(rest).collect();
    if all.len() > 1 {
        all.retain(|e| e.len() == window && full(e));
    }
    if all.iter().all(|e| e.is_empty()) {
        return Err(Error::Config(format!("{}: no tokens", opts.file.display())));
    }
    Ok(all)
}

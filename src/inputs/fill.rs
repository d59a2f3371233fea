//! Values for the model inputs a source of real samples does not make itself: the
//! attention mask, token types and positions of a text model, the sample rate and state
//! of a speech model, and any input the user fixes with `--input-value NAME=V[,V...]`.

use std::collections::HashMap;

use tract_onnx::prelude::*;

use super::InputSpec;
use crate::error::{Error, Result};

/// Values the user fixes, by input name: one value (repeated over the input's shape) or
/// exactly as many as the input has elements.
pub type InputValues = HashMap<String, Vec<f64>>;

/// What a source knows that other inputs may want.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context {
    /// The audio sample rate, for inputs named `sr` or `sample_rate`.
    pub sample_rate: Option<usize>,
}

/// The tensor of `spec`'s shape and type holding `values` (one repeated, or one per
/// element).
pub fn constant(spec: &InputSpec, values: &[f64]) -> Result<Tensor> {
    let n: usize = spec.shape.iter().product();
    let values: Vec<f64> = match values.len() {
        1 => vec![values[0]; n],
        len if len == n => values.to_vec(),
        len => {
            return Err(Error::Config(format!(
                "--input-value {}: {len} values for an input of shape {:?} ({n} elements); give 1 or {n}",
                spec.name, spec.shape
            )));
        }
    };
    let tensor = Tensor::from_shape(&spec.shape, &values)
        .and_then(|t| t.cast_to_dt(spec.datum).map(|t| t.into_owned()));
    tensor.map_err(|e| Error::invalid(format!("cannot build input '{}': {e}", spec.name)))
}

/// What input `spec` is fed when the source does not make it: the user's value if
/// fixed, the sample rate for `sr`/`sample_rate`, ones for a mask, `0..n` along the
/// last axis for position ids, else zeros. Notes the zeros of inputs with no rule.
pub fn fill(
    spec: &InputSpec,
    values: &InputValues,
    context: Context,
    notes: &mut Vec<String>,
) -> Result<Tensor> {
    if let Some(fixed) = values.get(&spec.name) {
        return constant(spec, fixed);
    }
    let name = spec.name.to_ascii_lowercase();
    if let (Some(rate), true) = (
        context.sample_rate,
        matches!(name.as_str(), "sr" | "sample_rate" | "sampling_rate"),
    ) {
        return constant(spec, &[rate as f64]);
    }
    if name.contains("mask") {
        return constant(spec, &[1.0]);
    }
    if name.contains("position") {
        let last = spec.shape.last().copied().unwrap_or(1).max(1);
        let n: usize = spec.shape.iter().product();
        let positions: Vec<f64> = (0..n).map(|i| (i % last) as f64).collect();
        return constant(spec, &positions);
    }
    if !name.contains("token_type") {
        notes.push(format!(
            "input '{}' is fed zeros (--input-value {}=V sets it)",
            spec.name, spec.name
        ));
    }
    constant(spec, &[0.0])
}

/// Parses `NAME=V[,V...]`.
pub fn parse_value(s: &str) -> std::result::Result<(String, Vec<f64>), String> {
    let (name, values) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=V[,V...], got '{s}'"))?;
    let values = values
        .split(',')
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .map_err(|_| format!("'{v}' is not a number"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((name.to_string(), values))
}

//! Samples from a folder of WAV files (`--audio DIR`): each file read as mono (channels
//! averaged), brought to the model's sample rate (linear interpolation), scaled
//! (`--audio-scale`, 1 for [-1, 1] floats, 32768 for models that take int16 values),
//! and cut into windows of the model's input length (or `--window N`), the last one
//! padded with silence. An input named `sr` or `sample_rate` gets the rate; others are
//! filled.

use std::path::{Path, PathBuf};

use tract_onnx::prelude::*;

use super::fill::{Context, InputValues, fill};
use super::images::names;
use super::{InputDims, Samples, bind, files_in, input_specs};
use crate::error::{Error, Result};
use crate::onnx::proto::ModelProto;

/// Most samples (per channel) read from one file: over an hour at 48 kHz.
pub const MAX_AUDIO_SAMPLES: u32 = 1 << 28;

/// WAV files and how to turn them into the model's input.
#[derive(Clone, Debug, PartialEq)]
pub struct AudioInputs {
    /// The folder; its `.wav` files are read in name order.
    pub dir: PathBuf,
    /// The sample rate the model takes.
    pub sample_rate: usize,
    /// Samples per window, where the model does not fix its input length (default one
    /// second).
    pub window: Option<usize>,
    /// Factor on the [-1, 1] samples.
    pub scale: f64,
    /// Most windows made.
    pub max: usize,
}

/// The samples of `path` as mono in [-1, 1], at `rate`.
fn read(path: &Path, rate: usize) -> Result<Vec<f64>> {
    let fail = |what: String| Error::Config(format!("{}: {what}", path.display()));
    let reader = hound::WavReader::open(path).map_err(|e| fail(format!("not a WAV file: {e}")))?;
    let spec = reader.spec();
    if reader.duration() > MAX_AUDIO_SAMPLES || spec.channels == 0 {
        return Err(fail(format!(
            "{} samples of {} channels, over the {MAX_AUDIO_SAMPLES}-sample limit",
            reader.duration(),
            spec.channels
        )));
    }
    let samples: Vec<f64> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .into_samples::<f32>()
            .map(|s| s.map(f64::from))
            .collect::<std::result::Result<_, _>>(),
        hound::SampleFormat::Int => {
            let full = f64::from(1u32 << (spec.bits_per_sample.clamp(1, 32) - 1));
            reader
                .into_samples::<i32>()
                .map(|s| s.map(|v| f64::from(v) / full))
                .collect::<std::result::Result<_, _>>()
        }
    }
    .map_err(|e| fail(format!("cannot read its samples: {e}")))?;
    let channels = usize::from(spec.channels);
    let mono: Vec<f64> = samples
        .chunks(channels)
        .map(|frame| frame.iter().sum::<f64>() / channels as f64)
        .collect();
    Ok(resample(&mono, spec.sample_rate as usize, rate))
}

/// `samples` at rate `from` brought to rate `to` by linear interpolation.
fn resample(samples: &[f64], from: usize, to: usize) -> Vec<f64> {
    if from == to || samples.is_empty() || from == 0 {
        return samples.to_vec();
    }
    let n = (samples.len() as u128 * to as u128 / from as u128) as usize;
    (0..n)
        .map(|i| {
            let at = i as f64 * from as f64 / to as f64;
            let k = at.floor() as usize;
            let t = at - k as f64;
            let a = samples[k.min(samples.len() - 1)];
            let b = samples[(k + 1).min(samples.len() - 1)];
            a + t * (b - a)
        })
        .collect()
}

/// Samples of `model` with its first float input fed windows of the audio of `opts`
/// along its last axis, the other inputs filled.
pub fn load(
    model: &ModelProto,
    opts: &AudioInputs,
    dims: &InputDims,
    values: &InputValues,
) -> Result<Samples> {
    let specs = input_specs(model, dims)?;
    let primary = specs
        .iter()
        .position(|s| s.datum.is_float() && !s.shape.is_empty() && !values.contains_key(&s.name));
    let Some(primary) = primary else {
        return Err(Error::Config(format!(
            "--audio: the model has no float input to feed samples to (inputs: {})",
            names(&specs)
        )));
    };
    let spec = &specs[primary];
    let declared = *spec.declared.last().expect("rank checked");
    let window = declared.or(opts.window).unwrap_or(opts.sample_rate).max(1);
    let mut sizes: Vec<usize> = spec.declared.iter().map(|d| d.unwrap_or(1)).collect();
    *sizes.last_mut().expect("rank checked") = window;
    let dims = bind(spec, &sizes, dims);
    let specs = input_specs(model, &dims)?;
    let per_sample: usize = specs[primary].shape.iter().product();
    let context = Context {
        sample_rate: Some(opts.sample_rate),
    };
    let mut notes = Vec::new();
    let mut samples = Vec::new();
    'files: for file in files_in(&opts.dir, &["wav"])? {
        let audio = read(&file, opts.sample_rate)?;
        for chunk in audio.chunks(per_sample) {
            if samples.len() == opts.max {
                break 'files;
            }
            let mut data: Vec<f32> = chunk.iter().map(|&v| (v * opts.scale) as f32).collect();
            data.resize(per_sample, 0.0);
            let mut sample = Vec::with_capacity(specs.len());
            for (i, s) in specs.iter().enumerate() {
                sample.push(if i == primary {
                    let t = Tensor::from_shape(&s.shape, &data)
                        .and_then(|t| t.cast_to_dt(s.datum).map(|t| t.into_owned()));
                    t.map_err(|e| Error::invalid(format!("cannot build input '{}': {e}", s.name)))?
                } else {
                    fill(s, values, context, &mut notes)?
                });
            }
            samples.push(sample);
        }
    }
    if samples.is_empty() {
        return Err(Error::Config(format!("{}: no samples", opts.dir.display())));
    }
    Ok(Samples::new(&specs, samples, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampling_interpolates_between_samples() {
        assert_eq!(resample(&[0.0, 1.0, 2.0, 3.0], 4, 2), vec![0.0, 2.0]);
        assert_eq!(resample(&[0.0, 2.0], 1, 2), vec![0.0, 1.0, 2.0, 2.0]);
        assert_eq!(resample(&[5.0], 16000, 16000), vec![5.0]);
    }
}

//! The flags of real inputs: a folder of images, a text and its tokenizer, or WAV
//! files, and how to turn them into the model's input.

use std::path::PathBuf;

use clap::Args;

use crate::inputs::{AudioInputs, ImageInputs, ImageLayout, SampleSource, TextInputs};

/// Real inputs, from what users have: they feed the proof (every fourth sample) and
/// calibration (the others).
#[derive(Args, Clone, Debug, Default)]
pub struct InputOptions {
    /// A folder of images (.png, .jpg) for the model's image input.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["text", "audio"])]
    pub images: Option<PathBuf>,
    /// With --images: height and width to resize to where the model does not fix them.
    #[arg(long, value_name = "HxW", value_parser = parse_size)]
    pub image_size: Option<(usize, usize)>,
    /// With --images: the input's layout (default: read from its dims, else NCHW).
    #[arg(long, value_enum)]
    pub layout: Option<ImageLayout>,
    /// With --images: factor on the 0..255 pixels before the mean is taken off.
    #[arg(long, value_name = "F", default_value_t = 1.0 / 255.0)]
    pub pixel_scale: f64,
    /// With --images: mean per channel (or one for all), taken off after scaling.
    #[arg(
        long,
        value_name = "M[,M,M]",
        value_delimiter = ',',
        default_value = "0"
    )]
    pub mean: Vec<f64>,
    /// With --images: standard deviation per channel (or one), divided by last.
    #[arg(
        long,
        value_name = "S[,S,S]",
        value_delimiter = ',',
        default_value = "1"
    )]
    pub std: Vec<f64>,
    /// With --images: channels in BGR order instead of RGB.
    #[arg(long)]
    pub bgr: bool,
    /// A UTF-8 text file for a text model, cut into windows of tokens.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tokenizer",
        conflicts_with = "audio"
    )]
    pub text: Option<PathBuf>,
    /// With --text: the model's tokenizer.json (Hugging Face tokenizers format).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,
    /// With --text or --audio: tokens (or samples) per window where the model does
    /// not fix its sequence length (text default 128, audio one second).
    #[arg(long, value_name = "N")]
    pub window: Option<usize>,
    /// A folder of WAV files for a speech or audio model.
    #[arg(long, value_name = "DIR")]
    pub audio: Option<PathBuf>,
    /// With --audio: the sample rate the model takes (files are resampled to it).
    #[arg(long, value_name = "HZ", default_value_t = 16000)]
    pub sample_rate: usize,
    /// With --audio: factor on the [-1, 1] samples (32768 for int16-valued inputs).
    #[arg(long, value_name = "F", default_value_t = 1.0)]
    pub audio_scale: f64,
    /// Most samples made from --images, --text or --audio.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_samples: usize,
}

impl InputOptions {
    /// The source of real samples these options name, if any.
    pub fn source(&self) -> Option<SampleSource> {
        if let Some(dir) = &self.images {
            return Some(SampleSource::Images(ImageInputs {
                dir: dir.clone(),
                size: self.image_size,
                layout: self.layout,
                scale: self.pixel_scale,
                mean: self.mean.clone(),
                std: self.std.clone(),
                bgr: self.bgr,
                max: self.max_samples,
            }));
        }
        if let (Some(file), Some(tokenizer)) = (&self.text, &self.tokenizer) {
            return Some(SampleSource::Text(TextInputs {
                file: file.clone(),
                tokenizer: tokenizer.clone(),
                window: self.window,
                max: self.max_samples,
            }));
        }
        self.audio.as_ref().map(|dir| {
            SampleSource::Audio(AudioInputs {
                dir: dir.clone(),
                sample_rate: self.sample_rate,
                window: self.window,
                scale: self.audio_scale,
                max: self.max_samples,
            })
        })
    }
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let parsed = s.split_once(['x', 'X']).and_then(|(h, w)| {
        let (h, w) = (h.trim().parse().ok()?, w.trim().parse().ok()?);
        (h > 0 && w > 0).then_some((h, w))
    });
    parsed.ok_or_else(|| format!("expected HxW with both above 0, e.g. 224x224, got '{s}'"))
}

//! Samples from a folder of images (`--images DIR`), decoded, resized and normalised
//! the way the model expects: `value = (pixel * scale - mean[c]) / std[c]` with pixels
//! 0..255, channels RGB (or BGR), laid out NCHW or NHWC.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{ImageReader, Limits};
use tract_onnx::prelude::*;

use super::fill::{Context, InputValues, fill};
use super::{InputDims, InputSpec, Samples, bind, files_in, input_specs};
use crate::error::{Error, Result};
use crate::onnx::proto::ModelProto;

/// Largest image side decoded.
pub const MAX_IMAGE_SIDE: u32 = 16384;

/// How the image input lays out its axes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageLayout {
    /// `[N, C, H, W]`.
    Nchw,
    /// `[N, H, W, C]`.
    Nhwc,
}

/// Images from a folder and how to turn them into the model's input.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageInputs {
    /// The folder; its `.png`, `.jpg` and `.jpeg` files are read in name order.
    pub dir: PathBuf,
    /// Height and width to resize to, where the model does not fix them; else each
    /// image is resized to the first one's size.
    pub size: Option<(usize, usize)>,
    /// The layout; `None` reads it from the input's dims (channels of 1 or 3 on axis
    /// 1 or 3), NCHW when they do not tell.
    pub layout: Option<ImageLayout>,
    /// Factor on the 0..255 pixel values before the mean is taken off.
    pub scale: f64,
    /// Mean per channel (one value for all).
    pub mean: Vec<f64>,
    /// Standard deviation per channel (one value for all).
    pub std: Vec<f64>,
    /// Channels in BGR order instead of RGB.
    pub bgr: bool,
    /// Most images read.
    pub max: usize,
}

/// Decodes `path` (within the size limits) as RGB.
fn decode(path: &Path) -> Result<image::RgbImage> {
    let fail = |what: String| Error::Config(format!("{}: {what}", path.display()));
    let mut reader = ImageReader::open(path)
        .map_err(|error| Error::Io {
            path: path.to_path_buf(),
            error,
        })?
        .with_guessed_format()
        .map_err(|e| fail(format!("cannot read it: {e}")))?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| fail(format!("not a readable image: {e}")))?;
    Ok(image.to_rgb8())
}

/// The value of channel `c` (of `channels`) of an RGB pixel, normalised.
fn channel_value(pixel: &image::Rgb<u8>, c: usize, channels: usize, opts: &ImageInputs) -> f64 {
    let raw = if channels == 1 {
        let [r, g, b] = pixel.0.map(f64::from);
        0.299 * r + 0.587 * g + 0.114 * b
    } else {
        let c = if opts.bgr { 2 - c.min(2) } else { c.min(2) };
        f64::from(pixel.0[c])
    };
    let pick = |v: &[f64]| if v.len() == 1 { v[0] } else { v[c] };
    (raw * opts.scale - pick(&opts.mean)) / pick(&opts.std)
}

/// Samples of `model` with its first float input of rank 4 fed the images of `opts`
/// (`n` per sample when the model fixes a batch of `n`), the other inputs filled.
pub fn load(
    model: &ModelProto,
    opts: &ImageInputs,
    dims: &InputDims,
    values: &InputValues,
) -> Result<Samples> {
    let specs = input_specs(model, dims)?;
    let Some(primary) = specs
        .iter()
        .position(|s| s.datum.is_float() && s.shape.len() == 4)
    else {
        return Err(Error::Config(format!(
            "--images: the model has no float input of rank 4 to feed images to (inputs: {})",
            names(&specs)
        )));
    };
    let spec = &specs[primary];
    let is_channels = |axis: usize| matches!(spec.declared[axis], Some(1 | 3));
    let layout = opts.layout.unwrap_or(if !is_channels(1) && is_channels(3) {
        ImageLayout::Nhwc
    } else {
        ImageLayout::Nchw
    });
    let (c_axis, h_axis, w_axis) = match layout {
        ImageLayout::Nchw => (1, 2, 3),
        ImageLayout::Nhwc => (3, 1, 2),
    };
    let channels = spec.declared[c_axis].unwrap_or(3);
    for (what, v) in [("--mean", &opts.mean), ("--std", &opts.std)] {
        if v.len() != 1 && v.len() != channels {
            return Err(Error::Config(format!(
                "{what} has {} values; the input has {channels} channels (give 1 or {channels})",
                v.len()
            )));
        }
    }
    let files = files_in(&opts.dir, &["png", "jpg", "jpeg"])?;
    let batch = spec.declared[0].unwrap_or(1).max(1);
    let first = decode(&files[0])?;
    let (h, w) = match (spec.declared[h_axis], spec.declared[w_axis], opts.size) {
        (Some(h), Some(w), _) => (h, w),
        (_, _, Some(size)) => size,
        _ => (first.height() as usize, first.width() as usize),
    };
    let mut sizes = [0; 4];
    sizes[0] = batch;
    (sizes[c_axis], sizes[h_axis], sizes[w_axis]) = (channels, h, w);
    let dims = bind(spec, &sizes, dims);
    let specs = input_specs(model, &dims)?;
    let mut notes = Vec::new();
    let mut samples = Vec::new();
    for group in files.chunks(batch).take(opts.max.div_ceil(batch)) {
        if group.len() < batch {
            break;
        }
        let mut data = vec![0f32; batch * channels * h * w];
        for (n, file) in group.iter().enumerate() {
            let image = decode(file)?;
            let image = image::imageops::resize(&image, w as u32, h as u32, FilterType::Triangle);
            for (x, y, pixel) in image.enumerate_pixels() {
                for c in 0..channels {
                    let (y, x) = (y as usize, x as usize);
                    let at = match layout {
                        ImageLayout::Nchw => ((n * channels + c) * h + y) * w + x,
                        ImageLayout::Nhwc => ((n * h + y) * w + x) * channels + c,
                    };
                    data[at] = channel_value(pixel, c, channels, opts) as f32;
                }
            }
        }
        let mut sample = Vec::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            sample.push(if i == primary {
                let t = Tensor::from_shape(&s.shape, &data)
                    .and_then(|t| t.cast_to_dt(s.datum).map(|t| t.into_owned()));
                t.map_err(|e| Error::invalid(format!("cannot build input '{}': {e}", s.name)))?
            } else {
                fill(s, values, Context::default(), &mut notes)?
            });
        }
        samples.push(sample);
    }
    if samples.is_empty() {
        return Err(Error::Config(format!(
            "{}: {} images, fewer than the model's batch of {batch}",
            opts.dir.display(),
            files.len()
        )));
    }
    Ok(Samples::new(&specs, samples, notes))
}

/// The inputs' names, for errors.
pub(super) fn names(specs: &[InputSpec]) -> String {
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    names.join(", ")
}

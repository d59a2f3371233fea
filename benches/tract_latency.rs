//! Latency and memory of one model in tract, for `benches/lut.py`, which runs it once
//! per case in a fresh process: `cargo bench --bench tract_latency -- MODEL.onnx BATCH
//! SEQ MILLIS`. Every input dim that is not a fixed value is BATCH when it is the first
//! dim and SEQ otherwise; float inputs are standard normal, integer inputs are ones
//! (valid token ids and attention masks). Prints one JSON line: resident memory after
//! the session is built and the loaded file freed (`rss_kib`, from /proc/self/status),
//! and the median and best latency in microseconds of as many runs as fit in MILLIS
//! (at least 3). tract runs on one thread.

use std::time::Instant;

use sora_onnx::onnx::load_model;
use sora_onnx::onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
use sora_onnx::onnx::proto::type_proto::Value as TypeValue;
use sora_onnx::rng::Rng;
use sora_onnx::runtime::Session;
use tract_onnx::prelude::{DatumType, Tensor};

/// A memory figure of this process from /proc/self/status in KiB: `VmRSS` (resident
/// now) or `VmHWM` (the most resident so far).
fn status_kib(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let [path, batch, seq, millis] = args.as_slice() else {
        panic!("usage: tract_latency MODEL.onnx BATCH SEQ MILLIS");
    };
    let (batch, seq, millis): (usize, usize, f64) = (
        batch.parse().unwrap(),
        seq.parse().unwrap(),
        millis.parse().unwrap(),
    );
    let model = load_model(std::path::Path::new(path)).unwrap();
    let graph = model.graph.as_ref().unwrap();
    let initializers: Vec<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    let mut rng = Rng::new(0);
    let mut facts = Vec::new();
    let mut feed = Vec::new();
    for input in graph
        .input
        .iter()
        .filter(|i| !initializers.contains(&i.name()))
    {
        let Some(TypeValue::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            panic!("input {} is not a tensor", input.name());
        };
        let dims = t
            .shape
            .as_ref()
            .map(|s| s.dim.as_slice())
            .unwrap_or_default();
        let shape: Vec<usize> = dims
            .iter()
            .enumerate()
            .map(|(i, d)| match d.value {
                Some(DimValue::DimValue(v)) if v > 0 => v as usize,
                _ if i == 0 => batch,
                _ => seq,
            })
            .collect();
        let n: usize = shape.iter().product();
        let tensor = if t.elem_type() == 1 {
            let values: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
            Tensor::from_shape(&shape, &values).unwrap()
        } else {
            Tensor::from_shape(&shape, &vec![1i64; n]).unwrap()
        };
        facts.push((tensor.datum_type(), shape));
        feed.push(tensor);
    }
    let facts: Vec<(DatumType, Vec<usize>)> = facts;
    let session = Session::new(&model, path, &facts).unwrap();
    drop(model);
    // SAFETY: malloc_trim only returns free heap pages to the system.
    unsafe { libc::malloc_trim(0) };
    let rss = status_kib("VmRSS:");
    session.run(&feed).unwrap();
    let budget = Instant::now();
    let mut times = Vec::new();
    while times.len() < 3 || budget.elapsed().as_secs_f64() * 1e3 < millis {
        let start = Instant::now();
        session.run(&feed).unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"rss_kib\": {rss}, \"peak_kib\": {}, \"median_us\": {:.1}, \"best_us\": {:.1}}}",
        status_kib("VmHWM:"),
        times[times.len() / 2],
        times[0]
    );
}

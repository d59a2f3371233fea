//! A stable text dump of a model's graphs, for snapshot tests and for people.
//!
//! One line per input, initializer, node and output, in file order; subgraphs are
//! indented under their node. Tensors of at most [`SHOWN`] elements print their values,
//! larger ones their element count and an FNV-1a hash of their bytes.

use std::fmt::Write;

use crate::onnx::proto::attribute_proto::AttributeType;
use crate::onnx::proto::tensor_shape_proto::dimension::Value as DimValue;
use crate::onnx::proto::type_proto::Value as TypeValue;
use crate::onnx::proto::{AttributeProto, GraphProto, ModelProto, TensorProto, ValueInfoProto};
use crate::onnx::tensor::{FloatType, data_type_name, float_values};

/// Largest tensor whose values are printed.
pub const SHOWN: usize = 32;

/// The dump of a whole model.
pub fn dump(model: &ModelProto) -> String {
    let mut out = String::new();
    let opsets: Vec<String> = model
        .opset_import
        .iter()
        .map(|o| {
            format!(
                "{}:{}",
                if o.domain().is_empty() {
                    "ai.onnx"
                } else {
                    o.domain()
                },
                o.version()
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "model ir {} opset {}",
        model.ir_version(),
        opsets.join(" ")
    );
    if let Some(g) = &model.graph {
        graph(&mut out, g, 0);
    }
    out
}

fn graph(out: &mut String, g: &GraphProto, depth: usize) {
    let pad = "  ".repeat(depth);
    for i in &g.input {
        let _ = writeln!(out, "{pad}input {}", value(i));
    }
    for t in &g.initializer {
        let _ = writeln!(out, "{pad}init {}", tensor(t));
    }
    for n in &g.node {
        let domain = if n.domain().is_empty() {
            String::new()
        } else {
            format!("{}.", n.domain())
        };
        let attrs: Vec<String> = n
            .attribute
            .iter()
            .filter(|a| !is_graph(a))
            .map(attribute)
            .collect();
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" {{{}}}", attrs.join(", "))
        };
        let _ = writeln!(
            out,
            "{pad}{}: {domain}{}({}) -> {}{attrs}",
            n.name(),
            n.op_type(),
            n.input.join(", "),
            n.output.join(", ")
        );
        for a in n.attribute.iter().filter(|a| is_graph(a)) {
            for sub in a.g.iter().chain(&a.graphs) {
                let _ = writeln!(out, "{pad}  {} = graph {}", a.name(), sub.name());
                graph(out, sub, depth + 2);
            }
        }
    }
    for o in &g.output {
        let _ = writeln!(out, "{pad}output {}", value(o));
    }
}

fn is_graph(a: &AttributeProto) -> bool {
    a.g.is_some() || !a.graphs.is_empty()
}

fn value(v: &ValueInfoProto) -> String {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::TensorType(t)) => {
            let shape = t.shape.as_ref().map(|s| {
                let dims: Vec<String> = s
                    .dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(DimValue::DimValue(n)) => n.to_string(),
                        Some(DimValue::DimParam(p)) => p.clone(),
                        None => "?".into(),
                    })
                    .collect();
                format!(" [{}]", dims.join(", "))
            });
            format!(
                "{}: {}{}",
                v.name(),
                data_type_name(t.elem_type()),
                shape.unwrap_or_default()
            )
        }
        _ => v.name().to_string(),
    }
}

fn attribute(a: &AttributeProto) -> String {
    let v = match a.r#type() {
        AttributeType::Int => a.i().to_string(),
        AttributeType::Float => a.f().to_string(),
        AttributeType::String => format!("{:?}", String::from_utf8_lossy(a.s())),
        AttributeType::Ints => format!("{:?}", a.ints),
        AttributeType::Floats => format!("{:?}", a.floats),
        AttributeType::Tensor => a.t.as_ref().map(tensor).unwrap_or_default(),
        other => format!("<{}>", other.as_str_name()),
    };
    format!("{} = {v}", a.name())
}

/// `name: TYPE [dims] = values` or `= <n elements, hash>`.
fn tensor(t: &TensorProto) -> String {
    let count: i64 = t.dims.iter().product();
    let head = format!(
        "{}: {} {:?}",
        t.name(),
        data_type_name(t.data_type()),
        t.dims
    );
    let raw = t.raw_data.as_deref().unwrap_or_default();
    if count as usize > SHOWN || count < 0 {
        return format!("{head} = <{count} elements, fnv {:016x}>", fnv1a(raw));
    }
    let values = if FloatType::from_data_type(t.data_type()).is_some() {
        float_values(t, None)
            .map(|v| v.iter().map(|x| format!("{x:.6}")).collect::<Vec<_>>())
            .ok()
    } else {
        integers(t)
    };
    match values {
        Some(v) => format!("{head} = [{}]", v.join(", ")),
        None => format!(
            "{head} = <{} raw bytes, fnv {:016x}>",
            raw.len(),
            fnv1a(raw)
        ),
    }
}

/// Values of a UINT8, INT32 or INT64 tensor held in raw_data or int64_data.
fn integers(t: &TensorProto) -> Option<Vec<String>> {
    use crate::onnx::proto::tensor_proto::DataType;
    let raw = t.raw_data.as_deref().unwrap_or_default();
    match DataType::try_from(t.data_type()).ok()? {
        DataType::Uint8 => Some(raw.iter().map(u8::to_string).collect()),
        DataType::Uint4 => {
            let count = t.dims.iter().product::<i64>() as usize;
            let nibble = |i: usize| (raw[i / 2] >> (4 * (i % 2))) & 0x0f;
            (raw.len() == count.div_ceil(2))
                .then(|| (0..count).map(|i| nibble(i).to_string()).collect())
        }
        DataType::Int32 => Some(
            raw.chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")).to_string())
                .collect(),
        ),
        DataType::Int64 if raw.is_empty() => {
            Some(t.int64_data.iter().map(i64::to_string).collect())
        }
        DataType::Int64 => Some(
            raw.chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")).to_string())
                .collect(),
        ),
        _ => None,
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

//! The conversions: every signature change of a default-domain op between opsets 7
//! and 21 (the adapters of onnx's `version_converter/convert.h` that are not
//! `CompatibleAdapter`s, checked against the schemas of onnx 1.23), by the opset that
//! made it. Each takes the node as the older opset reads it and returns the change
//! that keeps its meaning at the newer one, or why none does.

use crate::builder::{attr_int, attr_string};
use crate::graph::Names;
use crate::onnx::proto::{AttributeProto, NodeProto, TensorProto};
use crate::onnx::tensor::{FloatType, data_type_name, float_tensor, i64_tensor};

use super::Facts;

/// What to do with a node of one of the listed ops.
pub(super) enum Rule {
    /// Returns the change (empty when the node is fine as it is) or why none keeps its
    /// meaning.
    Convert(fn(&NodeProto, &Facts) -> Result<Change, String>),
    /// No node of the op can be carried over, for this reason.
    Refuse(&'static str),
}

/// What a conversion does to one node.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Change {
    /// Attributes removed, by name.
    drop: Vec<&'static str>,
    /// Attributes added, or replacing those of the same name.
    set: Vec<AttributeProto>,
    /// Constant inputs added: the input slot, the suffix of the initializer's name, and
    /// its value.
    inputs: Vec<(usize, &'static str, TensorProto)>,
    /// How many outputs are kept, when some go.
    outputs: Option<usize>,
}

impl Change {
    /// Applies the change to `node` and returns the new initializers, named
    /// `{first output}.{suffix}` (the node's name or op type when it has no first
    /// output), or the nearest free name.
    pub(super) fn apply(self, node: &mut NodeProto, names: &mut Names) -> Vec<TensorProto> {
        let set: Vec<String> = self.set.iter().map(|a| a.name().to_string()).collect();
        (node.attribute)
            .retain(|a| !self.drop.contains(&a.name()) && !set.iter().any(|s| s == a.name()));
        node.attribute.extend(self.set);
        let base = [node.output.first().map_or("", String::as_str), node.name()]
            .into_iter()
            .find(|b| !b.is_empty())
            .unwrap_or(node.op_type())
            .to_string();
        let mut initializers = Vec::new();
        for (slot, suffix, mut value) in self.inputs {
            let name = names.fresh(&format!("{base}.{suffix}"));
            if node.input.len() <= slot {
                node.input.resize(slot + 1, String::new());
            }
            node.input[slot] = name.clone();
            value.name = Some(name);
            initializers.push(value);
        }
        if let Some(kept) = self.outputs {
            node.output.truncate(kept);
        }
        initializers
    }

    /// Moves the integer-list attribute `name`, if present, to an int64 input at `slot`.
    fn ints_to_input(&mut self, node: &NodeProto, name: &'static str, slot: usize) {
        if let Some(a) = attribute(node, name) {
            self.drop.push(name);
            let value = i64_tensor("", &[a.ints.len()], &a.ints);
            self.inputs.push((slot, name, value));
        }
    }

    /// Moves the float attribute `name`, if present, to a scalar input at `slot` of the
    /// float type of `node`'s first input.
    fn float_to_input(
        &mut self,
        node: &NodeProto,
        facts: &Facts,
        name: &'static str,
        slot: usize,
    ) -> Result<(), String> {
        if let Some(a) = attribute(node, name) {
            self.drop.push(name);
            let value = float_tensor("", &[], input_float_type(node, facts)?, &[a.f() as f64]);
            self.inputs.push((slot, name, value));
        }
        Ok(())
    }

    /// Removes those of the attributes `names` the node has.
    fn drop_present(&mut self, node: &NodeProto, names: &[&'static str]) {
        (self.drop).extend(names.iter().filter(|n| attribute(node, n).is_some()));
    }
}

/// Ops of experimental or early ONNX that no opset defines any more.
pub(super) const REMOVED: &[&str] = &[
    "ImageScaler",
    "Crop",
    "Affine",
    "ParametricSoftplus",
    "ScaledTanh",
    "GivenTensorFill",
    "ConstantFill",
    "GRUUnit",
    "ATen",
    "DynamicSlice",
    "Scale",
];

/// The reductions whose `axes` became an input at opset 18 (ReduceSum's did at 13).
const REDUCE_18: &[&str] = &[
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
];

/// Every conversion, by the opset that changed the op: the driver runs, in this order,
/// those with `from < since <= to`.
#[rustfmt::skip]
pub(super) const CONVERSIONS: &[(&[&str], i64, Rule)] = &[
    (&["BatchNormalization"], 9, Rule::Convert(batch_norm_spatial)),
    (&["Scan"], 9, Rule::Refuse("Scan-8's batch axis and sequence_lens input have no Scan-9 form")),
    (&["Upsample"], 9, Rule::Refuse("its scales became an input at opset 9, and Resize replaces it from opset 10")),
    (&["Dropout"], 10, Rule::Convert(dropout_mask)),
    (&["Slice"], 10, Rule::Convert(slice_inputs)),
    (&["TopK"], 10, Rule::Convert(top_k_input)),
    (&["Upsample"], 10, Rule::Refuse("it is deprecated from opset 10, where Resize replaces it")),
    (&["Clip"], 11, Rule::Convert(clip_inputs)),
    (&["Pad"], 11, Rule::Convert(pad_inputs)),
    (&["Resize"], 11, Rule::Refuse("Resize-10 maps coordinates as no Resize-11 mode is sure to")),
    (&["Scatter"], 11, Rule::Refuse("it is deprecated from opset 11, where ScatterElements replaces it")),
    (&["Dropout"], 12, Rule::Convert(dropout_ratio)),
    (&["Squeeze", "Unsqueeze", "ReduceSum"], 13, Rule::Convert(axes_input)),
    (&["Split"], 13, Rule::Convert(split_input)),
    (&["Softmax", "LogSoftmax", "Hardmax"], 13, Rule::Convert(last_axis)),
    (&["Resize"], 13, Rule::Convert(resize_mode)),
    (&["Erf"], 13, Rule::Convert(erf_type)),
    (&["BatchNormalization"], 14, Rule::Convert(batch_norm_outputs)),
    (&["RoiAlign"], 16, Rule::Convert(roi_align_mode)),
    (REDUCE_18, 18, Rule::Convert(axes_input)),
    (&["Split"], 18, Rule::Convert(split_count)),
    (&["DFT"], 20, Rule::Convert(dft_axis)),
    (&["GridSample"], 20, Rule::Convert(grid_sample_mode)),
    (&["GroupNormalization"], 21, Rule::Refuse("its scale and bias became per channel, not per group, at opset 21")),
];

fn attribute<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name() == name)
}

fn int(node: &NodeProto, name: &str) -> Option<i64> {
    attribute(node, name).map(|a| a.i())
}

fn string<'a>(node: &'a NodeProto, name: &str) -> Option<&'a [u8]> {
    attribute(node, name).map(|a| a.s())
}

fn first_input(node: &NodeProto) -> &str {
    node.input.first().map_or("", String::as_str)
}

/// The float type of `node`'s first input: float32 unless declared otherwise.
fn input_float_type(node: &NodeProto, facts: &Facts) -> Result<FloatType, String> {
    let input = first_input(node);
    match facts.elem_type(input) {
        None => Ok(FloatType::F32),
        Some(t) => FloatType::from_data_type(t).ok_or_else(|| {
            format!(
                "its input '{input}' is {}, not a float type",
                data_type_name(t)
            )
        }),
    }
}

/// BatchNormalization-9: `spatial` (1, statistics per channel) goes; 0 has no form.
fn batch_norm_spatial(node: &NodeProto, _: &Facts) -> Result<Change, String> {
    if int(node, "spatial") == Some(0) {
        return Err("spatial = 0 (statistics per activation) has no form from opset 9".into());
    }
    let mut change = Change::default();
    change.drop_present(node, &["spatial", "is_test"]);
    Ok(change)
}

/// Dropout-10: the mask output became boolean; an unread one goes.
fn dropout_mask(node: &NodeProto, facts: &Facts) -> Result<Change, String> {
    match node.output.get(1).filter(|m| !m.is_empty()) {
        Some(mask) if facts.is_read(mask) => Err(format!(
            "its mask output '{mask}' is read, and the mask became boolean at opset 10"
        )),
        Some(_) => Ok(Change {
            outputs: Some(1),
            ..Change::default()
        }),
        None => Ok(Change::default()),
    }
}

/// Slice-10: `starts`, `ends` and `axes` became inputs.
fn slice_inputs(node: &NodeProto, _: &Facts) -> Result<Change, String> {
    if attribute(node, "starts").is_none() || attribute(node, "ends").is_none() {
        return Err("it has no starts or no ends attribute".into());
    }
    let mut change = Change::default();
    change.ints_to_input(node, "starts", 1);
    change.ints_to_input(node, "ends", 2);
    change.ints_to_input(node, "axes", 3);
    Ok(change)
}

/// TopK-10: `k` became an input of shape [1].
fn top_k_input(node: &NodeProto, _: &Facts) -> Result<Change, String> {
    let k = int(node, "k").ok_or("it has no k attribute")?;
    Ok(Change {
        drop: vec!["k"],
        inputs: vec![(1, "k", i64_tensor("", &[1], &[k]))],
        ..Change::default()
    })
}

/// Clip-11: `min` and `max` became scalar inputs of the input's type.
fn clip_inputs(node: &NodeProto, facts: &Facts) -> Result<Change, String> {
    let mut change = Change::default();
    change.float_to_input(node, facts, "min", 1)?;
    change.float_to_input(node, facts, "max", 2)?;
    Ok(change)
}

/// Pad-11: `pads` became an int64 input, `value` a scalar input of the input's type.
fn pad_inputs(node: &NodeProto, facts: &Facts) -> Result<Change, String> {
    if attribute(node, "pads").is_none() {
        return Err("it has no pads attribute".into());
    }
    let mut change = Change::default();
    change.ints_to_input(node, "pads", 1);
    change.float_to_input(node, facts, "value", 2)?;
    Ok(change)
}

/// Dropout-12: `ratio` became an input, which inference ignores; it goes, and so does
/// an `is_test` of older writers.
fn dropout_ratio(node: &NodeProto, _: &Facts) -> Result<Change, String> {
    let mut change = Change::default();
    change.drop_present(node, &["ratio", "is_test"]);
    Ok(change)
}

/// Squeeze, Unsqueeze, ReduceSum-13 and the other reductions at 18: `axes` became an
/// input (none stays none: every axis, or every axis of size 1).
fn axes_input(node: &NodeProto, _: &Facts) -> Result<Change, String> {
    let mut change = Change::default();
    change.ints_to_input(node, "axes", 1);
    Ok(change)
}

/// Split-13: `split` became an input.
fn split_input(node: &NodeProto, _: &Facts) -> Result<Change, String> {
    let mut change = Change::default();
    change.ints_to_input(node, "split", 1);
    Ok(change)
}

/// Softmax, LogSoftmax and Hardmax-13 work along `axis` alone (default -1), where the
/// older ones coerced the input to 2-D at `axis` (default 1): the same only when it is
/// the last axis.
fn last_axis(node: &NodeProto, facts: &Facts) -> Result<Change, String> {
    let axis = int(node, "axis").unwrap_or(1);
    if axis == -1 {
        return Ok(Change::default());
    }
    let input = first_input(node);
    match facts.rank(input) {
        Some(rank) if axis == rank as i64 - 1 => Ok(Change::default()),
        Some(rank) => Err(format!(
            "axis {axis} is not the last of its rank-{rank} input, and from opset 13 the op no longer flattens the axes after it"
        )),
        None => Err(format!(
            "the rank of its input '{input}' is unknown, so axis {axis} may not be the last, and from opset 13 the op no longer flattens the axes after it"
        )),
    }
}

/// Resize-13 dropped coordinate_transformation_mode `tf_half_pixel_for_nn`.
fn resize_mode(node: &NodeProto, _: &Facts) -> Result<Change, String> {
    match string(node, "coordinate_transformation_mode") {
        Some(b"tf_half_pixel_for_nn") => {
            Err("coordinate_transformation_mode tf_half_pixel_for_nn is gone from opset 13".into())
        }
        _ => Ok(Change::default()),
    }
}

/// Erf-13 takes float types only.
fn erf_type(node: &NodeProto, facts: &Facts) -> Result<Change, String> {
    input_float_type(node, facts).map(|_| Change::default())
}

/// BatchNormalization-14 has no outputs of training statistics as the older ones had.
fn batch_norm_outputs(node: &NodeProto, _: &Facts) -> Result<Change, String> {
    if node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(
            "its outputs beyond Y are training statistics, which changed at opset 14".into(),
        );
    }
    Ok(Change::default())
}

/// RoiAlign-16 added coordinate_transformation_mode, whose default (`half_pixel`) is not
/// the older behaviour (`output_half_pixel`): an absent one is set.
fn roi_align_mode(node: &NodeProto, _: &Facts) -> Result<Change, String> {
    let mut change = Change::default();
    if attribute(node, "coordinate_transformation_mode").is_none() {
        (change.set).push(attr_string(
            "coordinate_transformation_mode",
            "output_half_pixel",
        ));
    }
    Ok(change)
}

/// Split-18 without a `split` input needs `num_outputs`.
fn split_count(node: &NodeProto, _: &Facts) -> Result<Change, String> {
    let mut change = Change::default();
    if node.input.get(1).is_none_or(String::is_empty) {
        (change.set).push(attr_int("num_outputs", node.output.len() as i64));
    }
    Ok(change)
}

/// DFT-20: `axis` (default 1) became a scalar input at slot 2 (default -2).
fn dft_axis(node: &NodeProto, _: &Facts) -> Result<Change, String> {
    let mut change = Change::default();
    change.drop_present(node, &["axis"]);
    let axis = int(node, "axis").unwrap_or(1);
    change
        .inputs
        .push((2, "axis", i64_tensor("", &[], &[axis])));
    Ok(change)
}

/// GridSample-20 renamed the modes `bilinear` and `bicubic` to `linear` and `cubic`.
fn grid_sample_mode(node: &NodeProto, _: &Facts) -> Result<Change, String> {
    let mut change = Change::default();
    let renamed = match string(node, "mode") {
        Some(b"bilinear") => Some("linear"),
        Some(b"bicubic") => Some("cubic"),
        _ => None,
    };
    change
        .set
        .extend(renamed.map(|mode| attr_string("mode", mode)));
    Ok(change)
}

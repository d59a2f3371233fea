//! The probe: the original model in tract with its planned weights turned into model
//! inputs and the activations those weights multiply exposed as extra outputs. One
//! optimized model then serves every calibration run: the original weights, or one
//! weight swapped for its decoding, fed per run.
//!
//! ```text
//! original:  Y = MatMul(X, W)                    W: initializer
//! probe:     Y = MatMul(X, W), outputs += [X]    W: model input, fed each run
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use tract_onnx::prelude::*;

use crate::builder::value_info;
use crate::error::{Error, Result};
use crate::graph::{Constant, ConstantSource, Graph};
use crate::inputs::Samples;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::{GraphProto, ModelProto};
use crate::onnx::tensor::{FloatType, float_values};
use crate::plan::WeightPlan;
use crate::runtime::{Session, datum, float_tensor};
use crate::stats::{ActivationKey, activation};

/// A planned weight fed as probe inputs: the weight and its ties.
#[derive(Clone, Debug)]
pub struct ProbedWeight {
    /// Position of the weight in the plan.
    pub plan_index: usize,
    /// Probe input position of each member (weight first, then ties), and whether
    /// the member is the weight's transpose.
    members: Vec<(usize, bool)>,
    /// The members' original values.
    originals: Vec<Arc<Tensor>>,
    /// Dims of the weight (the first member).
    dims: Vec<usize>,
    /// Its element type.
    float_type: FloatType,
}

/// The original model ready for calibration runs.
pub struct Probe {
    session: Session,
    inputs: usize,
    /// Positions, in a run's result, of the values sensitivity compares.
    pub compared: Vec<usize>,
    /// Where each exposed activation is in a run's result.
    pub activations: HashMap<ActivationKey, usize>,
    /// The weights that can be swapped, in plan order.
    pub weights: Vec<ProbedWeight>,
}

impl Probe {
    /// Builds the probe of the model `graph` indexes (external data already inlined)
    /// for the plan's `weights`, fed `samples`. Weights stored in Constant nodes or
    /// subgraphs are not probed. `compared` names the values sensitivity compares.
    pub fn new(
        graph: &Graph,
        weights: &[WeightPlan],
        samples: &Samples,
        compared: &[String],
    ) -> Result<Self> {
        if let Some(name) = compared.iter().find(|n| graph.resolve(0, n).is_none()) {
            return Err(Error::Config(format!(
                "--sensitivity-output: the model has no value named '{name}'"
            )));
        }
        let mut probe_model: ModelProto = graph.model.clone();
        let g = probe_model
            .graph
            .as_mut()
            .ok_or_else(|| Error::invalid("the model has no graph"))?;
        let mut facts = samples.facts();
        let inputs = facts.len();
        let mut probed = Vec::new();
        let mut moved = HashMap::new();
        for (plan_index, w) in weights.iter().enumerate() {
            let members: Vec<_> = std::iter::once((w.first().weight, false))
                .chain(w.ties.iter().map(|t| (t.weight, t.transposed)))
                .collect();
            let top_level =
                |c: &Constant| c.scope == 0 && matches!(c.source, ConstantSource::Initializer(_));
            if !members.iter().all(|(c, _)| top_level(c)) {
                continue;
            }
            let float_type = w.first().float_type;
            let mut positions = Vec::new();
            let mut originals = Vec::new();
            for (c, transposed) in &members {
                let dims: Vec<usize> = c.tensor.dims.iter().map(|&d| d as usize).collect();
                let values = float_values(c.tensor, None)?;
                originals.push(Arc::new(float_tensor(&values, &dims, float_type)?));
                moved.insert(c.name.to_string(), g.input.len());
                positions.push((facts.len(), *transposed));
                let data_type = DataType::try_from(c.tensor.data_type()).unwrap_or(DataType::Float);
                // An initializer that was also a graph input (IR < 4, --initializer-inputs)
                // keeps one entry: the probe's, after the real inputs.
                g.input.retain(|i| i.name() != c.name);
                g.input.push(value_info(c.name, data_type, None));
                facts.push((datum(float_type), dims));
            }
            probed.push(ProbedWeight {
                plan_index,
                members: positions,
                dims: originals[0].shape().to_vec(),
                originals,
                float_type,
            });
        }
        g.initializer.retain(|t| !moved.contains_key(t.name()));
        let compared = compared.iter().map(|name| expose(g, name)).collect();
        let mut exposed = HashMap::new();
        for p in &probed {
            for key in weights[p.plan_index].patches.iter().filter_map(activation) {
                let position = expose(g, &key.name);
                exposed.insert(key, position);
            }
        }
        let session = Session::new(&probe_model, "probe", &facts)?;
        Ok(Probe {
            session,
            inputs,
            compared,
            activations: exposed,
            weights: probed,
        })
    }

    /// Runs one calibration `sample`, with probed weight `swap.0` replaced by
    /// `swap.1` (from [`ProbedWeight::swapped`]) if given.
    pub fn run(
        &self,
        sample: &[Tensor],
        swap: Option<(usize, &[Arc<Tensor>])>,
    ) -> Result<TVec<TValue>> {
        let mut feed: TVec<TValue> = sample.iter().map(|t| t.clone().into_tvalue()).collect();
        debug_assert_eq!(feed.len(), self.inputs);
        for (i, w) in self.weights.iter().enumerate() {
            let values = match swap {
                Some((j, values)) if j == i => values,
                _ => &w.originals,
            };
            feed.extend(values.iter().map(|t| TValue::from_const(t.clone())));
        }
        self.session.run_values(feed)
    }
}

impl ProbedWeight {
    /// What [`Probe::run`] feeds for this weight when its values are `values` (the
    /// weight's dims, row-major): the weight, and for each tie the same tensor or, for
    /// a transposed tie, its transpose.
    pub fn swapped(&self, values: &[f64]) -> Result<Vec<Arc<Tensor>>> {
        let weight = Arc::new(float_tensor(values, &self.dims, self.float_type)?);
        self.members
            .iter()
            .map(|&(_, transposed)| {
                if !transposed {
                    return Ok(weight.clone());
                }
                let t = Tensor::clone(&weight)
                    .permute_axes(&[1, 0])
                    .map_err(|e| Error::invalid(format!("cannot transpose a tie: {e}")))?;
                Ok(Arc::new(t))
            })
            .collect()
    }
}

/// The position of `name` among `g`'s outputs, added as an output if it is not one.
fn expose(g: &mut GraphProto, name: &str) -> usize {
    match g.output.iter().position(|o| o.name() == name) {
        Some(position) => position,
        None => {
            g.output.push(value_info(name, DataType::Undefined, None));
            g.output.len() - 1
        }
    }
}

//! tract, in one place: loading a model into a runnable session, running it, and
//! converting between tract tensors and plain values.

use prost::Message;
use tract_onnx::prelude::*;

use crate::error::{Error, Result};
use crate::onnx::proto::ModelProto;
use crate::onnx::tensor::FloatType;

/// A model loaded in tract and optimized for fixed input types and shapes.
pub struct Session {
    plan: Arc<TypedRunnableModel>,
    which: String,
}

impl Session {
    /// Loads `model` (called `which` in errors) for inputs of these types and shapes,
    /// in the order the model declares its inputs.
    pub fn new(
        model: &ModelProto,
        which: &str,
        inputs: &[(DatumType, Vec<usize>)],
    ) -> Result<Self> {
        let fail = |action, e: TractError| Error::Tract {
            action,
            model: which.to_string(),
            message: format!("{e:#}").replace('\n', " "),
        };
        let bytes = model.encode_to_vec();
        // Declared intermediate and output shapes may name symbols the concrete input
        // facts conflict with; the proof compares the values computed.
        let mut inference = tract_onnx::onnx()
            .with_ignore_value_info(true)
            .with_ignore_output_shapes(true)
            .model_for_read(&mut bytes.as_slice())
            .map_err(|e| fail("load", e))?;
        for (i, (datum, shape)) in inputs.iter().enumerate() {
            let fact = InferenceFact::dt_shape(*datum, shape);
            inference
                .set_input_fact(i, fact)
                .map_err(|e| fail("load", e))?;
        }
        let plan = inference
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| fail("optimize", e))?;
        Ok(Session {
            plan,
            which: which.to_string(),
        })
    }

    /// Runs the model on one set of inputs.
    pub fn run(&self, feed: &[Tensor]) -> Result<TVec<TValue>> {
        self.run_values(feed.iter().map(|t| t.clone().into()).collect())
    }

    /// Runs the model on one set of input values (shared tensors are not copied).
    pub fn run_values(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>> {
        self.plan.run(inputs).map_err(|e| Error::Tract {
            action: "run",
            model: self.which.clone(),
            message: format!("{e:#}").replace('\n', " "),
        })
    }
}

/// The values of a run's result `value` as f64, row-major.
pub fn values_f64(value: &TValue) -> Result<Vec<f64>> {
    let t = value
        .cast_to::<f64>()
        .map_err(|e| Error::invalid(format!("cannot read a model value: {e}")))?;
    let view = t
        .to_plain_array_view::<f64>()
        .map_err(|e| Error::invalid(format!("cannot read a model value: {e}")))?;
    Ok(view.iter().copied().collect())
}

/// A tensor of `float_type` holding `values` in `dims`.
pub fn float_tensor(values: &[f64], dims: &[usize], float_type: FloatType) -> Result<Tensor> {
    let t = match float_type {
        FloatType::F32 => {
            Tensor::from_shape(dims, &values.iter().map(|&v| v as f32).collect::<Vec<_>>())
        }
        FloatType::F64 => Tensor::from_shape(dims, values),
        FloatType::F16 => Tensor::from_shape(
            dims,
            &values.iter().map(|&v| f16::from_f64(v)).collect::<Vec<_>>(),
        ),
    };
    t.map_err(|e| Error::invalid(format!("cannot build a tensor of shape {dims:?}: {e}")))
}

/// tract's element type for `float_type`.
pub fn datum(float_type: FloatType) -> DatumType {
    match float_type {
        FloatType::F16 => DatumType::F16,
        FloatType::F32 => DatumType::F32,
        FloatType::F64 => DatumType::F64,
    }
}

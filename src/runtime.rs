//! tract, in one place: loading a model into a runnable session, running it, and
//! converting between tract tensors and plain values.
//!
//! tract fails on some real models that onnxruntime runs, sometimes by panicking. Every
//! call into tract here runs behind `catch_unwind` (with the panic message kept, not
//! printed), and a model that does not optimize falls down a ladder: optimized,
//! decluttered, plain typed, and last the untyped inference plan, which evaluates each
//! op as it comes. The first rung that loads is used.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use prost::Message;
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::InferenceSimplePlan;

use crate::error::{Error, Result};
use crate::onnx::proto::ModelProto;
use crate::onnx::tensor::FloatType;

/// How far tract took a model before running it: the rungs of the ladder, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Decluttered and optimized: tract's normal path.
    Optimized,
    /// Decluttered only.
    Decluttered,
    /// Typed, without any rewriting pass.
    Typed,
    /// The untyped inference model, evaluated op by op.
    Inference,
}

impl Level {
    /// The rungs, best first.
    pub const LADDER: [Level; 4] = [
        Level::Optimized,
        Level::Decluttered,
        Level::Typed,
        Level::Inference,
    ];
}

enum Plan {
    Typed(Arc<TypedRunnableModel>),
    Inference(Arc<InferenceSimplePlan>),
}

/// A model loaded in tract for fixed input types and shapes.
pub struct Session {
    plan: Plan,
    which: String,
    /// The rung of the ladder the model loaded at.
    pub level: Level,
}

thread_local! {
    /// Whether a panic on this thread is caught by [`guarded`], so the hook keeps quiet.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// The last caught panic's message and location.
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f` (a call into tract) catching a panic: its message (and where tract
/// panicked) becomes the error, nothing is printed. Errors are flattened to one line.
pub fn guarded<T>(f: impl FnOnce() -> TractResult<T>) -> std::result::Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.get() {
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                CAUGHT.set(Some(format!("{message}{at}")));
            } else {
                previous(info);
            }
        }));
    });
    let was = GUARDED.replace(true);
    let result = catch_unwind(AssertUnwindSafe(f));
    GUARDED.set(was);
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(one_line(&format!("{e:#}"))),
        Err(_) => {
            let message = CAUGHT.take().unwrap_or_else(|| "unknown panic".into());
            Err(one_line(&format!("tract panicked: {message}")))
        }
    }
}

/// `message` on one line, at most 400 characters.
fn one_line(message: &str) -> String {
    let line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(400) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    }
}

impl Session {
    /// Loads `model` (called `which` in errors) for inputs of these types and shapes,
    /// in the order the model declares its inputs, at the best rung of the ladder that
    /// works. The error, if none does, is the optimized rung's.
    pub fn new(
        model: &ModelProto,
        which: &str,
        inputs: &[(DatumType, Vec<usize>)],
    ) -> Result<Self> {
        // The encoded bytes go before the model is optimized: a large model's weights
        // are then held twice at most, not three times.
        let inference = Self::inference(&model.encode_to_vec(), which, inputs)?;
        Self::optimized(inference, which)
    }

    /// [`Session::new`] from the model's encoded bytes.
    pub fn from_bytes(
        bytes: &[u8],
        which: &str,
        inputs: &[(DatumType, Vec<usize>)],
    ) -> Result<Self> {
        Self::optimized(Self::inference(bytes, which, inputs)?, which)
    }

    /// The model in `bytes` as tract loads it, with the input facts set.
    fn inference(
        bytes: &[u8],
        which: &str,
        inputs: &[(DatumType, Vec<usize>)],
    ) -> Result<InferenceModel> {
        guarded(|| {
            // Declared intermediate and output shapes may name symbols the concrete
            // input facts conflict with; the proof compares the values computed.
            let mut model = tract_onnx::onnx()
                .with_ignore_value_info(true)
                .with_ignore_output_shapes(true)
                .model_for_read(&mut &*bytes)?;
            for (i, (datum, shape)) in inputs.iter().enumerate() {
                model.set_input_fact(i, InferenceFact::dt_shape(*datum, shape))?;
            }
            Ok(model)
        })
        .map_err(|message| Error::Tract {
            action: "load",
            model: which.to_string(),
            message,
        })
    }

    /// The best rung of the ladder that `inference` reaches.
    fn optimized(inference: InferenceModel, which: &str) -> Result<Self> {
        let fail = |action, message| Error::Tract {
            action,
            model: which.to_string(),
            message,
        };
        let mut first_error = None;
        for level in Level::LADDER {
            let model = inference.clone();
            let plan = guarded(|| {
                Ok(match level {
                    Level::Optimized => Plan::Typed(model.into_optimized()?.into_runnable()?),
                    Level::Decluttered => {
                        Plan::Typed(model.into_typed()?.into_decluttered()?.into_runnable()?)
                    }
                    Level::Typed => Plan::Typed(model.into_typed()?.into_runnable()?),
                    Level::Inference => Plan::Inference(model.into_runnable()?),
                })
            });
            match plan {
                Ok(plan) => {
                    return Ok(Session {
                        plan,
                        which: which.to_string(),
                        level,
                    });
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(fail("optimize", first_error.unwrap_or_default()))
    }

    /// Runs the model on one set of inputs.
    pub fn run(&self, feed: &[Tensor]) -> Result<TVec<TValue>> {
        self.run_values(feed.iter().map(|t| t.clone().into()).collect())
    }

    /// Runs the model on one set of input values (shared tensors are not copied).
    pub fn run_values(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>> {
        let outputs = guarded(|| match &self.plan {
            Plan::Typed(plan) => plan.run(inputs),
            Plan::Inference(plan) => plan.run(inputs),
        });
        outputs.map_err(|message| Error::Tract {
            action: "run",
            model: self.which.clone(),
            message,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_and_errors_become_one_line_errors() {
        let panicked: std::result::Result<(), String> = guarded(|| panic!("index out of\nbounds"));
        let message = panicked.unwrap_err();
        assert!(
            message.starts_with("tract panicked: index out of bounds at src/runtime.rs:"),
            "{message}"
        );
        let failed: std::result::Result<(), String> =
            guarded(|| Err(anyhow::anyhow!("first\nsecond")));
        assert_eq!(failed.unwrap_err(), "first second");
        assert_eq!(guarded(|| Ok(3)), Ok(3));
    }
}

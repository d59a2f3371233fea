//! Small constructors for ONNX nodes, attributes and whole models: what the rewrite
//! emits, and what tests use to build graphs without spelling out protobuf fields.

use crate::onnx::proto::attribute_proto::AttributeType;
use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::proto::tensor_shape_proto::{Dimension, dimension};
use crate::onnx::proto::type_proto::{Tensor, Value};
use crate::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use crate::onnx::tensor::{FloatType, float_tensor};
use crate::rng::Rng;

/// A node of the default domain.
pub fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    outputs: &[&str],
    attributes: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: Some(op.to_string()),
        name: Some(name.to_string()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attributes,
        ..Default::default()
    }
}

fn attribute(name: &str, kind: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.to_string()),
        r#type: Some(kind as i32),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn attr_int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        i: Some(value),
        ..attribute(name, AttributeType::Int)
    }
}

/// An integer-list attribute.
pub fn attr_ints(name: &str, values: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: values.to_vec(),
        ..attribute(name, AttributeType::Ints)
    }
}

/// A float attribute.
pub fn attr_float(name: &str, value: f32) -> AttributeProto {
    AttributeProto {
        f: Some(value),
        ..attribute(name, AttributeType::Float)
    }
}

/// A float-list attribute.
pub fn attr_floats(name: &str, values: &[f32]) -> AttributeProto {
    AttributeProto {
        floats: values.to_vec(),
        ..attribute(name, AttributeType::Floats)
    }
}

/// A string attribute.
pub fn attr_string(name: &str, value: &str) -> AttributeProto {
    AttributeProto {
        s: Some(value.as_bytes().to_vec()),
        ..attribute(name, AttributeType::String)
    }
}

/// A tensor attribute.
pub fn attr_tensor(name: &str, value: TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(value),
        ..attribute(name, AttributeType::Tensor)
    }
}

/// A graph attribute.
pub fn attr_graph(name: &str, value: GraphProto) -> AttributeProto {
    AttributeProto {
        g: Some(value),
        ..attribute(name, AttributeType::Graph)
    }
}

/// A dimension of a declared input shape.
#[derive(Clone, Copy, Debug)]
pub enum Dim<'a> {
    /// A known size.
    Fixed(usize),
    /// A named symbolic size.
    Named(&'a str),
}

/// A typed value declaration; `dims: None` leaves the shape unknown.
pub fn value_info(name: &str, data_type: DataType, dims: Option<&[Dim]>) -> ValueInfoProto {
    let shape = dims.map(|dims| TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: Some(match d {
                    Dim::Fixed(n) => dimension::Value::DimValue(*n as i64),
                    Dim::Named(s) => dimension::Value::DimParam(s.to_string()),
                }),
                ..Default::default()
            })
            .collect(),
    });
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto {
            value: Some(Value::TensorType(Tensor {
                elem_type: Some(data_type as i32),
                shape,
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A float32 `rows x cols` matrix of deterministic pseudo-random values in about
/// [-1, 1), different for every `seed`.
pub fn float_matrix(name: &str, rows: usize, cols: usize, seed: u64) -> TensorProto {
    float_tensor(
        name,
        &[rows, cols],
        FloatType::F32,
        &pseudo_random(rows * cols, seed),
    )
}

/// `n` deterministic pseudo-random values, uniform in [-1, 1).
pub fn pseudo_random(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| 2.0 * rng.uniform() - 1.0).collect()
}

/// Builds a model (or a subgraph) node by node. Nodes are named `{op}_{n}` in order.
#[derive(Debug, Default)]
pub struct ModelBuilder {
    opset: i64,
    imports: Vec<(String, i64)>,
    graph: GraphProto,
}

impl ModelBuilder {
    /// An empty model importing version `opset` of the default domain.
    pub fn new(opset: i64) -> Self {
        ModelBuilder {
            opset,
            imports: Vec::new(),
            graph: GraphProto::default(),
        }
    }

    /// Also imports version `version` of `domain`.
    pub fn import(&mut self, domain: &str, version: i64) -> &mut Self {
        self.imports.push((domain.to_string(), version));
        self
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, data_type: DataType, dims: &[Dim]) -> &mut Self {
        self.graph
            .input
            .push(value_info(name, data_type, Some(dims)));
        self
    }

    /// Declares a float32 graph input of fixed shape.
    pub fn input_f32(&mut self, name: &str, dims: &[usize]) -> &mut Self {
        let dims: Vec<Dim> = dims.iter().map(|&d| Dim::Fixed(d)).collect();
        self.input(name, DataType::Float, &dims)
    }

    /// Declares a boolean scalar graph input.
    pub fn input_bool(&mut self, name: &str) -> &mut Self {
        self.input(name, DataType::Bool, &[])
    }

    /// Adds an initializer.
    pub fn initializer(&mut self, tensor: TensorProto) -> &mut Self {
        self.graph.initializer.push(tensor);
        self
    }

    /// Adds a `Constant` node whose output `name` is `value`.
    pub fn constant(&mut self, name: &str, value: TensorProto) -> &mut Self {
        self.node("Constant", &[], &[name])
            .attribute
            .push(attr_tensor("value", value));
        self
    }

    /// Adds a node and returns it, for attributes.
    pub fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str]) -> &mut NodeProto {
        let name = format!("{op}_{}", self.graph.node.len());
        self.graph
            .node
            .push(node(op, &name, inputs, outputs, Vec::new()));
        self.graph.node.last_mut().expect("just pushed")
    }

    /// Adds an `If` node with one output.
    pub fn if_node(
        &mut self,
        cond: &str,
        then_branch: GraphProto,
        else_branch: GraphProto,
        output: &str,
    ) -> &mut Self {
        let n = self.node("If", &[cond], &[output]);
        n.attribute.push(attr_graph("then_branch", then_branch));
        n.attribute.push(attr_graph("else_branch", else_branch));
        self
    }

    /// Declares a graph output of unknown shape.
    pub fn output(&mut self, name: &str, data_type: DataType) -> &mut Self {
        self.graph.output.push(value_info(name, data_type, None));
        self
    }

    /// Declares a float32 graph output of unknown shape.
    pub fn output_f32(&mut self, name: &str) -> &mut Self {
        self.output(name, DataType::Float)
    }

    /// The graph alone, named `name` (for a subgraph).
    pub fn build_graph(self, name: &str) -> GraphProto {
        GraphProto {
            name: Some(name.to_string()),
            ..self.graph
        }
    }

    /// A graph named `name` whose one output is `Identity(input)`.
    pub fn passthrough_graph(mut self, name: &str, input: &str) -> GraphProto {
        let output = format!("{name}.out");
        self.node("Identity", &[input], &[&output]);
        self.output_f32(&output);
        self.build_graph(name)
    }

    /// The model (IR version 8).
    pub fn build(self) -> ModelProto {
        ModelProto {
            ir_version: Some(8),
            producer_name: Some("sora-onnx builder".into()),
            opset_import: std::iter::once((String::new(), self.opset))
                .chain(self.imports.iter().cloned())
                .map(|(domain, version)| OperatorSetIdProto {
                    domain: Some(domain),
                    version: Some(version),
                })
                .collect(),
            graph: Some(self.build_graph("main")),
            ..Default::default()
        }
    }
}

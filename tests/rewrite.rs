//! End-to-end rewrites of small built graphs across the rules (each rule's own cases
//! are in tests/rules/): fp16 and double weights, codebook types, granularities,
//! lossless storage, outliers, vectors, sharing and the skip reasons as users read
//! them. Each is checked numerically through tract and its rewritten graph is
//! snapshotted as a text dump.

use sora_onnx::builder::{Dim, ModelBuilder, attr_int, float_matrix, pseudo_random};
use sora_onnx::config::{CodebookType, GranularityChoice, Share};
use sora_onnx::dump::dump;
use sora_onnx::onnx::proto::ModelProto;
use sora_onnx::onnx::proto::tensor_proto::DataType;
use sora_onnx::onnx::tensor::{FloatType, float_tensor, i32_tensor, u8_tensor};
use sora_onnx::particles::Granularity;
use sora_onnx::report::KmeansMethod;
use sora_onnx::rules::{Select, SkipReason};
use sora_onnx::{Config, ProofConfig, Rewritten, Validation, rewrite, validate};

fn config(bits: u32, granularity: Granularity) -> Config {
    Config {
        bits,
        granularity: GranularityChoice::Fixed(granularity),
        select: Select {
            min_elements: 16,
            ..Select::default()
        },
        ..Config::default()
    }
}

/// A matrix of `rows x cols` values drawn from only `distinct` values, so a codebook
/// of that many particles holds it exactly.
fn few_values(rows: usize, cols: usize, distinct: usize, seed: u64) -> Vec<f64> {
    pseudo_random(rows * cols, seed)
        .into_iter()
        .map(|v| ((v + 1.0) * distinct as f64 / 2.0).floor() / distinct as f64 - 0.5)
        .collect()
}

fn prove(original: &ModelProto, rewritten: &Rewritten) -> Validation {
    validate(original, &rewritten.model, &ProofConfig::default()).unwrap()
}

fn matmul_model(weight: sora_onnx::onnx::proto::TensorProto) -> ModelProto {
    let rows = weight.dims[0] as usize;
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[3, rows]);
    b.initializer(weight);
    b.node("MatMul", &["x", "w"], &["y"]);
    b.output_f32("y");
    b.build()
}

#[test]
fn lossless_when_the_weight_has_few_values() {
    let values = few_values(32, 16, 16, 3);
    let model = matmul_model(float_tensor("w", &[32, 16], FloatType::F32, &values));
    let out = rewrite(&model, &config(4, Granularity::Tensor)).unwrap();
    assert_eq!(out.report.tensors[0].mse, 0.0);
    let proof = prove(&model, &out);
    assert_eq!(proof.outputs[0].max_abs, 0.0, "{proof:?}");
}

#[test]
fn more_bits_less_error() {
    let model = matmul_model(float_matrix("w", 64, 32, 4));
    let errors: Vec<f64> = [2, 4, 6, 8]
        .iter()
        .map(|&bits| {
            let out = rewrite(&model, &config(bits, Granularity::Tensor)).unwrap();
            prove(&model, &out).outputs[0].rel_l2
        })
        .collect();
    assert!(errors.windows(2).all(|w| w[1] < w[0] / 3.0), "{errors:?}");
    assert!(errors[3] < 5e-3, "{errors:?}");
}

#[test]
fn half_and_double_weights_keep_their_type() {
    for (ty, data_type) in [
        (FloatType::F16, DataType::Float16),
        (FloatType::F64, DataType::Double),
    ] {
        let values = few_values(16, 16, 8, 10);
        let mut b = ModelBuilder::new(17);
        let dims = [Dim::Fixed(2), Dim::Fixed(16)];
        b.input("x", data_type, &dims);
        b.initializer(float_tensor("w", &[16, 16], ty, &values));
        b.node("MatMul", &["x", "w"], &["y"]);
        b.output_f32("y");
        let model = b.build();
        let out = rewrite(&model, &config(3, Granularity::Tensor)).unwrap();
        // Particles are stored in half precision and cast back to the weight's type.
        assert_eq!(out.report.tensors[0].codebook_dtype, FloatType::F16);
        let g = out.model.graph.as_ref().unwrap();
        let particles = g
            .initializer
            .iter()
            .find(|t| t.name() == "w.particles")
            .unwrap();
        assert_eq!(particles.data_type(), DataType::Float16 as i32);
        let casts_back = g
            .node
            .iter()
            .any(|n| n.op_type() == "Cast" && n.input[0] == "w.particles");
        assert_eq!(casts_back, ty == FloatType::F64, "{ty:?}");
        assert_eq!(prove(&model, &out).outputs[0].max_abs, 0.0, "{ty:?}");
    }
}

#[test]
fn f32_codebooks_on_request() {
    let model = matmul_model(float_matrix("w", 16, 8, 11));
    let f32_config = Config {
        codebook_type: CodebookType::F32,
        ..config(4, Granularity::Channel)
    };
    let out = rewrite(&model, &f32_config).unwrap();
    let t = &out.report.tensors[0];
    assert_eq!(t.codebook_dtype, FloatType::F32);
    let g = out.model.graph.as_ref().unwrap();
    assert!(
        g.node
            .iter()
            .all(|n| n.op_type() != "Cast" || n.input[0] != "w.particles")
    );
    // Half-precision particles save 2 bytes on each of the 8 x 16 particles, less the
    // Cast node that restores the weight's type.
    let f16 = rewrite(&model, &config(4, Granularity::Channel)).unwrap();
    let saved = t.bytes_after - f16.report.tensors[0].bytes_after;
    assert!((8 * 16 * 2 - 80..8 * 16 * 2).contains(&saved), "{saved}");
}

#[test]
fn skip_reasons_name_the_weight() {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.input_f32("dyn", &[16, 16]);
    b.initializer(float_matrix("small", 16, 2, 1));
    b.initializer(float_matrix("big", 16, 16, 2));
    b.initializer(float_matrix("excluded_w", 16, 16, 3));
    b.initializer(float_matrix("also_read", 16, 16, 4));
    b.node("MatMul", &["x", "dyn"], &["a"]);
    b.node("MatMul", &["x", "small"], &["b"]);
    b.node("MatMul", &["x", "excluded_w"], &["c"]);
    b.node("MatMul", &["x", "also_read"], &["d"]);
    b.node("Relu", &["also_read"], &["e"]);
    b.node("MatMul", &["x", "big"], &["f"]);
    b.initializer(i32_tensor("ints", &[16, 16], &[1; 256]));
    b.node("MatMul", &["x", "ints"], &["g"]);
    b.initializer(u8_tensor("q", &[16, 16], vec![3; 256]));
    b.initializer(float_matrix("scale", 1, 1, 5));
    b.node("DequantizeLinear", &["q", "scale"], &["dq"]);
    b.node("MatMul", &["x", "dq"], &["h"]);
    for o in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        b.output_f32(o);
    }
    let model = b.build();
    let config = Config {
        select: Select {
            min_elements: 64,
            names: sora_onnx::Selection::new(&[], &["excluded*".into()]).unwrap(),
            ..Select::default()
        },
        ..Config::default()
    };
    let out = rewrite(&model, &config).unwrap();
    let skipped: Vec<String> = out
        .report
        .skipped
        .iter()
        .map(|s| format!("{}: {}", s.node, s.reason))
        .collect();
    insta::assert_snapshot!(skipped.join("\n"));
    assert_eq!(out.report.tensors.len(), 1);
    assert_eq!(out.report.tensors[0].name, "big");
}

#[test]
fn blocks_of_inputs_share_a_codebook() {
    let values = few_values(16, 4, 4, 14);
    let model = matmul_model(float_tensor("w", &[16, 4], FloatType::F32, &values));
    let out = rewrite(&model, &config(2, Granularity::Block(8))).unwrap();
    let t = &out.report.tensors[0];
    // 4 columns x 2 blocks of 8 rows.
    assert_eq!((t.codebooks, t.granularity), (8, Granularity::Block(8)));
    assert_eq!(prove(&model, &out).outputs[0].max_abs, 0.0);
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn lossless_picks_the_cheapest_exact_storage_and_skips_the_rest() {
    // w1: 5 distinct values in all -> one 3-bit codebook.
    // w2: integers -2..=2 times a scale per column (dequantized int8-style) -> a
    //     shared grid of 5 integers and 8 scales, 3 bits.
    // w3: 4 arbitrary values per column -> 2-bit per-column codebooks.
    // w4: random floats, 16 distinct per column: more than 3 bits hold.
    let w1 = few_values(16, 8, 5, 15);
    let w2: Vec<f64> = few_values(16, 8, 5, 16)
        .iter()
        .enumerate()
        .map(|(i, v)| ((v * 5.0).round() as f32 * (0.1 + (i % 8) as f32 * 0.037)) as f64)
        .collect();
    let picks = pseudo_random(32, 17);
    let w3: Vec<f64> = few_values(16, 8, 4, 18)
        .iter()
        .enumerate()
        .map(|(i, v)| picks[(i % 8) * 4 + ((v + 0.5) * 4.0) as usize] as f32 as f64)
        .collect();
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.initializer(float_tensor("w1", &[16, 8], FloatType::F32, &w1));
    b.initializer(float_tensor("w2", &[16, 8], FloatType::F32, &w2));
    b.initializer(float_tensor("w3", &[16, 8], FloatType::F32, &w3));
    b.initializer(float_matrix("w4", 16, 8, 19));
    for (w, y) in [("w1", "y1"), ("w2", "y2"), ("w3", "y3"), ("w4", "y4")] {
        b.node("MatMul", &["x", w], &[y]);
        b.output_f32(y);
    }
    let model = b.build();
    let config = Config {
        lossless: true,
        bits: 3,
        select: Select {
            min_elements: 16,
            ..Select::default()
        },
        ..Config::default()
    };
    let out = rewrite(&model, &config).unwrap();
    let summary: Vec<(String, u32, Granularity, KmeansMethod, f64)> = out
        .report
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.bits, t.granularity, t.kmeans, t.mse))
        .collect();
    let row = |name: &str, bits, g, k| (name.to_string(), bits, g, k, 0.0);
    assert_eq!(
        summary,
        vec![
            row("w1", 3, Granularity::Tensor, KmeansMethod::Exact),
            row("w2", 3, Granularity::Tensor, KmeansMethod::ScaledGrid),
            row("w3", 2, Granularity::Channel, KmeansMethod::Exact),
        ]
    );
    assert_eq!(out.report.skipped.len(), 1);
    assert_eq!(
        out.report.skipped[0].reason,
        SkipReason::NotLossless("w4".into(), 16, 3)
    );
    let proof = prove(&model, &out);
    for o in &proof.outputs[..3] {
        assert_eq!(o.max_abs, 0.0, "{o:?}");
    }
    insta::assert_snapshot!(
        dump(&out.model)
            .lines()
            .filter(|l| l.contains("w2."))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn outliers_are_written_back_exactly() {
    let model = matmul_model(float_matrix("w", 32, 8, 18));
    let plain = rewrite(&model, &config(2, Granularity::Tensor)).unwrap();
    let with_outliers = Config {
        outliers: 0.02,
        ..config(2, Granularity::Tensor)
    };
    let out = rewrite(&model, &with_outliers).unwrap();
    let t = &out.report.tensors[0];
    // 2% of 256 weights, rounded.
    assert_eq!(t.outliers, 5);
    assert!(t.mse < plain.report.tensors[0].mse);
    let error = |r: &Rewritten| prove(&model, r).outputs[0].rel_l2;
    assert!(
        error(&out) < error(&plain),
        "{} vs {}",
        error(&out),
        error(&plain)
    );
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn vector_particles_and_additive_stages() {
    // Channels along columns (MatMul) and along rows (Gemm transB=1).
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.initializer(float_matrix("w", 16, 8, 19));
    b.initializer(float_matrix("v", 8, 16, 20));
    b.node("MatMul", &["x", "w"], &["y"]);
    b.node("Gemm", &["x", "v"], &["z"])
        .attribute
        .push(attr_int("transB", 1));
    b.output_f32("y");
    b.output_f32("z");
    let model = b.build();
    let vectors = Config {
        dim: 2,
        stages: 2,
        ..config(3, Granularity::Tensor)
    };
    let out = rewrite(&model, &vectors).unwrap();
    for t in &out.report.tensors {
        assert_eq!((t.dim, t.codebooks, t.particles), (2, 2, 8), "{}", t.name);
    }
    let one_stage = Config {
        stages: 1,
        ..vectors.clone()
    };
    let single = rewrite(&model, &one_stage).unwrap();
    let proof = prove(&model, &out);
    let single_proof = prove(&model, &single);
    for (two, one) in proof.outputs.iter().zip(&single_proof.outputs) {
        assert!(two.rel_l2 < one.rel_l2, "{two:?} vs {one:?}");
    }
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn vectors_must_divide_the_inputs() {
    let model = matmul_model(float_matrix("w", 15, 8, 21));
    let vectors = Config {
        dim: 2,
        ..config(4, Granularity::Tensor)
    };
    let out = rewrite(&model, &vectors).unwrap();
    assert_eq!(
        out.report.skipped[0].reason,
        SkipReason::NotDivisible("w".into(), 15, 2)
    );
}

#[test]
fn identical_and_transposed_weights_share_one_decoding() {
    // w2 equals w1; w3 is w1 transposed (as a tied output projection would be).
    let values = few_values(16, 8, 16, 22);
    let transposed: Vec<f64> = (0..8)
        .flat_map(|c| (0..16).map(move |r| (r, c)))
        .map(|(r, c)| values[r * 8 + c])
        .collect();
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.input_f32("z", &[2, 8]);
    b.initializer(float_tensor("w1", &[16, 8], FloatType::F32, &values));
    b.initializer(float_tensor("w2", &[16, 8], FloatType::F32, &values));
    b.initializer(float_tensor("w3", &[8, 16], FloatType::F32, &transposed));
    b.node("MatMul", &["x", "w1"], &["a"]);
    b.node("MatMul", &["x", "w2"], &["b"]);
    b.node("MatMul", &["z", "w3"], &["c"]);
    for o in ["a", "b", "c"] {
        b.output_f32(o);
    }
    let model = b.build();
    let out = rewrite(&model, &config(4, Granularity::Channel)).unwrap();
    assert_eq!(out.report.tensors.len(), 1);
    assert_eq!(out.report.tensors[0].tied, vec!["w2", "w3 (transposed)"]);
    let g = out.model.graph.as_ref().unwrap();
    let indices = g
        .initializer
        .iter()
        .filter(|t| t.name().ends_with(".index"))
        .count();
    let particles = g
        .initializer
        .iter()
        .filter(|t| t.name().ends_with(".particles"))
        .count();
    assert_eq!((indices, particles), (1, 1));
    let proof = prove(&model, &out);
    for o in &proof.outputs {
        assert_eq!(o.max_abs, 0.0, "{o:?}");
    }
    insta::assert_snapshot!(dump(&out.model));
    // Sharing off: three decodings.
    let separate = Config {
        share: Share::None,
        ..config(4, Granularity::Channel)
    };
    assert_eq!(rewrite(&model, &separate).unwrap().report.tensors.len(), 3);
}

#[test]
fn alike_weights_read_one_shared_codebook() {
    // w1 and w2 draw from the same 8 values per column; w3 is on another scale.
    let column_values = |seed| few_values(32, 8, 8, seed);
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 32]);
    b.initializer(float_tensor(
        "w1",
        &[32, 8],
        FloatType::F32,
        &column_values(23),
    ));
    b.initializer(float_tensor(
        "w2",
        &[32, 8],
        FloatType::F32,
        &column_values(24),
    ));
    let far: Vec<f64> = column_values(25).iter().map(|v| v * 100.0).collect();
    b.initializer(float_tensor("w3", &[32, 8], FloatType::F32, &far));
    for (w, y) in [("w1", "y1"), ("w2", "y2"), ("w3", "y3")] {
        b.node("MatMul", &["x", w], &[y]);
        b.output_f32(y);
    }
    let model = b.build();
    let alike = Config {
        share: Share::Alike,
        alike_error: 0.05,
        ..config(3, Granularity::Channel)
    };
    let out = rewrite(&model, &alike).unwrap();
    assert_eq!(out.report.groups.len(), 1);
    let group = &out.report.groups[0];
    assert_eq!(group.members, vec!["w1", "w2"]);
    assert_eq!(group.extra_error, 0.0);
    let g = out.model.graph.as_ref().unwrap();
    let tables: Vec<&str> = g
        .initializer
        .iter()
        .map(|t| t.name())
        .filter(|n| n.ends_with(".particles"))
        .collect();
    assert_eq!(tables, vec!["w1.particles", "w3.particles"]);
    let proof = prove(&model, &out);
    for o in &proof.outputs {
        assert_eq!(o.max_abs, 0.0, "{o:?}");
    }
    insta::assert_snapshot!(
        dump(&out.model)
            .lines()
            .filter(|l| l.contains("w2."))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// `y = MatMul(x, w)`, `e = Gather(table, ids)` with both initializers also listed as
/// graph inputs, in a model of IR version `ir`.
fn initializers_as_inputs(ir: i64) -> ModelProto {
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.input("ids", DataType::Int64, &[Dim::Fixed(3)]);
    b.input_f32("w", &[16, 8]);
    b.input_f32("table", &[10, 8]);
    b.initializer(float_tensor(
        "w",
        &[16, 8],
        FloatType::F32,
        &few_values(16, 8, 8, 41),
    ));
    b.initializer(float_tensor(
        "table",
        &[10, 8],
        FloatType::F32,
        &few_values(10, 8, 8, 42),
    ));
    b.node("MatMul", &["x", "w"], &["y"]);
    b.node("Gather", &["table", "ids"], &["e"]);
    b.output_f32("y");
    b.output_f32("e");
    let mut model = b.build();
    model.ir_version = Some(ir);
    model
}

fn input_names(model: &ModelProto) -> Vec<&str> {
    (model.graph.as_ref().unwrap().input.iter())
        .map(|i| i.name())
        .collect()
}

/// The main graph's inputs without an initializer: what a caller must feed.
fn required_inputs(model: &ModelProto) -> Vec<&str> {
    let g = model.graph.as_ref().unwrap();
    (g.input.iter())
        .map(|i| i.name())
        .filter(|name| !g.initializer.iter().any(|t| t.name() == *name))
        .collect()
}

#[test]
fn initializers_listed_as_inputs_are_weights_in_ir_3() {
    let model = initializers_as_inputs(3);
    let out = rewrite(&model, &config(3, Granularity::Channel)).unwrap();
    let names: Vec<&str> = out.report.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["w", "table"]);
    // Their input entries go with them, so no new required input; IR 3 lists every
    // initializer as an input, so the decodings' initializers are listed too.
    assert_eq!(required_inputs(&out.model), ["x", "ids"]);
    let inputs = input_names(&out.model);
    let g = out.model.graph.as_ref().unwrap();
    assert!(!inputs.contains(&"w") && !inputs.contains(&"table"));
    assert!(g.initializer.iter().all(|t| inputs.contains(&t.name())));
    let proof = prove(&model, &out);
    for output in &proof.outputs {
        assert_eq!(output.max_abs, 0.0, "{proof:?}");
    }
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn a_weight_inside_a_subgraph_of_an_ir_3_model_is_left_alone() {
    // Its decoding's initializers would have to be inputs of the branch.
    let mut then = ModelBuilder::new(17);
    then.constant("w", float_matrix("w", 16, 16, 5));
    then.node("MatMul", &["x", "w"], &["t"]);
    then.output_f32("t");
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.input_bool("cond");
    b.if_node(
        "cond",
        then.build_graph("then"),
        ModelBuilder::new(17).passthrough_graph("else", "x"),
        "y",
    );
    b.output_f32("y");
    let mut model = b.build();
    model.ir_version = Some(3);
    let out = rewrite(&model, &config(3, Granularity::Channel)).unwrap();
    assert!(out.report.tensors.is_empty());
    assert_eq!(
        out.report.skipped[0].reason,
        SkipReason::Unsupported(
            "weight 'w' is defined inside a subgraph of an IR < 4 model, where every initializer must be a graph input, which a subgraph's decoding cannot be".into()
        )
    );
}

#[test]
fn initializers_listed_as_inputs_need_the_flag_from_ir_4() {
    let model = initializers_as_inputs(8);
    let out = rewrite(&model, &config(3, Granularity::Channel)).unwrap();
    assert!(out.report.tensors.is_empty());
    let skipped: Vec<(String, SkipReason)> = (out.report.skipped.iter())
        .map(|s| (s.node.clone(), s.reason.clone()))
        .collect();
    assert_eq!(
        skipped,
        [
            (
                "MatMul_0".into(),
                SkipReason::OverridableInitializer("w".into())
            ),
            (
                "Gather_1".into(),
                SkipReason::OverridableInitializer("table".into())
            ),
        ]
    );
    assert_eq!(
        skipped[0].1.to_string(),
        "weight 'w' is an initializer that is also a graph input, so callers may override it (--initializer-inputs rewrites it anyway and removes the input)"
    );
    let mut flagged = config(3, Granularity::Channel);
    flagged.select.initializer_inputs = true;
    let out = rewrite(&model, &flagged).unwrap();
    assert_eq!(out.report.tensors.len(), 2);
    // From IR 4 initializers need no input entry: only the real inputs are left.
    assert_eq!(input_names(&out.model), ["x", "ids"]);
    let proof = prove(&model, &out);
    for output in &proof.outputs {
        assert_eq!(output.max_abs, 0.0, "{proof:?}");
    }
}

#[test]
fn a_subgraph_input_named_like_an_initializer_is_never_a_weight() {
    // The Loop binds its body's inputs on every iteration: a body initializer of the
    // same name is no default there, whatever the flag says.
    let mut body = ModelBuilder::new(17);
    body.input("i", DataType::Int64, &[]);
    body.input("c", DataType::Bool, &[]);
    body.input_f32("v", &[2, 16]);
    body.input_f32("u", &[16, 16]);
    body.initializer(float_matrix("u", 16, 16, 3));
    body.initializer(float_matrix("w", 16, 16, 4));
    body.node("Identity", &["c"], &["c_out"]);
    body.node("MatMul", &["v", "u"], &["vu"]);
    body.node("MatMul", &["vu", "w"], &["v_out"]);
    body.node("Identity", &["u"], &["u_out"]);
    body.output("c_out", DataType::Bool);
    body.output_f32("v_out");
    body.output_f32("u_out");
    let mut b = ModelBuilder::new(17);
    b.input_f32("x", &[2, 16]);
    b.input_f32("u0", &[16, 16]);
    b.input("n", DataType::Int64, &[]);
    b.input_bool("go");
    b.node("Loop", &["n", "go", "x", "u0"], &["y", "u_last"])
        .attribute
        .push(sora_onnx::builder::attr_graph(
            "body",
            body.build_graph("body"),
        ));
    b.output_f32("y");
    let model = b.build();
    let mut flagged = config(3, Granularity::Channel);
    flagged.select.initializer_inputs = true;
    let out = rewrite(&model, &flagged).unwrap();
    let names: Vec<&str> = out.report.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["w"]);
    let skipped: Vec<&SkipReason> = out.report.skipped.iter().map(|s| &s.reason).collect();
    assert_eq!(skipped, [&SkipReason::DynamicWeight("u".into())]);
}

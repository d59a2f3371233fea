//! The Gather rule: rows of a constant float table (an embedding), one codebook per
//! table column; other axes are skipped and integer tables are not candidates.

use sora_onnx::builder::{Dim, ModelBuilder, attr_int, float_matrix};
use sora_onnx::dump::dump;
use sora_onnx::onnx::proto::tensor_proto::DataType;
use sora_onnx::onnx::tensor::i64_tensor;
use sora_onnx::particles::Granularity;
use sora_onnx::rewrite;
use sora_onnx::rules::SkipReason;

use super::{config, linears, prove, skips};

#[test]
fn embedding_table_read_by_gather() {
    let mut b = ModelBuilder::new(17);
    b.input("ids", DataType::Int64, &[Dim::Fixed(2), Dim::Fixed(5)]);
    b.initializer(float_matrix("table", 50, 8, 12));
    b.node("Gather", &["table", "ids"], &["y"]);
    b.output_f32("y");
    let model = b.build();
    let out = rewrite(&model, &config(3, Granularity::Channel)).unwrap();
    let t = &out.report.tensors[0];
    // One codebook per embedding dimension.
    assert_eq!((t.name.as_str(), t.codebooks), ("table", 8));
    let proof = prove(&model, &out);
    assert!(proof.outputs[0].rel_l2 < 0.15, "{proof:?}");
    insta::assert_snapshot!(dump(&out.model));
}

#[test]
fn gather_along_another_axis_is_skipped_and_integer_tables_are_not_candidates() {
    let mut b = ModelBuilder::new(17);
    b.input("ids", DataType::Int64, &[Dim::Fixed(2)]);
    b.initializer(float_matrix("table", 50, 8, 1));
    b.initializer(i64_tensor("shape", &[4], &[1, 2, 3, 4]));
    b.node("Gather", &["table", "ids"], &["rows"]);
    b.node("Gather", &["table", "ids"], &["columns"])
        .attribute
        .push(attr_int("axis", 1));
    b.node("Gather", &["shape", "ids"], &["dims"]);
    for o in ["rows", "columns"] {
        b.output_f32(o);
    }
    let model = b.build();
    assert_eq!(linears(&model, &config(3, Granularity::Channel)), vec![]);
    assert_eq!(
        skips(&model, &config(3, Granularity::Channel)),
        vec![
            (
                "Gather_1".to_string(),
                SkipReason::Unsupported(
                    "Gather along axis 1 of 'table': only row lookups (axis 0) are rewritten"
                        .into()
                )
            ),
            (
                "Gather_0".to_string(),
                SkipReason::OtherUse("table".into(), "node 'Gather_1'".into())
            ),
        ]
    );
}

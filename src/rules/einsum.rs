//! Einsum with constant float operands (any of them).
//!
//! ```text
//! before:  Y = Einsum(A, W, ...; equation)                            W: constant
//! after:   Y = Einsum(A, Reshape(decode(particles, index), dims(W)), ...; equation)
//! ```
//!
//! Every operand that is a constant is rebuilt in its own shape, so the equation keeps
//! its meaning whatever it says. How the particles view the operand comes from the
//! equation: a matrix operand with one label that survives into the output and one
//! that is summed over (`bi,ij->bj`) is a matrix with channels along the surviving
//! axis, as MatMul's; any other operand (ellipses, repeated labels, ranks other than
//! 2, outer products) is one channel, [`Layout::WHOLE`]. Operands computed at run
//! time are the activations: not candidates. An equation that does not parse, or has
//! a term count other than the operand count, is skipped with the reason.

use super::{Layout, Match, Rule, Select, SkipReason, stored_input, weight_input};
use crate::graph::{Graph, NodeId};

/// The Einsum rule.
pub const RULE: Rule = Rule {
    op: "Einsum",
    default: true,
    matches,
};

/// Matches each constant operand of an Einsum.
fn matches<'m>(graph: &Graph<'m>, node: NodeId, select: &Select) -> Vec<Match<'m>> {
    let n = graph.node(node);
    let constants: Vec<usize> = (0..n.input.len())
        .filter(|&slot| stored_input(graph, node, slot).is_some())
        .collect();
    if constants.is_empty() {
        return Vec::new();
    }
    let equation = n.attribute.iter().find(|a| a.name() == "equation");
    let equation = String::from_utf8_lossy(equation.map_or(&[][..], |a| a.s()));
    let Some((terms, output)) = parse(&equation).filter(|(t, _)| t.len() == n.input.len()) else {
        return vec![Match::Skip(SkipReason::Unsupported(format!(
            "Einsum equation '{equation}' does not give one term per operand ({})",
            n.input.len()
        )))];
    };
    constants
        .into_iter()
        .map(|slot| weight_input(graph, node, slot, layout(&terms, &output, slot), select))
        .collect()
}

/// The view of operand `slot`: a matrix whose channels are its label that survives,
/// when its other label is summed over; else the whole tensor as one channel.
fn layout(terms: &[String], output: &str, slot: usize) -> Layout {
    let labels: Vec<char> = terms[slot].chars().collect();
    match labels.as_slice() {
        &[a, b] if a != b && a.is_alphabetic() && b.is_alphabetic() => {
            match (output.contains(a), output.contains(b)) {
                (true, false) => Layout::Matrix { channel_axis: 0 },
                (false, true) => Layout::Matrix { channel_axis: 1 },
                _ => Layout::WHOLE,
            }
        }
        _ => Layout::WHOLE,
    }
}

/// The operand terms and the output term of `equation`, spaces removed; an implicit
/// output is the labels that occur once, in alphabetical order (the ONNX rule).
fn parse(equation: &str) -> Option<(Vec<String>, String)> {
    let equation: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let valid = |c: char| c.is_ascii_alphabetic() || c == '.' || c == ',';
    let (inputs, output) = match equation.split_once("->") {
        Some((inputs, output)) => (inputs.to_string(), Some(output.to_string())),
        None => (equation.clone(), None),
    };
    if inputs.is_empty() || !inputs.chars().all(valid) {
        return None;
    }
    let terms: Vec<String> = inputs.split(',').map(str::to_string).collect();
    let output = output.unwrap_or_else(|| {
        let mut once: Vec<char> = ('a'..='z')
            .chain('A'..='Z')
            .filter(|&c| inputs.matches(c).count() == 1)
            .collect();
        once.sort_unstable();
        once.into_iter().collect()
    });
    Some((terms, output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equations_give_terms_and_the_output() {
        let (terms, output) = parse("bi, ij -> bj").unwrap();
        assert_eq!(
            (terms, output.as_str()),
            (vec!["bi".into(), "ij".into()], "bj")
        );
        let (terms, output) = parse("ij,jk").unwrap();
        assert_eq!((terms.len(), output.as_str()), (2, "ik"));
        assert!(parse("").is_none());
        assert!(parse("i j,2->i").is_none());
    }

    #[test]
    fn a_summed_and_a_surviving_label_make_a_matrix() {
        let (terms, output) = parse("bi,ij->bj").unwrap();
        assert_eq!(
            layout(&terms, &output, 1),
            Layout::Matrix { channel_axis: 1 }
        );
        let (terms, output) = parse("bj,ij->bi").unwrap();
        assert_eq!(
            layout(&terms, &output, 1),
            Layout::Matrix { channel_axis: 0 }
        );
        let (terms, output) = parse("...i,ij->...j").unwrap();
        assert_eq!(
            layout(&terms, &output, 1),
            Layout::Matrix { channel_axis: 1 }
        );
        for equation in ["bi,ij->bij", "bij,ijk->bk", "bi,i...->b...", "i,ii->i"] {
            let (terms, output) = parse(equation).unwrap();
            assert_eq!(layout(&terms, &output, 1), Layout::WHOLE, "{equation}");
        }
    }
}

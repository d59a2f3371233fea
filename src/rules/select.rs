//! Which nodes the rules look at: the op types (`--ops`), the smallest weight
//! (`--min-elements`), and include/exclude globs over node and weight names.

use globset::{Glob, GlobSet, GlobSetBuilder};

use super::{RULES, default_ops};
use crate::error::{Error, Result};

/// What the rules may select.
#[derive(Clone, Debug)]
pub struct Select {
    /// Op types whose weights are rewritten (a subset of [`RULES`]'s).
    pub ops: Vec<String>,
    /// Weights with fewer elements are left alone.
    pub min_elements: usize,
    /// Which nodes and weights, by name.
    pub names: Selection,
    /// Initializers that are also graph inputs (callers may feed another value) are
    /// rewritten as weights too, their input entries removed (`--initializer-inputs`).
    /// In IR < 4 models they always are: there every initializer is listed as an input.
    pub initializer_inputs: bool,
}

impl Default for Select {
    fn default() -> Self {
        Select {
            ops: default_ops(),
            min_elements: 4096,
            names: Selection::default(),
            initializer_inputs: false,
        }
    }
}

impl Select {
    /// Checks that every op in `ops` has a rule.
    pub fn validate(&self) -> Result<()> {
        let known: Vec<&str> = RULES.iter().map(|r| r.op).collect();
        if let Some(op) = self.ops.iter().find(|op| !known.contains(&op.as_str())) {
            return Err(Error::Config(format!(
                "--ops: no rule for '{op}' (known: {})",
                known.join(", ")
            )));
        }
        Ok(())
    }

    /// Whether the rule for `op` runs.
    pub fn runs(&self, op: &str) -> bool {
        self.ops.iter().any(|o| o == op)
    }
}

/// Include and exclude globs over node and weight names.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    include: Option<GlobSet>,
    exclude: GlobSet,
    exclude_patterns: Vec<String>,
}

/// Why a [`Selection`] leaves a node out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unselected {
    /// Neither the node nor the weight name matches an `--include` glob.
    NotIncluded,
    /// The node or weight name matches this `--exclude` glob.
    Excluded(String),
}

impl Selection {
    /// Compiles the globs; with no include glob, everything not excluded is selected.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self> {
        let compile = |patterns: &[String]| -> Result<GlobSet> {
            let mut set = GlobSetBuilder::new();
            for p in patterns {
                set.add(Glob::new(p).map_err(|e| Error::Config(format!("bad glob '{p}': {e}")))?);
            }
            set.build().map_err(|e| Error::Config(e.to_string()))
        };
        Ok(Selection {
            include: (!include.is_empty())
                .then(|| compile(include))
                .transpose()?,
            exclude: compile(exclude)?,
            exclude_patterns: exclude.to_vec(),
        })
    }

    /// `Ok` if a node named `node` reading weight `weight` is selected.
    pub fn check(&self, node: &str, weight: &str) -> Result<(), Unselected> {
        if let Some(include) = &self.include
            && !include.is_match(node)
            && !include.is_match(weight)
        {
            return Err(Unselected::NotIncluded);
        }
        let mut hits = self.exclude.matches(node);
        hits.extend(self.exclude.matches(weight));
        match hits.first() {
            Some(&i) => Err(Unselected::Excluded(self.exclude_patterns[i].clone())),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn include_and_exclude_match_node_or_weight_names() {
        let s = Selection::new(&["*attention*".into()], &["*key*".into()]).unwrap();
        assert_eq!(s.check("/layer.0/attention/query/MatMul", "w1"), Ok(()));
        assert_eq!(s.check("/layer.0/output/MatMul", "attention_w"), Ok(()));
        assert_eq!(
            s.check("/layer.0/output/MatMul", "w2"),
            Err(Unselected::NotIncluded)
        );
        assert_eq!(
            s.check("/layer.0/attention/key/MatMul", "w3"),
            Err(Unselected::Excluded("*key*".into()))
        );
        assert_eq!(Selection::default().check("any", "thing"), Ok(()));
    }

    #[test]
    fn unknown_ops_are_refused() {
        let select = Select {
            ops: vec!["MatMul".into(), "Softmax".into()],
            ..Select::default()
        };
        let known: Vec<&str> = RULES.iter().map(|r| r.op).collect();
        assert_eq!(
            select.validate().unwrap_err().to_string(),
            format!(
                "invalid option: --ops: no rule for 'Softmax' (known: {})",
                known.join(", ")
            )
        );
        assert_eq!(&known[..4], ["MatMul", "Gemm", "Gather", "Conv"]);
        assert!(Select::default().validate().is_ok());
    }
}

//! What the pass does, as chosen by the user.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::particles::Granularity;

/// Options of the rewrite.
#[derive(Clone, Debug)]
pub struct Config {
    /// Bits per particle index, 1..=8: each codebook holds `2^bits` particles.
    pub bits: u32,
    /// How many weights share a codebook.
    pub granularity: Granularity,
    /// Weights with fewer elements are left alone.
    pub min_elements: usize,
    /// Which nodes and weights may be rewritten.
    pub selection: Selection,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bits: 4,
            granularity: Granularity::Channel,
            min_elements: 4096,
            selection: Selection::default(),
        }
    }
}

impl Config {
    /// Checks that every option is in range.
    pub fn validate(&self) -> Result<()> {
        if !(1..=8).contains(&self.bits) {
            return Err(Error::Config(format!(
                "--bits must be 1..=8, not {}",
                self.bits
            )));
        }
        Ok(())
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
    fn bad_bits_and_globs_are_refused() {
        let config = Config {
            bits: 9,
            ..Config::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "invalid option: --bits must be 1..=8, not 9"
        );
        assert!(Selection::new(&["[".into()], &[]).is_err());
    }
}

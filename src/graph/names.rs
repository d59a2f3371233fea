//! Fresh names: every name a model uses, and new ones derived from a base that
//! collide with none of them.

use std::collections::HashSet;

use super::Graph;

impl Graph<'_> {
    /// Every name the model uses anywhere (values, nodes, initializers, in every
    /// scope), as the seed of a [`Names`] generator.
    pub fn names(&self) -> Names {
        let mut taken = HashSet::new();
        for s in &self.scopes {
            let g = s.graph;
            taken.extend(
                g.input
                    .iter()
                    .chain(&g.output)
                    .chain(&g.value_info)
                    .map(|v| v.name().to_string()),
            );
            taken.extend(g.initializer.iter().map(|t| t.name().to_string()));
            for n in &g.node {
                taken.insert(n.name().to_string());
                taken.extend(n.input.iter().chain(&n.output).cloned());
            }
        }
        Names { taken }
    }
}

/// Generator of names no part of the model uses yet.
#[derive(Clone, Debug, Default)]
pub struct Names {
    taken: HashSet<String>,
}

impl Names {
    /// `base` if it is free, else the first free `base.1`, `base.2`, ...; the name
    /// returned is taken from then on.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut n = 0;
        while self.taken.contains(&name) {
            n += 1;
            name = format!("{base}.{n}");
        }
        self.taken.insert(name.clone());
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_collide() {
        let mut names = Names::default();
        assert_eq!(names.fresh("w.index"), "w.index");
        assert_eq!(names.fresh("w.index"), "w.index.1");
        assert_eq!(names.fresh("w.index"), "w.index.2");
    }
}

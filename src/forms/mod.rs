//! Emitters of the subgraphs a decomposed weight becomes. Each form is one module.

pub mod decode;

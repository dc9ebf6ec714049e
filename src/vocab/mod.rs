//! The shared vocabulary: the typed resources of a stack, the load specification and the
//! numeric limits. `stack` produces these types from HCL; `plan`, `state`, `provider`,
//! `loadgen`, `tune` and `report` consume them. This module imports nothing else from the
//! crate, so every other module may depend on it without an import circle.

pub mod backend;
pub mod limits;
pub mod load;
pub mod resources;

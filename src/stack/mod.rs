//! See DESIGN.md (module map).
pub mod types;

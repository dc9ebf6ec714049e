//! benchstack: Terraform-style plan/apply for TensorFlow Serving benchmark environments.
//!
//! The map (data flow, modules and what each must not do, where a change goes) is
//! `ARCHITECTURE.md` at the repository root; each module's own docs say what it holds.

pub mod apply;
pub mod cli;
pub mod compare;
pub mod environment;
pub mod github;
pub mod graph;
pub mod image_context;
pub mod loadgen;
pub mod manifest;
pub mod ops;
pub mod plan;
pub mod proto;
pub mod provider;
pub mod refresh;
pub mod report;
pub mod serve;
pub mod stack;
pub mod state;
pub mod tune;
pub mod vocab;

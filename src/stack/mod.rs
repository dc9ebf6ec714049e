//! The stack language: read HCL files, evaluate variables, functions and references, check
//! types and ranges, and produce the typed [`crate::vocab::resources::Stack`] with a source span for every
//! resource. See `docs/stack-language.md` (generated from `schema`) and `load` for the rules.
//!
//! The language itself (every block, attribute, type, range, default, what a change plans) is
//! declared once in [`schema`]; the loader (`load/`, `vars`, `tune`), its messages, the plan's
//! replacement rule and `docs/stack-language.md` read it. `sources` holds the parsed files and
//! the diagnostics, shared by the loader, `vars` and `fmt`.

mod diag;
mod eval;
mod fmt;
pub(crate) mod funcs;
mod lexer;
mod load;
mod locate;
pub mod schema;
mod sources;
pub mod tune;
mod value;
mod vars;

use std::path::Path;

pub use diag::{Diagnostic, Diagnostics, Location};
pub use fmt::{format_named, format_source};
pub use locate::attribute_diagnostic;
pub use vars::VarInputs;

/// Loads a stack from one `*.hcl` file or every `*.hcl` in a directory (sorted by name).
/// Variables come from defaults, `BENCHSTACK_VAR_*` in the environment, `vars.var_files` and
/// `vars.vars`, later ones winning. Returns every problem found, not just the first.
pub fn load(path: &Path, vars: &VarInputs) -> Result<crate::vocab::resources::Stack, Diagnostics> {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("BENCHSTACK_VAR_"))
        .collect();
    load::load_stack(path, vars, &env)
}

/// As [`load`], with the stack's tune blocks and cluster prices (`benchstack tune`).
pub fn load_with_tunes(
    path: &Path,
    vars: &VarInputs,
) -> Result<(crate::vocab::resources::Stack, tune::StackExtras), Diagnostics> {
    let env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("BENCHSTACK_VAR_"))
        .collect();
    load::load_stack_full(path, vars, &env)
}

/// As [`load`], with the environment given explicitly (for tests and embedding).
pub fn load_with_env(
    path: &Path,
    vars: &VarInputs,
    env: &[(String, String)],
) -> Result<crate::vocab::resources::Stack, Diagnostics> {
    load::load_stack(path, vars, env)
}

//! `benchstack validate [PATH]`: load the stack and report every problem, touching nothing;
//! with `--remote`, also ask Google what would make creating it fail (the plan's preflight).

use std::path::PathBuf;

use crate::stack::{self, VarInputs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A stack file or a directory of *.hcl files.
    #[arg(default_value = ".")]
    pub path: PathBuf,

    #[command(flatten)]
    pub vars: VarArgs,

    /// Also run the remote preflight on the stack's gke clusters (docs/gke.md, "Preflight"):
    /// the APIs are enabled, the machine types exist, the CPU quotas cover creating every
    /// cluster (no state is read), the images exist. Reads only; creates nothing.
    #[arg(long)]
    pub remote: bool,
}

/// `--var` and `--var-file`, shared by every command that loads a stack (`#[command(flatten)]`).
/// Precedence, later wins: a variable's default, `BENCHSTACK_VAR_NAME`, each `--var-file` in
/// order, each `--var` in order (as in Terraform).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct VarArgs {
    /// Set a variable: --var NAME=VALUE (repeatable; wins over --var-file and BENCHSTACK_VAR_NAME).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = VarInputs::parse_var)]
    pub vars: Vec<(String, String)>,

    /// Read variables from an HCL file of NAME = value lines (repeatable).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

impl VarArgs {
    pub fn var_inputs(&self) -> VarInputs {
        VarInputs {
            vars: self.vars.clone(),
            var_files: self.var_files.clone(),
        }
    }
}

pub fn run(args: Args) -> miette::Result<super::Outcome> {
    match stack::load(&args.path, &args.vars.var_inputs()) {
        Ok(stack) => {
            if args.remote {
                let checked =
                    crate::ops::preflight(&stack, None, &crate::provider::gcp::Apis::from_env());
                if !super::common::print_preflight(
                    &checked,
                    "`benchstack validate` without `--remote`",
                ) {
                    return Ok(super::Outcome::Failed);
                }
                if !checked.ran {
                    eprintln!(
                        "note: --remote: the stack has no gke cluster, so there is nothing remote to check"
                    );
                }
            }
            let n = stack.resources.len();
            println!(
                "Success! The stack is valid: {n} resource{}.",
                if n == 1 { "" } else { "s" }
            );
            Ok(super::Outcome::Success)
        }
        Err(diags) => {
            eprintln!("{diags}");
            Ok(super::Outcome::Failed)
        }
    }
}

//! `benchstack validate [PATH]`: load the stack and report every problem, touching nothing.

use std::path::PathBuf;

use crate::stack::{self, VarInputs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A stack file or a directory of *.hcl files.
    #[arg(default_value = ".")]
    pub path: PathBuf,

    #[command(flatten)]
    pub vars: VarArgs,
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

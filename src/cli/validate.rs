//! `benchstack validate [PATH]`: load the stack and report every problem, touching nothing.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::stack::{self, VarInputs};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A stack file or a directory of *.hcl files.
    #[arg(default_value = ".")]
    pub path: PathBuf,

    /// Set a variable: --var NAME=VALUE (repeatable; wins over --var-file and BENCHSTACK_VAR_NAME).
    #[arg(long = "var", value_name = "NAME=VALUE", value_parser = VarInputs::parse_var)]
    pub vars: Vec<(String, String)>,

    /// Read variables from an HCL file of NAME = value lines (repeatable).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

impl Args {
    pub fn var_inputs(&self) -> VarInputs {
        VarInputs {
            vars: self.vars.clone(),
            var_files: self.var_files.clone(),
        }
    }
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
    match stack::load(&args.path, &args.var_inputs()) {
        Ok(stack) => {
            let n = stack.resources.len();
            println!(
                "Success! The stack is valid: {n} resource{}.",
                if n == 1 { "" } else { "s" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            eprintln!("{diags}");
            Ok(ExitCode::from(1))
        }
    }
}

//! `benchstack fmt [PATH] [--check]`: rewrite stack files in the canonical format.

use std::path::{Path, PathBuf};

use miette::IntoDiagnostic;

use crate::stack::format_named;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A stack file or a directory of *.hcl files.
    #[arg(default_value = ".")]
    pub path: PathBuf,

    /// Change nothing; list the files that are not formatted and exit 1 if there are any.
    #[arg(long)]
    pub check: bool,

    /// Also format *.hcl files in subdirectories.
    #[arg(long)]
    pub recursive: bool,
}

fn collect(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                collect(&p, recursive, out)?;
            }
        } else if p.extension().is_some_and(|x| x == "hcl") {
            out.push(p);
        }
    }
    Ok(())
}

pub fn run(args: Args) -> miette::Result<super::Outcome> {
    let mut files = Vec::new();
    let meta = std::fs::metadata(&args.path).map_err(|e| {
        miette::miette!(
            "{}: {e}, expected a stack file or directory",
            args.path.display()
        )
    })?;
    if meta.is_dir() {
        collect(&args.path, args.recursive, &mut files).into_diagnostic()?;
    } else {
        files.push(args.path.clone());
    }
    let mut failed = false;
    let mut unformatted = false;
    for f in files {
        let src = match std::fs::read_to_string(&f) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("Error: {}: cannot be read ({e})", f.display());
                failed = true;
                continue;
            }
        };
        match format_named(&f, &src) {
            Err(diags) => {
                eprintln!("{diags}");
                failed = true;
            }
            Ok(out) if out != src => {
                unformatted = true;
                println!("{}", f.display());
                if !args.check {
                    std::fs::write(&f, out)
                        .map_err(|e| miette::miette!("{}: cannot be written ({e})", f.display()))?;
                }
            }
            Ok(_) => {}
        }
    }
    Ok(if failed || (args.check && unformatted) {
        super::Outcome::Failed
    } else {
        super::Outcome::Success
    })
}

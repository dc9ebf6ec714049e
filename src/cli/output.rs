//! `benchstack output [NAME] [--json]`: the stack's outputs as of the last apply.

use std::path::Path;

use miette::{IntoDiagnostic, miette};

use crate::ops::open_view;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One output; its value alone is printed (strings without quotes, for scripts).
    pub name: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(state_dir: &Path, args: Args) -> miette::Result<super::Outcome> {
    // The published snapshot: answers while an apply holds the lock.
    let outputs = match open_view(state_dir)? {
        Some(view) => view.outputs(),
        None => Default::default(),
    };
    match &args.name {
        Some(name) => {
            let v = outputs.get(name).ok_or_else(|| {
                let known: Vec<&String> = outputs.keys().collect();
                miette!(
                    "no output `{name}` in the state in {}{}",
                    crate::state::describe(state_dir),
                    if known.is_empty() {
                        " (nothing applied yet)".to_string()
                    } else {
                        format!(
                            "; outputs: {}",
                            known
                                .iter()
                                .map(|k| k.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                )
            })?;
            match (args.json, v) {
                (false, serde_json::Value::String(s)) => println!("{s}"),
                _ => println!("{}", serde_json::to_string(v).into_diagnostic()?),
            }
        }
        None if args.json => println!(
            "{}",
            serde_json::to_string_pretty(&outputs).into_diagnostic()?
        ),
        None if outputs.is_empty() => {
            eprintln!(
                "No outputs: nothing with outputs has been applied to {}.",
                crate::state::describe(state_dir)
            )
        }
        None => {
            for (k, v) in &outputs {
                println!("{k} = {v}");
            }
        }
    }
    Ok(super::Outcome::Success)
}

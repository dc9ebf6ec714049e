//! `benchstack comment --github [FILE]`: post a `--format markdown` document to the pull
//! request of the current GitHub Actions run, updating benchstack's earlier comment of the
//! same stack and kind instead of adding another; `--check` also creates a check run whose
//! conclusion is the document's (docs/ci.md).

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use miette::miette;

use crate::github::{Client, Posted};
use crate::report::markdown::Marker;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Reads GITHUB_API_URL, GITHUB_REPOSITORY, GITHUB_EVENT_PATH (a pull_request event, or an issue_comment event on a pull request: its head is then read from the API) and GITHUB_TOKEN, as a GitHub Actions job sets them (the token needs `permissions: pull-requests: write`, and `checks: write` for --check).\n\nExample:\n  benchstack plan --format markdown stacks/gke.hcl > plan.md\n  benchstack comment --github plan.md"
)]
pub struct Args {
    /// Post to the pull request of the current GitHub Actions run (the only target so far).
    #[arg(long, required = true)]
    pub github: bool,
    /// The markdown to post, as `plan`, `tune` or `results --compare` print it with
    /// `--format markdown`; `-` or nothing reads stdin.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Also create a check run on the pull request's head commit whose conclusion is the
    /// document's (success, failure or neutral), so branch protection can require it.
    #[arg(long)]
    pub check: bool,
    /// The check run's name (default: "benchstack KIND STACK").
    #[arg(long, value_name = "NAME", requires = "check")]
    pub check_name: Option<String>,
    /// Comment on a pull request from a fork too. Only for workflows that do not run the
    /// fork's code with a token that can write.
    #[arg(long)]
    pub allow_fork: bool,
}

fn read_markdown(file: Option<&PathBuf>) -> miette::Result<(String, String)> {
    let mut bytes = Vec::new();
    let name = match file.filter(|f| f.as_os_str() != "-") {
        Some(f) => {
            bytes =
                std::fs::read(f).map_err(|e| miette!("{}: cannot read it: {e}", f.display()))?;
            f.display().to_string()
        }
        None => {
            if std::io::stdin().is_terminal() {
                return Err(miette!(
                    "no FILE and stdin is a terminal: pipe the markdown in (`benchstack plan --format markdown | benchstack comment --github`) or name a file"
                ));
            }
            std::io::stdin()
                .take(64 << 20)
                .read_to_end(&mut bytes)
                .map_err(|e| miette!("stdin: {e}"))?;
            "stdin".to_string()
        }
    };
    let text = String::from_utf8(bytes).map_err(|e| miette!("{name}: not UTF-8 text: {e}"))?;
    Ok((name, text))
}

pub fn run(args: Args) -> miette::Result<super::Outcome> {
    let (name, markdown) = read_markdown(args.file.as_ref())?;
    let marker = Marker::find(&markdown).ok_or_else(|| {
        miette!(
            "{name}: no benchstack marker (`<!-- benchstack stack=… kind=… -->`): post what `--format markdown` prints, which carries it"
        )
    })?;
    let chars = markdown.chars().count();
    if chars > crate::report::markdown::GITHUB_LIMIT {
        return Err(miette!(
            "{name}: {chars} characters; GitHub takes at most {} in a comment (`--format markdown` keeps within it)",
            crate::report::markdown::GITHUB_LIMIT
        ));
    }
    let var = |n: &str| std::env::var(n).ok();
    let client = Client::from_vars(&var, args.allow_fork).map_err(|e| miette!("{e}"))?;
    let number = client.context().pull_request.number;
    match client
        .upsert_comment(&marker.key(), &markdown)
        .map_err(|e| miette!("{e}"))?
    {
        Posted::Created { id, url } => {
            println!("Commented on pull request #{number} (comment {id}): {url}")
        }
        Posted::Updated { id, url } => {
            println!("Updated the comment on pull request #{number} (comment {id}): {url}")
        }
    }
    if args.check {
        let check_name = args
            .check_name
            .unwrap_or_else(|| format!("benchstack {} {}", marker.kind, marker.stack));
        let title: String = markdown
            .lines()
            .next()
            .unwrap_or("")
            .replace("**", "")
            .chars()
            .take(1000)
            .collect();
        let summary = check_summary(&markdown);
        let url = client
            .create_check_run(&check_name, marker.conclusion.as_str(), &title, &summary)
            .map_err(|e| miette!("{e}"))?;
        println!(
            "Check run \"{check_name}\": {} {url}",
            marker.conclusion.as_str()
        );
    }
    Ok(super::Outcome::Success)
}

/// A check run's summary holds at most 65,535 characters (one less than a comment): the
/// document, cut at a line if it needs the last one.
fn check_summary(markdown: &str) -> String {
    const LIMIT: usize = 65_535;
    if markdown.chars().count() <= LIMIT {
        return markdown.to_string();
    }
    let note =
        "\n\n_Cut to fit the check run's summary; the pull request comment has all of it._\n";
    let mut out = String::new();
    let mut used = note.chars().count();
    for line in markdown.lines() {
        let n = line.chars().count() + 1;
        if used + n > LIMIT {
            break;
        }
        out.push_str(line);
        out.push('\n');
        used += n;
    }
    out.push_str(note);
    out
}

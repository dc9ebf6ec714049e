//! What several commands do at the terminal the same way: asking for confirmation and
//! turning Ctrl-C into a cancel flag, printing what the remote preflight found.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use miette::{IntoDiagnostic, miette};

/// Asks on the terminal; refuses without one.
pub fn confirm(question: &str, flag_hint: &str) -> miette::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Err(miette!(
            "refusing to {flag_hint} without confirmation: there is no terminal to ask on; pass --auto-approve"
        ));
    }
    super::progress::end_line();
    print!("\n{question}\n  Only 'yes' will be accepted: ");
    std::io::stdout().flush().into_diagnostic()?;
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .into_diagnostic()?;
    Ok(line.trim() == "yes")
}

/// Ctrl-C (or SIGTERM) sets the flag: no new work starts; a second one exits at once (130).
pub fn cancel_on_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag));
        let _ = signal_hook::flag::register(sig, Arc::clone(&flag));
    }
    flag
}

/// Prints what preflight found on stderr: warnings, then the errors with how to fix each.
/// False when there are errors.
pub fn print_preflight(checked: &crate::ops::Preflight, without: &str) -> bool {
    for w in &checked.warnings {
        eprintln!("Warning: {w}");
    }
    if checked.errors.is_empty() {
        return true;
    }
    eprintln!("{}", checked.errors);
    eprintln!(
        "\nPreflight found {} before anything was created. Fix {}, or go on without asking Google ({without}).",
        match checked.errors.len() {
            1 => "a problem".to_string(),
            n => format!("{n} problems"),
        },
        if checked.errors.len() == 1 {
            "it"
        } else {
            "them"
        }
    );
    false
}

/// What a command prints: `--format text|json|markdown` (plan, tune, results).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For a terminal.
    Text,
    /// One JSON document (the command's documented format).
    Json,
    /// For a pull request or a job summary (docs/ci.md): a verdict line, tables, the details
    /// folded, at most 65,536 characters.
    Markdown,
}

impl Format {
    /// `--json` is `--format json`.
    pub fn of(format: Option<Format>, json: bool) -> Format {
        if json {
            Format::Json
        } else {
            format.unwrap_or(Format::Text)
        }
    }
}

/// Prints markdown and, in a GitHub Actions job (`GITHUB_STEP_SUMMARY` set), appends the
/// same text to the job summary.
pub fn emit_markdown(markdown: &str) -> miette::Result<()> {
    print!("{markdown}");
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()) {
        crate::report::markdown::append_step_summary(std::path::Path::new(&path), markdown)
            .map_err(|e| {
                miette::miette!(
                    "GITHUB_STEP_SUMMARY={}: cannot append the summary: {e}",
                    std::path::Path::new(&path).display()
                )
            })?;
    }
    Ok(())
}

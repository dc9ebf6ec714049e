//! The command line: one file per command, each with its clap `Args` and a `run`.
//! Commands parse and print; the logic they call lives in the library modules.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod apply;
mod baseline;
pub mod comment;
mod common;
pub mod compare;
pub mod destroy;
pub mod fmt;
pub mod loadtest;
pub mod output;
pub mod plan;
mod progress;
pub mod render;
pub mod results;
pub mod serve;
pub mod state;
pub mod tune;
pub mod validate;
pub mod worker;

#[derive(Debug, Parser)]
#[command(
    name = "benchstack",
    version,
    about = "Plan/apply for TensorFlow Serving benchmark environments"
)]
pub struct Cli {
    /// The state: a directory (a sled database), or gs://BUCKET/PREFIX for a team state on
    /// Cloud Storage (docs/state.md). Overrides the stack's `backend "gcs"` block and the
    /// working directory's binding to it; without any of them, ./state.
    #[arg(
        long,
        global = true,
        env = "BENCHSTACK_STATE",
        value_name = "DIR|gs://BUCKET/PREFIX"
    )]
    pub state: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the largest Args does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the TF-Serving-compatible stand-in server (accepts tensorflow_model_server's flags).
    Serve(serve::Args),
    /// Show what apply would change.
    Plan(plan::Args),
    /// Post a `--format markdown` document to the pull request of a GitHub Actions run,
    /// updating benchstack's earlier comment; --check adds a check run with its verdict.
    Comment(comment::Args),
    /// Make the running resources match the stack and run its load tests.
    Apply(apply::Args),
    /// Stop and forget everything in the state.
    Destroy(destroy::Args),
    /// The stack's outputs (rest_endpoint, grpc_endpoint, …).
    Output(output::Args),
    /// Stored load-test runs: list, show, compare, JSON, HTML.
    Results(results::Args),
    /// Inspect and repair the state.
    State(state::Args),
    /// Check a stack: syntax, types, ranges, references and cycles, with every problem located.
    Validate(validate::Args),
    /// Rewrite stack files in the canonical format (--check: only list what would change).
    Fmt(fmt::Args),
    /// Run an open-loop load test against a TF Serving REST or gRPC endpoint (like wrk or oha).
    Loadtest(Box<loadtest::Args>),
    /// Write the files apply would send (models.config, batching_parameters.txt,
    /// kubernetes.yaml, load-test Jobs), for review and GitOps.
    Render(render::Args),
    /// Search a serving resource's settings (the stack's `tune` block) for the most traffic
    /// under the SLOs; --write proposes the winner as a stack edit.
    Tune(tune::Args),
    /// One pod of a distributed load test (run by the Indexed Job apply creates).
    Worker(worker::Args),
    /// Measure the stack's serving configuration against a base (a git revision or another
    /// stack) in interleaved rounds: better, same, worse or inconclusive per metric.
    Compare(Box<compare::Args>),
}

/// What a command ended with. Each command returns one; [`main`] alone turns it into the
/// process's exit status, so "2" means one documented thing per command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit 0.
    Success,
    /// Exit 1: the command printed its own diagnostics (validate, fmt --check, a failed
    /// resource). Errors returned as `Err` also exit 1.
    Failed,
    /// Exit 2 from `plan --detailed-exitcode`: the plan has changes.
    ChangesPending,
    /// Exit 2 from `apply` and `loadtest`: a run completed (and was stored) but missed an SLO.
    SloMissed,
    /// Exit 2 from `tune`: no configuration met the SLOs.
    NoWinner,
    /// Exit 3 from `compare` and `apply --gate`: the candidate is worse than the base.
    Worse,
    /// Exit 4 from `compare` and `apply --gate`: the rounds could not tell.
    Inconclusive,
    /// Exit 130: stopped by SIGINT/SIGTERM before it finished (what was done is recorded).
    Interrupted,
}

impl Outcome {
    pub fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Success => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
            Outcome::ChangesPending | Outcome::SloMissed | Outcome::NoWinner => ExitCode::from(2),
            Outcome::Worse => ExitCode::from(3),
            Outcome::Inconclusive => ExitCode::from(4),
            Outcome::Interrupted => ExitCode::from(130),
        }
    }
}

/// The panic message `print!`/`println!` raise when stdout is a closed pipe.
fn is_stdout_broken_pipe(message: &str) -> bool {
    message.contains("failed printing to stdout") && message.contains("Broken pipe")
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
}

pub fn main() -> ExitCode {
    // `benchstack results --json | head -1`: the reader went away, which is its right. The
    // print that noticed unwinds (so the state store is dropped and flushed as on any early
    // return) and the command ends quietly with success, as cat and grep do.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if panic_message(info.payload()).is_some_and(is_stdout_broken_pipe) {
            return;
        }
        default_hook(info);
    }));
    match std::panic::catch_unwind(run_command) {
        Ok(code) => code,
        Err(payload) if panic_message(payload.as_ref()).is_some_and(is_stdout_broken_pipe) => {
            ExitCode::SUCCESS
        }
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

fn run_command() -> ExitCode {
    // A bad flag is bad input: exit 1 like every other (clap's own choice is 2, which here
    // means "changes pending" or "an SLO was missed"); --help and --version exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // Commands with a stack find their state from it (its backend block); the others from
    // `--state` or the working directory's binding (ops::StateArg).
    let arg = crate::ops::StateArg {
        flag: cli.state.clone(),
    };
    let bare = || arg.without_stack();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Plan(args) => plan::run(&arg, args),
        Command::Comment(args) => comment::run(args),
        Command::Apply(args) => apply::run(&arg, args),
        Command::Destroy(args) => destroy::run(&arg, args),
        Command::Output(args) => bare().and_then(|dir| output::run(&dir, args)),
        Command::Results(args) => bare().and_then(|dir| results::run(&dir, args)),
        Command::State(args) => bare().and_then(|dir| state::run(&dir, arg.named(), args)),
        Command::Validate(args) => validate::run(args),
        Command::Fmt(args) => fmt::run(args),
        Command::Loadtest(args) => loadtest::run(*args),
        Command::Render(args) => render::run(args),
        Command::Tune(args) => tune::run(&arg, args),
        Command::Worker(args) => worker::run(args),
        Command::Compare(args) => compare::run(&arg, *args),
    };
    match result {
        Ok(outcome) => outcome.exit_code(),
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::from(1)
        }
    }
}

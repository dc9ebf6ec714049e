//! `benchstack compare STACK --against REF|OTHER.hcl`: deploys the stack's serving
//! configuration and the base's side by side, measures them in interleaved rounds and prints
//! the verdict per metric (docs/compare.md). The logic is `crate::compare`.

use std::path::{Path, PathBuf};
use std::process::Command;

use miette::miette;

use super::plan::open_store;
use crate::compare::bench::{self, StackMeasure};
use crate::compare::{self, Comparison, Options, RoundRecord, Verdict};
use crate::ops::{PlanFlags, check_providers, load_stack};
use crate::provider::Providers;
use crate::vocab::resources::Stack;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 same or better, 3 worse, 4 inconclusive, 1 an error, 130 interrupted."
)]
pub struct Args {
    /// The candidate: a stack file or a directory of *.hcl files.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// The base: a git revision of the same stack files (read with `git show REV:PATH`), or
    /// another stack file or directory.
    #[arg(long, value_name = "REF|OTHER.hcl")]
    pub against: String,
    /// The load test to measure by (when the stack has several).
    #[arg(long, value_name = "ADDR")]
    pub loadtest: Option<String>,
    /// Valid rounds per side before the first verdict.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..=100))]
    pub rounds: u32,
    /// While the verdict is inconclusive, add rounds up to this many.
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u32).range(2..=100))]
    pub max_rounds: u32,
    /// The smallest change that counts as better or worse, in percent (e.g. 5 or 5%).
    #[arg(long, default_value = "5%", value_parser = parse_percent)]
    pub min_effect: f64,
    /// Each round a capacity search under the load test's SLOs instead of its fixed stages.
    #[arg(long)]
    pub capacity: bool,
    /// Leave both serving configurations running afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Before deploying on a stack with gke clusters, run plan's preflight (docs/gke.md,
    /// "Preflight") over both configurations: a disabled API, a missing machine type or
    /// image, a CPU quota too small stops the compare before anything is created, and both
    /// are sized by the machine shapes Compute Engine describes. `--preflight=false` skips it.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub preflight: bool,
    /// Print the comparison as JSON (docs/compare.md) instead of text; the same as
    /// `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// text (default), json, or markdown for a pull request (docs/ci.md); markdown is also
    /// appended to `$GITHUB_STEP_SUMMARY` when that is set.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<super::common::Format>,
    /// Set a variable (for both stacks): NAME=VALUE; repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Read variables from a file (for both stacks); repeatable.
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

impl Args {
    /// The variables as the stack loader takes them (compare plans its own targets).
    fn flags(&self) -> PlanFlags {
        PlanFlags {
            targets: Vec::new(),
            replace: Vec::new(),
            refresh: true,
            vars: self.vars.clone(),
            var_files: self.var_files.clone(),
        }
    }
}

/// `5`, `5%` or `0.5%` as a fraction.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    let t = s.trim().trim_end_matches('%').trim();
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..100.0).contains(&v) => Ok(v / 100.0),
        _ => Err(format!(
            "`{s}`: expected a percentage from 0 to below 100, such as 5 or 5%"
        )),
    }
}

/// Files written for the base's stack, removed when dropped.
struct BaseFiles {
    paths: Vec<PathBuf>,
}

impl Drop for BaseFiles {
    fn drop(&mut self) {
        for p in self.paths.iter().rev() {
            if p.is_dir() {
                let _ = std::fs::remove_dir_all(p);
            } else {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

fn git(dir: &Path, args: &[&str]) -> miette::Result<Vec<u8>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| miette!("--against: running git: {e}"))?;
    if !out.status.success() {
        return Err(miette!(
            "--against: git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// Loads the stack as it was at git revision `rev`: each of the candidate's files read with
/// `git show REV:PATH` and written beside the original (a hidden sibling file, or a hidden
/// sibling directory for a directory stack), so relative paths in it resolve as they do in the
/// working tree. Files the stack reads (models, requests) come from the working tree.
fn load_at_revision(
    path: &Path,
    rev: &str,
    candidate: &Stack,
    flags: &PlanFlags,
) -> miette::Result<Stack> {
    let pid = std::process::id();
    let top_dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    };
    let toplevel = String::from_utf8_lossy(&git(&top_dir, &["rev-parse", "--show-toplevel"])?)
        .trim()
        .to_string();
    let toplevel = std::fs::canonicalize(&toplevel)
        .map_err(|e| miette!("--against: the repository at {toplevel}: {e}"))?;
    // Resolve the revision once, so every file comes from the same commit.
    let commit = String::from_utf8_lossy(&git(
        &toplevel,
        &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
    )?)
    .trim()
    .to_string();
    let show = |file: &Path| -> miette::Result<Vec<u8>> {
        let abs = std::fs::canonicalize(file)
            .map_err(|e| miette!("--against: {}: {e}", file.display()))?;
        let rel = abs.strip_prefix(&toplevel).map_err(|_| {
            miette!(
                "--against {rev}: {} is outside the git repository at {}",
                file.display(),
                toplevel.display()
            )
        })?;
        git(&toplevel, &["show", &format!("{commit}:{}", rel.display())])
    };
    let mut guard = BaseFiles { paths: Vec::new() };
    let load_path = if path.is_dir() {
        let name = path
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "stack".into());
        let parent = std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .ok_or_else(|| miette!("--against: {} has no parent directory", path.display()))?;
        let dir = parent.join(format!(".{name}.compare-base-{pid}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| miette!("--against: creating {}: {e}", dir.display()))?;
        guard.paths.push(dir.clone());
        for f in &candidate.files {
            let bytes = show(f)?;
            let fname = f
                .file_name()
                .ok_or_else(|| miette!("--against: {} has no file name", f.display()))?;
            std::fs::write(dir.join(fname), bytes)
                .map_err(|e| miette!("--against: writing {}: {e}", dir.display()))?;
        }
        dir
    } else {
        let bytes = show(path)?;
        let stem = path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "stack".into());
        let file = top_dir.join(format!(".{stem}.compare-base-{pid}.hcl"));
        std::fs::write(&file, bytes)
            .map_err(|e| miette!("--against: writing {}: {e}", file.display()))?;
        guard.paths.push(file.clone());
        file
    };
    let stack = load_stack(&load_path, flags)
        .map_err(|e| e.wrap_err(format!("--against {rev}: the stack at that revision")))?;
    drop(guard);
    Ok(stack)
}

fn print_record(r: &RoundRecord) {
    super::progress::end_line();
    let figures: Vec<String> = r
        .figures
        .iter()
        .filter(|f| f.metric.starts_with("p99") || f.metric.starts_with("capacity"))
        .map(|f| format!("{} {:.2} {}", f.metric, f.value, f.unit))
        .collect();
    match &r.invalid {
        Some(why) => println!(
            "round {} {}: INVALID, repeated: {why}",
            r.round + 1,
            r.side.as_str()
        ),
        None => println!(
            "round {} {}: {}",
            r.round + 1,
            r.side.as_str(),
            figures.join(", ")
        ),
    }
}

pub fn outcome(verdict: Verdict) -> super::Outcome {
    match verdict {
        Verdict::Better | Verdict::Same => super::Outcome::Success,
        Verdict::Worse => super::Outcome::Worse,
        Verdict::Inconclusive => super::Outcome::Inconclusive,
    }
}

pub fn run(state: &crate::ops::StateArg, args: Args) -> miette::Result<super::Outcome> {
    if args.max_rounds < args.rounds {
        return Err(miette!(
            "--max-rounds ({}) is smaller than --rounds ({})",
            args.max_rounds,
            args.rounds
        ));
    }
    if args.max_rounds < 5 {
        // With 4 + 4 rounds the smallest exact p is 2/70 ≈ 0.029, above the 0.01 a
        // `better` or `worse` needs.
        eprintln!(
            "warning: with at most {} rounds per side no p-value can reach 0.01: the verdict can only be `same` or `inconclusive`",
            args.max_rounds
        );
    }
    let flags = args.flags();
    let candidate = load_stack(&args.path, &flags)?;
    let state_dir = &state.for_stack(&candidate)?;
    // The composition root: where Google's APIs are, read from the environment once.
    let apis = crate::provider::gcp::Apis::from_env();
    let providers = Providers::new(state_dir, &apis);
    check_providers(&candidate, &providers)?;
    let against = Path::new(&args.against);
    let (base, base_label) = if against.exists() {
        (load_stack(against, &flags)?, against.display().to_string())
    } else {
        (
            load_at_revision(&args.path, &args.against, &candidate, &flags)?,
            format!("git:{}", args.against),
        )
    };
    let chosen = args
        .loadtest
        .as_deref()
        .map(crate::state::parse_address)
        .transpose()
        .map_err(|e| miette!("--loadtest: {e}"))?;
    let loadtest = bench::pick_loadtest(&candidate, chosen.as_ref()).map_err(|e| miette!("{e}"))?;
    let combined = bench::combine(&candidate, &base, &loadtest).map_err(|e| miette!("{e}"))?;
    let store = open_store(state_dir, "compare")?;
    // What apply checks before creating anything, over both sides (the base's image too);
    // the machine shapes it read size the deploy's plan.
    let mut machine_shapes = crate::plan::MachineShapes::default();
    if args.preflight {
        let servings = [combined.target.clone(), combined.base_target.clone()];
        if let Some(checked) = crate::ops::preflight_servings(
            &combined.stack,
            &store,
            &providers,
            &servings,
            None,
            &apis,
        )? {
            if !super::common::print_preflight(&checked, "`--preflight=false`") {
                return Ok(super::Outcome::Failed);
            }
            machine_shapes = checked.machine_shapes;
        }
    }
    let cancel = super::common::cancel_on_signals();
    // JSON and markdown are for a file or a comment: stdout carries the document alone.
    let quiet = super::common::Format::of(args.format, args.json) != super::common::Format::Text;
    let progress = |m: String| {
        if !quiet {
            super::progress::resource("compare", &m)
        }
    };
    if !quiet {
        println!(
            "Deploying {} (candidate) and {} (base, from {base_label}) side by side…",
            combined.target, combined.base_target
        );
    }
    let deployed = bench::deploy(
        &combined,
        &store,
        &providers,
        &machine_shapes,
        &cancel,
        &progress,
    );
    let created = match &deployed {
        Ok(c) => c.clone(),
        Err(_) => store
            .resources()
            .map_err(|e| miette!("{e}"))?
            .into_iter()
            .map(|r| r.address)
            .filter(|a| combined.base_resources.contains(a))
            .collect(),
    };
    let on_record = |r: &RoundRecord| {
        if !quiet {
            print_record(r)
        }
    };
    let result: Result<Comparison, compare::CompareError> = deployed.and_then(|_| {
        let mut measure = StackMeasure {
            combined: &combined,
            store: &store,
            providers: &providers,
            cancel: &cancel,
            progress: &progress,
            capacity: args.capacity,
            on_record: &on_record,
        };
        compare::run_rounds(
            &mut measure,
            &Options {
                rounds: args.rounds as usize,
                max_rounds: args.max_rounds as usize,
                min_effect: args.min_effect,
            },
            (
                &format!("{} from {base_label}", combined.target),
                &format!("{} from {}", combined.target, args.path.display()),
                &loadtest.to_string(),
                args.capacity,
            ),
        )
    });
    // Remove what compare created, with its own cancel flag: also after an interruption.
    if args.keep {
        if !quiet {
            println!(
                "Kept: {} (remove with `benchstack destroy --target ADDR`).",
                created
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    } else {
        let quiet = std::sync::atomic::AtomicBool::new(false);
        if let Err(e) = bench::remove(&combined, &created, &store, &providers, &quiet, &progress) {
            eprintln!("warning: removing what compare deployed: {e}");
        }
    }
    super::progress::end_line();
    let comparison = match result {
        Ok(c) => c,
        Err(compare::CompareError::Interrupted) => {
            println!("Interrupted.");
            return Ok(super::Outcome::Interrupted);
        }
        Err(e) => return Err(miette!("{e}")),
    };
    match super::common::Format::of(args.format, args.json) {
        super::common::Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&comparison).map_err(|e| miette!("{e}"))?
        ),
        super::common::Format::Markdown => {
            let doc = crate::report::documents::compare_document(
                &comparison,
                &super::plan::stack_name(&args.path),
            );
            super::common::emit_markdown(&doc.render(crate::report::markdown::GITHUB_LIMIT))?;
        }
        super::common::Format::Text => {
            println!();
            print!("{}", compare::render(&comparison));
        }
    }
    Ok(outcome(comparison.verdict))
}

//! `benchstack compare STACK --against REF|OTHER.hcl`: deploys the stack's serving
//! configuration and the base's side by side, measures them in interleaved rounds and prints
//! the verdict per metric (docs/compare.md). The logic is `crate::compare`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use miette::miette;

use super::plan::open_store;
use crate::compare::bench::{self, StackMeasure};
use crate::compare::revision::{RevisionError, RevisionTree};
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
    /// The base: a git revision (its whole tree: the stack's files and every model, request
    /// file and build context they read, as committed), or another stack file or directory.
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
    /// Leave both serving configurations running afterwards (and, for a revision, the
    /// unpacked tree the base reads its models from).
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

/// The base stack as it is at git revision `rev`: the revision's whole tree unpacked in a
/// temporary directory (`crate::compare::revision`) and the stack loaded from the same
/// relative path inside it, so models, request files and build contexts are the revision's.
/// The tree is returned with the stack: the deployed base reads from it until it is removed.
pub fn load_at_revision(
    path: &Path,
    rev: &str,
    flags: &PlanFlags,
    cancel: &AtomicBool,
) -> miette::Result<Option<(Stack, RevisionTree)>> {
    let tree = match RevisionTree::checkout(path, rev, cancel) {
        Ok(t) => t,
        Err(RevisionError::Interrupted) => return Ok(None),
        Err(e) => return Err(miette!("{e}")),
    };
    let stack = match load_stack(&tree.stack_path, flags) {
        Ok(s) => s,
        Err(e) => {
            let why = tree.explain(&e.to_string());
            return Err(match why {
                Some(why) => e.wrap_err(format!(
                    "--against {rev}: the stack at that revision reads what the revision does not hold:\n{why}\nCommit what it reads, or compare against another stack file (--against OTHER.hcl). The paths below are in the revision's tree, unpacked in {} (removed).",
                    tree.root().display()
                )),
                None => e.wrap_err(format!(
                    "--against {rev}: the stack at that revision (its tree unpacked in {})",
                    tree.root().display()
                )),
            });
        }
    };
    tree.check_reads(&stack).map_err(|e| miette!("{e}"))?;
    Ok(Some((stack, tree)))
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
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
    // Ctrl-C from here on cancels: what was unpacked or deployed is still removed.
    let cancel = super::common::cancel_on_signals();
    let against = Path::new(&args.against);
    let (base, base_label, tree) = if against.exists() {
        (
            load_stack(against, &flags)?,
            against.display().to_string(),
            None,
        )
    } else {
        match load_at_revision(&args.path, &args.against, &flags, &cancel)? {
            Some((stack, tree)) => {
                let label = format!("git:{} ({})", args.against, short(&tree.commit));
                (stack, label, Some(tree))
            }
            None => {
                println!("Interrupted.");
                return Ok(super::Outcome::Interrupted);
            }
        }
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
        // The kept base serves the revision's models from its tree: it stays too.
        if let Some(tree) = tree {
            let line = format!(
                "Kept the base's tree of {} at {} (the kept base reads from it; delete it after destroying the base).",
                args.against,
                tree.keep().display()
            );
            if quiet {
                eprintln!("{line}")
            } else {
                println!("{line}")
            }
        }
    } else {
        let quiet = AtomicBool::new(false);
        if let Err(e) = bench::remove(&combined, &created, &store, &providers, &quiet, &progress) {
            eprintln!("warning: removing what compare deployed: {e}");
        }
        // Only now: the base read its models and requests from the tree until removed.
        drop(tree);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::load::RequestSource;
    use crate::vocab::resources::ResourceConfig;

    fn git(dir: &Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    const STACK: &str = r#"cluster "local" {
  provider = "local"
}

model "m" {
  base_path = "../models/m"
}

serving "tf" {
  cluster = cluster.local
  models  = [model.m]
}

loadtest "smoke" {
  target  = serving.tf
  request = file("../requests/body.json")
  stage {
    rate     = 10
    duration = "1s"
  }
}
"#;

    /// A repository whose first commit has request body A and model version file "old"; the
    /// working tree then has body B and "new".
    fn repository() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q"]);
        write(&root.join("stacks/bench.hcl"), STACK);
        write(&root.join("requests/body.json"), r#"{"instances": ["A"]}"#);
        write(&root.join("models/m/1/saved_model.pb"), "old");
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "base"]);
        write(&root.join("requests/body.json"), r#"{"instances": ["B"]}"#);
        write(&root.join("models/m/1/saved_model.pb"), "new");
        let stack = root.join("stacks/bench.hcl");
        (dir, stack)
    }

    fn flags() -> PlanFlags {
        PlanFlags {
            targets: Vec::new(),
            replace: Vec::new(),
            refresh: true,
            vars: Vec::new(),
            var_files: Vec::new(),
        }
    }

    #[test]
    fn against_a_revision_the_base_reads_the_revision_s_requests_and_models() {
        let (_repo, stack) = repository();
        let cancel = AtomicBool::new(false);
        let (base, tree) = load_at_revision(&stack, "HEAD", &flags(), &cancel)
            .unwrap()
            .unwrap();
        let mut saw_model = false;
        let mut saw_request = false;
        for r in &base.resources {
            match &r.config {
                ResourceConfig::Model(m) => {
                    assert!(m.base_path.starts_with(tree.root()), "{m:?}");
                    let pb = std::fs::read_to_string(m.base_path.join("1/saved_model.pb"));
                    assert_eq!(pb.unwrap(), "old");
                    saw_model = true;
                }
                ResourceConfig::Loadtest(l) => {
                    assert_eq!(
                        l.request,
                        RequestSource::Body(r#"{"instances": ["A"]}"#.into())
                    );
                    saw_request = true;
                }
                _ => {}
            }
        }
        assert!(saw_model && saw_request);
        // The candidate (the working tree) still reads B.
        let candidate = load_stack(&stack, &flags()).unwrap();
        assert!(candidate.resources.iter().any(|r| matches!(&r.config,
            ResourceConfig::Loadtest(l) if l.request == RequestSource::Body(r#"{"instances": ["B"]}"#.into()))));
        // Each side of the comparison sends its own requests, at the candidate's load.
        let lt = bench::pick_loadtest(&candidate, None).unwrap();
        let combined = bench::combine(&candidate, &base, &lt).unwrap();
        let body = |side| match combined.loadtest_for(side).unwrap().0.request {
            RequestSource::Body(b) => b,
            other => panic!("{other:?}"),
        };
        assert_eq!(body(compare::Side::Base), r#"{"instances": ["A"]}"#);
        assert_eq!(body(compare::Side::Candidate), r#"{"instances": ["B"]}"#);
        let (base_lt, _) = combined.loadtest_for(compare::Side::Base).unwrap();
        assert_eq!(base_lt.target, combined.base_target);
        // The tree is removed when dropped, kept when asked.
        let root = tree.root().to_path_buf();
        drop(tree);
        assert!(!root.exists());
        let (_, tree) = load_at_revision(&stack, "HEAD", &flags(), &cancel)
            .unwrap()
            .unwrap();
        let kept = tree.keep();
        assert!(kept.join("models/m/1/saved_model.pb").is_file());
        std::fs::remove_dir_all(kept).unwrap();
    }

    #[test]
    fn a_file_the_revision_does_not_hold_is_named_with_the_revision_not_read_from_the_working_tree()
    {
        let (repo, stack) = repository();
        let root = repo.path();
        // A model directory that git ignores: in the working tree, never in a commit.
        write(&root.join(".gitignore"), "big/\n");
        write(&root.join("big/m/1/saved_model.pb"), "large");
        write(&stack, &STACK.replace("../models/m", "../big/m"));
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "a model git ignores"]);
        let cancel = AtomicBool::new(false);
        let e = load_at_revision(&stack, "HEAD", &flags(), &cancel).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("big/m is not in HEAD ("), "{text}");
        assert!(text.contains("the working tree has it"), "{text}");
        // Only what is missing: the stack's own file, named at a position, is not.
        assert_eq!(text.matches(" is not in HEAD (").count(), 1, "{text}");
        // A revision that does not exist is refused by name.
        let e = load_at_revision(&stack, "no-such-rev", &flags(), &cancel).unwrap_err();
        assert!(format!("{e}").contains("--against no-such-rev"), "{e}");
    }

    #[test]
    fn a_git_lfs_pointer_at_the_revision_is_refused() {
        let (repo, stack) = repository();
        let root = repo.path();
        write(
            &root.join("models/m/1/variables/variables.data-00000-of-00001"),
            "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n",
        );
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "pointer"]);
        let cancel = AtomicBool::new(false);
        let e = load_at_revision(&stack, "HEAD", &flags(), &cancel).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("models/m/1/variables/variables.data-00000-of-00001 at HEAD ("),
            "{text}"
        );
        assert!(text.contains("Git LFS pointer"), "{text}");
    }
}

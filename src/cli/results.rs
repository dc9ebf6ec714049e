//! `benchstack results`: the stored load-test runs — a list, one run's stage table, two runs
//! compared, JSON, or an HTML page.

use std::path::{Path, PathBuf};

use miette::{IntoDiagnostic, miette};

use crate::loadgen::RunReport;
use crate::ops::open_view;
use crate::state::{self, RunRecord, procinfo};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// `baseline set|list|unset`: pin runs as a load test's baseline for `apply --gate`.
    #[command(subcommand)]
    pub command: Option<super::baseline::Command>,
    /// The load test whose latest run to show (e.g. loadtest.baseline).
    pub address: Option<String>,
    /// Show this run.
    #[arg(long, value_name = "ID", conflicts_with = "compare")]
    pub run: Option<u64>,
    /// Compare two runs side by side.
    #[arg(long, num_args = 2, value_names = ["RUN", "RUN"])]
    pub compare: Option<Vec<u64>>,
    /// Print JSON (the stored run records, histograms included); the same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// text (default), json, or markdown (with --compare: the two runs for a pull request,
    /// docs/ci.md; also appended to `$GITHUB_STEP_SUMMARY` when that is set).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<super::common::Format>,
    /// Write a self-contained HTML report of the selected runs to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

fn report(r: &RunRecord) -> miette::Result<RunReport> {
    serde_json::from_value(r.report.clone()).map_err(|e| {
        miette!(
            "run #{} has a report this benchstack cannot read: {e}",
            r.id
        )
    })
}

fn label(r: &RunRecord) -> String {
    format!("#{} {}", r.id, r.address)
}

pub fn run(state_dir: &Path, args: Args) -> miette::Result<super::Outcome> {
    if let Some(command) = args.command {
        return super::baseline::run(state_dir, command);
    }
    // The published snapshot: answers while an apply holds the lock.
    let view = open_view(state_dir)?.ok_or_else(|| {
        miette!(
            "no state in {}: nothing has been applied yet",
            crate::state::describe(state_dir)
        )
    })?;
    let all = view.runs().map_err(|e| miette!("{e}"))?;
    let get = |id: u64| -> miette::Result<RunRecord> {
        all.iter()
            .find(|r| r.id == id)
            .cloned()
            .ok_or_else(|| miette!("no run #{id} in the state (runs: {})", ids(&all)))
    };
    let selected: Vec<RunRecord> = if let Some(ids) = &args.compare {
        vec![get(ids[0])?, get(ids[1])?]
    } else if let Some(id) = args.run {
        vec![get(id)?]
    } else if let Some(a) = &args.address {
        let address = state::parse_address(a).map_err(|e| miette!("{e}"))?;
        let latest = all.iter().rev().find(|r| r.address == address).cloned();
        vec![latest.ok_or_else(|| miette!("no runs of {address} in the state"))?]
    } else {
        Vec::new()
    };

    if let Some(file) = &args.html {
        let runs: Vec<RunRecord> = if selected.is_empty() {
            // The latest run of every load test, side by side (e.g. a batching sweep).
            let mut latest: std::collections::BTreeMap<String, RunRecord> = Default::default();
            for r in &all {
                latest.insert(r.address.to_string(), r.clone());
            }
            latest.into_values().collect()
        } else {
            selected.clone()
        };
        if runs.is_empty() {
            return Err(miette!("no runs to report: nothing has run yet"));
        }
        let labelled: Vec<(String, RunReport)> = runs
            .iter()
            .map(|r| Ok((label(r), report(r)?)))
            .collect::<miette::Result<_>>()?;
        std::fs::write(file, crate::report::html(&labelled))
            .map_err(|e| miette!("--html {}: {e}", file.display()))?;
        println!("Wrote {} ({} run(s)).", file.display(), labelled.len());
        return Ok(super::Outcome::Success);
    }

    let format = super::common::Format::of(args.format, args.json);
    if format == super::common::Format::Markdown {
        let [a, b] = selected.as_slice() else {
            return Err(miette!(
                "--format markdown shows two runs compared: add --compare RUN RUN"
            ));
        };
        let doc = crate::report::documents::runs_document(
            &(label(a), report(a)?),
            &(label(b), report(b)?),
            &b.address.to_string(),
        );
        super::common::emit_markdown(&doc.render(crate::report::markdown::GITHUB_LIMIT))?;
        return Ok(super::Outcome::Success);
    }
    if format == super::common::Format::Json {
        let v = if selected.is_empty() { &all } else { &selected };
        println!("{}", serde_json::to_string_pretty(v).into_diagnostic()?);
        return Ok(super::Outcome::Success);
    }
    match selected.as_slice() {
        [] => {
            if all.is_empty() {
                println!("No runs yet: `benchstack apply` runs the stack's load tests.");
            }
            println!(
                "{:>4}  {:<28} {:<20}  {:>8}  {:<7}  config",
                "run", "load test", "finished", "p99 ms", "SLO"
            );
            for r in &all {
                let p99 = r.report["stages"]
                    .as_array()
                    .and_then(|s| s.last())
                    .and_then(|s| s["latency_ms"]["p99"].as_f64())
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:>4}  {:<28} {:<20}  {:>8}  {:<7}  {}",
                    r.id,
                    r.address.to_string(),
                    procinfo::rfc3339(r.finished),
                    p99,
                    if !r.report["invalid"].is_null() {
                        "INVALID"
                    } else if r.slos_met {
                        "met"
                    } else {
                        "MISS"
                    },
                    match &r.tune {
                        // A probe of `benchstack tune`: which tune, at what rate, with what.
                        Some(t) => format!(
                            "{} probe @{} req/s: {}",
                            t.tune,
                            crate::tune::fmt_rate(t.rate),
                            t.settings
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                        None => r.config_hash.clone(),
                    }
                );
            }
        }
        [one] => {
            println!(
                "Run #{} of {} (finished {}, on {} — {} × {}, config {})",
                one.id,
                one.address,
                procinfo::rfc3339(one.finished),
                one.environment.host,
                one.environment.cpus,
                one.environment.cpu_model,
                one.config_hash
            );
            println!("{}", crate::report::stage_table(&report(one)?));
        }
        [a, b, ..] => {
            let (la, lb) = (label(a), label(b));
            println!(
                "{}",
                crate::report::compare_table(&(la, report(a)?), &(lb, report(b)?))
            );
        }
    }
    Ok(super::Outcome::Success)
}

fn ids(all: &[RunRecord]) -> String {
    if all.is_empty() {
        return "none".into();
    }
    all.iter()
        .map(|r| r.id.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

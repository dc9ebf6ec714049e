//! `benchstack tune [STACK]`: search a serving resource's settings for the most traffic under
//! the load test's SLOs (the stack's `tune` block), show every trial and the winner, and with
//! `--write` propose the winner as an edit of the stack file.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use miette::{IntoDiagnostic, miette};
use sha2::{Digest, Sha256};

use super::apply::print_event;
use super::common::cancel_on_signals;
use super::plan::open_store;
use super::validate::VarArgs;
use crate::ops::{ExtraImages, check_providers};
use crate::provider::Providers;
use crate::stack::tune::{Knob, TuneConfig};
use crate::tune::bench::StackBench;
use crate::tune::{self, Event, Outcome, TuneError, Tuner, fmt_rate, settings_text};
use crate::vocab::resources::{ResourceConfig, ServingConfig};

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 a configuration met the SLOs (the winner), 2 none did, 1 an error, 130 interrupted (the probes so far are stored; running tune again resumes)."
)]
pub struct Args {
    /// A stack file, or a directory of *.hcl files.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// The tune block to run (needed when the stack has several).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub vars: VarArgs,
    /// Print the outcome as JSON (docs/tune-json.md); progress goes to stderr. The same as
    /// `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// text (default), json, or markdown for a pull request (docs/ci.md; also appended to
    /// `$GITHUB_STEP_SUMMARY` when that is set).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<super::common::Format>,
    /// Write an HTML page: capacity per configuration, latency against offered rate.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Edit the stack file so that the serving resource declares the winner's settings.
    #[arg(long)]
    pub write: bool,
    /// Before the first trial on a stack with gke clusters, run plan's preflight (docs/gke.md,
    /// "Preflight"), with every `image` of the space: a disabled API, a missing machine type
    /// or image, a CPU quota too small stops the tune before anything is created, and every
    /// trial is sized by the machine shapes Compute Engine describes. `--preflight=false`
    /// skips it (the built-in machine table sizes the trials).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub preflight: bool,
}

fn pick_tune(tunes: &[TuneConfig], name: Option<&str>, path: &Path) -> miette::Result<TuneConfig> {
    let names = || {
        tunes
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(n) => tunes.iter().find(|t| t.name == n).cloned().ok_or_else(|| {
            if tunes.is_empty() {
                miette!("--name {n}: {} has no tune blocks", path.display())
            } else {
                miette!(
                    "--name {n}: no tune \"{n}\" in {}; expected one of: {}",
                    path.display(),
                    names()
                )
            }
        }),
        None => match tunes {
            [] => Err(miette!(
                "{} has no tune block; expected one such as tune \"batching\" {{ serving = serving.NAME … }} (see docs/stack-language.md)",
                path.display()
            )),
            [one] => Ok(one.clone()),
            _ => Err(miette!(
                "{} has several tune blocks ({}); choose one with --name",
                path.display(),
                names()
            )),
        },
    }
}

fn fmt_elapsed(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Prints the tuner's events on stderr, one line each, with apply's progress through the
/// shared renderer (in place on a terminal; every few seconds in a log), erased by the next
/// event's line.
fn printer(start: Instant) -> impl Fn(Event) + Sync {
    move |e: Event| {
        if !matches!(e, Event::Progress { .. }) {
            super::progress::clear_line();
        }
        match e {
            Event::Measuring {
                index,
                total,
                settings,
                baseline,
                measurement,
                left,
            } => {
                let elapsed = start.elapsed();
                let left = left
                    .map(|l| format!(", ~{} left", fmt_elapsed(l)))
                    .unwrap_or_default();
                let what = if measurement > 0 {
                    format!(" (measurement {})", measurement + 1)
                } else {
                    String::new()
                };
                let base = if baseline {
                    " [current configuration]"
                } else {
                    ""
                };
                eprintln!(
                    "trial {index}/{total}: {}{base}{what} — elapsed {}{left}",
                    settings_text(&settings),
                    fmt_elapsed(elapsed)
                );
            }
            Event::Applying { .. } => eprintln!("  applying the settings…"),
            Event::Progress { message } => {
                let phase = message.split(':').next().unwrap_or(&message).to_string();
                super::progress::update(
                    super::progress::Stream::Stderr,
                    &phase,
                    &format!("  {message}"),
                );
            }
            Event::Probe {
                rate,
                duration,
                passed,
                reason,
                reused,
                run_id,
                stopped_early,
                short_sample,
            } => {
                let mut verdict = if passed {
                    "passed".to_string()
                } else {
                    format!("failed: {reason}")
                };
                if let Some((after, why)) = stopped_early {
                    verdict.push_str(&format!(
                        "; stopped early after {:.1}s ({why})",
                        after.as_secs_f64()
                    ));
                }
                if let Some(short) = short_sample {
                    verdict.push_str(&format!("; short sample: {short}"));
                }
                let from = if reused {
                    format!(" (run #{run_id}, from the state)")
                } else {
                    format!(" (run #{run_id})")
                };
                eprintln!(
                    "  probe {} req/s for {:.1}s: {verdict}{from}",
                    fmt_rate(rate),
                    duration.as_secs_f64()
                );
            }
            Event::Measured {
                capacity,
                invalid,
                floor,
                ..
            } => match (capacity, invalid, floor) {
                (_, Some(why), _) => eprintln!("  invalid: {why}"),
                (Some(c), None, _) => eprintln!("  capacity {} req/s", fmt_rate(c)),
                (None, None, Some(f)) => eprintln!("  never passes: {}", f.text()),
                (None, None, None) => eprintln!("  no probed rate met the SLOs"),
            },
            Event::DoesNotFit {
                settings,
                trials,
                baseline,
                reason,
            } => {
                let what = if settings.is_empty() {
                    "the current configuration".to_string()
                } else if baseline {
                    format!("{} [current configuration]", settings_text(&settings))
                } else {
                    settings_text(&settings)
                };
                let skips = match trials {
                    Some(1) => " (1 trial not run)".to_string(),
                    Some(n) => format!(" ({n} trials not run)"),
                    None => " (not run where the search reaches it)".to_string(),
                };
                eprintln!("does not fit: {what}{skips}: {reason}");
            }
            Event::NotRun { settings, baseline } => {
                let base = if baseline {
                    " [current configuration]"
                } else {
                    ""
                };
                eprintln!(
                    "not run: {}{base} — does not fit (above)",
                    settings_text(&settings)
                );
            }
            Event::Restoring => {
                eprintln!("putting the serving resource back to what the stack declares…")
            }
        }
    }
}

/// The table of trials.
pub fn table(o: &Outcome) -> String {
    let mut rows: Vec<Vec<String>> =
        vec![tune::TRIAL_COLUMNS.iter().map(|s| s.to_string()).collect()];
    rows.extend(o.trial_rows());
    let widths: Vec<usize> = (0..10)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |v| v.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(c, v)| {
                if c == 0 {
                    format!("{v:<w$}", w = widths[c])
                } else {
                    format!("{v:>w$}", w = widths[c])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for t in &o.trials {
        if let Some(why) = t.reason() {
            out.push_str(&format!("  {}: {why}\n", settings_text(&t.settings)));
        }
        for w in t.server_warnings() {
            out.push_str(&format!("  warning: {}: {w}\n", settings_text(&t.settings)));
        }
    }
    out
}

pub fn run(state: &crate::ops::StateArg, args: Args) -> miette::Result<super::Outcome> {
    let (stack, extras) = match crate::stack::load_with_tunes(&args.path, &args.vars.var_inputs()) {
        Ok(x) => x,
        Err(diags) => {
            eprintln!("{diags}");
            return Ok(super::Outcome::Failed);
        }
    };
    let cfg = pick_tune(&extras.tunes, args.name.as_deref(), &args.path)?;
    let state_dir = &state.for_stack(&stack)?;
    // The composition root: where Google's APIs are, read from the environment once.
    let apis = crate::provider::gcp::Apis::from_env();
    let providers = Providers::new(state_dir, &apis);
    check_providers(&stack, &providers)?;
    let declared: ServingConfig = stack
        .resources
        .iter()
        .find_map(|r| match &r.config {
            ResourceConfig::Serving(s) if r.address == cfg.serving => Some(s.clone()),
            _ => None,
        })
        .ok_or_else(|| miette!("{} is not in the stack", cfg.serving))?;
    let loadtest = stack
        .resources
        .iter()
        .find_map(|r| match &r.config {
            ResourceConfig::Loadtest(l) if r.address == cfg.loadtest => Some(l.clone()),
            _ => None,
        })
        .ok_or_else(|| miette!("{} is not in the stack", cfg.loadtest))?;
    let pricing = tune::prices::pricing(&stack, &declared.cluster, &extras.hourly_prices);
    // What the measurements depend on besides the serving configuration: the load test.
    let basis = {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&loadtest).unwrap_or_default());
        h.finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };

    let store = open_store(state_dir, "tune")?;
    crate::apply::recover(&store, &providers, &print_event).map_err(|e| miette!("{e}"))?;
    // What apply checks before creating anything, once, before the first trial: the APIs,
    // machine types, CPU quotas and every image the space can run; the machine shapes it
    // read size every trial's plan (capacity check and rollout) and the fit check below.
    let mut machine_shapes = crate::plan::MachineShapes::default();
    if args.preflight {
        let images = ExtraImages {
            serving: cfg.serving.clone(),
            images: cfg
                .space
                .iter()
                .filter(|d| d.knob == Knob::Image)
                .flat_map(|d| d.values.iter())
                .filter_map(|v| match v {
                    crate::vocab::resources::FlagValue::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            label: cfg.address(),
            span: cfg.span.clone(),
            attribute: "space",
        };
        let servings = [cfg.serving.clone()];
        if let Some(checked) = crate::ops::preflight_servings(
            &stack,
            &store,
            &providers,
            &servings,
            Some(&images),
            &apis,
        )? {
            if !super::common::print_preflight(&checked, "`--preflight=false`") {
                return Ok(super::Outcome::Failed);
            }
            machine_shapes = checked.machine_shapes;
        }
    }
    let cancel = cancel_on_signals();
    let start = Instant::now();
    let events = printer(start);
    let mut bench = StackBench::new(
        &stack,
        cfg.serving.clone(),
        cfg.loadtest.clone(),
        cfg.address(),
        &store,
        &providers,
        &cancel,
        &events,
    );
    bench.machine_shapes = machine_shapes;
    let result = Tuner::new(
        &cfg,
        declared.clone(),
        &loadtest.slos,
        basis,
        pricing,
        &mut bench,
        &events,
    )
    .and_then(|t| t.run());
    // Put the serving resource back whatever happened (an interrupted tune too: a second
    // Ctrl-C still exits at once).
    let restore_cancel = AtomicBool::new(false);
    let restored = bench.restore(&restore_cancel);
    let outcome = match result {
        Ok(o) => o,
        Err(TuneError::Interrupted) => {
            if let Err(e) = restored {
                eprintln!(
                    "could not put {} back: {e}; run `benchstack apply`",
                    cfg.serving
                );
            }
            eprintln!("Interrupted: the probes so far are stored; run tune again to resume.");
            return Ok(super::Outcome::Interrupted);
        }
        Err(e) => {
            if let Err(r) = restored {
                eprintln!(
                    "could not put {} back: {r}; run `benchstack apply`",
                    cfg.serving
                );
            }
            return Err(miette!("{}: {e}", cfg.address()));
        }
    };
    restored.map_err(|e| {
        miette!(
            "{}: the tune finished, but {} could not be put back to what the stack declares: {e}; run `benchstack apply`",
            cfg.address(),
            cfg.serving
        )
    })?;
    eprintln!("done in {}", fmt_elapsed(start.elapsed()));

    let format = super::common::Format::of(args.format, args.json);
    // Anything but the document goes to stderr when stdout is JSON or markdown.
    let quiet = format != super::common::Format::Text;
    match format {
        super::common::Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&outcome.to_json()).into_diagnostic()?
        ),
        super::common::Format::Markdown => {
            let doc = crate::report::documents::tune_document(
                &outcome,
                &super::plan::stack_name(&args.path),
            );
            super::common::emit_markdown(&doc.render(crate::report::markdown::GITHUB_LIMIT))?;
        }
        super::common::Format::Text => {
            println!(
                "\n{} ({} configurations)\n",
                outcome.tune,
                outcome.trials.len()
            );
            print!("{}", table(&outcome));
            println!("\n{}", outcome.sentence());
            if let Some(p) = &outcome.pricing {
                println!(
                    "Cost: {} node(s) at ${}/h ({}).",
                    p.nodes, p.hourly_price, p.source
                );
            }
            if let Some(c) = outcome.cost_sentence() {
                println!("Cost per prediction: {c}.");
            }
            if let Some(s) = &outcome.sizing {
                let cost = s
                    .monthly_cost
                    .map(|c| format!(", about ${c:.0} a month"))
                    .unwrap_or_default();
                println!(
                    "For {} req/s: {} replica(s) on {} node(s){cost}.",
                    fmt_rate(s.target_rate),
                    s.replicas,
                    s.nodes
                );
            }
        }
    }
    if let Some(file) = &args.html {
        let page = crate::report::tune_html::page(&outcome);
        std::fs::write(file, page)
            .map_err(|e| miette!("--html {}: cannot write: {e}", file.display()))?;
        if quiet {
            eprintln!("Wrote {}.", file.display());
        } else {
            println!("Wrote {}.", file.display());
        }
    }
    if args.write {
        write_winner(&outcome, &cfg, &declared, &stack.files, quiet)?;
    }
    Ok(if outcome.winner.is_some() {
        super::Outcome::Success
    } else {
        super::Outcome::NoWinner
    })
}

/// `--write`: the winner's settings that differ from the stack's, written into the stack.
fn write_winner(
    outcome: &Outcome,
    cfg: &TuneConfig,
    declared: &ServingConfig,
    files: &[PathBuf],
    quiet: bool,
) -> miette::Result<()> {
    let say = |s: String| {
        if quiet {
            eprintln!("{s}");
        } else {
            println!("{s}");
        }
    };
    let Some(w) = outcome.winner else {
        say("--write: no configuration met the SLOs; the stack is unchanged.".into());
        return Ok(());
    };
    let winner = &outcome.trials[w];
    let changes: Vec<(Knob, crate::vocab::resources::FlagValue)> = winner
        .settings
        .iter()
        .filter_map(|(knob, v)| {
            let v = v.clone()?;
            (knob.get(declared).as_ref() != Some(&v)).then_some((knob.clone(), v))
        })
        .collect();
    if winner.baseline || changes.is_empty() {
        say("--write: the current configuration won; the stack is unchanged.".into());
        return Ok(());
    }
    let edits = tune::write::plan_edits(files, &cfg.serving, &changes)
        .map_err(|e| miette!("--write: {e}"))?;
    tune::write::write_edits(&edits).map_err(|e| miette!("--write: {e}"))?;
    say("\nWrote the winner into the stack:".into());
    for e in &edits {
        for c in &e.changes {
            say(format!("  {c}"));
        }
    }
    say("Review it with `benchstack plan`, then `benchstack apply`.".into());
    Ok(())
}

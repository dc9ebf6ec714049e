//! The pull-request documents of each command, built from the models the terminal output
//! uses (the plan's [`view::view`], a tune's [`Outcome`], two runs' [`RunReport`]s) into
//! the one shape of [`markdown::Document`].

use crate::compare::{Comparison, Verdict as CompareVerdict};
use crate::loadgen::RunReport;
use crate::plan::cost::{PlanCost, usd};
use crate::plan::view::{self, HclValue};
use crate::plan::{Action, Plan, render};
use crate::tune::{Outcome, TRIAL_COLUMNS, fmt_rate, settings_text};

use super::markdown::{
    Alert, AlertKind, Conclusion, Document, Fold, Marker, MetricRow, Table, Verdict, code, escape,
    metric_phrase, metric_table, sha256_hex,
};

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// "1 to update, 1 load test to run" (Terraform's words, the load tests by name).
pub fn plan_counts(plan: &Plan) -> String {
    let s = plan.summary();
    let mut parts = Vec::new();
    for (n, what) in [
        (s.create, "to create"),
        (s.update, "to update"),
        (s.replace, "to replace"),
        (s.delete, "to delete"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if s.run > 0 {
        parts.push(format!(
            "{} to run",
            plural(s.run, "load test", "load tests")
        ));
    }
    if parts.is_empty() {
        "no changes".into()
    } else {
        parts.join(", ")
    }
}

fn action_words(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Update => "update in place",
        Action::Replace => "replace",
        Action::Delete => "delete",
        Action::Run => "run",
        Action::NoOp => "no change",
    }
}

fn value(v: &Option<HclValue>) -> String {
    v.as_ref().map(HclValue::hcl).unwrap_or_else(|| "-".into())
}

/// The plan for a pull request: `stack` names the stack as the command line did.
pub fn plan_document(plan: &Plan, stack: &str, cost: Option<&PlanCost>) -> Document {
    let view = view::view(plan);
    let summary = plan.summary();
    let mut verdict = format!("**Plan:** {}", plan_counts(plan));
    if let Some(c) = cost {
        verdict.push_str(&format!(" · {}", escape(&c.line())));
    }
    verdict.push_str(&format!(" · {}", code(stack)));

    let mut alerts = Vec::new();
    let gone: Vec<&view::ResourceChange> = view
        .changes
        .iter()
        .filter(|c| matches!(c.action, Action::Replace | Action::Delete))
        .collect();
    if !gone.is_empty() {
        let mut text = format!(
            "**{}**",
            match (summary.replace, summary.delete) {
                (r, 0) => format!(
                    "{} will be replaced (deleted, then created)",
                    plural(r, "resource", "resources")
                ),
                (0, d) => format!("{} will be deleted", plural(d, "resource", "resources")),
                (r, d) => format!("{r} to replace and {d} to delete"),
            }
        );
        for c in gone {
            text.push_str(&format!(
                "\n{} will be {}{}",
                code(&c.address.to_string()),
                if c.action == Action::Replace {
                    "replaced"
                } else {
                    "deleted"
                },
                c.reason
                    .as_deref()
                    .map(|r| format!(": {}", escape(r)))
                    .unwrap_or_default()
            ));
            // Two spaces end a markdown line without starting a paragraph.
        }
        alerts.push(Alert {
            kind: AlertKind::Caution,
            text: text.replace('\n', "  \n"),
        });
    }
    if !plan.warnings.is_empty() {
        alerts.push(Alert {
            kind: AlertKind::Warning,
            text: plan
                .warnings
                .iter()
                .map(|w| format!("{}: {}", code(&w.address.to_string()), escape(&w.message)))
                .collect::<Vec<_>>()
                .join("  \n"),
        });
    }

    let mut tables = Vec::new();
    let changed: Vec<&view::ResourceChange> = view
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .collect();
    if !changed.is_empty() {
        tables.push(Table {
            title: String::new(),
            header: vec!["resource".into(), "action".into(), "reason".into()],
            right: vec![],
            rows: changed
                .iter()
                .map(|c| {
                    vec![
                        c.address.to_string(),
                        action_words(c.action).into(),
                        c.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
            code: vec![true, false, false],
        });
    }
    for c in &changed {
        // What is created or deleted whole is in the fold; a table shows what changes.
        if c.before.is_none() || c.after.is_none() {
            continue;
        }
        let leaves = c.leaves();
        if leaves.is_empty() {
            continue;
        }
        tables.push(Table {
            title: format!(
                "{} — {}",
                code(&c.address.to_string()),
                action_words(c.action)
            ),
            header: vec!["attribute".into(), "before".into(), "after".into()],
            right: vec![],
            rows: leaves
                .iter()
                .map(|l| {
                    let mut path = l.path.clone();
                    if l.forces_replacement {
                        path.push_str(" (forces replacement)");
                    }
                    vec![path, value(&l.before), value(&l.after)]
                })
                .collect(),
            code: vec![false, true, true],
        });
    }
    let mut notes = Vec::new();
    if let Some(cost) = cost {
        let side = |s: &Option<crate::plan::cost::Side>| match s {
            None => "-".to_string(),
            Some(s) => {
                let what = s.machine_type.as_deref().unwrap_or("node");
                let fee = s
                    .management_fee
                    .map(|f| format!(" + {} fee", usd(f)))
                    .unwrap_or_default();
                match (s.hourly_price, s.per_hour()) {
                    (Some(p), Some(total)) => format!(
                        "{} × {what} at {}/h{fee} = {}/h",
                        s.nodes,
                        usd(p),
                        usd(total)
                    ),
                    _ => format!(
                        "{} × {what}, no price ({})",
                        s.nodes,
                        s.unpriced.as_deref().unwrap_or("unknown")
                    ),
                }
            }
        };
        tables.push(Table {
            title: "**Cost per hour**".into(),
            header: vec!["cluster".into(), "before".into(), "after".into()],
            right: vec![false, true, true],
            rows: cost
                .clusters
                .iter()
                .map(|c| vec![format!("{}", c.address), side(&c.before), side(&c.after)])
                .chain(std::iter::once(vec![
                    "total".into(),
                    format!("{}/h", usd(cost.before_per_hour())),
                    format!("{}/h", usd(cost.after_per_hour())),
                ]))
                .collect(),
            code: vec![],
        });
        let mut sources: Vec<String> = cost
            .clusters
            .iter()
            .flat_map(|c| [&c.before, &c.after])
            .filter_map(|s| s.as_ref()?.source.clone())
            .chain(cost.management_fee_source.clone())
            .collect();
        sources.sort();
        sources.dedup();
        if !sources.is_empty() {
            notes.push(format!("Prices: {}.", escape(&sources.join("; "))));
        }
    }

    let text = render::text_of(&view);
    let json = serde_json::to_vec(&plan.to_json()).unwrap_or_default();
    Document {
        verdict,
        alerts,
        tables,
        notes,
        folds: vec![Fold {
            summary: "The plan in the stack's terms".into(),
            lang: "diff".into(),
            body: super::markdown::diff_lines(&text),
            whole: "`benchstack plan`".into(),
        }],
        marker: Marker {
            stack: stack.to_string(),
            kind: "plan".into(),
            digest: sha256_hex(&json),
            conclusion: if summary.replace + summary.delete > 0 {
                Conclusion::Neutral
            } else {
                Conclusion::Success
            },
        },
    }
}

/// A tune's outcome for a pull request.
pub fn tune_document(o: &Outcome, stack: &str) -> Document {
    let mut verdict = format!("**Tune** {}: {}", code(&o.tune), escape(&o.sentence()));
    if let Some(c) = o.cost_sentence() {
        verdict.push_str(&format!(" · {}", escape(&c)));
    }
    let mut alerts = Vec::new();
    if o.winner.is_none() {
        alerts.push(Alert {
            kind: AlertKind::Caution,
            text: "**No configuration met the SLOs.**".into(),
        });
    } else if o.lead_within_noise {
        alerts.push(Alert {
            kind: AlertKind::Warning,
            text: "The winner's lead over the runner-up is inside the noise: their measured ranges overlap.".into(),
        });
    }
    let table = Table {
        title: String::new(),
        header: TRIAL_COLUMNS.iter().map(|s| s.to_string()).collect(),
        right: (0..TRIAL_COLUMNS.len()).map(|i| i > 0 && i != 7).collect(),
        rows: o.trial_rows(),
        code: vec![],
    };
    let mut notes = Vec::new();
    if let Some(p) = &o.pricing {
        notes.push(escape(&format!(
            "Cost: {} node(s) at ${}/h ({}).",
            p.nodes, p.hourly_price, p.source
        )));
    }
    if let Some(s) = &o.sizing {
        let cost = s
            .monthly_cost
            .map(|c| format!(", about ${c:.0} a month"))
            .unwrap_or_default();
        notes.push(escape(&format!(
            "For {} req/s: {} replica(s) on {} node(s){cost}.",
            fmt_rate(s.target_rate),
            s.replicas,
            s.nodes
        )));
    }
    let mut probes = String::new();
    for t in &o.trials {
        probes.push_str(&settings_text(&t.settings));
        probes.push_str(if t.baseline { " (current)\n" } else { "\n" });
        for (k, m) in t.measurements.iter().enumerate() {
            if let Some(why) = &m.invalid {
                probes.push_str(&format!("  measurement {}: invalid: {why}\n", k + 1));
            }
            for p in &m.probes {
                probes.push_str(&format!(
                    "  measurement {} run #{}: {} req/s {:.1}s {}{}\n",
                    k + 1,
                    p.run,
                    fmt_rate(p.rate),
                    p.duration_s,
                    if p.passed { "passed" } else { "failed" },
                    if p.reason.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", p.reason)
                    }
                ));
            }
        }
        for w in t.server_warnings() {
            probes.push_str(&format!("  warning: {w}\n"));
        }
    }
    let json = serde_json::to_vec(&o.to_json()).unwrap_or_default();
    Document {
        verdict,
        alerts,
        tables: vec![table],
        notes,
        folds: vec![Fold {
            summary: format!("Every probe ({})", o.probes),
            lang: "text".into(),
            body: probes,
            whole: "`benchstack tune --json`".into(),
        }],
        marker: Marker {
            stack: stack.to_string(),
            kind: format!("tune.{}", o.tune.trim_start_matches("tune.")),
            digest: sha256_hex(&json),
            conclusion: if o.winner.is_some() {
                Conclusion::Success
            } else {
                Conclusion::Failure
            },
        },
    }
}

/// Two stored runs side by side (`results --compare A B --format markdown`): A is the base.
/// Single runs carry no statistics, so the rows have no interval, p or verdict.
pub fn runs_document(a: &(String, RunReport), b: &(String, RunReport), address: &str) -> Document {
    let (la, ra) = a;
    let (lb, rb) = b;
    let mut rows = Vec::new();
    // The verdict line names the last stage's p99 (the highest rate, as the stacks order
    // them): the client's, not the server's.
    let mut headline = None;
    for (stage, metrics) in super::compare_metrics(ra, rb) {
        for (label, va, vb, is_ms) in metrics {
            if label == "p99 ms" {
                headline = Some(rows.len());
            }
            let (name, unit) = match label.strip_suffix(" ms") {
                Some(n) if is_ms => (n, "ms"),
                _ => (label, ""),
            };
            rows.push(MetricRow {
                name: format!("{stage} {name}"),
                unit: unit.into(),
                base: va,
                new: vb,
                ci_pct: None,
                p: None,
                rounds: None,
                verdict: None,
            });
        }
    }
    let headline = headline
        .and_then(|i| rows.get(i))
        .map(metric_phrase)
        .unwrap_or_default();
    let verdict = format!(
        "**Runs** {} → {} ({}): {} · SLOs {} → {}",
        escape(la),
        escape(lb),
        code(address),
        escape(&headline),
        super::run_standing(ra),
        super::run_standing(rb)
    );
    let mut alerts = Vec::new();
    for (l, r) in [a, b] {
        if let Some(why) = &r.invalid {
            alerts.push(Alert {
                kind: AlertKind::Warning,
                text: format!(
                    "**{} is an invalid run** ({}): its figures are no verdict.",
                    escape(l),
                    escape(why)
                ),
            });
        }
    }
    let b_answers_differ = rb.answers.as_ref().is_some_and(|x| x.differs());
    if rb.invalid.is_none() && b_answers_differ {
        alerts.push(Alert {
            kind: AlertKind::Caution,
            text: format!("**{}: batching changed the answers.**", escape(lb)),
        });
    } else if rb.invalid.is_none() && !rb.slos_met() {
        alerts.push(Alert {
            kind: AlertKind::Caution,
            text: format!("**{} missed its SLOs.**", escape(lb)),
        });
    }
    let mut detail = super::compare_table(a, b);
    for (l, r) in [a, b] {
        detail.push_str(&format!("\n{l}\n{}", super::stage_table(r)));
    }
    let digest = sha256_hex(format!("{la}\n{lb}").as_bytes());
    Document {
        verdict,
        alerts,
        tables: vec![metric_table("", la, lb, &rows)],
        notes: vec!["Two single runs: the change has no statistics (`benchstack compare` measures rounds and decides better, same or worse).".into()],
        folds: vec![Fold {
            summary: "Both runs, stage by stage".into(),
            lang: "text".into(),
            body: detail,
            whole: "`benchstack results --compare`".into(),
        }],
        marker: Marker {
            stack: address.to_string(),
            kind: "results".into(),
            digest,
            // An invalid run is neither a pass nor a miss.
            conclusion: if ra.invalid.is_some() || rb.invalid.is_some() {
                Conclusion::Neutral
            } else if rb.slos_met() && !b_answers_differ {
                Conclusion::Success
            } else {
                Conclusion::Failure
            },
        },
    }
}

/// A `compare` (or `apply --gate`) result as the pull-request comment: the verdict line with
/// the metric that decided it, a table of every metric with its statistics, the invalid
/// rounds and why, and the terminal rendering in a fold.
pub fn compare_document(c: &Comparison, stack: &str) -> Document {
    let md_verdict = |v: CompareVerdict| match v {
        CompareVerdict::Better => Verdict::Better,
        CompareVerdict::Same => Verdict::Same,
        CompareVerdict::Worse => Verdict::Worse,
        CompareVerdict::Inconclusive => Verdict::Inconclusive,
    };
    let rows: Vec<MetricRow> = c
        .metrics
        .iter()
        .map(|m| {
            // An error rate reads as percent; the statistics are unit-free.
            let (scale, unit) = match m.unit.as_str() {
                "fraction" => (100.0, "%"),
                u => (1.0, u),
            };
            MetricRow {
                name: m.metric.clone(),
                unit: unit.to_string(),
                base: Some(m.base_median * scale),
                new: Some(m.candidate_median * scale),
                ci_pct: m
                    .ci_low
                    .zip(m.ci_high)
                    .filter(|(l, h)| l.is_finite() && h.is_finite())
                    .map(|(l, h)| (l * 100.0, h * 100.0)),
                p: Some(m.p),
                rounds: Some((m.base.len(), m.candidate.len())),
                verdict: Some(md_verdict(m.verdict)),
            }
        })
        .collect();
    // The headline is the metric that decided the verdict: the first worse one, else the
    // first better one, else the first measured.
    let decided = |v: CompareVerdict| c.metrics.iter().position(|m| m.verdict == v);
    let headline = decided(CompareVerdict::Worse)
        .or_else(|| decided(CompareVerdict::Better))
        .or(if rows.is_empty() { None } else { Some(0) })
        .and_then(|i| rows.get(i))
        .map(metric_phrase)
        .unwrap_or_else(|| "no metric measured".into());
    let overall = md_verdict(c.verdict);
    let verdict = format!(
        "**Compare** {} → {} ({}): {} · **{}**",
        escape(&c.base),
        escape(&c.candidate),
        code(&c.loadtest),
        escape(&headline),
        overall.as_str()
    );
    let mut alerts = Vec::new();
    if c.verdict == CompareVerdict::Worse {
        alerts.push(Alert {
            kind: AlertKind::Caution,
            text: format!(
                "**{} is worse than {}.**",
                escape(&c.candidate),
                escape(&c.base)
            ),
        });
    }
    let mut notes = vec![format!(
        "{} valid round(s) per side{}; better or worse needs p ≤ 0.01 and a change of at least {}%; p is the smaller of Mann–Whitney U and Kolmogorov–Smirnov; the interval is Hodges–Lehmann's (docs/compare.md).",
        c.rounds,
        if c.interleaved {
            ", measured in alternation"
        } else {
            ""
        },
        super::markdown::number(c.min_effect * 100.0)
    )];
    let invalid: Vec<String> = c
        .invalid()
        .map(|r| {
            format!(
                "round {} ({:?}): {}",
                r.round + 1,
                r.side,
                r.invalid.as_deref().unwrap_or_default()
            )
        })
        .collect();
    if !invalid.is_empty() {
        notes.push(format!(
            "{} measurement(s) discarded and repeated: {}",
            invalid.len(),
            escape(&invalid.join("; "))
        ));
    }
    let digest = sha256_hex(serde_json::to_string(c).unwrap_or_default().as_bytes());
    Document {
        verdict,
        alerts,
        tables: vec![metric_table("", &c.base, &c.candidate, &rows)],
        notes,
        folds: vec![Fold {
            summary: "Every round".into(),
            lang: "text".into(),
            body: crate::compare::render(c),
            whole: "`benchstack compare --json`".into(),
        }],
        marker: Marker {
            stack: stack.to_string(),
            kind: "compare".into(),
            digest,
            conclusion: overall.conclusion(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{applied, local_stack, plan_for};
    use crate::report::markdown::GITHUB_LIMIT;
    use crate::vocab::resources::{FlagValue, Kind, ResourceConfig};

    #[test]
    fn a_batching_edit_reads_as_one_update_with_its_attribute_table_and_no_red_line() {
        let snap = applied(&plan_for(&local_stack(8), &Default::default()));
        let plan = plan_for(&local_stack(16), &snap);
        let md = plan_document(&plan, "stack.hcl", None).render(GITHUB_LIMIT);
        assert!(
            md.starts_with(
                "**Plan:** 1 to update, 1 load test to run · `stack.hcl`\n\n| resource |"
            ),
            "{md}"
        );
        assert!(!md.contains("[!CAUTION]"), "{md}");
        assert!(
            md.contains("| batching.max\\_batch\\_size | `8` | `16` |"),
            "{md}"
        );
        assert!(md.contains("```diff\n"), "{md}");
        assert!(md.contains("+++ b/batching_parameters.txt"), "{md}");
        let m = Marker::find(&md).unwrap();
        assert_eq!(
            (m.kind.as_str(), m.conclusion),
            ("plan", Conclusion::Success)
        );
        assert_eq!(m.digest.len(), 64);
    }

    #[test]
    fn a_deletion_is_a_red_line_above_the_tables_and_a_neutral_conclusion() {
        let stack = local_stack(8);
        let snap = applied(&plan_for(&stack, &Default::default()));
        let mut smaller = stack.clone();
        smaller
            .resources
            .retain(|r| r.address.kind != Kind::Loadtest);
        let plan = plan_for(&smaller, &snap);
        let md = plan_document(&plan, "stack.hcl", None).render(GITHUB_LIMIT);
        let caution = md
            .find("> [!CAUTION]\n> 🔴 **1 resource will be deleted**")
            .unwrap();
        assert!(caution < md.find("| resource |").unwrap(), "{md}");
        assert!(
            md.contains("`loadtest.lt` will be deleted: no longer in the stack"),
            "{md}"
        );
        assert_eq!(Marker::find(&md).unwrap().conclusion, Conclusion::Neutral);
    }

    #[test]
    fn a_huge_plan_is_cut_in_its_fold_only() {
        let mut stack = local_stack(8);
        for r in &mut stack.resources {
            if let ResourceConfig::Serving(s) = &mut r.config {
                for i in 0..5000 {
                    s.flags
                        .insert(format!("flag_number_{i}"), FlagValue::Int(i64::from(i)));
                }
            }
        }
        let plan = plan_for(&stack, &Default::default());
        let doc = plan_document(&plan, "stack.hcl", None);
        assert!(doc.folds[0].body.chars().count() > 2 * GITHUB_LIMIT);
        let md = doc.render(GITHUB_LIMIT);
        assert!(md.chars().count() <= GITHUB_LIMIT);
        assert!(
            md.starts_with("**Plan:** 3 to create, 1 load test to run"),
            "{}",
            &md[..200]
        );
        assert!(md.contains("| `serving.tf` | create |"));
        assert!(md.contains("Shortened to "));
        assert!(md.contains("`benchstack plan` shows all of it"));
        assert!(md.trim_end().ends_with("conclusion=success -->"));
    }

    #[test]
    fn the_cost_table_shows_nodes_fee_and_why_a_cluster_has_no_price_with_the_sources_below() {
        use crate::plan::cost::{ClusterCost, PlanCost, Side};
        let plan = plan_for(&local_stack(8), &Default::default());
        let side = |price: Option<f64>, why: Option<&str>| Side {
            nodes: 3,
            machine_type: Some("e2-highcpu-8".into()),
            hourly_price: price,
            source: price.map(|_| "e2-highcpu-8 in us-central1: list price".into()),
            unpriced: why.map(str::to_string),
            management_fee: Some(0.1),
        };
        let cost = PlanCost {
            clusters: vec![
                ClusterCost {
                    address: crate::plan::tests::addr(Kind::Cluster, "serving"),
                    action: crate::plan::Action::Create,
                    before: None,
                    after: Some(side(Some(0.198), None)),
                },
                ClusterCost {
                    address: crate::plan::tests::addr(Kind::Cluster, "far"),
                    action: crate::plan::Action::Create,
                    before: None,
                    after: Some(side(None, Some("no list price for E2 machine types in x1"))),
                },
            ],
            management_fee_source: Some("the fee's page".into()),
        };
        let md = plan_document(&plan, "stack.hcl", Some(&cost)).render(GITHUB_LIMIT);
        assert!(
            md.contains("| 3 × e2-highcpu-8 at $0.198/h + $0.100 fee = $0.694/h |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| 3 × e2-highcpu-8, no price (no list price for E2 machine types in x1) |"
            ),
            "{md}"
        );
        assert!(
            md.contains("Prices: e2-highcpu-8 in us-central1: list price; the fee's page."),
            "{md}"
        );
    }
}

#[cfg(test)]
mod compare_tests {
    use super::*;
    use crate::compare::{Direction, RoundRecord, Side, judge};

    fn worse_comparison() -> Comparison {
        let base = [10.0, 10.2, 9.9, 10.1, 10.0];
        let slower = [14.0, 14.3, 13.8, 14.1, 14.2];
        let rate = [400.0, 399.0, 401.0, 400.0, 400.0];
        Comparison {
            base: "serving.tf from git:main".into(),
            candidate: "serving.tf from stacks/local.hcl".into(),
            loadtest: "loadtest.smoke".into(),
            capacity: false,
            min_effect: 0.05,
            rounds: 5,
            interleaved: true,
            metrics: vec![
                judge(
                    "achieved rate @ stage 1 (400 req/s)",
                    "req/s",
                    Direction::HigherIsBetter,
                    &rate,
                    &rate,
                    0.05,
                ),
                judge(
                    "p99 @ stage 1 (400 req/s)",
                    "ms",
                    Direction::LowerIsBetter,
                    &base,
                    &slower,
                    0.05,
                ),
            ],
            measurements: vec![RoundRecord {
                round: 2,
                side: Side::Candidate,
                figures: vec![],
                invalid: Some("the load generator was the bottleneck".into()),
                run_id: None,
            }],
            verdict: crate::compare::Verdict::Worse,
        }
    }

    #[test]
    fn a_worse_comparison_leads_with_the_metric_that_decided_it_and_fails_the_check() {
        let doc = compare_document(&worse_comparison(), "local.hcl");
        let md = doc.render(crate::report::markdown::GITHUB_LIMIT);
        let first = md.lines().next().unwrap_or_default();
        assert!(first.starts_with("**Compare** "), "{md}");
        assert!(
            first.contains("p99 @ stage 1 (400 req/s) 10 → 14.1 ms"),
            "{first}"
        );
        assert!(first.contains("worse"), "{first}");
        assert!(first.ends_with("**worse**"), "{first}");
        assert!(md.contains("[!CAUTION]"), "{md}");
        assert!(
            md.contains("1 measurement(s) discarded and repeated"),
            "{md}"
        );
        assert_eq!(doc.marker.conclusion, Conclusion::Failure);
        assert_eq!(doc.marker.kind, "compare");
        assert!(
            md.contains("<!-- benchstack stack=local.hcl kind=compare"),
            "{md}"
        );
    }
}

use super::*;

fn fig(value: f64) -> Vec<Figure> {
    vec![Figure {
        metric: "capacity".into(),
        unit: "req/s".into(),
        direction: Direction::HigherIsBetter,
        value,
    }]
}

#[test]
fn clearly_separated_rounds_are_worse_or_better_by_direction() {
    let base = [960.0, 950.0, 970.0, 955.0, 965.0];
    let cand = [600.0, 610.0, 590.0, 605.0, 595.0];
    let m = judge(
        "capacity",
        "req/s",
        Direction::HigherIsBetter,
        &base,
        &cand,
        0.05,
    );
    assert_eq!(m.verdict, Verdict::Worse);
    assert!((m.p - 2.0 / 252.0).abs() < 1e-9, "{}", m.p);
    let change = m.change.unwrap();
    assert!((change + 0.375).abs() < 0.02, "{change}");
    assert!(m.ci_high.unwrap() < 0.0);
    // The same numbers as latency: lower is better.
    let m = judge("p99", "ms", Direction::LowerIsBetter, &base, &cand, 0.05);
    assert_eq!(m.verdict, Verdict::Better);
}

#[test]
fn a_significant_change_below_the_minimum_effect_is_not_better_or_worse() {
    // Fully separated (p = 0.008) but only 2 % apart.
    let base = [100.0, 100.5, 101.0, 101.5, 102.0];
    let cand = [102.5, 103.0, 103.5, 104.0, 104.5];
    let m = judge("p99", "ms", Direction::LowerIsBetter, &base, &cand, 0.05);
    assert!(m.p <= ALPHA);
    assert_ne!(m.verdict, Verdict::Worse);
    // The interval [+1.5 %, +3.5 %] is inside ±5 % but p is low: not "same" either.
    assert_eq!(m.verdict, Verdict::Inconclusive);
    let m = judge("p99", "ms", Direction::LowerIsBetter, &base, &cand, 0.01);
    assert_eq!(m.verdict, Verdict::Worse);
}

#[test]
fn overlapping_rounds_with_a_tight_interval_are_the_same() {
    let base = [100.0, 101.0, 99.0, 100.5, 99.5, 100.2, 99.8, 100.1, 99.9];
    let cand = [100.3, 99.6, 100.4, 99.7, 100.0, 100.6, 99.4, 100.05, 99.95];
    let m = judge("p99", "ms", Direction::LowerIsBetter, &base, &cand, 0.05);
    assert!(m.p > m.same_threshold, "{}", m.p);
    assert_eq!(m.verdict, Verdict::Same);
}

#[test]
fn a_wide_interval_is_inconclusive_even_with_a_high_p() {
    let base = [100.0, 150.0, 80.0, 120.0, 60.0];
    let cand = [110.0, 70.0, 140.0, 90.0, 125.0];
    let m = judge("p99", "ms", Direction::LowerIsBetter, &base, &cand, 0.05);
    assert!(m.p > 0.5);
    assert_eq!(m.verdict, Verdict::Inconclusive);
}

#[test]
fn zero_error_rates_on_both_sides_are_the_same_and_from_zero_is_worse() {
    let zero = [0.0; 5];
    let m = judge(
        "errors",
        "fraction",
        Direction::LowerIsBetter,
        &zero,
        &zero,
        0.05,
    );
    assert_eq!(m.verdict, Verdict::Same);
    assert_eq!(m.change, Some(0.0));
    let some = [0.02, 0.03, 0.025, 0.04, 0.035];
    let m = judge(
        "errors",
        "fraction",
        Direction::LowerIsBetter,
        &zero,
        &some,
        0.05,
    );
    assert_eq!(m.change, None);
    assert_eq!(m.verdict, Verdict::Worse);
}

#[test]
fn the_same_threshold_shrinks_with_rounds_and_with_the_effect_in_spreads() {
    assert_eq!(same_threshold(5, 1.0), 0.5);
    assert!(same_threshold(9, 1.0) < same_threshold(7, 1.0));
    assert_eq!(same_threshold(100, 0.5), 0.1);
    assert_eq!(same_threshold(2, 0.2), 0.5);
    assert_eq!(same_threshold(5, 10.0), 0.05);
    assert_eq!(same_threshold(5, f64::INFINITY), ALPHA);
}

#[test]
fn a_metric_that_barely_varies_is_the_same_at_a_moderate_p() {
    // An achieved rate: ±0.2 req/s around 800, the minimum effect 40 req/s.
    let base = [800.0, 800.1, 799.9, 800.2, 799.8];
    let cand = [800.15, 800.05, 800.25, 800.3, 799.95];
    let m = judge(
        "rate",
        "req/s",
        Direction::HigherIsBetter,
        &base,
        &cand,
        0.05,
    );
    assert!(m.p < 0.9 && m.p > 0.05, "{}", m.p);
    assert!(m.same_threshold < 0.05);
    assert_eq!(m.verdict, Verdict::Same);
}

#[test]
fn the_overall_verdict_is_the_worst_news() {
    use Verdict::*;
    assert_eq!(Verdict::overall([Same, Better, Same]), Better);
    assert_eq!(Verdict::overall([Better, Inconclusive]), Inconclusive);
    assert_eq!(Verdict::overall([Inconclusive, Worse, Better]), Worse);
    assert_eq!(Verdict::overall([Same, Same]), Same);
    assert_eq!(Verdict::overall([]), Inconclusive);
}

#[test]
fn rounds_interleave_a_b_b_a() {
    let seq: Vec<Side> = (0..3).flat_map(order).collect();
    use Side::*;
    assert_eq!(seq, [Base, Candidate, Candidate, Base, Base, Candidate]);
}

/// A fake measurer: base 960, candidate `cand`, with a little alternation; measurement
/// numbers in `bottleneck` come back invalid.
struct Fake {
    cand: Vec<f64>,
    calls: usize,
    bottleneck: Vec<usize>,
    log: Vec<(usize, Side)>,
}

impl Measure for Fake {
    fn measure(&mut self, side: Side, round: usize) -> Result<Measured, CompareError> {
        let n = self.calls;
        self.calls += 1;
        self.log.push((round, side));
        let jitter = (n % 3) as f64;
        let value = match side {
            Side::Base => 960.0 + jitter,
            Side::Candidate => self.cand[round % self.cand.len()] + jitter,
        };
        Ok(Measured {
            figures: fig(value),
            invalid: self
                .bottleneck
                .contains(&n)
                .then(|| "the load generator was the bottleneck".into()),
            run_id: None,
        })
    }
}

#[test]
fn a_bottlenecked_measurement_is_discarded_repeated_and_reported() {
    let mut fake = Fake {
        cand: vec![600.0],
        calls: 0,
        bottleneck: vec![2],
        log: vec![],
    };
    let c = run_rounds(
        &mut fake,
        &Options::default(),
        ("a", "b", "loadtest.x", true),
    )
    .unwrap();
    assert_eq!(c.verdict, Verdict::Worse);
    assert_eq!(c.rounds, 5);
    // 10 valid measurements plus the repeat.
    assert_eq!(fake.calls, 11);
    // Measurement 2 was round 1's candidate (B after A B): it was taken again at once.
    assert_eq!(fake.log[2], (1, Side::Candidate));
    assert_eq!(fake.log[3], (1, Side::Candidate));
    let invalid: Vec<&RoundRecord> = c.invalid().collect();
    assert_eq!(invalid.len(), 1);
    assert_eq!(invalid[0].side, Side::Candidate);
    assert_eq!(c.metrics[0].base.len(), 5);
    assert_eq!(c.metrics[0].candidate.len(), 5);
    assert!(c.metrics[0].candidate.iter().all(|v| *v < 700.0));
    let text = render(&c);
    assert!(
        text.contains("1 measurement(s) discarded and repeated"),
        "{text}"
    );
    assert!(text.contains("round 2 candidate: the load generator was the bottleneck"));
    assert!(text.contains("Verdict: worse"));
}

#[test]
fn a_generator_that_is_always_the_bottleneck_stops_the_comparison() {
    let mut fake = Fake {
        cand: vec![600.0],
        calls: 0,
        bottleneck: (0..100).collect(),
        log: vec![],
    };
    let err = run_rounds(&mut fake, &Options::default(), ("a", "b", "l", true)).unwrap_err();
    assert!(matches!(err, CompareError::TooManyInvalid(3, _)), "{err}");
}

#[test]
fn inconclusive_rounds_are_extended_up_to_the_maximum() {
    // The candidate alternates around the base: never a verdict.
    let mut fake = Fake {
        cand: vec![700.0, 1300.0],
        calls: 0,
        bottleneck: vec![],
        log: vec![],
    };
    let c = run_rounds(&mut fake, &Options::default(), ("a", "b", "l", true)).unwrap();
    assert_eq!(c.verdict, Verdict::Inconclusive);
    assert_eq!(c.rounds, 9);
    assert_eq!(fake.calls, 18);
}

#[test]
fn run_figures_mark_a_bottlenecked_stage_invalid() {
    let json = serde_json::json!({
        "target": "http://x", "protocol": "rest", "model": "m", "capacity": null,
        "environment": {"host": "h", "cpus": 1, "cpu_model": "c", "memory_bytes": 0, "version": "v"},
        "stages": [{
            "name": "s", "target_rate": 100.0, "duration_s": 1.0, "requests": 100,
            "achieved_rate": 99.0, "errors_total": 0, "errors": {}, "error_rate": 0.0,
            "latency_ms": {"p50": 1.0, "p90": 2.0, "p95": 3.0, "p99": 4.0, "p999": 5.0, "max": 6.0, "mean": 1.0},
            "service_time_ms": {"p50": 1.0, "p90": 2.0, "p95": 3.0, "p99": 4.0, "p999": 5.0, "max": 6.0, "mean": 1.0},
            "generator_lag_ms": {"p50": 0.0, "p99": 0.0, "max": 0.0}, "histogram": "",
            "generator_bottleneck": true, "bottleneck": "lag p99 80 ms"
        }]
    });
    let report: RunReport = match serde_json::from_value(json) {
        Ok(r) => r,
        Err(e) => panic!("a RunReport: {e}"),
    };
    let m = run_figures(&report);
    assert_eq!(m.figures.len(), 3);
    assert_eq!(m.figures[0].value, 4.0);
    assert!(m.invalid.unwrap().contains("lag p99 80 ms"));
}

#[test]
fn run_figures_take_the_runs_own_invalid_reason_before_any_stage() {
    let json = serde_json::json!({
        "target": "http://x", "protocol": "rest", "model": "m", "capacity": null,
        "invalid": "worker 2 restarted",
        "environment": {"host": "h", "cpus": 1, "cpu_model": "c", "memory_bytes": 0, "version": "v"},
        "stages": [{
            "name": "s", "target_rate": 100.0, "duration_s": 1.0, "requests": 100,
            "achieved_rate": 99.0, "errors_total": 0, "errors": {}, "error_rate": 0.0,
            "latency_ms": {"p50": 1.0, "p90": 2.0, "p95": 3.0, "p99": 4.0, "p999": 5.0, "max": 6.0, "mean": 1.0},
            "service_time_ms": {"p50": 1.0, "p90": 2.0, "p95": 3.0, "p99": 4.0, "p999": 5.0, "max": 6.0, "mean": 1.0},
            "generator_lag_ms": {"p50": 0.0, "p99": 0.0, "max": 0.0}, "histogram": "",
            "generator_bottleneck": false
        }]
    });
    let report: RunReport = match serde_json::from_value(json) {
        Ok(r) => r,
        Err(e) => panic!("a RunReport: {e}"),
    };
    assert_eq!(
        run_figures(&report).invalid.as_deref(),
        Some("worker 2 restarted")
    );
}

mod gate_tests {
    use std::collections::BTreeMap;

    use crate::compare::gate::{baseline_for, common_fingerprint};
    use crate::state::{BaselineRecord, EnvironmentRecord, Fingerprint, RunRecord};
    use crate::vocab::resources::Address;

    fn run(id: u64, cpu: &str, image: Option<&str>) -> RunRecord {
        RunRecord {
            id,
            address: Address::parse("loadtest.smoke").unwrap(),
            started: 0,
            finished: 0,
            config_hash: "c".into(),
            upstream: BTreeMap::new(),
            environment: EnvironmentRecord {
                host: "h".into(),
                cpus: 8,
                cpu_model: cpu.into(),
                memory_bytes: 0,
                version: "v".into(),
                images: image
                    .map(|i| BTreeMap::from([("serving".to_string(), i.to_string())]))
                    .unwrap_or_default(),
            },
            slos_met: true,
            report: serde_json::Value::Null,
            tune: None,
        }
    }

    #[test]
    fn runs_from_two_environments_are_not_pinned_together() {
        let runs = [run(1, "Xeon", None), run(2, "EPYC", None)];
        let err = common_fingerprint(&runs, None).unwrap_err().to_string();
        assert!(err.contains("CPU model `Xeon` vs `EPYC`"), "{err}");
    }

    #[test]
    fn a_baseline_of_another_environment_is_refused_with_the_difference_named() {
        let address = Address::parse("loadtest.smoke").unwrap();
        let pinned = common_fingerprint(
            &[run(1, "Xeon", Some("repo/tf@sha256:aaa"))],
            Some("n2-highcpu-8".into()),
        )
        .unwrap();
        let baselines = vec![BaselineRecord {
            address: address.clone(),
            fingerprint: pinned.clone(),
            runs: vec![1],
            pinned_at: 1,
        }];
        assert!(baseline_for(&baselines, &address, &pinned).is_ok());
        let now = Fingerprint {
            machine_type: Some("n2-highcpu-16".into()),
            images: BTreeMap::from([("serving".into(), "repo/tf@sha256:bbb".into())]),
            ..pinned.clone()
        };
        let err = baseline_for(&baselines, &address, &now)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("machine type n2-highcpu-8 vs n2-highcpu-16"),
            "{err}"
        );
        assert!(
            err.contains("serving image repo/tf@sha256:aaa vs repo/tf@sha256:bbb"),
            "{err}"
        );
        let other = Address::parse("loadtest.other").unwrap();
        let err = baseline_for(&baselines, &other, &pinned)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no baseline is pinned for loadtest.other"),
            "{err}"
        );
    }
}

/// Identical configurations (independent rounds from one heavy-tailed distribution, ±50 %,
/// like a short run's p99): how often the whole procedure (5 rounds, extended to 9 while
/// inconclusive) says better or worse. Nominally 1 %; taking the smaller of two p-values and
/// looking again after each added round raise it, the minimum effect lowers it. Measured:
/// 46 of 2000 (2.3 %), deterministic by the seed; docs/compare.md quotes it.
#[test]
fn identical_configurations_are_called_different_rarely() {
    use rand::{Rng, SeedableRng};
    struct Iid(rand::rngs::StdRng);
    impl Measure for Iid {
        fn measure(&mut self, _side: Side, _round: usize) -> Result<Measured, CompareError> {
            let v: f64 = 30.0 * (1.0 + 0.5 * self.0.random::<f64>().powi(3));
            Ok(Measured {
                figures: vec![Figure {
                    metric: "p99".into(),
                    unit: "ms".into(),
                    direction: Direction::LowerIsBetter,
                    value: v,
                }],
                invalid: None,
                run_id: None,
            })
        }
    }
    let mut m = Iid(rand::rngs::StdRng::seed_from_u64(7));
    let mut different = 0;
    let n = 2000;
    for _ in 0..n {
        let c = run_rounds(&mut m, &Options::default(), ("a", "b", "l", false)).unwrap();
        if matches!(c.verdict, Verdict::Better | Verdict::Worse) {
            different += 1;
        }
    }
    assert!(different as f64 / n as f64 <= 0.03, "{different} of {n}");
}

#[test]
fn a_metric_only_one_side_measured_is_left_out() {
    let f = |metric: &str, value: f64| Figure {
        metric: metric.into(),
        unit: "ms".into(),
        direction: Direction::LowerIsBetter,
        value,
    };
    let base: Vec<Vec<Figure>> = (0..5)
        .map(|i| vec![f("p99 @ stage 1 (100 req/s)", 10.0 + i as f64)])
        .collect();
    let cand: Vec<Vec<Figure>> = (0..5)
        .map(|i| vec![f("p99 @ stage 1 (200 req/s)", 10.0 + i as f64)])
        .collect();
    let metrics = judge_all(&base, &cand, 0.05);
    assert!(metrics.is_empty());
    assert_eq!(
        Verdict::overall(metrics.iter().map(|m| m.verdict)),
        Verdict::Inconclusive
    );
}

/// Stacks whose serving image is generated (`preset = "serving"`) from their own model.
mod serving_images {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::super::bench;
    use crate::plan::{Action, Plan, PlanOptions};
    use crate::vocab::resources::{Address, ImageConfig, Kind, ResourceConfig, Stack};

    const STACK: &str = r#"
cluster "gke" {
  provider     = "gke"
  project      = "p"
  location     = "us-central1-a"
  machine_type = "e2-highcpu-8"
  node_count   = 1
}

model "m" {
  base_path = "model/m"
}

image "serving" {
  repository = "us-central1-docker.pkg.dev/p/benchstack"
  name       = "tf-serving"
  preset     = "serving"
}

serving "tf" {
  cluster = cluster.gke
  image   = image.serving
  models  = [model.m]
  cpu     = "1"
  memory  = "1Gi"
}

loadtest "smoke" {
  target        = serving.tf
  loadgen_image = "us-central1-docker.pkg.dev/p/benchstack/benchstack:1"
  request       = "{\"instances\": [1.0]}"
  stage {
    rate     = 10
    duration = "1s"
  }
}
"#;

    /// A stack in `dir` whose model's version 1 holds `model`, batching by `batch` if given.
    fn stack(dir: &Path, model: &str, batch: Option<u32>) -> Stack {
        std::fs::create_dir_all(dir.join("model/m/1")).unwrap();
        std::fs::write(dir.join("model/m/1/saved_model.pb"), model).unwrap();
        let path: PathBuf = dir.join("stack.hcl");
        let text = match batch {
            None => STACK.to_string(),
            Some(n) => STACK.replace(
                "memory  = \"1Gi\"",
                &format!("memory  = \"1Gi\"\n  batching {{\n    max_batch_size = {n}\n  }}"),
            ),
        };
        std::fs::write(&path, text).unwrap();
        crate::stack::load(&path, &Default::default()).unwrap_or_else(|d| panic!("{d:?}"))
    }

    /// The two stacks combined and planned (with the directories they read from).
    fn combined(
        candidate: (&str, Option<u32>),
        base: (&str, Option<u32>),
    ) -> (bench::Combined, Plan, [tempfile::TempDir; 2]) {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let candidate = stack(a.path(), candidate.0, candidate.1);
        let base = stack(b.path(), base.0, base.1);
        let lt = bench::pick_loadtest(&candidate, None).unwrap();
        let c = bench::combine(&candidate, &base, &lt).unwrap();
        let plan = crate::refresh::plan(
            Some(&c.stack),
            &Default::default(),
            BTreeMap::new(),
            None,
            &PlanOptions {
                targets: vec![c.target.clone(), c.base_target.clone()],
                ..PlanOptions::default()
            },
        )
        .unwrap();
        (c, plan, [a, b])
    }

    fn image(plan: &Plan, name: &str) -> Option<ImageConfig> {
        plan.changes
            .iter()
            .find(|c| c.address.kind == Kind::Image && c.address.name == name)
            .and_then(|c| match &c.after {
                Some(ResourceConfig::Image(i)) => Some(i.clone()),
                _ => None,
            })
    }

    fn serving_image_of(c: &bench::Combined, a: &Address) -> Option<Address> {
        c.stack
            .resources
            .iter()
            .find(|r| &r.address == a)
            .and_then(|r| match &r.config {
                ResourceConfig::Serving(s) => s.image_from.clone(),
                _ => None,
            })
    }

    #[test]
    fn a_base_with_another_model_is_served_from_its_own_image_and_one_differing_only_in_config_shares_the_build()
     {
        let (c, plan, _dirs) = combined(("new", None), ("old", None));
        let own = serving_image_of(&c, &c.base_target).unwrap();
        assert_eq!(own.to_string(), "image.serving_compare_base");
        assert!(c.base_resources.contains(&own), "{:?}", c.base_resources);
        let base_serving = c
            .stack
            .resources
            .iter()
            .find(|r| r.address == c.base_target)
            .unwrap();
        assert!(base_serving.depends_on.contains(&own));
        assert!(!base_serving.depends_on.iter().any(|d| d.name == "serving"));
        // Generated for the base's serving resource, from the base's model folders.
        let base_image = image(&plan, "serving_compare_base").expect("the base's image planned");
        let preset = base_image.preset.clone().unwrap();
        assert_eq!(preset.serving.as_ref(), Some(&c.base_target));
        let dir = &preset.models[0].base_path;
        assert_eq!(
            std::fs::read_to_string(dir.join("1/saved_model.pb")).unwrap(),
            "old"
        );
        // Two builds of different bytes: the candidate's models are not baked into the base's.
        let candidate_image = image(&plan, "serving").expect("the candidate's image planned");
        assert_ne!(base_image.content_hash, candidate_image.content_hash);
        let change = |a: &Address| plan.changes.iter().find(|x| &x.address == a).unwrap();
        assert_eq!(change(&own).action, Action::Create);
        // The Deployment names the base's image (YAML folds the long line).
        let yaml = &change(&c.base_target).rendered["kubernetes.yaml"];
        let flat = yaml.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains("(digest of image.serving_compare_base)"),
            "{yaml}"
        );

        // The same model and files: the candidate's build serves both sides, built once. So
        // does a base that differs only in its configuration files (its ConfigMap, mounted
        // over the image's `/config`, carries them).
        for base_batch in [None, Some(16)] {
            let (c, plan, _dirs) = combined(("same", Some(32)), ("same", base_batch));
            assert_eq!(
                serving_image_of(&c, &c.base_target).unwrap().to_string(),
                "image.serving",
                "{base_batch:?}"
            );
            assert!(image(&plan, "serving_compare_base").is_none());
            assert!(!c.base_resources.iter().any(|a| a.kind == Kind::Image));
            let builds = plan
                .changes
                .iter()
                .filter(|x| x.address.kind == Kind::Image && x.action == Action::Create)
                .count();
            assert_eq!(builds, 1);
            let change = |a: &Address| plan.changes.iter().find(|x| &x.address == a).unwrap();
            let files = |a: &Address| change(a).rendered.get("batching_parameters.txt").cloned();
            assert_ne!(files(&c.target), files(&c.base_target));
        }
    }

    /// A stack in `dir` whose serving image is built from `dir/ctx` with `dockerfile`.
    fn dockerfile_stack(dir: &Path, dockerfile: &str) -> Stack {
        std::fs::create_dir_all(dir.join("model/m/1")).unwrap();
        std::fs::write(dir.join("model/m/1/saved_model.pb"), "m").unwrap();
        std::fs::create_dir_all(dir.join("ctx")).unwrap();
        std::fs::write(dir.join("ctx/Dockerfile"), dockerfile).unwrap();
        let text = STACK.replace(
            "preset     = \"serving\"",
            "context    = \"ctx\"\n  dockerfile = \"Dockerfile\"",
        );
        assert_ne!(text, STACK);
        let path = dir.join("stack.hcl");
        std::fs::write(&path, text).unwrap();
        crate::stack::load(&path, &Default::default()).unwrap_or_else(|d| panic!("{d:?}"))
    }

    #[test]
    fn a_dockerfile_image_of_the_base_is_built_from_the_base_s_context() {
        let combine = |candidate: &str, base: &str| {
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let candidate = dockerfile_stack(a.path(), candidate);
            let base = dockerfile_stack(b.path(), base);
            let lt = bench::pick_loadtest(&candidate, None).unwrap();
            let c = bench::combine(&candidate, &base, &lt).unwrap();
            (c, b)
        };
        let (c, base_dir) = combine(
            "FROM tensorflow/serving:2.19.0\n",
            "FROM tensorflow/serving:2.18.0\n",
        );
        let own = serving_image_of(&c, &c.base_target).unwrap();
        assert_eq!(own.to_string(), "image.serving_compare_base");
        let config = |a: &Address| match &c
            .stack
            .resources
            .iter()
            .find(|r| &r.address == a)
            .unwrap()
            .config
        {
            ResourceConfig::Image(i) => i.clone(),
            other => panic!("{other:?}"),
        };
        let (base_image, candidate_image) =
            (config(&own), config(&"image.serving".parse().unwrap()));
        assert!(
            base_image.context.starts_with(base_dir.path()),
            "{base_image:?}"
        );
        assert_ne!(base_image.content_hash, candidate_image.content_hash);
        // The same context: one build for both.
        let (c, _dir) = combine(
            "FROM tensorflow/serving:2.19.0\n",
            "FROM tensorflow/serving:2.19.0\n",
        );
        assert_eq!(
            serving_image_of(&c, &c.base_target).unwrap().to_string(),
            "image.serving"
        );
        assert!(
            !c.stack
                .resources
                .iter()
                .any(|r| r.address.name == "serving_compare_base")
        );
    }
}

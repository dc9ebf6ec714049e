//! `benchstack validate` and `benchstack fmt` through the binary.

use std::path::Path;
use std::process::Command;

fn benchstack(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_benchstack"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("benchstack runs")
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn validate_reports_success_and_the_resource_count_for_each_shipped_stack() {
    for (stack, n, vars) in [
        ("stacks/local.hcl", 4, &[][..]),
        ("stacks/local-sweep.hcl", 8, &[][..]),
        ("stacks/gke.hcl", 7, &["--var", "project=my-project"][..]),
    ] {
        let mut args = vec!["validate", stack];
        args.extend_from_slice(vars);
        let out = benchstack(root(), &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stack}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            stdout.trim(),
            format!("Success! The stack is valid: {n} resources.")
        );
    }
}

#[test]
fn the_gke_stack_has_no_default_project() {
    // A real-looking default project ID would bill (or fail in) someone else's project.
    let out = benchstack(root(), &["validate", "stacks/gke.hcl"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("found variable \"project\" with no value"),
        "{stderr}"
    );
    // The images name the project: they are unknown, not missing, and say nothing more.
    assert!(!stderr.contains("without `image`"), "{stderr}");
    assert!(!stderr.contains("without `loadgen_image`"), "{stderr}");
}

#[test]
fn validate_defaults_to_the_current_directory_and_takes_vars() {
    let dir = root().join("tests/fixtures/stacks/split");
    let out = benchstack(&dir, &["validate", "--var", "replicas=2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = benchstack(&dir, &["validate", "--var", "replicas=0"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("b_serving.hcl:12:14: replicas: found the number 0"),
        "{stderr}"
    );
}

#[test]
fn fmt_check_lists_unformatted_files_and_fmt_rewrites_them() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let messy = "cluster \"local\" {\nprovider=\"local\"\n}\n\n\n";
    std::fs::write(tmp.path().join("a.hcl"), messy).unwrap();
    std::fs::write(
        tmp.path().join("b.hcl"),
        "model \"m\" {\n  base_path = \"x\"\n}\n",
    )
    .unwrap();

    let out = benchstack(tmp.path(), &["fmt", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "./a.hcl");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("a.hcl")).unwrap(),
        messy,
        "--check changes nothing"
    );

    let out = benchstack(tmp.path(), &["fmt"]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("a.hcl")).unwrap(),
        "cluster \"local\" {\n  provider = \"local\"\n}\n"
    );
    let out = benchstack(tmp.path(), &["fmt", "--check"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
}

#[test]
fn fmt_refuses_a_file_that_does_not_parse() {
    let tmp = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        tmp.path().join("bad.hcl"),
        "serving \"tf\" {\n  replicas = \n}\n",
    )
    .unwrap();
    let out = benchstack(tmp.path(), &["fmt", "bad.hcl"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.hcl:2:14: found invalid HCL syntax"),
        "{stderr}"
    );
}

/// The old form `stage { rate = 300, duration = "60s" }` is not HCL: validate and plan refuse it
/// where it is written, and `fmt` (the migration) rewrites it into a stack they accept.
#[test]
fn the_old_comma_form_is_refused_located_and_fmt_migrates_it() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let fixtures = root().join("tests/fixtures");
    let old = format!(
        "cluster \"local\" {{}}\n\
         model \"m\" {{ base_path = {:?} }}\n\
         serving \"tf\" {{\n  cluster = cluster.local\n  models  = [model.m]\n}}\n\
         loadtest \"lt\" {{\n  target = serving.tf\n  data   = {:?}\n\
         \x20 stage {{ rate = 300, duration = \"60s\" }}\n}}\n",
        fixtures.join("model/regression"),
        fixtures.join("data.csv"),
    );
    std::fs::write(tmp.path().join("old.hcl"), &old).unwrap();
    let state = tmp.path().join("state");
    let state = state.to_str().expect("utf-8 path");
    for args in [
        &["validate", "old.hcl"][..],
        &["--state", state, "plan", "old.hcl"][..],
    ] {
        let out = benchstack(tmp.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            // Short fragments: `plan` renders through miette, which wraps long lines.
            stderr.contains("old.hcl:10:3: found a one-line `stage` block with 2 attributes")
                && stderr.contains("`benchstack fmt` rewrites it"),
            "{args:?}: {stderr}"
        );
    }

    let out = benchstack(tmp.path(), &["fmt", "--check"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "./old.hcl");
    let out = benchstack(tmp.path(), &["fmt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = std::fs::read_to_string(tmp.path().join("old.hcl")).unwrap();
    assert!(
        new.contains("  stage {\n    rate     = 300\n    duration = \"60s\"\n  }\n"),
        "{new}"
    );
    assert!(hcl_edit::parser::parse_body(&new).is_ok(), "{new}");
    let out = benchstack(tmp.path(), &["fmt", "--check"]);
    assert!(out.status.success(), "fmt is idempotent");
    let out = benchstack(tmp.path(), &["validate", "old.hcl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn shipped_stacks_are_formatted() {
    let out = benchstack(root(), &["fmt", "--check", "stacks"]);
    assert!(
        out.status.success(),
        "not formatted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_bad_flag_exits_1_naming_the_flag_and_help_exits_0() {
    let out = benchstack(root(), &["plan", "--no-such-flag", "stacks/local.hcl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--no-such-flag"), "{err}");
    let out = benchstack(root(), &["compare", "stacks/local.hcl"]);
    assert_eq!(out.status.code(), Some(1), "a missing required --against");
    let out = benchstack(root(), &["plan", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
}

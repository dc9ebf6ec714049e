//! The bad-stack corpus: every `tests/bad_stacks/*.hcl` must make `benchstack validate` exit 1
//! with each message its header promises, at the promised place.
//!
//! Header lines: `# expect: LINE:COL: FRAGMENT` (a diagnostic located at FILE:LINE:COL whose
//! text contains FRAGMENT), `# expect: @TEXT` (TEXT appears in the output, for problems located
//! at a command-line flag), `# args: …` (extra arguments, split on spaces).

use std::path::Path;
use std::process::Command;

struct Case {
    name: String,
    args: Vec<String>,
    expects: Vec<String>,
}

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad_stacks");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("tests/bad_stacks exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".hcl"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(dir.join(&name)).expect("readable");
            let mut args = Vec::new();
            let mut expects = Vec::new();
            for line in text.lines() {
                if let Some(a) = line.strip_prefix("# args: ") {
                    args.extend(a.split_whitespace().map(String::from));
                } else if let Some(e) = line.strip_prefix("# expect: ") {
                    expects.push(e.to_string());
                }
            }
            Case {
                name,
                args,
                expects,
            }
        })
        .collect()
}

/// Splits validate's stderr into one text per diagnostic.
fn diagnostics(stderr: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in stderr.lines() {
        if let Some(rest) = line.strip_prefix("Error: ") {
            out.push(rest.to_string());
        } else if let Some(last) = out.last_mut() {
            last.push('\n');
            last.push_str(line);
        }
    }
    out
}

#[test]
fn every_bad_stack_fails_validate_with_its_located_message() {
    let cases = cases();
    assert!(cases.len() >= 20, "the corpus has {} stacks", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        assert!(
            !case.expects.is_empty(),
            "{} has no `# expect:` line",
            case.name
        );
        let rel = format!("tests/bad_stacks/{}", case.name);
        let out = Command::new(env!("CARGO_BIN_EXE_benchstack"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("BENCHSTACK_STATE")
            .arg("validate")
            .arg(&rel)
            .args(&case.args)
            .output()
            .expect("benchstack runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(1) {
            failures.push(format!(
                "{rel}: exit {:?}, expected 1\n{stderr}",
                out.status.code()
            ));
            continue;
        }
        let diags = diagnostics(&stderr);
        for e in &case.expects {
            let ok = if let Some(text) = e.strip_prefix('@') {
                stderr.contains(text)
            } else {
                let mut parts = e.splitn(3, ':');
                let (line, col, fragment) = match (parts.next(), parts.next(), parts.next()) {
                    (Some(l), Some(c), Some(f))
                        if l.parse::<usize>().is_ok() && c.parse::<usize>().is_ok() =>
                    {
                        (l, c, f.trim_start())
                    }
                    _ => {
                        failures.push(format!("{rel}: `# expect: {e}` needs LINE:COL: or @"));
                        continue;
                    }
                };
                let at = format!("{rel}:{line}:{col}: ");
                diags
                    .iter()
                    .any(|d| d.starts_with(&at) && d.contains(fragment))
            };
            if !ok {
                failures.push(format!(
                    "{rel}: no diagnostic matches `{e}`; got:\n{stderr}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

//! examples/ci/github-actions.yml: the permissions `comment --github` needs, and every
//! benchstack command line in it parses with this build's arguments.

use clap::Parser;

#[test]
fn the_example_workflow_has_the_permissions_and_commands_benchstack_takes() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/ci/github-actions.yml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(v["permissions"]["pull-requests"], "write");
    assert_eq!(v["permissions"]["checks"], "write");
    let jobs = v["jobs"].as_object().unwrap();
    for job in ["plan", "compare", "apply"] {
        assert!(jobs.contains_key(job), "{job}");
    }
    let mut checked = 0;
    for (name, job) in jobs {
        for step in job["steps"].as_array().unwrap() {
            let Some(run) = step["run"].as_str() else {
                continue;
            };
            for line in run.lines().map(str::trim) {
                let Some(rest) = line.strip_prefix("benchstack ") else {
                    continue;
                };
                // The shell's part: redirections and variables; GitHub's `${{ … }}`
                // expressions are one word once the runner substitutes them.
                let mut rest = rest.to_string();
                while let Some(start) = rest.find("${{") {
                    let end = rest[start..]
                        .find("}}")
                        .map_or(rest.len(), |e| start + e + 2);
                    rest.replace_range(start..end, "EXPR");
                }
                let words: Vec<String> = std::iter::once("benchstack".to_string())
                    .chain(
                        rest.split('>')
                            .next()
                            .unwrap()
                            .split_whitespace()
                            .map(|w| w.trim_matches('"').replace("$STACK", "stacks/gke.hcl")),
                    )
                    .collect();
                if let Err(e) = benchstack::cli::Cli::try_parse_from(&words) {
                    panic!("job {name}: `{line}` does not parse: {e}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "{checked}");
}

//! `benchstack plan --format markdown` of the shipped local stack after a batching edit,
//! through the binary: the structure a pull request shows (verdict line first, the cost, the
//! attribute table, the plan folded as a diff fence, the marker last, within GitHub's limit),
//! the job summary, and the cost in the text and JSON plans.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::prelude::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// stacks/local.hcl as shipped, in a temp dir beside a link to examples/, with
    /// `hourly_price = 0.5` on its cluster.
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("stacks")).unwrap();
        std::os::unix::fs::symlink(repo().join("examples"), dir.path().join("examples")).unwrap();
        let text = std::fs::read_to_string(repo().join("stacks/local.hcl")).unwrap();
        let priced = text.replacen(
            "  provider = \"local\"\n",
            "  provider     = \"local\"\n  hourly_price = 0.5\n",
            1,
        );
        assert_ne!(priced, text);
        std::fs::write(dir.path().join("stacks/local.hcl"), priced).unwrap();
        Env { dir }
    }

    fn run(&self, args: &[&str], summary: Option<&Path>) -> (i32, String, String) {
        let mut c = Command::cargo_bin("benchstack").unwrap();
        c.current_dir(self.dir.path())
            .arg("--state")
            .arg(self.dir.path().join("state"))
            .args(args)
            .stdin(Stdio::null());
        match summary {
            Some(p) => c.env("GITHUB_STEP_SUMMARY", p),
            None => c.env_remove("GITHUB_STEP_SUMMARY"),
        };
        let out = c.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let state = self.dir.path().join("state").display().to_string();
        for pid in benchstack::state::procinfo::find_by_arg(&state) {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

#[test]
fn plan_markdown_after_a_batching_edit_has_the_pull_request_structure() {
    let env = Env::new();
    // The serving resource runs with the stack's max_batch_size = 32 (no load test yet).
    let (code, out, err) = env.run(
        &[
            "apply",
            "--auto-approve",
            "--target",
            "serving.tf",
            "stacks/local.hcl",
        ],
        None,
    );
    assert_eq!(code, 0, "{out}\n{err}");

    let summary = env.dir.path().join("summary.md");
    std::fs::write(&summary, "earlier step\n").unwrap();
    let (code, md, err) = env.run(
        &[
            "plan",
            "--format",
            "markdown",
            "--var",
            "max_batch_size=8",
            "stacks/local.hcl",
        ],
        Some(&summary),
    );
    assert_eq!(code, 0, "{md}\n{err}");
    // 1. The verdict line, outside any fold: counts, cost, stack.
    let first = md.lines().next().unwrap();
    assert_eq!(
        first,
        "**Plan:** 1 to update, 1 load test to run · $0.500 → $0.500 per hour · `stacks/local.hcl`"
    );
    // 2. Nothing is replaced or deleted: no red line.
    assert!(!md.contains("[!CAUTION]"), "{md}");
    // 3. Tables: the resources, the changed attribute, the cost.
    assert!(
        md.contains("| `serving.tf` | update in place | batching changed |"),
        "{md}"
    );
    assert!(
        md.contains("`serving.tf` — update in place\n\n| attribute | before | after |"),
        "{md}"
    );
    assert!(
        md.contains("| batching.max\\_batch\\_size | `32` | `8` |"),
        "{md}"
    );
    assert!(
        md.contains("| cluster.local | 1 × node at $0.500/h = $0.500/h |"),
        "{md}"
    );
    assert!(
        md.contains("Prices: hourly\\_price of cluster.local."),
        "{md}"
    );
    // 4. The plan in the stack's terms, folded, as a diff with the markers in column 1.
    let details = md.find("<details><summary>").unwrap();
    assert!(details > md.find("| attribute |").unwrap());
    let fence = &md[details..];
    assert!(fence.contains("```diff\n"), "{fence}");
    assert!(
        fence.contains("\n!           max_batch_size = 32 -> 8\n"),
        "{fence}"
    );
    assert!(
        fence.contains("\n-    max_batch_size { value: 32 }\n"),
        "{fence}"
    );
    assert!(
        fence.contains("\n+    max_batch_size { value: 8 }\n"),
        "{fence}"
    );
    assert!(fence.contains("</details>"), "{fence}");
    // 5. The marker, last, with the plan's hash.
    let last = md.trim_end().lines().last().unwrap();
    assert!(
        last.starts_with("<!-- benchstack stack=stacks/local.hcl kind=plan plan="),
        "{last}"
    );
    assert!(last.ends_with(" conclusion=success -->"), "{last}");
    assert!(md.chars().count() <= 65_536);
    // The same document went to the job summary, after what was there.
    assert_eq!(
        std::fs::read_to_string(&summary).unwrap(),
        format!("earlier step\n{md}")
    );

    // The text and JSON plans show the same cost.
    let (code, text, err) = env.run(
        &["plan", "--var", "max_batch_size=8", "stacks/local.hcl"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        text.contains("\nCost: $0.500 → $0.500 per hour.\n"),
        "{text}"
    );
    let (code, json, err) = env.run(
        &[
            "plan",
            "--json",
            "--var",
            "max_batch_size=8",
            "stacks/local.hcl",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["cost"]["before_per_hour"], 0.5);
    assert_eq!(v["cost"]["after_per_hour"], 0.5);
    assert_eq!(v["cost"]["clusters"][0]["address"], "cluster.local");
    assert_eq!(v["summary"]["update"], 1);

    let (code, out, err) = env.run(&["destroy", "--auto-approve", "stacks/local.hcl"], None);
    assert_eq!(code, 0, "{out}\n{err}");
}

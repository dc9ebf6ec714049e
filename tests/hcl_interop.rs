//! Stacks are plain HCL: every shipped stack, every test fixture stack and every ```hcl block in
//! the docs must parse as written with hcl-edit (no preprocessing) and with an independent HCL
//! parser, python-hcl2 (`pip install python-hcl2`), so editors and other HCL tools accept them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// (a name to report, the HCL text).
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["stacks", "tests/fixtures"] {
        collect_hcl(&root.join(dir), &mut files);
    }
    files.sort();
    let mut out: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            let name = p.strip_prefix(root).unwrap_or(p).display().to_string();
            let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, text)
        })
        .collect();
    let mut docs: Vec<PathBuf> = vec![root.join("README.md")];
    let mut md: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    md.sort();
    docs.extend(md);
    for p in docs {
        let name = p.strip_prefix(root).unwrap_or(&p).display().to_string();
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        out.extend(hcl_blocks(&name, &text));
    }
    out
}

fn collect_hcl(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_hcl(&p, out);
        } else if p.extension().is_some_and(|x| x == "hcl") {
            out.push(p);
        }
    }
}

/// The ```hcl fenced blocks of a Markdown file, named `FILE:LINE` (the line of the fence).
fn hcl_blocks(name: &str, text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (n, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        match &mut open {
            None if fence.starts_with("```hcl") => open = Some((n + 1, String::new())),
            Some((at, body)) if fence.starts_with("```") => {
                out.push((format!("{name}:{at}"), std::mem::take(body)));
                open = None;
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
            None => {}
        }
    }
    assert!(open.is_none(), "{name}: an ```hcl block is not closed");
    out
}

#[test]
fn the_stack_sources_are_found() {
    let names: Vec<String> = sources().into_iter().map(|s| s.0).collect();
    for want in [
        "stacks/local.hcl",
        "stacks/gke.hcl",
        "docs/loadtest-json.md:",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want} is not among {names:?}"
        );
    }
}

#[test]
fn hcl_edit_parses_every_stack_as_written() {
    let failures: Vec<String> = sources()
        .into_iter()
        .filter_map(|(name, text)| {
            hcl_edit::parser::parse_body(&text)
                .err()
                .map(|e| format!("{name}: {e}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Reads `[[name, text], …]` as JSON on stdin, prints one line per file python-hcl2 rejects.
const PY: &str = r#"
import json, sys
try:
    import hcl2
except ImportError:
    print("MISSING")
    sys.exit(3)
for name, text in json.load(sys.stdin):
    try:
        hcl2.loads(text)
    except Exception as e:
        print(f"{name}: {type(e).__name__}: {' '.join(str(e).split())[:400]}")
"#;

#[test]
fn python_hcl2_parses_every_stack() {
    let sources = sources();
    let input = serde_json::to_vec(&sources).expect("serializable");
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(PY)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (it is a test prerequisite, see .ci/run)");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(&input)
        .expect("python3 reads the sources");
    let out = child.wait_with_output().expect("python3 finishes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("MISSING"),
        "the Python module hcl2 is missing: run `python3 -m pip install python-hcl2` \
         (this test checks the stacks with an HCL parser other than hcl-edit)"
    );
    assert!(
        out.status.success(),
        "python3 failed ({:?}):\n{}{}",
        out.status.code(),
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.trim().is_empty(),
        "python-hcl2 rejects these ({} sources checked):\n{stdout}",
        sources.len()
    );
}

//! The plan as people read it: one block per resource that changes, with its reason,
//! attribute diffs and file diffs, then a summary line.

use std::fmt::Write;

use serde_json::Value;

use super::{Action, Plan, Summary};

fn symbol(a: Action) -> &'static str {
    match a {
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Delete => "-",
        Action::Run => ">",
        Action::NoOp => " ",
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Create => "will be created",
        Action::Update => "will be updated in place",
        Action::Replace => "will be replaced",
        Action::Delete => "will be deleted",
        Action::Run => "will run",
        Action::NoOp => "is unchanged",
    }
}

fn show(v: &Option<Value>) -> String {
    match v {
        None => "(none)".into(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(v) => v.to_string(),
    }
}

pub fn summary_line(s: &Summary) -> String {
    format!(
        "Plan: {} to create, {} to update, {} to replace, {} to delete, {} to run.",
        s.create, s.update, s.replace, s.delete, s.run
    )
}

/// The human-readable plan.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let summary = plan.summary();
    if !summary.has_changes() {
        out.push_str("No changes. The running resources match the stack and the state.\n");
        return out;
    }
    for c in plan.changes.iter().filter(|c| c.action != Action::NoOp) {
        let _ = write!(out, "{} {} {}", symbol(c.action), c.address, verb(c.action));
        if let Some(r) = &c.reason {
            let _ = write!(out, ": {r}");
        }
        out.push('\n');
        match c.action {
            Action::Delete => {}
            _ if c.before.is_none() => {
                // A new resource: its settings, without the unset ones.
                for a in c
                    .attributes
                    .iter()
                    .filter(|a| !matches!(a.after, None | Some(Value::Null)))
                {
                    let _ = writeln!(out, "    + {} = {}", a.path, show(&a.after));
                }
            }
            _ => {
                for a in &c.attributes {
                    let _ = writeln!(
                        out,
                        "    ~ {}: {} -> {}",
                        a.path,
                        show(&a.before),
                        show(&a.after)
                    );
                }
            }
        }
        if c.action != Action::Create {
            for f in &c.files {
                for line in f.diff.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        out.push('\n');
    }
    out.push_str(&summary_line(&summary));
    out.push('\n');
    out
}

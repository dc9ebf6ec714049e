//! The plan as people read it, in the stack's own terms (from [`view::view`]): per resource
//! that changes a `# ADDRESS will …: reason` line and its block as HCL with Terraform's
//! markers (`+` create, `~` update in place with `old -> new`, `-` delete, `-/+` replace with
//! `# forces replacement` on the attribute that forces it, `>` a load test run), the rendered
//! files as unified diffs, the summary line and the changes to outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::view::{self, Body, BodyChange, HclValue, OutputChange, PlanView, ResourceChange};
use super::{Action, Plan, Summary};

fn symbol(a: Action) -> &'static str {
    match a {
        Action::Create => "+",
        Action::Update => "~",
        Action::Replace => "-/+",
        Action::Delete => "-",
        Action::Run => ">",
        Action::NoOp => "",
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

fn legend(a: Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Update => "update in place",
        Action::Replace => "replace (delete, then create)",
        Action::Delete => "delete",
        Action::Run => "run a load test",
        Action::NoOp => "",
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
    text_of(&view::view(plan))
}

/// The human-readable form of the model.
pub fn text_of(view: &PlanView) -> String {
    let mut out = String::new();
    if !view.summary.has_changes() {
        out.push_str("No changes. The running resources match the stack and the state.\n");
        return out;
    }
    out.push_str("Resource actions are indicated with the following symbols:\n");
    for a in [
        Action::Create,
        Action::Update,
        Action::Replace,
        Action::Delete,
        Action::Run,
    ] {
        if view.changes.iter().any(|c| c.action == a) {
            let _ = writeln!(out, "{:>3} {}", symbol(a), legend(a));
        }
    }
    out.push('\n');
    for c in view.changes.iter().filter(|c| c.action != Action::NoOp) {
        resource(&mut out, c);
        out.push('\n');
    }
    out.push_str(&summary_line(&view.summary));
    out.push('\n');
    let outputs: Vec<&OutputChange> = view
        .outputs
        .iter()
        .filter(|o| o.action != Action::NoOp)
        .collect();
    if !outputs.is_empty() {
        out.push_str("\nChanges to Outputs:\n");
        for o in outputs {
            output(&mut out, o);
        }
    }
    out
}

/// One line: the marker right-aligned in three columns, four columns per nesting level.
fn line(out: &mut String, depth: usize, marker: &str, text: &str) {
    let _ = writeln!(out, "{}{marker:>3} {text}", "    ".repeat(depth));
}

fn resource(out: &mut String, c: &ResourceChange) {
    let _ = write!(out, "  # {} {}", c.address, verb(c.action));
    if let Some(r) = &c.reason {
        let _ = write!(out, ": {r}");
    }
    out.push('\n');
    let header = format!(
        "{} {} {{",
        c.address.kind.as_str(),
        view::quote(&c.address.name)
    );
    match (c.action, &c.before, &c.after) {
        (Action::Delete, Some(before), _) => {
            line(out, 0, "-", &header);
            whole(out, 1, "-", before);
            line(out, 0, "", "}");
        }
        (Action::Create | Action::Run, None, Some(after)) => {
            line(out, 0, symbol(c.action), &header);
            whole(out, 1, "+", after);
            line(out, 0, "", "}");
        }
        // A re-run with nothing changed in the load test itself: the reason says why.
        (Action::Run, Some(_), _) if !c.body.changed() => {}
        _ => {
            line(out, 0, symbol(c.action), &header);
            changed(out, 1, &c.body);
            line(out, 0, "", "}");
        }
    }
    if c.action != Action::Create {
        for f in &c.files {
            for l in f.diff.lines() {
                let _ = writeln!(out, "    {l}");
            }
        }
    }
}

/// `name = value`, a map on several lines (each entry with the marker).
fn attribute(out: &mut String, depth: usize, marker: &str, name: &str, v: &HclValue) {
    match v {
        HclValue::Map(m) if !m.is_empty() => {
            line(out, depth, marker, &format!("{name} = {{"));
            for (k, v) in m {
                attribute(out, depth + 1, marker, &view::key(k), v);
            }
            line(out, depth, "", "}");
        }
        v => line(out, depth, marker, &format!("{name} = {}", v.hcl())),
    }
}

/// A whole body, every line with `marker` (what is created or deleted). Empty lists and
/// maps are left out.
fn whole(out: &mut String, depth: usize, marker: &str, body: &Body) {
    for (name, v) in &body.attributes {
        if !v.is_empty_collection() {
            attribute(out, depth, marker, name, v);
        }
    }
    for b in &body.blocks {
        line(out, depth, marker, &format!("{} {{", b.name));
        whole(out, depth + 1, marker, &b.body);
        line(out, depth, "", "}");
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("# (1 unchanged {what} hidden)")
    } else {
        format!("# ({n} unchanged {what}s hidden)")
    }
}

/// What changed in a body; unchanged attributes and blocks are counted, not shown.
fn changed(out: &mut String, depth: usize, body: &BodyChange) {
    let mut same_attributes = 0;
    for a in &body.attributes {
        let forces = if a.forces_replacement {
            " # forces replacement"
        } else {
            ""
        };
        match (&a.before, &a.after) {
            (b, x) if b == x => same_attributes += 1,
            (None, Some(v @ HclValue::Map(m))) if !m.is_empty() && forces.is_empty() => {
                attribute(out, depth, "+", &a.name, v)
            }
            (None, Some(v)) => line(
                out,
                depth,
                "+",
                &format!("{} = {}{forces}", a.name, v.hcl()),
            ),
            (Some(v), None) => line(
                out,
                depth,
                "-",
                &format!("{} = {} -> null{forces}", a.name, v.hcl()),
            ),
            (Some(HclValue::Map(b)), Some(HclValue::Map(x))) => {
                line(out, depth, "~", &format!("{} = {{{forces}", a.name));
                map_entries(out, depth + 1, b, x);
                line(out, depth, "", "}");
            }
            (Some(b), Some(x)) => line(
                out,
                depth,
                "~",
                &format!("{} = {} -> {}{forces}", a.name, b.hcl(), x.hcl()),
            ),
            (None, None) => {}
        }
    }
    let mut same_blocks = 0;
    for b in &body.blocks {
        let header = format!("{} {{", b.name);
        match (b.before, b.after) {
            _ if !b.changed() => same_blocks += 1,
            (false, true) => {
                line(out, depth, "+", &header);
                whole_side(out, depth + 1, "+", &b.body, false);
                line(out, depth, "", "}");
            }
            (true, false) => {
                line(out, depth, "-", &header);
                whole_side(out, depth + 1, "-", &b.body, true);
                line(out, depth, "", "}");
            }
            _ => {
                line(out, depth, "~", &header);
                changed(out, depth + 1, &b.body);
                line(out, depth, "", "}");
            }
        }
    }
    if same_attributes > 0 {
        line(out, depth, "", &plural(same_attributes, "attribute"));
    }
    if same_blocks > 0 {
        line(out, depth, "", &plural(same_blocks, "block"));
    }
}

/// One side of a block that is added or removed as a whole.
fn whole_side(out: &mut String, depth: usize, marker: &str, body: &BodyChange, before: bool) {
    for a in &body.attributes {
        let v = if before { &a.before } else { &a.after };
        if let Some(v) = v
            && !v.is_empty_collection()
        {
            attribute(out, depth, marker, &a.name, v);
        }
    }
    for b in &body.blocks {
        if (before && b.before) || (!before && b.after) {
            line(out, depth, marker, &format!("{} {{", b.name));
            whole_side(out, depth + 1, marker, &b.body, before);
            line(out, depth, "", "}");
        }
    }
}

fn map_entries(
    out: &mut String,
    depth: usize,
    before: &BTreeMap<String, HclValue>,
    after: &BTreeMap<String, HclValue>,
) {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let mut same = 0;
    for k in keys {
        let name = view::key(k);
        match (before.get(k), after.get(k)) {
            (b, x) if b == x => same += 1,
            (None, Some(v)) => line(out, depth, "+", &format!("{name} = {}", v.hcl())),
            (Some(v), None) => line(out, depth, "-", &format!("{name} = {} -> null", v.hcl())),
            (Some(b), Some(x)) => line(
                out,
                depth,
                "~",
                &format!("{name} = {} -> {}", b.hcl(), x.hcl()),
            ),
            (None, None) => {}
        }
    }
    if same > 0 {
        line(out, depth, "", &plural(same, "element"));
    }
}

fn output(out: &mut String, o: &OutputChange) {
    let text = match (o.action, &o.before, &o.after) {
        (Action::Create, _, Some(after)) => format!("{} = {}", o.name, after.hcl()),
        (Action::Delete, Some(before), _) => format!("{} = {} -> null", o.name, before.hcl()),
        (_, Some(before), Some(after)) => {
            format!("{} = {} -> {}", o.name, before.hcl(), after.hcl())
        }
        _ => o.name.clone(),
    };
    line(out, 0, symbol(o.action), &text);
}

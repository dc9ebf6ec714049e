//! `benchstack tune --write`: the winner's settings written into the stack files, for review,
//! keeping every comment and the formatting. Each setting is written where the stack takes its
//! value from: a literal is replaced; a `var.NAME` reference changes that variable's default;
//! a missing attribute (or `batching` block, or flag) is added to the serving block; anything
//! else (an expression, `each.value`, a for_each resource) is refused with its location. The
//! edits are spliced into the text at the spans hcl-edit reports, so nothing else moves.

use std::ops::Range;
use std::path::{Path, PathBuf};

use hcl_edit::expr::{Expression, ObjectKey, TraversalOperator};
use hcl_edit::structure::{Block, Body, Structure};

use crate::stack::tune::Knob;
use crate::vocab::resources::{Address, FlagValue};

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A setting whose value the stack computes: it cannot be written automatically.
    #[error("{file}:{line}:{col}: {message}")]
    Refused {
        file: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

/// One edited file: its path, the old and the new text.
#[derive(Debug, Clone, PartialEq)]
pub struct Edit {
    pub path: PathBuf,
    pub before: String,
    pub after: String,
    /// One line per setting written: where and what.
    pub changes: Vec<String>,
}

struct File {
    path: PathBuf,
    text: String,
    changes: Vec<String>,
    original: String,
}

fn range_of(x: &impl hcl_edit::Span) -> Range<usize> {
    x.span().unwrap_or(0..0)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map(|i| before[i + 1..].chars().count() + 1)
        .unwrap_or(before.chars().count() + 1);
    (line, col)
}

/// The HCL literal of a value.
pub fn literal(v: &FlagValue) -> String {
    match v {
        FlagValue::Bool(b) => b.to_string(),
        FlagValue::Int(i) => i.to_string(),
        FlagValue::Float(f) => format!("{f}"),
        FlagValue::String(s) => {
            let quoted = serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"));
            quoted.replace("${", "$${").replace("%{", "%%{")
        }
    }
}

fn parse(f: &File) -> Result<Body, WriteError> {
    hcl_edit::parser::parse_body(&f.text).map_err(|e| {
        WriteError::Other(format!(
            "{}: cannot be parsed ({}); fix it before --write",
            f.path.display(),
            e.message().trim()
        ))
    })
}

fn refuse(f: &File, at: usize, message: String) -> WriteError {
    let (line, col) = line_col(&f.text, at);
    WriteError::Refused {
        file: f.path.clone(),
        line,
        col,
        message,
    }
}

/// The indentation of the line holding `offset`.
fn indent_at(text: &str, offset: usize) -> String {
    let start = text[..offset.min(text.len())]
        .rfind('\n')
        .map(|i| i + 1)
        .unwrap_or(0);
    text[start..]
        .chars()
        .take_while(|c| *c == ' ' || *c == '\t')
        .collect()
}

/// Inserts `lines` (each without indentation or newline) as the last lines of the block or
/// object whose closing brace is at `close`, indented one level deeper than that brace.
fn insert_before_close(text: &mut String, close: usize, lines: &[String]) {
    let outer = indent_at(text, close);
    let line_start = text[..close].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let only_space_before = text[line_start..close].trim().is_empty();
    let mut add = String::new();
    if !only_space_before {
        // `{ … }` on one line (or `x = 1 }`): break the line before the brace.
        add.push('\n');
    }
    for l in lines {
        add.push_str(&outer);
        add.push_str("  ");
        add.push_str(l);
        add.push('\n');
    }
    if only_space_before {
        text.insert_str(line_start, &add);
    } else {
        add.push_str(&outer);
        text.insert_str(close, &add);
    }
}

fn find_serving<'b>(body: &'b Body, name: &str) -> Option<&'b Block> {
    body.iter().find_map(|s| match s {
        Structure::Block(b)
            if b.ident.value().as_str() == "serving"
                && b.labels.first().map(|l| l.as_str()) == Some(name) =>
        {
            Some(b)
        }
        _ => None,
    })
}

fn var_name(e: &Expression) -> Option<String> {
    let Expression::Traversal(t) = e else {
        return None;
    };
    let Expression::Variable(v) = &t.expr else {
        return None;
    };
    if v.value().as_str() != "var" || t.operators.len() != 1 {
        return None;
    }
    match t.operators[0].value() {
        TraversalOperator::GetAttr(id) => Some(id.value().to_string()),
        _ => None,
    }
}

fn is_literal(e: &Expression) -> bool {
    matches!(
        e,
        Expression::Number(_) | Expression::String(_) | Expression::Bool(_) | Expression::Null(_)
    )
}

/// Where an expression's value is written: its own span (a literal) or a variable's default.
enum Target {
    Here(Range<usize>),
    Var(String),
}

fn target_of(f: &File, e: &Expression, key: &str, value: &FlagValue) -> Result<Target, WriteError> {
    if is_literal(e) {
        return Ok(Target::Here(range_of(e)));
    }
    if let Some(v) = var_name(e) {
        return Ok(Target::Var(v));
    }
    let r = range_of(e);
    let text = f.text.get(r.clone()).unwrap_or("").trim().to_string();
    Err(refuse(
        f,
        r.start,
        format!(
            "{key}: found `{text}`, expected a literal or a `var.NAME` reference to write the winner's value into; set {key} = {} by hand",
            literal(value)
        ),
    ))
}

/// Changes `variable "NAME"`'s default to `value` in whichever file declares it.
fn set_variable(
    files: &mut [File],
    name: &str,
    key: &str,
    value: &FlagValue,
) -> Result<(), WriteError> {
    for f in files.iter_mut() {
        let body = parse(f)?;
        let Some(block) = body.iter().find_map(|s| match s {
            Structure::Block(b)
                if b.ident.value().as_str() == "variable"
                    && b.labels.first().map(|l| l.as_str()) == Some(name) =>
            {
                Some(b)
            }
            _ => None,
        }) else {
            continue;
        };
        let Some(a) = block.body.get_attribute("default") else {
            return Err(refuse(
                f,
                range_of(&block.ident).start,
                format!(
                    "{key} comes from var.{name}, which has no default to change; set it where the variable's value is given, to {}",
                    literal(value)
                ),
            ));
        };
        if !is_literal(&a.value) {
            return Err(refuse(
                f,
                range_of(&a.value).start,
                format!(
                    "{key} comes from var.{name}, whose default is not a literal; set it to {} by hand",
                    literal(value)
                ),
            ));
        }
        let r = range_of(&a.value);
        let (line, _) = line_col(&f.text, r.start);
        let change = format!(
            "{}:{line}: var.{name} default = {} ({key})",
            f.path.display(),
            literal(value)
        );
        f.text.replace_range(r, &literal(value));
        f.changes.push(change);
        return Ok(());
    }
    Err(WriteError::Other(format!(
        "{key} comes from var.{name}, which no stack file declares"
    )))
}

fn apply_target(
    files: &mut [File],
    i: usize,
    target: Target,
    key: &str,
    value: &FlagValue,
) -> Result<(), WriteError> {
    match target {
        Target::Here(r) => {
            let f = &mut files[i];
            let (line, _) = line_col(&f.text, r.start);
            f.changes.push(format!(
                "{}:{line}: {key} = {}",
                f.path.display(),
                literal(value)
            ));
            f.text.replace_range(r, &literal(value));
            Ok(())
        }
        Target::Var(name) => set_variable(files, &name, key, value),
    }
}

/// Writes one setting into the serving block `name` (in file `i`).
fn write_setting(
    files: &mut [File],
    i: usize,
    name: &str,
    knob: &Knob,
    value: &FlagValue,
) -> Result<(), WriteError> {
    let body = parse(&files[i])?;
    let Some(block) = find_serving(&body, name) else {
        return Err(WriteError::Other(format!(
            "serving \"{name}\" is no longer in {}",
            files[i].path.display()
        )));
    };
    let key = knob.key();
    let close = range_of(block).end.saturating_sub(1);
    let added = |f: &mut File, at: usize, what: String| {
        let (line, _) = line_col(&f.text, at);
        f.changes
            .push(format!("{}:{line}: {what}", f.path.display()));
    };
    match knob {
        Knob::Replicas | Knob::Image | Knob::Cpu | Knob::Memory => {
            let attr = key.as_str();
            match block.body.get_attribute(attr) {
                Some(a) => {
                    let t = target_of(&files[i], &a.value, &key, value)?;
                    apply_target(files, i, t, &key, value)
                }
                None => {
                    let f = &mut files[i];
                    insert_before_close(
                        &mut f.text,
                        close,
                        &[format!("{attr} = {}", literal(value))],
                    );
                    added(f, close, format!("{attr} = {} (added)", literal(value)));
                    Ok(())
                }
            }
        }
        Knob::Batching(n) => {
            let batching = block.body.iter().find_map(|s| match s {
                Structure::Block(b) if b.ident.value().as_str() == "batching" => Some(b),
                _ => None,
            });
            match batching {
                Some(b) => match b.body.get_attribute(n) {
                    Some(a) => {
                        let t = target_of(&files[i], &a.value, &key, value)?;
                        apply_target(files, i, t, &key, value)
                    }
                    None => {
                        let bclose = range_of(b).end.saturating_sub(1);
                        let f = &mut files[i];
                        insert_before_close(
                            &mut f.text,
                            bclose,
                            &[format!("{n} = {}", literal(value))],
                        );
                        added(f, bclose, format!("{key} = {} (added)", literal(value)));
                        Ok(())
                    }
                },
                None => {
                    let f = &mut files[i];
                    insert_before_close(
                        &mut f.text,
                        close,
                        &[
                            "batching {".to_string(),
                            format!("  {n} = {}", literal(value)),
                            "}".to_string(),
                        ],
                    );
                    added(
                        f,
                        close,
                        format!("{key} = {} (a batching block added)", literal(value)),
                    );
                    Ok(())
                }
            }
        }
        Knob::Flag(n) => match block.body.get_attribute("flags") {
            Some(a) => {
                let Expression::Object(obj) = &a.value else {
                    let r = range_of(&a.value);
                    return Err(refuse(
                        &files[i],
                        r.start,
                        format!(
                            "{key}: found flags given by an expression, expected an object literal such as {{ {n} = … }} to write the winner's value into; set {key} = {} by hand",
                            literal(value)
                        ),
                    ));
                };
                let entry = obj.iter().find(|(k, _)| {
                    let kname = match k {
                        ObjectKey::Ident(id) => id.value().to_string(),
                        ObjectKey::Expression(Expression::String(s)) => s.value().clone(),
                        ObjectKey::Expression(Expression::Variable(v)) => v.value().to_string(),
                        _ => String::new(),
                    };
                    kname == *n
                });
                match entry {
                    Some((_, v)) => {
                        let t = target_of(&files[i], v.expr(), &key, value)?;
                        apply_target(files, i, t, &key, value)
                    }
                    None => {
                        let oclose = range_of(&a.value).end.saturating_sub(1);
                        let f = &mut files[i];
                        let oneline = !f.text[range_of(&a.value)].contains('\n');
                        if oneline && !obj.is_empty() {
                            let at = oclose;
                            let before = f.text[..at].trim_end().len();
                            f.text
                                .insert_str(before, &format!(", {n} = {}", literal(value)));
                        } else {
                            insert_before_close(
                                &mut f.text,
                                oclose,
                                &[format!("{n} = {}", literal(value))],
                            );
                        }
                        added(f, oclose, format!("{key} = {} (added)", literal(value)));
                        Ok(())
                    }
                }
            }
            None => {
                let f = &mut files[i];
                insert_before_close(
                    &mut f.text,
                    close,
                    &[
                        "flags = {".to_string(),
                        format!("  {n} = {}", literal(value)),
                        "}".to_string(),
                    ],
                );
                added(
                    f,
                    close,
                    format!("{key} = {} (flags added)", literal(value)),
                );
                Ok(())
            }
        },
    }
}

/// Computes the edits that make `serving` declare `settings` (nothing is written: see
/// [`write_edits`]). Settings equal to what the stack declares need no edit and are skipped
/// by the caller.
pub fn plan_edits(
    files: &[PathBuf],
    serving: &Address,
    settings: &[(Knob, FlagValue)],
) -> Result<Vec<Edit>, WriteError> {
    let mut loaded: Vec<File> = Vec::new();
    for p in files {
        let text = std::fs::read_to_string(p)
            .map_err(|e| WriteError::Other(format!("{}: cannot be read: {e}", p.display())))?;
        loaded.push(File {
            path: p.clone(),
            original: text.clone(),
            text,
            changes: Vec::new(),
        });
    }
    let mut home = None;
    for (i, f) in loaded.iter().enumerate() {
        let body = parse(f)?;
        if let Some(b) = find_serving(&body, &serving.name) {
            if b.body.get_attribute("for_each").is_some() {
                return Err(refuse(
                    f,
                    range_of(&b.ident).start,
                    format!(
                        "{serving}: found a serving block with for_each, whose settings differ per instance; expected a single resource to write the winner into; edit it by hand"
                    ),
                ));
            }
            home = Some(i);
            break;
        }
    }
    let Some(i) = home else {
        return Err(WriteError::Other(format!(
            "no stack file declares serving \"{}\"",
            serving.name
        )));
    };
    for (knob, value) in settings {
        write_setting(&mut loaded, i, &serving.name, knob, value)?;
    }
    let mut out = Vec::new();
    for f in loaded {
        if f.text != f.original {
            // An edit must never leave a file that does not parse.
            hcl_edit::parser::parse_body(&f.text).map_err(|e| {
                WriteError::Other(format!(
                    "{}: the edit would not parse ({}); nothing was written",
                    f.path.display(),
                    e.message().trim()
                ))
            })?;
            out.push(Edit {
                path: f.path,
                before: f.original,
                after: f.text,
                changes: f.changes,
            });
        }
    }
    Ok(out)
}

/// Writes the edited files (each replaced atomically: a temporary file renamed over it).
pub fn write_edits(edits: &[Edit]) -> Result<(), WriteError> {
    for e in edits {
        let dir = e.path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|err| WriteError::Other(format!("{}: {err}", e.path.display())))?;
        std::io::Write::write_all(&mut tmp, e.after.as_bytes())
            .map_err(|err| WriteError::Other(format!("{}: {err}", e.path.display())))?;
        if let Ok(meta) = std::fs::metadata(&e.path) {
            let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
        }
        tmp.persist(&e.path)
            .map_err(|err| WriteError::Other(format!("{}: {err}", e.path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(src: &str, settings: &[(&str, FlagValue)]) -> Result<String, WriteError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.hcl");
        std::fs::write(&p, src).unwrap();
        let addr = Address {
            kind: crate::vocab::resources::Kind::Serving,
            name: "tf".into(),
            key: None,
        };
        let s: Vec<(Knob, FlagValue)> = settings
            .iter()
            .map(|(k, v)| (Knob::parse(k).unwrap(), v.clone()))
            .collect();
        let edits = plan_edits(&[p], &addr, &s)?;
        Ok(edits
            .first()
            .map(|e| e.after.clone())
            .unwrap_or(src.to_string()))
    }

    #[test]
    fn a_literal_is_replaced_and_comments_stay() {
        let src = "serving \"tf\" {\n  # keep me\n  replicas = 1 # and me\n  batching {\n    max_batch_size = 8   # aligned\n  }\n}\n";
        let out = edit(
            src,
            &[
                ("batching.max_batch_size", FlagValue::Int(32)),
                ("replicas", FlagValue::Int(2)),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            "serving \"tf\" {\n  # keep me\n  replicas = 2 # and me\n  batching {\n    max_batch_size = 32   # aligned\n  }\n}\n"
        );
    }

    #[test]
    fn a_variable_reference_changes_the_default() {
        let src = "variable \"mbs\" {\n  default = 8 # tuned\n}\n\nserving \"tf\" {\n  batching {\n    max_batch_size = var.mbs\n  }\n}\n";
        let out = edit(src, &[("batching.max_batch_size", FlagValue::Int(32))]).unwrap();
        assert!(out.contains("default = 32 # tuned"), "{out}");
        assert!(out.contains("max_batch_size = var.mbs"), "{out}");
    }

    #[test]
    fn missing_attributes_and_blocks_are_added() {
        let src = "serving \"tf\" {\n  replicas = 1\n}\n";
        let out = edit(
            src,
            &[
                ("batching.num_batch_threads", FlagValue::Int(2)),
                ("flags.tensorflow_intra_op_parallelism", FlagValue::Int(4)),
            ],
        )
        .unwrap();
        assert!(
            out.contains("  batching {\n    num_batch_threads = 2\n  }\n"),
            "{out}"
        );
        assert!(
            out.contains("  flags = {\n    tensorflow_intra_op_parallelism = 4\n  }\n"),
            "{out}"
        );
        hcl_edit::parser::parse_body(&out).unwrap();
    }

    #[test]
    fn an_expression_is_refused_with_its_location() {
        let src = "serving \"tf\" {\n  replicas = 1 + 1\n}\n";
        let e = edit(src, &[("replicas", FlagValue::Int(3))])
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.hcl:2:14"), "{e}");
        assert!(e.contains("set replicas = 3 by hand"), "{e}");
    }
}

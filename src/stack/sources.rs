//! The stack's source files and the problems found in them: reading and parsing (hcl-edit,
//! with no rewriting before the parser), turning byte ranges into `file:line:col`, and
//! collecting diagnostics. Shared by the loader, `vars` and `fmt`, none of which needs the
//! others.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use hcl_edit::expr::Expression;
use hcl_edit::structure::Body;

use super::diag::{Diagnostic, Diagnostics, Location};
use super::eval::{Decls, EvalError, Scope};
use super::lexer::{SourceFile, comma_blocks};
use super::value::Value;
use crate::vocab::resources::Span;

pub(crate) struct Sources {
    pub files: Vec<SourceFile>,
    pub diags: Diagnostics,
}

pub(crate) fn range_of(x: &impl hcl_edit::Span) -> Range<usize> {
    x.span().unwrap_or(0..0)
}

impl Sources {
    pub fn new() -> Self {
        Sources {
            files: Vec::new(),
            diags: Diagnostics::default(),
        }
    }

    pub fn span(&self, file: usize, r: Range<usize>) -> Span {
        let f = &self.files[file];
        let (line, col) = f.line_col(r.start);
        Span {
            file: f.path.clone(),
            line,
            col,
        }
    }

    pub fn error(
        &mut self,
        file: usize,
        r: Range<usize>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let f = &self.files[file];
        let r = r.start.min(f.text.len())..r.end.clamp(r.start, f.text.len());
        let (line, col) = f.line_col(r.start);
        let line_text = f.line_text(line).to_string();
        let (_, end_col) = f.line_col(r.end);
        let (end_line, _) = f.line_col(r.end);
        let width = if end_line == line {
            end_col.saturating_sub(col).max(1)
        } else {
            line_text.chars().count().saturating_sub(col - 1).max(1)
        };
        self.diags.push(Diagnostic {
            location: Location::Source {
                span: Span {
                    file: f.path.clone(),
                    line,
                    col,
                },
                line_text,
                width,
            },
            message: message.into(),
            help,
            note: None,
        });
    }

    pub fn eval_error(&mut self, file: usize, e: EvalError, note: Option<&str>) {
        // An empty message marks a consequence of a problem already reported (a variable
        // without a value): saying it again at every use would bury the cause.
        if e.message.is_empty() {
            return;
        }
        self.error(file, e.range, e.message, e.help);
        if let (Some(n), Some(d)) = (note, self.diags.items.last_mut()) {
            d.note = Some(n.to_string());
        }
    }

    /// Reads and parses a file; syntax errors become diagnostics.
    pub fn parse_file(&mut self, path: &Path) -> Option<(usize, Body)> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.diags.path(
                    path,
                    format!("found a file that cannot be read ({e}), expected a readable HCL file"),
                );
                return None;
            }
        };
        self.files.push(SourceFile::new(path, text));
        let idx = self.files.len() - 1;
        self.parse_source(idx).map(|body| (idx, body))
    }

    /// Parses a loaded file exactly as written; syntax errors become diagnostics.
    pub fn parse_source(&mut self, idx: usize) -> Option<Body> {
        let e = match hcl_edit::parser::parse_body(&self.files[idx].text) {
            Ok(body) => return Some(body),
            Err(e) => e,
        };
        let off = e.location().offset();
        // hcl-edit stops at the first error, and on the old comma form its message ("expected
        // newline") does not say how to fix it: name every such block instead.
        let blocks = comma_blocks(&self.files[idx].text);
        let explained = blocks.iter().any(|b| {
            let f = &self.files[idx];
            f.line_col(b.range.start).0 == f.line_col(off).0
        });
        if !explained {
            let msg = e.message().trim().replace('\n', "; ");
            self.error(
                idx,
                off..off + 1,
                format!("found invalid HCL syntax, {}", syntax_expected(&msg)),
                None,
            );
        }
        for b in &blocks {
            let attrs = b.attributes(&self.files[idx].text);
            let n = attrs.len();
            let listed = match attrs.split_last() {
                Some((last, [])) => format!("`{last}`"),
                Some((last, rest)) => format!(
                    "{} and `{last}`",
                    rest.iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => String::new(),
            };
            let header = &b.header;
            self.error(
                idx,
                b.range.clone(),
                format!(
                    "found a one-line `{header}` block with {n} attributes separated by commas, \
                     expected one attribute per line: a one-line block holds at most one attribute"
                ),
                Some(format!(
                    "write `{header} {{` with {listed} on their own lines, then `}}` \
                     (`benchstack fmt` rewrites it)"
                )),
            );
        }
        None
    }
}

/// hcl-edit says e.g. "invalid expression; expected `\"`, `[`, …": keep what it expected.
fn syntax_expected(msg: &str) -> String {
    if let Some(i) = msg.find("expected") {
        msg[i..].to_string()
    } else {
        format!("expected valid HCL ({msg})")
    }
}

impl Sources {
    /// Evaluates an expression with no variables or references in scope (variable defaults,
    /// values from the command line).
    pub fn eval_constant(&mut self, file: usize, e: &Expression, dir: &Path) -> Option<Value> {
        let vars = BTreeMap::new();
        let decls = Decls::new();
        let mut scope = Scope::new(&vars, &decls, dir);
        scope.allow_vars = false;
        scope.allow_refs = false;
        match scope.eval(e) {
            Ok(v) => Some(v),
            Err(err) => {
                self.eval_error(file, err, None);
                None
            }
        }
    }
}

//! Canonical formatting (`benchstack fmt`), as `terraform fmt` does it: two-space indentation
//! by nesting, `key = value` with one space around `=`, the `=` of consecutive attribute lines
//! at one level aligned, no trailing whitespace, one final newline. Comments are kept; heredoc
//! bodies and multi-line comments are left byte for byte. The formatter works on lines and only
//! changes whitespace, so it cannot change what a file means; it refuses files that do not parse.
//!
//! One exception, the migration: a file in the old one-line comma form
//! (`stage { rate = 300, duration = "60s" }`, which HCL rejects and the loader refuses) has each
//! such block split into one attribute per line first, so `benchstack fmt` turns an old stack
//! into valid HCL.

use std::path::Path;

use super::diag::Diagnostics;
use super::lexer::{Ctx, SourceFile, comma_blocks, scan};
use super::sources::Sources;

/// Formats one stack file's text. Syntax errors are reported against `<input>`.
pub fn format_source(src: &str) -> Result<String, Diagnostics> {
    format_named(Path::new("<input>"), src)
}

/// As [`format_source`], naming `path` in diagnostics.
pub fn format_named(path: &Path, src: &str) -> Result<String, Diagnostics> {
    let src = if hcl_edit::parser::parse_body(src).is_ok() {
        src.to_string()
    } else {
        expand_comma_blocks(src)
    };
    check_syntax(path, &src)?;
    let out = format_lines(&src);
    // A formatter bug must never write a broken file.
    check_syntax(path, &out)?;
    Ok(out)
}

/// The migration from the old form: `name { a = 1, b = 2 }` on one line becomes `name {`, one
/// attribute per line, `}`. Only whitespace is inserted (each separating comma becomes a
/// newline); `format_lines` indents the result.
fn expand_comma_blocks(src: &str) -> String {
    let blocks = comma_blocks(src);
    if blocks.is_empty() {
        return src.to_string();
    }
    let mut newline_after: Vec<usize> = Vec::new();
    let mut replaced: Vec<usize> = Vec::new();
    for b in &blocks {
        newline_after.push(b.open + 1);
        newline_after.push(b.close);
        replaced.extend(&b.commas);
    }
    newline_after.sort_unstable();
    replaced.sort_unstable();
    let mut out = String::with_capacity(src.len() + newline_after.len());
    let mut ins = newline_after.iter().peekable();
    for (i, c) in src.char_indices() {
        while ins.next_if(|&&p| p == i).is_some() {
            out.push('\n');
        }
        if replaced.binary_search(&i).is_ok() {
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    for _ in ins {
        out.push('\n');
    }
    out
}

fn check_syntax(path: &Path, src: &str) -> Result<(), Diagnostics> {
    let mut ld = Sources::new();
    ld.files.push(SourceFile::new(path, src.to_string()));
    match ld.parse_source(0) {
        Some(_) => Ok(()),
        None => Err(ld.diags),
    }
}

struct Line<'a> {
    text: &'a str,
    /// Left exactly as is (heredoc body, inside a block comment).
    raw: bool,
    level: usize,
    /// Byte length of the key, if the line is `key = value`.
    attr_key: Option<usize>,
    /// Whether the line ends deeper than it starts (its value continues on later lines).
    opens: bool,
}

fn format_lines(src: &str) -> String {
    let src = src.replace("\r\n", "\n");
    let mut ctx_at: Vec<Option<(Ctx, usize)>> = vec![None; src.len() + 1];
    scan(&src, |i, _c, ctx, interp| ctx_at[i] = Some((ctx, interp)));
    let code = |i: usize| matches!(ctx_at.get(i).copied().flatten(), Some((Ctx::Code, 0)));

    let mut lines: Vec<Line> = Vec::new();
    // Each open bracket remembers the level of the lines inside it: one more than the line
    // that opened it, however many brackets that line opened (`map(object({` indents once).
    let mut open: Vec<usize> = Vec::new();
    let mut start = 0usize;
    for text in src.split('\n') {
        let first_ctx = ctx_at.get(start).copied().flatten().map(|c| c.0);
        let raw = matches!(first_ctx, Some(Ctx::Heredoc | Ctx::BlockComment))
            && !text.trim_start().starts_with("/*");
        let depth_start = open.len();
        let mut level = open.last().copied().unwrap_or(0);
        let mut leading = true;
        let mut line_level: Option<usize> = None;
        for (j, c) in text.char_indices() {
            let i = start + j;
            if !code(i) {
                if !c.is_whitespace() {
                    leading = false;
                }
                continue;
            }
            match c {
                '{' | '[' | '(' => {
                    if line_level.is_none() {
                        line_level = Some(level);
                    }
                    leading = false;
                    open.push(line_level.unwrap_or(level) + 1);
                }
                '}' | ']' | ')' => {
                    let inner = open.pop().unwrap_or(1);
                    if leading {
                        // A line starting with closers sits at the level of the opening line.
                        level = inner.saturating_sub(1);
                    }
                }
                c if c.is_whitespace() => {}
                _ => {
                    if leading {
                        leading = false;
                        line_level = Some(level);
                    }
                }
            }
        }
        let trimmed_start = text.len() - text.trim_start().len();
        let attr_key = if raw || !code(start + trimmed_start) {
            None
        } else {
            attr_key_len(text.trim())
        };
        let level = line_level.unwrap_or(level);
        lines.push(Line {
            text,
            raw,
            level,
            attr_key,
            opens: open.len() > depth_start,
        });
        start += text.len() + 1;
    }

    // Align `=` over runs of consecutive attribute lines at one level.
    let mut widths: Vec<Option<usize>> = vec![None; lines.len()];
    let mut i = 0;
    while i < lines.len() {
        if lines[i].attr_key.is_none() || lines[i].raw {
            i += 1;
            continue;
        }
        let level = lines[i].level;
        let mut j = i;
        let mut width = 0;
        // An attribute whose value spans several lines is not aligned and ends the run.
        if lines[i].opens {
            widths[i] = lines[i].attr_key;
            i += 1;
            continue;
        }
        while j < lines.len()
            && lines[j].attr_key.is_some()
            && !lines[j].raw
            && lines[j].level == level
            && !lines[j].opens
        {
            width = width.max(lines[j].attr_key.unwrap_or(0));
            j += 1;
        }
        for w in widths.iter_mut().take(j).skip(i) {
            *w = Some(width);
        }
        i = j;
    }

    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    for (line, width) in lines.iter().zip(widths) {
        if line.raw {
            out.push(line.text.to_string());
            continue;
        }
        let t = line.text.trim();
        if t.is_empty() {
            out.push(String::new());
            continue;
        }
        let indent = "  ".repeat(line.level);
        match (line.attr_key, width) {
            (Some(k), Some(w)) => {
                let key = &t[..k];
                let rest = t[k..].trim_start();
                let value = rest[1..].trim_start();
                // Padded by hand: `{:<w$}` panics for widths above u16::MAX.
                let pad = " ".repeat(w.saturating_sub(key.chars().count()));
                out.push(format!("{indent}{key}{pad} = {value}"));
            }
            _ => out.push(format!("{indent}{t}")),
        }
    }
    while out.first().is_some_and(|l| l.is_empty()) {
        out.remove(0);
    }
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// `name = …` (not `==`, not `=>`): the byte length of `name`.
fn attr_key_len(t: &str) -> Option<usize> {
    let mut chars = t.char_indices();
    let (_, first) = chars.next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(t.len());
    let rest = t[end..].trim_start();
    let mut r = rest.chars();
    if r.next() != Some('=') {
        return None;
    }
    match r.next() {
        Some('=') | Some('>') => None,
        _ => Some(end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_equals_and_indents_by_nesting() {
        let src = "serving \"tf\" {\ncluster=cluster.local\n    replicas    = 2\n  # keep me\nbatching {\nmax_batch_size = 8\nbatch_timeout_micros=100\n}\n}\n\n\n";
        let want = "serving \"tf\" {\n  cluster  = cluster.local\n  replicas = 2\n  # keep me\n  batching {\n    max_batch_size       = 8\n    batch_timeout_micros = 100\n  }\n}\n";
        assert_eq!(format_source(src).unwrap(), want);
        assert_eq!(
            format_source(want).unwrap(),
            want,
            "formatting is idempotent"
        );
    }

    #[test]
    fn heredocs_and_strings_are_untouched() {
        let src = "a {\nx = <<EOT\n  keep   this\n{ not = code\nEOT\ny = \"a   =  b { \"\n}\n";
        let out = format_source(src).unwrap();
        assert!(out.contains("\n  keep   this\n{ not = code\nEOT\n"));
        assert!(out.contains("  y = \"a   =  b { \"\n"));
    }

    #[test]
    fn multi_line_values_end_an_alignment_run() {
        let src = "a {\nx = 1\nflags = {\nk = 1\nlonger = 2\n}\nzz = 3\n}\n";
        let want = "a {\n  x = 1\n  flags = {\n    k      = 1\n    longer = 2\n  }\n  zz = 3\n}\n";
        assert_eq!(format_source(src).unwrap(), want);
    }

    #[test]
    fn a_line_opening_several_brackets_indents_once() {
        let src = "v {\ntype = map(object({\na = number\n}))\n}\n";
        let want = "v {\n  type = map(object({\n    a = number\n  }))\n}\n";
        assert_eq!(format_source(src).unwrap(), want);
    }

    #[test]
    fn the_old_comma_form_is_rewritten_into_valid_hcl_idempotently() {
        let src = "loadtest \"a\" {\n  stage { rate = 300, duration = \"60s\" } # first\n  slo { p99 = \"50ms\" }\n  x = { a = 1, b = 2 }\n}\n";
        assert!(hcl_edit::parser::parse_body(src).is_err());
        let out = format_source(src).unwrap();
        let want = "loadtest \"a\" {\n  stage {\n    rate     = 300\n    duration = \"60s\"\n  } # first\n  slo { p99 = \"50ms\" }\n  x = { a = 1, b = 2 }\n}\n";
        assert_eq!(out, want);
        assert!(hcl_edit::parser::parse_body(&out).is_ok());
        assert_eq!(
            format_source(&out).unwrap(),
            out,
            "formatting is idempotent"
        );
    }

    #[test]
    fn invalid_syntax_is_refused_with_a_location() {
        let err = format_source("a {\n  b = \n}\n").unwrap_err();
        assert!(err.to_string().contains("<input>:"), "{err}");
    }
}

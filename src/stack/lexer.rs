//! A stack file at the lexer level: byte offsets to line:col, a small HCL lexer shared with
//! the formatter, and the detection of the old one-line comma form
//! `stage { rate = 300, duration = "60s" }`. That form is not HCL (a one-line block holds at
//! most one attribute), so the loader parses the text exactly as written and only uses the
//! detection to explain hcl-edit's failure; `benchstack fmt` rewrites it (see `fmt`).

use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    /// The directory relative paths in this file resolve against.
    pub dir: PathBuf,
    /// The text as written; it is also what the parser sees, so spans index it directly.
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: &Path, text: String) -> Self {
        let dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile {
            path: path.to_path_buf(),
            dir,
            text,
            line_starts,
        }
    }

    /// 1-based line and column (in characters) of an offset in `text`.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let col = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(0)
            + 1;
        (line, col)
    }

    /// The text of a 1-based line (without its newline).
    pub fn line_text(&self, line: usize) -> &str {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return "";
        };
        let end = self
            .line_starts
            .get(line)
            .map(|e| e.saturating_sub(1))
            .unwrap_or(self.text.len());
        self.text
            .get(start..end)
            .unwrap_or("")
            .trim_end_matches('\r')
    }
}

/// A minimal HCL lexer state, enough to know whether a character is code, inside a string or
/// heredoc, or inside a comment. Shared with the formatter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ctx {
    Code,
    Str,
    LineComment,
    BlockComment,
    Heredoc,
}

/// Walks `text` and calls `f(offset, char, ctx, depth_of_interpolation)` for each character.
/// `ctx` is the context the character is in (a string's quotes count as `Str`).
pub(crate) fn scan(text: &str, mut f: impl FnMut(usize, char, Ctx, usize)) {
    // A stack of frames: each `${`/`%{` inside a string opens a code frame, tracking brace depth.
    enum Frame {
        Code { depth: usize },
        Str,
    }
    let mut frames: Vec<Frame> = vec![Frame::Code { depth: 0 }];
    let mut it = text.char_indices().peekable();
    let mut comment: Option<Ctx> = None;
    let mut heredoc: Option<String> = None;
    let mut line_start = true;
    let mut line_buf = String::new();
    while let Some((i, c)) = it.next() {
        let interp = frames.len() / 2;
        if let Some(delim) = heredoc.clone() {
            f(i, c, Ctx::Heredoc, interp);
            if c == '\n' {
                if line_buf.trim() == delim.as_str() {
                    heredoc = None;
                }
                line_buf.clear();
            } else {
                line_buf.push(c);
            }
            // The closing delimiter line ends at EOF without a newline, too.
            if heredoc.is_some() && it.peek().is_none() && line_buf.trim() == delim.as_str() {
                heredoc = None;
            }
            continue;
        }
        match comment {
            Some(Ctx::LineComment) => {
                if c == '\n' {
                    comment = None;
                    f(i, c, Ctx::Code, interp);
                    line_start = true;
                } else {
                    f(i, c, Ctx::LineComment, interp);
                }
                continue;
            }
            Some(_) => {
                f(i, c, Ctx::BlockComment, interp);
                if c == '*' && it.peek().map(|p| p.1) == Some('/') {
                    let (j, d) = it.next().unwrap_or((i + 1, '/'));
                    f(j, d, Ctx::BlockComment, interp);
                    comment = None;
                }
                continue;
            }
            None => {}
        }
        let nested = frames.len() > 1;
        match frames.last_mut() {
            Some(Frame::Str) => {
                f(i, c, Ctx::Str, interp);
                match c {
                    '\\' => {
                        if let Some((j, d)) = it.next() {
                            f(j, d, Ctx::Str, interp);
                        }
                    }
                    '"' => {
                        frames.pop();
                    }
                    '$' | '%' => {
                        let next = it.peek().map(|p| p.1);
                        if next == Some(c) {
                            // `$${` and `%%{` are literal.
                            if let Some((j, d)) = it.next() {
                                f(j, d, Ctx::Str, interp);
                            }
                        } else if next == Some('{') {
                            if let Some((j, d)) = it.next() {
                                f(j, d, Ctx::Str, interp);
                            }
                            frames.push(Frame::Code { depth: 0 });
                        }
                    }
                    _ => {}
                }
            }
            Some(Frame::Code { depth }) => {
                match c {
                    '#' => {
                        comment = Some(Ctx::LineComment);
                        f(i, c, Ctx::LineComment, interp);
                        continue;
                    }
                    '/' if it.peek().map(|p| p.1) == Some('/') => {
                        comment = Some(Ctx::LineComment);
                        f(i, c, Ctx::LineComment, interp);
                        continue;
                    }
                    '/' if it.peek().map(|p| p.1) == Some('*') => {
                        comment = Some(Ctx::BlockComment);
                        f(i, c, Ctx::BlockComment, interp);
                        continue;
                    }
                    '"' => {
                        f(i, c, Ctx::Str, interp);
                        frames.push(Frame::Str);
                        continue;
                    }
                    '<' if it.peek().map(|p| p.1) == Some('<') => {
                        // `<<EOF` or `<<-EOF` up to the end of the line starts a heredoc.
                        let rest = &text[i + 2..];
                        let rest = rest.strip_prefix('-').unwrap_or(rest);
                        let ident: String = rest
                            .chars()
                            .take_while(|ch| ch.is_alphanumeric() || *ch == '_' || *ch == '-')
                            .collect();
                        let after = &rest[ident.len()..];
                        let line_rest = after.split('\n').next().unwrap_or("");
                        if !ident.is_empty() && line_rest.trim().is_empty() {
                            // Emit the opener and the rest of its line as code.
                            f(i, c, Ctx::Code, interp);
                            while let Some(&(j, d)) = it.peek() {
                                it.next();
                                f(j, d, Ctx::Code, interp);
                                if d == '\n' {
                                    break;
                                }
                            }
                            heredoc = Some(ident);
                            line_buf.clear();
                            continue;
                        }
                    }
                    '{' => *depth += 1,
                    '}' if nested && *depth == 0 => {
                        f(i, c, Ctx::Str, interp);
                        frames.pop();
                        continue;
                    }
                    '}' => *depth = depth.saturating_sub(1),
                    _ => {}
                }
                f(i, c, Ctx::Code, interp);
            }
            None => f(i, c, Ctx::Code, interp),
        }
        let _ = line_start;
        line_start = c == '\n';
    }
}

/// A block written on one line with several attributes separated by commas
/// (`stage { rate = 300, duration = "60s" }`): the old stack form, which HCL rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommaBlock {
    /// From the first character of the block's header to its closing `}` (inclusive).
    pub range: Range<usize>,
    /// The header before `{`, trimmed (`stage`, `variable "x"`).
    pub header: String,
    /// Offset of `{`.
    pub open: usize,
    /// Offsets of the separating commas.
    pub commas: Vec<usize>,
    /// Offset of `}`.
    pub close: usize,
}

impl CommaBlock {
    /// The attributes as written, trimmed (`rate = 300`).
    pub fn attributes<'t>(&self, text: &'t str) -> Vec<&'t str> {
        let mut bounds = vec![self.open];
        bounds.extend(&self.commas);
        bounds.push(self.close);
        bounds
            .windows(2)
            .filter_map(|w| text.get(w[0] + 1..w[1]).map(str::trim))
            .collect()
    }
}

/// Every one-line block in `text` whose attributes are separated by commas, in order. Commas in
/// strings, comments, heredocs, object and tuple literals and function calls are not separators.
pub(crate) fn comma_blocks(text: &str) -> Vec<CommaBlock> {
    struct Open {
        at: usize,
        line: usize,
        /// Start of the header, when this `{` opens a block.
        header_at: Option<usize>,
        commas: Vec<usize>,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut line = 0usize;
    let mut line_start = 0usize;
    let mut found: Vec<CommaBlock> = Vec::new();
    scan(text, |i, c, ctx, interp| {
        if c == '\n' {
            line += 1;
            line_start = i + 1;
        }
        if ctx != Ctx::Code || interp > 0 {
            return;
        }
        match c {
            '{' | '[' | '(' => {
                let in_body = stack.last().is_none_or(|o| o.header_at.is_some());
                let prefix = &text[line_start..i];
                let header_at = (c == '{' && in_body && is_block_header(prefix))
                    .then(|| line_start + (prefix.len() - prefix.trim_start().len()));
                stack.push(Open {
                    at: i,
                    line,
                    header_at,
                    commas: Vec::new(),
                });
            }
            '}' | ']' | ')' => {
                if let Some(open) = stack.pop()
                    && let Some(h) = open.header_at
                    && open.line == line
                    && !open.commas.is_empty()
                {
                    found.push(CommaBlock {
                        range: h..i + 1,
                        header: text[h..open.at].trim().to_string(),
                        open: open.at,
                        commas: open.commas,
                        close: i,
                    });
                }
            }
            ',' => {
                if let Some(open) = stack.last_mut()
                    && open.header_at.is_some()
                    && open.line == line
                {
                    open.commas.push(i);
                }
            }
            _ => {}
        }
    });
    found.sort_by_key(|b| b.range.start);
    found
}

/// `ident`, `ident "label"`, `ident label "label"`: the text before a block's `{`.
fn is_block_header(prefix: &str) -> bool {
    let mut rest = prefix.trim();
    if rest.is_empty() {
        return false;
    }
    let mut first = true;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('"') {
            if first {
                return false;
            }
            let Some(end) = r.find('"') else { return false };
            rest = r[end + 1..].trim_start();
        } else {
            let n = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            if n == 0 {
                return false;
            }
            rest = rest[n..].trim_start();
        }
        first = false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_blocks_with_commas_are_found_with_their_attributes() {
        let src = "loadtest \"a\" {\n  stage { rate = 300, duration = \"60s\" }\n  x = { a = 1, b = 2 }\n  f = max(1, 2)\n}\n";
        let found = comma_blocks(src);
        assert_eq!(found.len(), 1, "{found:?}");
        let b = &found[0];
        assert_eq!(b.header, "stage");
        assert_eq!(
            &src[b.range.clone()],
            "stage { rate = 300, duration = \"60s\" }"
        );
        assert_eq!(b.attributes(src), ["rate = 300", "duration = \"60s\""]);
        let f = SourceFile::new(Path::new("t.hcl"), src.to_string());
        assert_eq!(f.line_col(b.range.start), (2, 3));
    }

    #[test]
    fn commas_in_strings_comments_and_heredocs_are_not_separators() {
        let src = "a { b = \"x, y\" } # c, d\nh = <<EOT\n{ p = 1, q = 2 }\nEOT\n";
        assert!(comma_blocks(src).is_empty());
        let f = SourceFile::new(Path::new("t.hcl"), src.to_string());
        assert_eq!(f.text, src, "the text is kept as written");
    }

    #[test]
    fn line_col_counts_characters() {
        let f = SourceFile::new(Path::new("t.hcl"), "a = \"é\"\nb = 1\n".into());
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(f.text.find('b').unwrap()), (2, 1));
        assert_eq!(f.line_text(2), "b = 1");
    }
}

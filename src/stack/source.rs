//! Stack source files: byte offsets to line:col, and the one-line block form
//! `stage { rate = 300, duration = "60s" }` that DESIGN.md uses but plain HCL does not accept
//! (HCL allows one attribute in a one-line block). We rewrite such blocks into the multi-line form
//! before parsing and keep a map from the rewritten offsets back to the original ones, so every
//! location still points into the file as the user wrote it.

use std::ops::Range;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    /// The directory relative paths in this file resolve against.
    pub dir: PathBuf,
    /// The text as written.
    pub text: String,
    /// The text given to the HCL parser (the one-line comma form expanded).
    pub parsed_text: String,
    line_starts: Vec<usize>,
    /// Offsets (in `parsed_text`) of inserted newlines, ascending.
    inserted: Vec<usize>,
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
        let (parsed_text, inserted) = expand_one_line_blocks(&text);
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile {
            path: path.to_path_buf(),
            dir,
            text,
            parsed_text,
            line_starts,
            inserted,
        }
    }

    /// Maps an offset in `parsed_text` to one in `text`.
    pub fn original_offset(&self, parsed: usize) -> usize {
        let shift = self.inserted.partition_point(|&p| p < parsed);
        parsed.saturating_sub(shift).min(self.text.len())
    }

    pub fn original_range(&self, parsed: Range<usize>) -> Range<usize> {
        let start = self.original_offset(parsed.start);
        let end = self.original_offset(parsed.end).max(start);
        start..end
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

/// Expands `name "label" { a = 1, b = 2 }` (on one line) into a multi-line block.
/// Returns the new text and the offsets (in the new text) of every inserted character.
fn expand_one_line_blocks(text: &str) -> (String, Vec<usize>) {
    struct Open {
        at: usize,
        line: usize,
        block: bool,
        commas: Vec<usize>,
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut line = 0usize;
    let mut line_start = 0usize;
    // (offset of `{`, offsets of commas, offset of `}`) for every block to expand.
    let mut edits: Vec<(usize, Vec<usize>, usize)> = Vec::new();
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
                let in_body = stack.last().is_none_or(|o| o.block);
                let block = c == '{' && in_body && is_block_header(&text[line_start..i]);
                stack.push(Open {
                    at: i,
                    line,
                    block,
                    commas: Vec::new(),
                });
            }
            '}' | ']' | ')' => {
                if let Some(open) = stack.pop()
                    && open.block
                    && open.line == line
                    && !open.commas.is_empty()
                {
                    edits.push((open.at, open.commas, i));
                }
            }
            ',' => {
                if let Some(open) = stack.last_mut()
                    && open.block
                    && open.line == line
                {
                    open.commas.push(i);
                }
            }
            _ => {}
        }
    });
    if edits.is_empty() {
        return (text.to_string(), Vec::new());
    }
    // Inserts: a newline after `{` and before `}`; commas become newlines in place.
    let mut inserts_after: Vec<usize> = Vec::new();
    let mut replace: Vec<usize> = Vec::new();
    for (open, commas, close) in edits {
        inserts_after.push(open + 1);
        inserts_after.push(close);
        replace.extend(commas);
    }
    inserts_after.sort_unstable();
    replace.sort_unstable();
    let mut out = String::with_capacity(text.len() + inserts_after.len());
    let mut inserted = Vec::new();
    let mut ins = inserts_after.iter().peekable();
    for (i, c) in text.char_indices() {
        while ins.peek().is_some_and(|&&p| p == i) {
            inserted.push(out.len());
            out.push('\n');
            ins.next();
        }
        if replace.binary_search(&i).is_ok() {
            out.push('\n');
        } else {
            out.push(c);
        }
    }
    for _ in ins {
        inserted.push(out.len());
        out.push('\n');
    }
    (out, inserted)
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
    fn one_line_blocks_with_commas_are_expanded_and_offsets_map_back() {
        let src = "loadtest \"a\" {\n  stage { rate = 300, duration = \"60s\" }\n  x = { a = 1, b = 2 }\n}\n";
        let f = SourceFile::new(Path::new("t.hcl"), src.to_string());
        assert!(
            f.parsed_text
                .contains("stage {\n rate = 300\n duration = \"60s\" \n}")
        );
        // Object literals keep their commas.
        assert!(f.parsed_text.contains("x = { a = 1, b = 2 }"));
        let dur = f.parsed_text.find("\"60s\"").unwrap();
        let orig = f.original_offset(dur);
        assert_eq!(&src[orig..orig + 5], "\"60s\"");
        assert_eq!(f.line_col(orig), (2, 34));
    }

    #[test]
    fn commas_in_strings_comments_and_heredocs_are_left_alone() {
        let src = "a { b = \"x, y\" } # c, d\nh = <<EOT\n{ p = 1, q = 2 }\nEOT\n";
        let f = SourceFile::new(Path::new("t.hcl"), src.to_string());
        assert_eq!(f.parsed_text, src);
    }

    #[test]
    fn line_col_counts_characters() {
        let f = SourceFile::new(Path::new("t.hcl"), "a = \"é\"\nb = 1\n".into());
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(f.text.find('b').unwrap()), (2, 1));
        assert_eq!(f.line_text(2), "b = 1");
    }
}

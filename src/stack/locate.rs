//! Where an attribute of a loaded resource is written: the stack keeps one span per resource
//! (its block), and checks made after loading (the plan's remote preflight) point at the
//! attribute at fault, so the file is read again and the block found by that span.

use hcl_edit::structure::Body;

use super::diag::{Diagnostic, Location};
use super::lexer::SourceFile;
use super::sources::range_of;
use crate::vocab::resources::Span;

/// A diagnostic at `attribute` of the block whose keyword is at `block`, with the line's text
/// and the value underlined; at the block itself when the attribute is not written there (a
/// default) or the file cannot be read again.
pub fn attribute_diagnostic(
    block: &Span,
    attribute: Option<&str>,
    message: String,
    help: Option<String>,
) -> Diagnostic {
    let location = attribute_location(block, attribute).unwrap_or_else(|| Location::Source {
        span: block.clone(),
        line_text: std::fs::read_to_string(&block.file)
            .ok()
            .and_then(|t| {
                t.lines()
                    .nth(block.line.saturating_sub(1))
                    .map(String::from)
            })
            .unwrap_or_default(),
        width: 1,
    });
    Diagnostic {
        location,
        message,
        help,
        note: None,
    }
}

fn attribute_location(block: &Span, attribute: Option<&str>) -> Option<Location> {
    let text = std::fs::read_to_string(&block.file).ok()?;
    let file = SourceFile::new(&block.file, text);
    let body: Body = hcl_edit::parser::parse_body(&file.text).ok()?;
    let found = body
        .blocks()
        .find(|b| file.line_col(range_of(&b.ident).start) == (block.line, block.col))?;
    let range = match attribute.and_then(|a| found.body.get_attribute(a)) {
        Some(attr) => range_of(&attr.value),
        None => range_of(&found.ident),
    };
    let (line, col) = file.line_col(range.start);
    let (end_line, end_col) = file.line_col(range.end);
    let line_text = file.line_text(line).to_string();
    let width = if end_line == line {
        end_col.saturating_sub(col).max(1)
    } else {
        line_text.chars().count().saturating_sub(col - 1).max(1)
    };
    Some(Location::Source {
        span: Span {
            file: block.file.clone(),
            line,
            col,
        },
        line_text,
        width,
    })
}

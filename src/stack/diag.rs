//! Diagnostics: every problem found in one load, each with where it is (file:line:col, or the
//! command-line flag it came from), what was found and what was expected.

use std::fmt;

use crate::vocab::resources::Span;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A place in a stack or var file, with the text of that line for the snippet.
    Source {
        span: Span,
        line_text: String,
        /// Width of the underlined region, in characters (at least 1).
        width: usize,
    },
    /// A command-line input such as `--var replicas=x` or `BENCHSTACK_VAR_replicas`.
    Input(String),
    /// A path given on the command line.
    Path(std::path::PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub location: Location,
    /// `found …, expected …`.
    pub message: String,
    /// A hint, e.g. `did you mean "replicas"?`.
    pub help: Option<String>,
    /// Which for_each instance the problem was found in, when it matters.
    pub note: Option<String>,
}

impl Diagnostic {
    /// The `file:line:col` (or flag) prefix.
    pub fn location_label(&self) -> String {
        match &self.location {
            Location::Source { span, .. } => span.to_string(),
            Location::Input(s) => s.clone(),
            Location::Path(p) => p.display().to_string(),
        }
    }

    pub fn span(&self) -> Option<&Span> {
        match &self.location {
            Location::Source { span, .. } => Some(span),
            _ => None,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location_label(), self.message)?;
        if let Some(note) = &self.note {
            write!(f, " ({note})")?;
        }
        if let Location::Source {
            span,
            line_text,
            width,
        } = &self.location
        {
            let num = span.line.to_string();
            let pad = " ".repeat(num.len());
            // Tabs would misalign the caret; show them as one space, as the column counts them.
            let shown = line_text.replace('\t', " ");
            let caret_pad = " ".repeat(span.col.saturating_sub(1));
            let carets = "^".repeat((*width).clamp(1, 80));
            write!(f, "\n{pad} |\n{num} | {shown}\n{pad} | {caret_pad}{carets}")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// All the problems found in a stack. Never empty when returned as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    pub items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.items.push(d);
    }

    pub fn input(&mut self, origin: impl Into<String>, message: impl Into<String>) {
        self.items.push(Diagnostic {
            location: Location::Input(origin.into()),
            message: message.into(),
            help: None,
            note: None,
        });
    }

    pub fn path(&mut self, path: &std::path::Path, message: impl Into<String>) {
        self.items.push(Diagnostic {
            location: Location::Path(path.to_path_buf()),
            message: message.into(),
            help: None,
            note: None,
        });
    }

    /// Sorts by file, line and column (inputs first) and drops exact repeats, which for_each
    /// instances of one block produce for a problem they share.
    pub fn finish(&mut self) {
        let key = |d: &Diagnostic| match &d.location {
            Location::Input(s) => (0, std::path::PathBuf::from(s), 0, 0),
            Location::Path(p) => (1, p.clone(), 0, 0),
            Location::Source { span, .. } => (2, span.file.clone(), span.line, span.col),
        };
        self.items.sort_by_key(key);
        let mut seen = std::collections::HashSet::new();
        self.items
            .retain(|d| seen.insert((d.location_label(), d.message.clone())));
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
                writeln!(f)?;
            }
            write!(f, "Error: {d}")?;
        }
        if self.items.len() > 1 {
            write!(f, "\n\n{} problems found.", self.items.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl miette::Diagnostic for Diagnostics {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("benchstack::stack"))
    }
}

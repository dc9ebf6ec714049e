//! Markdown for pull requests and job summaries (`--format markdown` on `plan`, `tune` and
//! `results --compare`; `benchstack comment --github` posts it).
//!
//! One shape for every command, after what reviewers get from Atlantis, tfcmt, Infracost and
//! Bencher (../shared/research/review-metrics-batching.md §2):
//! 1. a verdict line, outside any fold;
//! 2. a red alert when something is replaced or deleted or a metric got worse: GitHub's alert
//!    syntax, `> [!CAUTION]` alone on the first line of a blockquote (docs.github.com, "Basic
//!    writing and formatting syntax", Alerts), with 🔴 for renderers without alerts;
//! 3. tables: per changed resource (attribute, before, after), per metric (base, new,
//!    change, interval, p, rounds, verdict), cost;
//! 4. folds (`<details>`): the plan in the stack's terms as a `diff` fence, trials, probes;
//! 5. a hidden marker `<!-- benchstack stack=… kind=… plan=SHA256 conclusion=… -->` by which
//!    `comment --github` finds its own earlier comment and sets a check run's conclusion.
//!
//! GitHub refuses a comment (and a check run's summary) over 65,536 characters with 422. A
//! document longer than the limit is shortened in its folds first, each with a note saying
//! so; the verdict, the alerts and the tables are kept whole (only if they alone exceed the
//! limit are table rows cut, with a note: a comment GitHub refuses helps no one).
//!
//! [`Document`] is generic: a compare result renders through [`MetricRow`] and
//! [`metric_table`] like `results --compare` does here.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use sha2::{Digest, Sha256};

/// GitHub's limit on an issue comment's body and a check run's `output.summary`, in
/// characters (a longer body is answered 422 "body is too long (maximum is 65536
/// characters)").
pub const GITHUB_LIMIT: usize = 65_536;

/// What a check run concludes from a document (`comment --github --check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conclusion {
    Success,
    Failure,
    Neutral,
}

impl Conclusion {
    /// The check run `conclusion` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Conclusion::Success => "success",
            Conclusion::Failure => "failure",
            Conclusion::Neutral => "neutral",
        }
    }

    pub fn parse(s: &str) -> Option<Conclusion> {
        match s {
            "success" => Some(Conclusion::Success),
            "failure" => Some(Conclusion::Failure),
            "neutral" => Some(Conclusion::Neutral),
            _ => None,
        }
    }
}

/// The hidden marker: which comment this is and what it concludes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The stack as named on the command line (`stacks/local.hcl`).
    pub stack: String,
    /// `plan`, `tune`, `results`, `compare`: comments of different kinds are kept apart.
    pub kind: String,
    /// SHA-256 of what the document shows (the plan's JSON for a plan).
    pub digest: String,
    pub conclusion: Conclusion,
}

/// A marker value: no spaces, no `--` (which would end the HTML comment early).
fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '<' || c == '>' {
                '_'
            } else {
                c
            }
        })
        .collect();
    let mut t = t.replace("--", "-_");
    if t.is_empty() {
        t.push('-');
    }
    t
}

impl Marker {
    /// `<!-- benchstack stack=S kind=K plan=H conclusion=C -->`.
    pub fn render(&self) -> String {
        format!(
            "{}plan={} conclusion={} -->",
            self.key(),
            token(&self.digest),
            self.conclusion.as_str()
        )
    }

    /// What identifies the comment across runs (the marker up to the digest, with the space
    /// that ends the kind): `comment --github` updates the comment whose body holds this.
    pub fn key(&self) -> String {
        format!(
            "<!-- benchstack stack={} kind={} ",
            token(&self.stack),
            token(&self.kind)
        )
    }

    /// The marker in a markdown text (the last one, as [`Document::render`] ends with it).
    pub fn find(markdown: &str) -> Option<Marker> {
        let start = markdown.rfind("<!-- benchstack ")?;
        let rest = &markdown[start + "<!-- benchstack ".len()..];
        let end = rest.find("-->")?;
        let mut m = Marker {
            stack: String::new(),
            kind: String::new(),
            digest: String::new(),
            conclusion: Conclusion::Neutral,
        };
        for field in rest[..end].split_whitespace() {
            match field.split_once('=') {
                Some(("stack", v)) => m.stack = v.to_string(),
                Some(("kind", v)) => m.kind = v.to_string(),
                Some(("plan", v)) => m.digest = v.to_string(),
                Some(("conclusion", v)) => m.conclusion = Conclusion::parse(v)?,
                _ => {}
            }
        }
        (!m.stack.is_empty() && !m.kind.is_empty()).then_some(m)
    }
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// Red: something is replaced or deleted, a metric got worse.
    Caution,
    /// Amber: an inconclusive result, a partial figure.
    Warning,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub kind: AlertKind,
    /// One or more lines of markdown.
    pub text: String,
}

/// A table: `header` names the columns, every row has as many cells (plain text; escaped
/// when rendered). `right` marks numeric columns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// A heading line above it (markdown, already escaped), e.g. "**`serving.tf`** …".
    pub title: String,
    pub header: Vec<String>,
    pub right: Vec<bool>,
    pub rows: Vec<Vec<String>>,
    /// Cells shown as code (HCL values).
    pub code: Vec<bool>,
}

/// A fold: `<details>` with a summary and a fenced block (`lang`: `diff`, `text`).
#[derive(Debug, Clone, PartialEq)]
pub struct Fold {
    pub summary: String,
    pub lang: String,
    pub body: String,
    /// What shows the whole of it, for the note when it is shortened ("`benchstack plan`").
    pub whole: String,
}

/// A document for a pull request.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The first line (markdown, already escaped), outside any fold.
    pub verdict: String,
    pub alerts: Vec<Alert>,
    pub tables: Vec<Table>,
    /// Lines after the tables (markdown, already escaped): sources of prices, warnings.
    pub notes: Vec<String>,
    pub folds: Vec<Fold>,
    pub marker: Marker,
}

/// Escapes text for a markdown paragraph or table cell: no markup, no HTML, one line.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '|' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A code span (HCL values in tables): a fence longer than any backtick run inside, `|`
/// escaped (GFM tables split on it even inside code).
pub fn code(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    let longest = longest_run(&one_line, '`');
    let fence = "`".repeat(longest + 1);
    let pad = if one_line.starts_with('`') || one_line.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{}{pad}{fence}", one_line.replace('|', "\\|"))
}

fn longest_run(s: &str, ch: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for c in s.chars() {
        if c == ch {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

fn render_table(out: &mut String, t: &Table, rows: &[Vec<String>], cut: usize) {
    if !t.title.is_empty() {
        let _ = writeln!(out, "{}\n", t.title);
    }
    let cell = |i: usize, v: &str| {
        if t.code.get(i).copied().unwrap_or(false) && !v.is_empty() && v != "-" {
            code(v)
        } else {
            escape(v)
        }
    };
    out.push('|');
    for h in &t.header {
        let _ = write!(out, " {} |", escape(h));
    }
    out.push_str("\n|");
    for i in 0..t.header.len() {
        out.push_str(if t.right.get(i).copied().unwrap_or(false) {
            " ---: |"
        } else {
            " --- |"
        });
    }
    out.push('\n');
    for r in rows {
        out.push('|');
        for i in 0..t.header.len() {
            let v = r.get(i).map(String::as_str).unwrap_or("");
            let _ = write!(out, " {} |", cell(i, v));
        }
        out.push('\n');
    }
    if cut > 0 {
        let _ = writeln!(
            out,
            "\n_{cut} more row(s) cut: the whole would not fit GitHub's {GITHUB_LIMIT}-character limit._"
        );
    }
    out.push('\n');
}

/// A fenced block: a fence longer than any backtick run at a line start inside.
fn fence_for(body: &str) -> String {
    let longest = body
        .lines()
        .map(|l| l.trim_start().chars().take_while(|c| *c == '`').count())
        .max()
        .unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

fn render_fold(out: &mut String, f: &Fold, body: &str, shortened: Option<(usize, usize)>) {
    let fence = fence_for(body);
    let _ = writeln!(
        out,
        "<details><summary>{}</summary>\n\n{fence}{}\n{}{}{fence}\n",
        escape(&f.summary),
        f.lang,
        body,
        if body.is_empty() || body.ends_with('\n') {
            ""
        } else {
            "\n"
        }
    );
    if let Some((shown, total)) = shortened {
        let _ = writeln!(
            out,
            "_Shortened to {shown} of {total} lines to stay within GitHub's {GITHUB_LIMIT}-character limit; {} shows all of it._\n",
            f.whole
        );
    }
    out.push_str("</details>\n\n");
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// The first lines of `body` that fit in `budget` characters (whole lines).
fn head_lines(body: &str, budget: usize) -> (String, usize) {
    let mut out = String::new();
    let mut used = 0;
    let mut n = 0;
    for line in body.lines() {
        let c = chars(line) + 1;
        if used + c > budget {
            break;
        }
        out.push_str(line);
        out.push('\n');
        used += c;
        n += 1;
    }
    (out, n)
}

impl Document {
    /// Markdown of at most `limit` characters (see the module header for what is cut first).
    pub fn render(&self, limit: usize) -> String {
        let head = self.head(None);
        let tail = format!("{}\n", self.marker.render());
        let whole_folds: Vec<String> = self
            .folds
            .iter()
            .map(|f| {
                let mut s = String::new();
                render_fold(&mut s, f, &f.body, None);
                s
            })
            .collect();
        let total =
            chars(&head) + whole_folds.iter().map(|s| chars(s)).sum::<usize>() + chars(&tail);
        if total <= limit {
            return format!("{head}{}{tail}", whole_folds.concat());
        }
        // Each fold's frame (summary, fences, the note) costs this much with an empty body.
        let frames: Vec<usize> = self
            .folds
            .iter()
            .map(|f| {
                let mut s = String::new();
                render_fold(&mut s, f, "", Some((usize::MAX, usize::MAX)));
                chars(&s)
            })
            .collect();
        let fixed = chars(&head) + chars(&tail);
        let frames_total: usize = frames.iter().sum();
        if fixed + frames_total > limit {
            // The tables alone are too long: no folds, and rows cut from the largest table.
            return self.render_without_folds(limit);
        }
        // Share what is left among the folds' bodies, smallest first, so a short fold is
        // kept whole while a long one is cut (water-filling).
        let mut left = limit - fixed - frames_total;
        let mut order: Vec<usize> = (0..self.folds.len()).collect();
        order.sort_by_key(|&i| chars(&self.folds[i].body));
        let mut budgets = vec![0; self.folds.len()];
        for (k, &i) in order.iter().enumerate() {
            let share = left / (order.len() - k);
            let want = chars(&self.folds[i].body) + 1;
            budgets[i] = want.min(share);
            left -= budgets[i];
        }
        let mut out = head;
        for (i, f) in self.folds.iter().enumerate() {
            let total_lines = f.body.lines().count();
            let (body, shown) = head_lines(&f.body, budgets[i]);
            let note = (shown < total_lines).then_some((shown, total_lines));
            render_fold(&mut out, f, &body, note);
        }
        out.push_str(&tail);
        out
    }

    fn render_without_folds(&self, limit: usize) -> String {
        let tail = format!(
            "_The details were left out: the tables alone fill GitHub's {GITHUB_LIMIT}-character limit._\n\n{}\n",
            self.marker.render()
        );
        // Cut rows from the end of the tables, a tenth at a time, until it fits.
        let rows: usize = self.tables.iter().map(|t| t.rows.len()).sum();
        let mut keep = rows;
        loop {
            let head = self.head(Some(keep));
            if chars(&head) + chars(&tail) <= limit || keep == 0 {
                let mut s = format!("{head}{tail}");
                if chars(&s) > limit {
                    // The verdict line itself is over the limit (never in practice).
                    s = s.chars().take(limit).collect();
                }
                return s;
            }
            keep = keep.saturating_sub((rows / 10).max(1));
        }
    }

    /// Verdict, alerts, tables, notes; with `keep_rows`, at most that many table rows in all.
    fn head(&self, keep_rows: Option<usize>) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}\n", self.verdict);
        for a in &self.alerts {
            let (tag, dot) = match a.kind {
                AlertKind::Caution => ("CAUTION", "🔴 "),
                AlertKind::Warning => ("WARNING", "🟠 "),
            };
            let _ = writeln!(out, "> [!{tag}]");
            for (i, line) in a.text.lines().enumerate() {
                let _ = writeln!(out, "> {}{line}", if i == 0 { dot } else { "" });
            }
            out.push('\n');
        }
        let mut budget = keep_rows.unwrap_or(usize::MAX);
        for t in &self.tables {
            let n = t.rows.len().min(budget);
            budget -= n;
            render_table(&mut out, t, &t.rows[..n], t.rows.len() - n);
        }
        for n in &self.notes {
            let _ = writeln!(out, "{n}\n");
        }
        out
    }
}

/// Appends `markdown` to the job summary file (`$GITHUB_STEP_SUMMARY`), as GitHub's own
/// actions do: the runner shows every step's additions on the run's summary page.
pub fn append_step_summary(path: &Path, markdown: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(markdown.as_bytes())?;
    if !markdown.ends_with('\n') {
        f.write_all(b"\n")?;
    }
    Ok(())
}

/// A plan's text (Terraform-style markers indented by depth) as a `diff` fence body: each
/// line's marker moves to the first column, where GitHub's diff highlighting reads it (`+`
/// green, `-` red, `!` for `~` and `-/+`), as Atlantis does with Terraform's plans; the text
/// after it keeps its column.
pub fn diff_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let (mark, rest) = if let Some(r) = trimmed.strip_prefix("-/+ ") {
            ('!', format!("-/+ {r}"))
        } else if ["--- a/", "+++ b/", "--- /dev/null", "+++ /dev/null"]
            .iter()
            .any(|h| trimmed.starts_with(h))
        {
            // A file diff's header (a removed line can start with `--`: a flag).
            (' ', trimmed.to_string())
        } else if let Some(r) = trimmed.strip_prefix('~') {
            ('!', r.to_string())
        } else if let Some(r) = trimmed.strip_prefix('+') {
            ('+', r.to_string())
        } else if let Some(r) = trimmed.strip_prefix('-') {
            ('-', r.to_string())
        } else {
            (' ', trimmed.to_string())
        };
        if mark == ' ' {
            out.push_str(line);
        } else {
            out.push(mark);
            out.push_str(indent);
            out.push_str(&rest);
        }
        out.push('\n');
    }
    out
}

/// A metric's verdict, as `compare` decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Better,
    Same,
    Worse,
    Inconclusive,
}

impl Verdict {
    /// What a check run concludes from it: `worse` fails, `inconclusive` is neutral.
    pub fn conclusion(self) -> Conclusion {
        match self {
            Verdict::Better | Verdict::Same => Conclusion::Success,
            Verdict::Worse => Conclusion::Failure,
            Verdict::Inconclusive => Conclusion::Neutral,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Same => "same",
            Verdict::Worse => "worse",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// One compared metric: what a compare result, a baseline gate or two runs side by side
/// hand to [`metric_table`] and [`metric_phrase`]. Statistics are optional (two single runs
/// have none).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// "p99 at 3900 req/s", "capacity".
    pub name: String,
    /// "ms", "req/s", "" (a count).
    pub unit: String,
    pub base: Option<f64>,
    pub new: Option<f64>,
    /// The change's confidence interval, in percent of the base.
    pub ci_pct: Option<(f64, f64)>,
    pub p: Option<f64>,
    /// Rounds (or runs) of base and new.
    pub rounds: Option<(usize, usize)>,
    pub verdict: Option<Verdict>,
}

impl MetricRow {
    /// The change in percent of the base (None without both, or a zero base).
    pub fn change_pct(&self) -> Option<f64> {
        match (self.base, self.new) {
            (Some(b), Some(n)) if b != 0.0 => Some((n - b) / b * 100.0),
            _ => None,
        }
    }
}

/// A number as the tables show it: up to 3 significant decimals, no trailing zeros.
pub fn number(x: f64) -> String {
    if !x.is_finite() {
        return "-".into();
    }
    let x = x + 0.0; // -0.0 is 0
    let s = if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `+11%`, `−20%` (a real minus sign, as the verdict line prints it).
pub fn percent(x: f64) -> String {
    let v = format!("{:.0}", x.abs());
    if v == "0" {
        "±0%".into()
    } else if x > 0.0 {
        format!("+{v}%")
    } else {
        format!("−{v}%")
    }
}

fn p_value(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("{p:.3}")
    }
}

/// The verdict line's phrase for one metric: "p99 at 3900 req/s 11.4 → 9.1 ms (−20%, better,
/// p = 0.004, 5+5 rounds)".
pub fn metric_phrase(m: &MetricRow) -> String {
    let show = |v: Option<f64>| v.map(number).unwrap_or_else(|| "-".into());
    let unit = if m.unit.is_empty() {
        String::new()
    } else {
        format!(" {}", m.unit)
    };
    let mut detail = Vec::new();
    if let Some(c) = m.change_pct() {
        detail.push(percent(c));
    }
    if let Some(v) = m.verdict {
        detail.push(v.as_str().to_string());
    }
    if let Some(p) = m.p {
        detail.push(format!("p = {}", p_value(p)));
    }
    if let Some((a, b)) = m.rounds {
        detail.push(format!("{a}+{b} rounds"));
    }
    let detail = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({})", detail.join(", "))
    };
    format!(
        "{} {} → {}{unit}{detail}",
        m.name,
        show(m.base),
        show(m.new)
    )
}

/// The metric table: metric, base, new, change, and the statistics columns any row has.
pub fn metric_table(title: &str, base_label: &str, new_label: &str, rows: &[MetricRow]) -> Table {
    let has_ci = rows.iter().any(|r| r.ci_pct.is_some());
    let has_p = rows.iter().any(|r| r.p.is_some());
    let has_rounds = rows.iter().any(|r| r.rounds.is_some());
    let has_verdict = rows.iter().any(|r| r.verdict.is_some());
    let mut header = vec![
        "metric".to_string(),
        base_label.to_string(),
        new_label.to_string(),
        "change".to_string(),
    ];
    let mut right = vec![false, true, true, true];
    let mut opt = |on: bool, name: &str, r: bool| {
        if on {
            header.push(name.to_string());
            right.push(r);
        }
    };
    opt(has_ci, "interval", true);
    opt(has_p, "p", true);
    opt(has_rounds, "rounds", true);
    opt(has_verdict, "verdict", false);
    let body = rows
        .iter()
        .map(|m| {
            let with_unit = |v: Option<f64>| match v {
                Some(x) if m.unit.is_empty() => number(x),
                Some(x) => format!("{} {}", number(x), m.unit),
                None => "-".into(),
            };
            let mut r = vec![
                m.name.clone(),
                with_unit(m.base),
                with_unit(m.new),
                m.change_pct().map(percent).unwrap_or_else(|| "-".into()),
            ];
            if has_ci {
                r.push(
                    m.ci_pct
                        .map(|(a, b)| format!("{} … {}", percent(a), percent(b)))
                        .unwrap_or_else(|| "-".into()),
                );
            }
            if has_p {
                r.push(m.p.map(p_value).unwrap_or_else(|| "-".into()));
            }
            if has_rounds {
                r.push(
                    m.rounds
                        .map(|(a, b)| format!("{a}+{b}"))
                        .unwrap_or_else(|| "-".into()),
                );
            }
            if has_verdict {
                r.push(
                    m.verdict
                        .map(|v| v.as_str().to_string())
                        .unwrap_or_else(|| "-".into()),
                );
            }
            r
        })
        .collect();
    Table {
        title: title.to_string(),
        header,
        right,
        rows: body,
        code: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(fold_lines: usize) -> Document {
        let body: String = (0..fold_lines)
            .map(|i| format!("+ line {i} of the plan\n"))
            .collect();
        Document {
            verdict: "**Plan:** 1 to update".into(),
            alerts: vec![Alert {
                kind: AlertKind::Caution,
                text: "1 to replace".into(),
            }],
            tables: vec![Table {
                title: "**serving.tf**".into(),
                header: vec!["attribute".into(), "before".into(), "after".into()],
                right: vec![],
                rows: vec![vec![
                    "batching.max_batch_size".into(),
                    "8".into(),
                    "16".into(),
                ]],
                code: vec![false, true, true],
            }],
            notes: vec![],
            folds: vec![
                Fold {
                    summary: "Plan".into(),
                    lang: "diff".into(),
                    body,
                    whole: "`benchstack plan`".into(),
                },
                Fold {
                    summary: "Small".into(),
                    lang: "text".into(),
                    body: "short\n".into(),
                    whole: "x".into(),
                },
            ],
            marker: Marker {
                stack: "stacks/local.hcl".into(),
                kind: "plan".into(),
                digest: "ab".repeat(32),
                conclusion: Conclusion::Neutral,
            },
        }
    }

    #[test]
    fn a_short_document_is_whole_with_the_verdict_first_and_the_marker_last() {
        let md = doc(3).render(GITHUB_LIMIT);
        assert!(md.starts_with("**Plan:** 1 to update\n\n> [!CAUTION]\n> 🔴 1 to replace\n"));
        assert!(
            md.contains("| batching.max\\_batch\\_size | `8` | `16` |"),
            "{md}"
        );
        assert!(md.contains("<details><summary>Plan</summary>\n\n```diff\n+ line 0"));
        assert!(!md.contains("Shortened"));
        let marker = Marker::find(&md).unwrap();
        assert_eq!(marker, doc(3).marker);
        assert!(md.trim_end().ends_with("conclusion=neutral -->"));
        // The identity ends with the kind: `plan` does not find a `plans` comment.
        assert!(md.contains(&marker.key()));
        let other = Marker {
            kind: "plans".into(),
            ..marker.clone()
        };
        assert!(!other.render().contains(&marker.key()));
    }

    #[test]
    fn a_long_fold_is_shortened_and_says_so_while_the_tables_and_small_folds_stay_whole() {
        let d = doc(10_000);
        let md = d.render(GITHUB_LIMIT);
        assert!(md.chars().count() <= GITHUB_LIMIT, "{}", md.chars().count());
        assert!(md.chars().count() > GITHUB_LIMIT - 200);
        assert!(md.contains("| batching.max\\_batch\\_size | `8` | `16` |"));
        assert!(md.contains("Shortened to "), "{md}");
        assert!(md.contains("of 10000 lines"));
        assert!(md.contains("```text\nshort\n```"));
        assert!(Marker::find(&md).is_some());
        // A tiny limit leaves the folds out before touching a table row.
        let md = d.render(600);
        assert!(md.chars().count() <= 600, "{md}");
        assert!(md.contains("| batching.max\\_batch\\_size"), "{md}");
        assert!(!md.contains("<details>"));
    }

    #[test]
    fn hostile_text_cannot_break_out_of_cells_folds_or_the_marker() {
        assert_eq!(escape("a|b <script> *x*"), "a\\|b &lt;script&gt; \\*x\\*");
        assert_eq!(code("a`b|c"), "``a`b\\|c``");
        let mut d = doc(1);
        d.folds[0].body = "```\n</details>\n".into();
        d.marker.stack = "x --> <!-- y".into();
        let md = d.render(GITHUB_LIMIT);
        assert!(md.contains("````diff\n```\n</details>\n````"), "{md}");
        let m = Marker::find(&md).unwrap();
        assert!(
            !m.stack.contains("--") && !m.stack.contains(' '),
            "{}",
            m.stack
        );
        assert_eq!(md.matches("-->").count(), 1, "{md}");
    }

    #[test]
    fn plan_markers_move_to_the_first_column_for_diff_highlighting() {
        let text = "  # serving.tf will be updated in place\n  ~ serving \"tf\" {\n      ~ batching {\n          ~ max_batch_size = 8 -> 16\n        }\n    }\n    --- a/f\n    +++ b/f\n    -max { value: 8 }\n    +max { value: 16 }\n-/+ cluster \"x\" {\n    ---enable_batching=true\n";
        let d = diff_lines(text);
        let lines: Vec<&str> = d.lines().collect();
        assert_eq!(lines[1], "!   serving \"tf\" {");
        assert_eq!(lines[3], "!           max_batch_size = 8 -> 16");
        assert_eq!(lines[6], "    --- a/f");
        assert_eq!(lines[8], "-    max { value: 8 }");
        assert_eq!(lines[9], "+    max { value: 16 }");
        assert_eq!(lines[10], "!-/+ cluster \"x\" {");
        assert_eq!(lines[11], "-    --enable_batching=true");
    }

    #[test]
    fn a_metric_reads_as_the_verdict_line_and_the_table_shows_only_known_statistics() {
        let m = MetricRow {
            name: "p99 at 3900 req/s".into(),
            unit: "ms".into(),
            base: Some(11.4),
            new: Some(9.12),
            ci_pct: Some((-25.0, -15.0)),
            p: Some(0.004),
            rounds: Some((5, 5)),
            verdict: Some(Verdict::Better),
        };
        assert_eq!(
            metric_phrase(&m),
            "p99 at 3900 req/s 11.4 → 9.12 ms (−20%, better, p = 0.004, 5+5 rounds)"
        );
        let t = metric_table("", "base", "new", std::slice::from_ref(&m));
        assert_eq!(
            t.header,
            [
                "metric", "base", "new", "change", "interval", "p", "rounds", "verdict"
            ]
        );
        let plain = MetricRow {
            ci_pct: None,
            p: None,
            rounds: None,
            verdict: None,
            ..m
        };
        let t = metric_table("", "A", "B", &[plain]);
        assert_eq!(t.header, ["metric", "A", "B", "change"]);
        assert_eq!(
            t.rows[0],
            ["p99 at 3900 req/s", "11.4 ms", "9.12 ms", "−20%"]
        );
    }
}

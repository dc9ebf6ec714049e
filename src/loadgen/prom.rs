//! A reader for the Prometheus text exposition format (version 0.0.4, what TF Serving's
//! `/monitoring/prometheus/metrics` serves), the histograms in it, and percentile estimates
//! from their buckets.
//!
//! The page comes from a server under load, or from whatever answers on that port: anything
//! malformed is an error naming the line, never a panic, and sizes are bounded (the caller caps
//! the body; here the samples kept, labels per sample and label lengths are capped too).

use std::collections::BTreeMap;

/// Samples kept from one page (only those the caller asks for are kept).
pub const MAX_SAMPLES: usize = 200_000;
/// Labels on one sample.
pub const MAX_LABELS: usize = 64;
/// Bytes in one label name or value, or a metric name.
pub const MAX_TOKEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// One sample line: `name{labels} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// In the order written.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a page, keeping the samples whose metric name `keep` accepts. Comments (`# TYPE`,
/// `# HELP`, anything after `#`) and blank lines are skipped; every other line must be a
/// well-formed sample even when it is not kept.
pub fn parse(body: &[u8], keep: impl Fn(&str) -> bool) -> Result<Vec<Sample>, ParseError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        let line = body[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        ParseError {
            line,
            message: "the page is not UTF-8 text".into(),
        }
    })?;
    let mut out = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let err = |message: String| ParseError {
            line: i + 1,
            message,
        };
        let sample = parse_line(trimmed, &keep).map_err(err)?;
        if let Some(s) = sample {
            if out.len() >= MAX_SAMPLES {
                return Err(ParseError {
                    line: i + 1,
                    message: format!("more than {MAX_SAMPLES} samples of the metrics read"),
                });
            }
            out.push(s);
        }
    }
    Ok(out)
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn parse_line(line: &str, keep: &impl Fn(&str) -> bool) -> Result<Option<Sample>, String> {
    let b = line.as_bytes();
    let mut i = 0;
    if !b.first().is_some_and(|c| is_name_start(*c)) {
        return Err(format!("expected a metric name, found {:?}", preview(line)));
    }
    while i < b.len() && is_name_char(b[i]) {
        i += 1;
    }
    if i > MAX_TOKEN {
        return Err(format!("a metric name longer than {MAX_TOKEN} bytes"));
    }
    let name = &line[..i];
    let wanted = keep(name);
    let mut labels = Vec::new();
    if b.get(i) == Some(&b'{') {
        i += 1;
        loop {
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b'}') => {
                    i += 1;
                    break;
                }
                None => return Err(format!("`{name}`: the label set is not closed with `}}`")),
                _ => {}
            }
            let start = i;
            if !b
                .get(i)
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
            {
                return Err(format!(
                    "`{name}`: expected a label name at column {}",
                    i + 1
                ));
            }
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let key = &line[start..i];
            if key.len() > MAX_TOKEN {
                return Err(format!(
                    "`{name}`: a label name longer than {MAX_TOKEN} bytes"
                ));
            }
            i = skip_ws(b, i);
            if b.get(i) != Some(&b'=') {
                return Err(format!("`{name}`: expected `=` after label `{key}`"));
            }
            i = skip_ws(b, i + 1);
            if b.get(i) != Some(&b'"') {
                return Err(format!(
                    "`{name}`: the value of label `{key}` is not quoted"
                ));
            }
            i += 1;
            let mut value = String::new();
            loop {
                match b.get(i) {
                    None => {
                        return Err(format!(
                            "`{name}`: the value of label `{key}` is not closed"
                        ));
                    }
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        match b.get(i + 1) {
                            Some(b'\\') => value.push('\\'),
                            Some(b'"') => value.push('"'),
                            Some(b'n') => value.push('\n'),
                            _ => {
                                return Err(format!(
                                    "`{name}`: a bad escape in the value of label `{key}`"
                                ));
                            }
                        }
                        i += 2;
                    }
                    Some(_) => {
                        // Copy up to the next quote or backslash (whole UTF-8 sequences).
                        let rest = &line[i..];
                        let n = rest.find(['"', '\\']).unwrap_or(rest.len());
                        value.push_str(&rest[..n]);
                        i += n;
                    }
                }
                if value.len() > MAX_TOKEN {
                    return Err(format!(
                        "`{name}`: the value of label `{key}` is longer than {MAX_TOKEN} bytes"
                    ));
                }
            }
            if wanted {
                if labels.len() >= MAX_LABELS {
                    return Err(format!("`{name}`: more than {MAX_LABELS} labels"));
                }
                labels.push((key.to_string(), value));
            }
            i = skip_ws(b, i);
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {}
                _ => {
                    return Err(format!(
                        "`{name}`: expected `,` or `}}` after label `{key}`"
                    ));
                }
            }
        }
    }
    let rest = &line[i..];
    if !rest.starts_with([' ', '\t']) {
        return Err(format!("`{name}`: expected a space and a value"));
    }
    let mut fields = rest.split([' ', '\t']).filter(|f| !f.is_empty());
    let value = fields.next().ok_or_else(|| format!("`{name}`: no value"))?;
    let value = parse_value(value)
        .ok_or_else(|| format!("`{name}`: `{}` is not a number", preview(value)))?;
    if let Some(ts) = fields.next()
        && ts.parse::<i64>().is_err()
    {
        return Err(format!("`{name}`: `{}` is not a timestamp", preview(ts)));
    }
    if fields.next().is_some() {
        return Err(format!("`{name}`: unexpected text after the value"));
    }
    Ok(wanted.then(|| Sample {
        name: name.to_string(),
        labels,
        value,
    }))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

/// Go's `ParseFloat` spellings that Prometheus writes: numbers, `+Inf`, `-Inf`, `NaN`.
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ if s
            .bytes()
            .all(|c| c.is_ascii_digit() || b"+-.eE".contains(&c)) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

fn preview(s: &str) -> String {
    let mut p: String = s.chars().take(40).collect();
    if p.len() < s.len() {
        p.push('…');
    }
    p
}

/// A cumulative histogram as exported: finite upper bounds (ascending) with the count of
/// observations at or below each (TensorFlow: below each), the total (the `+Inf` bucket),
/// and the sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    /// Cumulative count per bound; `count` is the `+Inf` bucket.
    pub cumulative: Vec<f64>,
    pub count: f64,
    pub sum: f64,
}

impl Histogram {
    /// `self - earlier`, bucket by bucket: the observations between two scrapes. Refused when
    /// the layouts differ or a count went down (the server restarted between the scrapes).
    pub fn delta(&self, earlier: &Histogram) -> Result<Histogram, String> {
        if self.bounds != earlier.bounds {
            return Err("its bucket layout changed between scrapes".into());
        }
        let went_down = self.count < earlier.count
            || self
                .cumulative
                .iter()
                .zip(&earlier.cumulative)
                .any(|(a, b)| a < b);
        if went_down {
            return Err("its counts went down between scrapes (the server restarted?)".into());
        }
        Ok(Histogram {
            bounds: self.bounds.clone(),
            cumulative: self
                .cumulative
                .iter()
                .zip(&earlier.cumulative)
                .map(|(a, b)| a - b)
                .collect(),
            count: self.count - earlier.count,
            sum: self.sum - earlier.sum,
        })
    }

    /// Adds another histogram of the same layout (another replica, another label set).
    pub fn add(&mut self, other: &Histogram) -> Result<(), String> {
        if self.bounds != other.bounds {
            return Err("two series have different bucket layouts".into());
        }
        for (a, b) in self.cumulative.iter_mut().zip(&other.cumulative) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        Ok(())
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// An estimate of the `q`-quantile (0 < q ≤ 1), as Prometheus's `histogram_quantile`
    /// makes it: find the bucket holding the rank, then interpolate linearly between its
    /// bounds (the first bucket starts at 0). Two refinements: when every observation lies in
    /// one bucket, the estimate is the mean (which the sum makes exact, and which lies in that
    /// bucket), so a server whose batches all hold 4 rows reports 4 rather than the middle of
    /// the 4–8 bucket; and a rank in the `+Inf` bucket gives the largest finite bound (a lower
    /// bound on the truth). None when there are no observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.estimate(q, false)
    }

    /// [`Histogram::quantile`] for whole-number observations (rows per batch) counted as
    /// TensorFlow counts them, below the first bound above them: a bucket from `lower` to
    /// `upper` holds the whole numbers `lower ..= upper - 1`, and the estimate is the one at
    /// the rank's place among them (the 1–2 bucket holds only batches of 1, so its estimate is
    /// 1, not 1.5).
    pub fn quantile_whole(&self, q: f64) -> Option<f64> {
        self.estimate(q, true)
    }

    fn estimate(&self, q: f64, whole: bool) -> Option<f64> {
        if self.count.is_nan() || self.count <= 0.0 || !q.is_finite() {
            return None;
        }
        let q = q.clamp(0.0, 1.0);
        let mut prev_count = 0.0;
        let mut lower = 0.0;
        // Each bucket: (upper bound, observations at or below it); the last is +Inf.
        let buckets = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(
                self.cumulative
                    .iter()
                    .copied()
                    .chain(std::iter::once(self.count)),
            );
        let rank = q * self.count;
        for (upper, cum) in buckets {
            let in_bucket = cum - prev_count;
            if in_bucket >= self.count {
                // Everything in one bucket: the mean is exact and lies in it.
                let mean = self.sum / self.count;
                return Some(if upper.is_finite() {
                    mean.clamp(lower, upper)
                } else {
                    mean.max(lower)
                });
            }
            if cum >= rank && in_bucket > 0.0 {
                if !upper.is_finite() {
                    return Some(lower);
                }
                let frac = ((rank - prev_count) / in_bucket).clamp(0.0, 1.0);
                if whole {
                    let first = lower.ceil();
                    let n = upper.ceil() - first;
                    if n < 1.0 {
                        return Some(lower);
                    }
                    // The k-th of n whole numbers holds ranks up to k/n of the bucket.
                    return Some(first + ((frac * n).ceil() - 1.0).clamp(0.0, n - 1.0));
                }
                return Some(lower + (upper - lower) * frac);
            }
            prev_count = cum;
            lower = upper;
        }
        Some(lower)
    }
}

/// A sample's labels other than `le`, sorted: what tells one series of a histogram from another.
pub type Labels = Vec<(String, String)>;

/// The histograms named `name` in `samples` (`name_bucket{…,le}`, `name_sum`, `name_count`),
/// one per label set (the labels other than `le`, sorted), for the label sets `select`
/// accepts.
pub fn histograms(
    samples: &[Sample],
    name: &str,
    select: impl Fn(&Sample) -> bool,
) -> Result<Vec<(Labels, Histogram)>, String> {
    let bucket = format!("{name}_bucket");
    let sum = format!("{name}_sum");
    let count = format!("{name}_count");
    type Parts = (Vec<(f64, f64)>, Option<f64>, Option<f64>, Option<f64>);
    let mut sets: BTreeMap<Vec<(String, String)>, Parts> = BTreeMap::new();
    for s in samples {
        if s.name != bucket && s.name != sum && s.name != count {
            continue;
        }
        if !select(s) {
            continue;
        }
        let mut key: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect();
        key.sort();
        let e = sets.entry(key).or_default();
        if s.value.is_nan() || s.value < 0.0 {
            return Err(format!("{} has a negative or NaN value", s.name));
        }
        if s.name == bucket {
            let le = s
                .label("le")
                .ok_or_else(|| format!("{bucket} without an `le` label"))?;
            let le = parse_value(le)
                .filter(|v| !v.is_nan())
                .ok_or_else(|| format!("{bucket}: `le` is not a number"))?;
            if le.is_infinite() {
                e.3 = Some(s.value);
            } else {
                e.0.push((le, s.value));
            }
        } else if s.name == sum {
            e.1 = Some(s.value);
        } else {
            e.2 = Some(s.value);
        }
    }
    let mut out = Vec::with_capacity(sets.len());
    for (labels, (mut buckets, sum, count, inf)) in sets {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        if buckets.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(format!("{name} repeats a bucket bound"));
        }
        if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
            return Err(format!("{name}'s cumulative bucket counts go down"));
        }
        let inf = inf.ok_or_else(|| format!("{name} has no `+Inf` bucket"))?;
        if buckets.last().is_some_and(|b| b.1 > inf) {
            return Err(format!("{name}'s `+Inf` bucket is below another bucket"));
        }
        let count = count.unwrap_or(inf);
        out.push((
            labels,
            Histogram {
                bounds: buckets.iter().map(|b| b.0).collect(),
                cumulative: buckets.iter().map(|b| b.1).collect(),
                count,
                sum: sum.unwrap_or(0.0),
            },
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# TYPE :tensorflow:serving:request_count counter\n\
:tensorflow:serving:request_count{model_name=\"m\",status=\"OK\"} 95\n\
:tensorflow:serving:request_count{model_name=\"m\",status=\"UNAVAILABLE\"} 5\n\
# TYPE :tensorflow:serving:batching_session:wrapped_run_count counter\n\
:tensorflow:serving:batching_session:wrapped_run_count{} 25\n\
# TYPE :tensorflow:serving:batching_session:processed_batch_size histogram\n\
:tensorflow:serving:batching_session:processed_batch_size_bucket{le=\"1\"} 0\n\
:tensorflow:serving:batching_session:processed_batch_size_bucket{le=\"2\"} 0\n\
:tensorflow:serving:batching_session:processed_batch_size_bucket{le=\"4\"} 0\n\
:tensorflow:serving:batching_session:processed_batch_size_bucket{le=\"8\"} 25\n\
:tensorflow:serving:batching_session:processed_batch_size_bucket{le=\"+Inf\"} 25\n\
:tensorflow:serving:batching_session:processed_batch_size_sum{} 100\n\
:tensorflow:serving:batching_session:processed_batch_size_count{} 25\n\
other_metric{a=\"x\\\"y\\\\z\\n\", b=\"é\",} 1.5e3 1700000000000\n";

    #[test]
    fn reads_tf_servings_page_labels_escapes_and_timestamps() {
        let all = parse(PAGE.as_bytes(), |_| true).unwrap();
        assert_eq!(all.len(), 11);
        assert_eq!(all[0].label("status"), Some("OK"));
        assert_eq!(all[0].value, 95.0);
        assert_eq!(all[2].labels, vec![]);
        let other = all.last().unwrap();
        assert_eq!(other.label("a"), Some("x\"y\\z\n"));
        assert_eq!(other.label("b"), Some("é"));
        assert_eq!(other.value, 1500.0);
        // Only what is asked for is kept.
        let counts = parse(PAGE.as_bytes(), |n| n.ends_with("request_count")).unwrap();
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn histograms_are_assembled_and_a_single_bucket_reports_its_mean() {
        let all = parse(PAGE.as_bytes(), |_| true).unwrap();
        let h = histograms(
            &all,
            ":tensorflow:serving:batching_session:processed_batch_size",
            |_| true,
        )
        .unwrap();
        assert_eq!(h.len(), 1);
        let h = &h[0].1;
        assert_eq!(h.count, 25.0);
        assert_eq!(h.mean(), Some(4.0));
        // Every batch had 4 rows: all in the 4–8 bucket, so the estimate is the exact mean.
        assert_eq!(h.quantile(0.5), Some(4.0));
        assert_eq!(h.quantile(0.99), Some(4.0));
    }

    fn hist(bounds: &[f64], per_bucket: &[f64], sum: f64) -> Histogram {
        let mut cum = 0.0;
        let mut cumulative = Vec::new();
        for c in &per_bucket[..bounds.len()] {
            cum += c;
            cumulative.push(cum);
        }
        let count = cum + per_bucket[bounds.len()];
        Histogram {
            bounds: bounds.to_vec(),
            cumulative,
            count,
            sum,
        }
    }

    #[test]
    fn quantiles_interpolate_linearly_within_the_bucket() {
        // 100 observations: 50 in [0,10), 40 in [10,20), 10 in [20,40).
        let h = hist(&[10.0, 20.0, 40.0], &[50.0, 40.0, 10.0, 0.0], 1200.0);
        assert_eq!(h.quantile(0.5), Some(10.0));
        assert_eq!(h.quantile(0.25), Some(5.0));
        assert_eq!(h.quantile(0.7), Some(15.0));
        assert!((h.quantile(0.95).unwrap() - 30.0).abs() < 1e-9);
        assert_eq!(h.quantile(1.0), Some(40.0));
        // Whole numbers (rows per batch), counted below the bound above them: 90 batches of
        // 1 row and 10 of 2 or 3.
        let rows = hist(&[1.0, 2.0, 4.0], &[0.0, 90.0, 10.0, 0.0], 115.0);
        assert_eq!(rows.quantile_whole(0.5), Some(1.0));
        assert_eq!(rows.quantile_whole(0.9), Some(1.0));
        assert_eq!(rows.quantile_whole(0.95), Some(2.0));
        assert_eq!(rows.quantile_whole(0.99), Some(3.0));
        assert_eq!(rows.quantile(0.5), Some(1.0 + 50.0 / 90.0));
        // A rank in +Inf gives the largest finite bound.
        let tail = hist(&[10.0], &[1.0, 99.0], 5000.0);
        assert_eq!(tail.quantile(0.99), Some(10.0));
        // Nothing observed: no estimate.
        assert_eq!(hist(&[10.0], &[0.0, 0.0], 0.0).quantile(0.5), None);
    }

    #[test]
    fn deltas_subtract_bucket_by_bucket_and_refuse_a_restart() {
        let a = hist(&[10.0, 20.0], &[5.0, 5.0, 0.0], 100.0);
        let b = hist(&[10.0, 20.0], &[7.0, 9.0, 1.0], 200.0);
        let d = b.delta(&a).unwrap();
        assert_eq!(d.cumulative, vec![2.0, 6.0]);
        assert_eq!(d.count, 7.0);
        assert_eq!(d.sum, 100.0);
        assert!(a.delta(&b).unwrap_err().contains("went down"));
        let other = hist(&[10.0, 30.0], &[5.0, 5.0, 0.0], 100.0);
        assert!(b.delta(&other).is_err());
    }

    #[test]
    fn hostile_pages_are_errors_with_a_line_never_a_panic() {
        let bad: &[&[u8]] = &[
            b"metric{a=\"x\" 1\n",
            b"metric{a=\"x} 1\n",
            b"metric{a=x} 1\n",
            b"metric{=\"x\"} 1\n",
            b"metric 1 2 3\n",
            b"metric one\n",
            b"metric\n",
            b"metric{a=\"\\q\"} 1\n",
            b"9metric 1\n",
            b"m 0x10\n",
            b"\xff\xfe 1\n",
            b"ok 1\nmetric{a=\"\xc3\"} 1\n",
            b"{a=\"b\"} 1\n",
            b"metric{a=\"b\"}1\n",
        ];
        for page in bad {
            let e = parse(page, |_| true);
            assert!(
                e.is_err(),
                "{:?} parsed: {e:?}",
                String::from_utf8_lossy(page)
            );
        }
        let e = parse(b"ok 1\nok 2\nbad{\n", |_| true).unwrap_err();
        assert_eq!(e.line, 3);
        // Absurd shapes: a huge label, too many labels, too many samples.
        let huge = format!("m{{a=\"{}\"}} 1\n", "x".repeat(MAX_TOKEN + 1));
        assert!(parse(huge.as_bytes(), |_| true).is_err());
        let labels: Vec<String> = (0..=MAX_LABELS).map(|i| format!("l{i}=\"v\"")).collect();
        let many = format!("m{{{}}} 1\n", labels.join(","));
        assert!(parse(many.as_bytes(), |_| true).is_err());
        let lots = "m 1\n".repeat(MAX_SAMPLES + 1);
        assert!(parse(lots.as_bytes(), |_| true).is_err());
        // …but not kept, they cost nothing.
        assert_eq!(parse(lots.as_bytes(), |_| false).unwrap().len(), 0);
        // Histograms that do not add up.
        let page = b"h_bucket{le=\"1\"} 5\nh_bucket{le=\"2\"} 3\nh_bucket{le=\"+Inf\"} 5\n";
        let s = parse(page, |_| true).unwrap();
        assert!(histograms(&s, "h", |_| true).is_err());
        let s = parse(b"h_bucket{le=\"1\"} 5\nh_count 5\n", |_| true).unwrap();
        assert!(histograms(&s, "h", |_| true).unwrap_err().contains("+Inf"));
        let s = parse(b"h_bucket{le=\"x\"} 5\n", |_| true);
        assert!(s.is_err() || histograms(&s.unwrap(), "h", |_| true).is_err());
        let s = parse(b"h_bucket{le=\"NaN\"} 5\nh_bucket{le=\"+Inf\"} 5\n", |_| {
            true
        })
        .unwrap();
        assert!(histograms(&s, "h", |_| true).is_err());
        let s = parse(b"h_bucket{le=\"+Inf\"} -5\n", |_| true).unwrap();
        assert!(histograms(&s, "h", |_| true).is_err());
        // Extreme but well-formed values do not panic anywhere.
        let s = parse(
            b"h_bucket{le=\"1e308\"} 1e308\nh_bucket{le=\"+Inf\"} 1.7e308\nh_sum 1e308\n",
            |_| true,
        )
        .unwrap();
        let h = &histograms(&s, "h", |_| true).unwrap()[0].1;
        let _ = h.quantile(0.99);
        let _ = h.delta(h);
    }
}

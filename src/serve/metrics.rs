//! TF Serving's own metrics, exported the way tensorflow_model_server exports them (names,
//! kinds, labels, bucket layouts and text format from tensorflow/serving 9d981c5:
//! `servables/tensorflow/util.cc`, `batching/batching_session.cc`, `batching/batching_util.h`,
//! `util/prometheus_exporter.cc`), so benchstack's scraper reads the stand-in and the real
//! server through the same parser.
//!
//! Faithful details a reader of the page meets: names are the monitoring names with every
//! character outside `[a-zA-Z0-9_]` turned into `:`; only `# TYPE` lines, no `# HELP`; a
//! label-less sample still has braces (`name{} 3`); bucket bounds and sums are printed with six
//! significant digits (absl's `StrCat(double)`); and a bucket counts the values *below* its
//! bound (TensorFlow's `Histogram::Add` uses `upper_bound`), so a batch of exactly 4 rows is
//! counted under `le="8"`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

/// `monitoring::Buckets::Exponential(scale, growth, count)`: `count` bounds from `scale`, each
/// `growth` times the last; TensorFlow appends DBL_MAX (here: the `+Inf` bucket).
pub fn exponential_bounds(scale: f64, growth: f64, count: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(count);
    let mut bound = scale;
    for _ in 0..count {
        out.push(bound);
        bound *= growth;
    }
    out
}

/// request_latency and runtime_latency: scale 10 µs, ×1.8, 33 buckets (~20 minutes).
pub static LATENCY_BOUNDS: LazyLock<Vec<f64>> = LazyLock::new(|| exponential_bounds(10.0, 1.8, 33));
/// batching_session/queuing_latency: scale 100 µs, ×1.2, 52 buckets (~1 second).
pub static QUEUE_BOUNDS: LazyLock<Vec<f64>> = LazyLock::new(|| exponential_bounds(100.0, 1.2, 52));
/// input/processed batch size and padding size: 1, 2, 4 … 2^13.
pub static BATCH_BOUNDS: LazyLock<Vec<f64>> = LazyLock::new(|| exponential_bounds(1.0, 2.0, 14));

pub const REQUEST_COUNT: &str = ":tensorflow:serving:request_count";
pub const REQUEST_LATENCY: &str = ":tensorflow:serving:request_latency";
pub const RUNTIME_LATENCY: &str = ":tensorflow:serving:runtime_latency";
pub const QUEUING_LATENCY: &str = ":tensorflow:serving:batching_session:queuing_latency";
pub const INPUT_BATCH_SIZE: &str = ":tensorflow:serving:batching_session:input_batch_size";
pub const PROCESSED_BATCH_SIZE: &str = ":tensorflow:serving:batching_session:processed_batch_size";
pub const PADDING_SIZE: &str = ":tensorflow:serving:batching_session:padding_size";
pub const WRAPPED_RUN_COUNT: &str = ":tensorflow:serving:batching_session:wrapped_run_count";

/// Distinct label sets kept per family. Model names in `request_count` come from clients (a
/// request for a model that is not served is counted under the name it asked for), so the
/// page would otherwise grow with every name a client invents; past the cap, new names are
/// counted under `model_name=""`.
const MAX_SERIES: usize = 1024;

/// A TensorFlow `Sampler` cell: bucket counts (the last is `+Inf`) and the sum.
#[derive(Debug)]
pub struct Hist {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    /// Every value observed is a whole number (µs or rows), so the sum is kept exactly.
    sum: AtomicU64,
}

impl Hist {
    pub fn new(bounds: &'static [f64]) -> Self {
        Hist {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: u64) {
        // TensorFlow's Histogram::Add: the first bucket whose limit is above the value.
        let i = self.bounds.partition_point(|b| *b <= v as f64);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0u64;
        let prefix = if labels.is_empty() {
            format!("{name}_bucket{{")
        } else {
            format!("{name}_bucket{{{labels},")
        };
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(bound) => fmt_g6(*bound),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(out, "{prefix}le=\"{le}\"}} {cumulative}");
        }
        let sum = self.sum.load(Ordering::Relaxed) as f64;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", fmt_g6(sum));
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// A double as absl's `StrCat` prints it: six significant digits, `%g` style
/// (`3570.47`, `1.47476e+09`, `100`).
pub fn fmt_g6(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return if v.is_nan() {
            "nan".into()
        } else if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    // Round to six significant digits first: the exponent is the rounded value's.
    let sci = format!("{v:.5e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let m = trim_zeros(mantissa);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{m}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (5 - exp).max(0) as usize;
        trim_zeros(&format!("{v:.decimals$}")).to_string()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// A label value as the exporter writes it: `\` and `"` escaped (and `\n`, which TF Serving
/// leaves raw, breaking its own page).
fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// The status label: the gRPC code name, as `error::Code_Name` gives it.
pub fn status_name(code: Option<super::core::Code>) -> &'static str {
    use super::core::Code;
    match code {
        None => "OK",
        Some(Code::InvalidArgument) => "INVALID_ARGUMENT",
        Some(Code::NotFound) => "NOT_FOUND",
        Some(Code::Unavailable) => "UNAVAILABLE",
        Some(Code::Internal) => "INTERNAL",
        Some(Code::Unimplemented) => "UNIMPLEMENTED",
    }
}

/// Where requests come in, for `request_latency`'s labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Entrypoint {
    Rest,
    Grpc,
}

impl Entrypoint {
    fn as_str(self) -> &'static str {
        match self {
            Entrypoint::Rest => "REST",
            Entrypoint::Grpc => "GRPC",
        }
    }
}

/// Every metric the stand-in keeps.
#[derive(Debug)]
pub struct Metrics {
    /// The batching families are exported only with --enable_batching, as in TF Serving,
    /// where the batching session that records them exists only then.
    batching: bool,
    thread_pool_name: String,
    request_count: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// (model_name, API, entrypoint).
    request_latency: Mutex<BTreeMap<(String, String, Entrypoint), Hist>>,
    runtime_latency: Mutex<BTreeMap<String, Hist>>,
    queuing_latency: Hist,
    input_batch_size: Hist,
    processed_batch_size: Hist,
    /// By execution (padded) batch size.
    padding_size: Mutex<BTreeMap<usize, Hist>>,
    wrapped_run_count: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// `thread_pool_name` labels `queuing_latency`: TF Serving uses the batching parameters'
    /// `thread_pool_name`, else "batch_threads" (or "model_server_batch_threads" when
    /// batching is on without a parameters file).
    pub fn new(batching: bool, thread_pool_name: &str) -> Self {
        Metrics {
            batching,
            thread_pool_name: thread_pool_name.to_string(),
            request_count: Mutex::new(BTreeMap::new()),
            request_latency: Mutex::new(BTreeMap::new()),
            runtime_latency: Mutex::new(BTreeMap::new()),
            queuing_latency: Hist::new(QUEUE_BOUNDS.as_slice()),
            input_batch_size: Hist::new(BATCH_BOUNDS.as_slice()),
            processed_batch_size: Hist::new(BATCH_BOUNDS.as_slice()),
            padding_size: Mutex::new(BTreeMap::new()),
            wrapped_run_count: AtomicU64::new(0),
        }
    }

    /// One request's outcome (REST: every request to /v1/models; gRPC: Predict).
    pub fn count_request(&self, model: &str, status: &'static str) {
        let mut m = lock(&self.request_count);
        let key = (model.to_string(), status);
        if m.len() >= MAX_SERIES && !m.contains_key(&key) {
            *m.entry((String::new(), status)).or_default() += 1;
        } else {
            *m.entry(key).or_default() += 1;
        }
    }

    /// The wall time of a successful request, in µs (TF Serving records OK requests only).
    pub fn request_latency(&self, model: &str, api: &str, entrypoint: Entrypoint, us: u64) {
        let mut m = lock(&self.request_latency);
        let key = (model.to_string(), api.to_string(), entrypoint);
        if m.len() >= MAX_SERIES && !m.contains_key(&key) {
            return;
        }
        m.entry(key)
            .or_insert_with(|| Hist::new(LATENCY_BOUNDS.as_slice()))
            .observe(us);
    }

    /// The time a successful predict spent in the model's session run, in µs: with batching,
    /// its wait in the queue included (TF Serving times `Session::Run` of the batching session).
    pub fn runtime_latency(&self, model: &str, us: u64) {
        let mut m = lock(&self.runtime_latency);
        if m.len() >= MAX_SERIES && !m.contains_key(model) {
            return;
        }
        m.entry(model.to_string())
            .or_insert_with(|| Hist::new(LATENCY_BOUNDS.as_slice()))
            .observe(us);
    }

    /// Rows of one incoming request (batching only).
    pub fn input_batch(&self, rows: usize) {
        self.input_batch_size.observe(rows as u64);
    }

    /// A task's time from enqueue to the dequeue of its batch, in µs.
    pub fn queued(&self, us: u64) {
        self.queuing_latency.observe(us);
    }

    /// A batch about to run: `padded` rows after padding, `rows` of them real.
    pub fn batch(&self, rows: usize, padded: usize) {
        self.processed_batch_size.observe(padded as u64);
        let mut m = lock(&self.padding_size);
        let key = if m.len() >= MAX_SERIES && !m.contains_key(&padded) {
            0
        } else {
            padded
        };
        m.entry(key)
            .or_insert_with(|| Hist::new(BATCH_BOUNDS.as_slice()))
            .observe(padded.saturating_sub(rows) as u64);
    }

    /// A batch ran (successfully or not) on the wrapped session.
    pub fn wrapped_run(&self) {
        self.wrapped_run_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Rows executed in batches (after padding) so far.
    pub fn processed_rows(&self) -> u64 {
        self.processed_batch_size.sum.load(Ordering::Relaxed)
    }

    /// Batches run so far.
    pub fn batches(&self) -> u64 {
        self.wrapped_run_count.load(Ordering::Relaxed)
    }

    /// The page, in the order TF Serving's exporter writes it (by monitoring name).
    pub fn prometheus(&self) -> String {
        let mut s = String::new();
        if self.batching {
            let _ = writeln!(s, "# TYPE {INPUT_BATCH_SIZE} histogram");
            self.input_batch_size.write(&mut s, INPUT_BATCH_SIZE, "");
            let _ = writeln!(s, "# TYPE {PADDING_SIZE} histogram");
            for (size, h) in lock(&self.padding_size).iter() {
                h.write(
                    &mut s,
                    PADDING_SIZE,
                    &format!("execution_batch_size=\"{size}\""),
                );
            }
            let _ = writeln!(s, "# TYPE {PROCESSED_BATCH_SIZE} histogram");
            self.processed_batch_size
                .write(&mut s, PROCESSED_BATCH_SIZE, "");
            let _ = writeln!(s, "# TYPE {QUEUING_LATENCY} histogram");
            self.queuing_latency.write(
                &mut s,
                QUEUING_LATENCY,
                &format!(
                    "thread_pool_name=\"{}\"",
                    label_value(&self.thread_pool_name)
                ),
            );
            let _ = writeln!(s, "# TYPE {WRAPPED_RUN_COUNT} counter");
            let _ = writeln!(
                s,
                "{WRAPPED_RUN_COUNT}{{}} {}",
                self.wrapped_run_count.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(s, "# TYPE {REQUEST_COUNT} counter");
        for ((model, status), n) in lock(&self.request_count).iter() {
            let _ = writeln!(
                s,
                "{REQUEST_COUNT}{{model_name=\"{}\",status=\"{status}\"}} {n}",
                label_value(model)
            );
        }
        let _ = writeln!(s, "# TYPE {REQUEST_LATENCY} histogram");
        for ((model, api, entry), h) in lock(&self.request_latency).iter() {
            h.write(
                &mut s,
                REQUEST_LATENCY,
                &format!(
                    "model_name=\"{}\",API=\"{}\",entrypoint=\"{}\"",
                    label_value(model),
                    label_value(api),
                    entry.as_str()
                ),
            );
        }
        let _ = writeln!(s, "# TYPE {RUNTIME_LATENCY} histogram");
        for (model, h) in lock(&self.runtime_latency).iter() {
            h.write(
                &mut s,
                RUNTIME_LATENCY,
                &format!(
                    "model_name=\"{}\",API=\"Predict\",runtime=\"TF1\"",
                    label_value(model)
                ),
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_tensorflows_exponential_layouts() {
        assert_eq!(LATENCY_BOUNDS.len(), 33);
        assert_eq!(LATENCY_BOUNDS[0], 10.0);
        assert!((LATENCY_BOUNDS[1] - 18.0).abs() < 1e-9);
        assert_eq!(QUEUE_BOUNDS.len(), 52);
        assert_eq!(QUEUE_BOUNDS[0], 100.0);
        assert_eq!(BATCH_BOUNDS.len(), 14);
        assert_eq!(BATCH_BOUNDS[13], 8192.0);
    }

    #[test]
    fn doubles_print_as_absl_strcat_does() {
        assert_eq!(fmt_g6(0.0), "0");
        assert_eq!(fmt_g6(1.0), "1");
        assert_eq!(fmt_g6(100.0), "100");
        assert_eq!(fmt_g6(3570.467226624), "3570.47");
        assert_eq!(fmt_g6(123456.0), "123456");
        assert_eq!(fmt_g6(1234567.0), "1.23457e+06");
        assert_eq!(fmt_g6(999999.7), "1e+06");
        assert_eq!(fmt_g6(0.000123), "0.000123");
        assert_eq!(fmt_g6(0.0000123), "1.23e-05");
        assert_eq!(fmt_g6(10.0 * 1.8f64.powi(32)), "1.47476e+09");
    }

    #[test]
    fn a_value_is_counted_below_its_bucket_bound_as_tensorflow_counts_it() {
        let m = Metrics::new(true, "batch_threads");
        m.batch(4, 4);
        m.batch(3, 4);
        m.wrapped_run();
        m.count_request("m", "OK");
        m.count_request("m", "UNAVAILABLE");
        let page = m.prometheus();
        let p = ":tensorflow:serving:batching_session:processed_batch_size";
        assert!(
            page.contains(&format!("{p}_bucket{{le=\"4\"}} 0\n")),
            "{page}"
        );
        assert!(
            page.contains(&format!("{p}_bucket{{le=\"8\"}} 2\n")),
            "{page}"
        );
        assert!(
            page.contains(&format!("{p}_bucket{{le=\"+Inf\"}} 2\n")),
            "{page}"
        );
        assert!(page.contains(&format!("{p}_sum{{}} 8\n")), "{page}");
        assert!(page.contains(&format!("{p}_count{{}} 2\n")), "{page}");
        assert!(
            page.contains(
                ":tensorflow:serving:batching_session:padding_size_sum{execution_batch_size=\"4\"} 1\n"
            ),
            "{page}"
        );
        assert!(
            page.contains(":tensorflow:serving:batching_session:wrapped_run_count{} 1\n"),
            "{page}"
        );
        assert!(
            page.contains(
                ":tensorflow:serving:request_count{model_name=\"m\",status=\"UNAVAILABLE\"} 1\n"
            ),
            "{page}"
        );
        assert!(!page.contains("# HELP"));
        // Without batching, the batching session's families are absent.
        let plain = Metrics::new(false, "batch_threads").prometheus();
        assert!(!plain.contains("batching_session"), "{plain}");
    }

    #[test]
    fn invented_model_names_cannot_grow_the_page_without_bound() {
        let m = Metrics::new(false, "");
        for i in 0..(MAX_SERIES * 3) {
            m.count_request(&format!("nope-{i}"), "NOT_FOUND");
        }
        assert!(lock(&m.request_count).len() <= MAX_SERIES + 1);
    }
}

//! The latency histograms of a run: their bounds, their summaries (percentiles, lag) and their
//! codec in the report (HdrHistogram V2, base64), so that runs stored or sent by workers can be
//! added together later rather than averaged.

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};

use super::LoadError;
use super::result::{LagSummary, Percentiles};

/// Lowest and highest trackable latency in microseconds (1 µs … 60 s) and the precision.
pub const HIST_LOW_US: u64 = 1;
pub const HIST_HIGH_US: u64 = 60_000_000;
pub const HIST_SIGFIG: u8 = 3;

/// An empty histogram with the report's bounds, so any two can be added.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants inside hdrhistogram's accepted range, so this cannot fail.
    Histogram::new_with_bounds(HIST_LOW_US, HIST_HIGH_US, HIST_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// Microseconds (the histograms' unit) as milliseconds (the report's).
pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: h.mean() / 1000.0,
    }
}

pub fn lag_summary(h: &Histogram<u64>) -> LagSummary {
    if h.is_empty() {
        return LagSummary::default();
    }
    LagSummary {
        p50: ms(h.value_at_quantile(0.50)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    }
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail for a histogram within its own bounds.
    if V2Serializer::new().serialize(h, &mut buf).is_err() {
        return String::new();
    }
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, LoadError> {
    if s.is_empty() {
        return Ok(new_histogram());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| LoadError::Histogram(format!("not base64: {e}")))?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(raw))
        .map_err(|e| LoadError::Histogram(format!("not an HdrHistogram V2: {e:?}")))?;
    // Re-home into the standard bounds so adding histograms never fails on range.
    let mut out = new_histogram();
    out.add(&h)
        .map_err(|e| LoadError::Histogram(format!("{e:?}")))?;
    Ok(out)
}

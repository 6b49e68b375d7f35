//! Latency histograms that survive the trip from a worker process to the coordinator.
//!
//! Workers record into an HDR histogram and ship only its non-empty buckets as
//! `(value, count)` pairs; the coordinator re-records them into one histogram per phase. That
//! keeps percentiles exact to the histogram's precision across any number of workers without
//! pulling in a serialization format.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency recorded, in microseconds (60 s); anything slower is clamped to it.
const MAX_US: u64 = 60_000_000;

/// A fresh histogram: 1 µs to 60 s at three significant figures.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts, so this cannot fail at run time.
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

/// Record `us` microseconds, clamping into the histogram's range.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_US));
}

/// The non-empty buckets of a histogram, as `(value, count)` pairs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Buckets(pub Vec<(u64, u64)>);

impl Buckets {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        Buckets(
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect(),
        )
    }

    /// Add these buckets into `h`.
    pub fn merge_into(&self, h: &mut Histogram<u64>) {
        for &(v, c) in &self.0 {
            // Values came from a histogram with the same bounds; clamping keeps it infallible.
            let _ = h.record_n(v.clamp(1, MAX_US), c);
        }
    }
}

/// The percentiles every report shows, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_round_trip_keeps_percentiles() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            record(&mut h, v);
        }
        let b = Buckets::from_histogram(&h);
        let mut back = new_histogram();
        b.merge_into(&mut back);
        assert_eq!(Percentiles::of(&h), Percentiles::of(&back));
        assert_eq!(back.len(), 10_000);
    }
}

//! Flush rate and flush-to-present latency of one scanout.
//!
//! A flush is in the first frame assembled after it arrived (`frame_started`, when the frame
//! uploads the guest's pixels), and its latency ends when that frame is presented.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// Flush rate and flush-to-present latency of one scanout, for the overlay and `scanway list`.
#[derive(Default)]
pub(super) struct FlushStats {
    /// Arrival times of the flushes of the last second.
    recent: VecDeque<Instant>,
    /// Arrival of the oldest flush not yet in a frame.
    unpresented: Option<Instant>,
    /// Arrival of the oldest flush in the frame being drawn or waiting to be shown.
    in_frame: Option<Instant>,
    /// The last [`LATENCY_SAMPLES`] flush-to-present latencies.
    latencies: VecDeque<Duration>,
}

/// How many flush-to-present latencies a scanout remembers.
const LATENCY_SAMPLES: usize = 512;

impl FlushStats {
    pub(super) fn flushed(&mut self, now: Instant) {
        self.recent.push_back(now);
        while self.recent.front().is_some_and(|t| now.duration_since(*t) > Duration::from_secs(1)) {
            self.recent.pop_front();
        }
        self.unpresented.get_or_insert(now);
    }

    /// A frame is assembled: the flushes so far are in it.
    pub(super) fn frame_started(&mut self) {
        if self.in_frame.is_none() {
            self.in_frame = self.unpresented.take();
        }
    }

    pub(super) fn presented(&mut self, now: Instant) {
        if let Some(t) = self.in_frame.take() {
            if self.latencies.len() == LATENCY_SAMPLES {
                self.latencies.pop_front();
            }
            self.latencies.push_back(now.duration_since(t));
        }
    }

    /// The rate and latency quantiles at `now`.
    pub(super) fn summary(&self, now: Instant) -> ScanoutStats {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        ScanoutStats {
            flush_rate: self.rate(now),
            latency_p50_ms: self.latency(0.5).map(ms),
            latency_p99_ms: self.latency(0.99).map(ms),
        }
    }

    fn rate(&self, now: Instant) -> usize {
        self.recent.iter().filter(|t| now.duration_since(**t) <= Duration::from_secs(1)).count()
    }

    /// The `q` quantile (0..=1) of the remembered latencies.
    fn latency(&self, q: f64) -> Option<Duration> {
        let mut v: Vec<Duration> = self.latencies.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v.get(i).copied()
    }
}

/// A scanout's statistics as `scanway list` and the overlay show them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScanoutStats {
    /// Flushes in the last second.
    pub flush_rate: usize,
    /// Flush-to-present latency (the arrival of the oldest flush a frame carries to that
    /// frame's presentation: page flip, refresh timer or swap), median of the last 512 such frames, milliseconds; `None` before the first.
    pub latency_p50_ms: Option<f64>,
    /// Flush-to-present latency, 99th percentile of the same samples, milliseconds.
    pub latency_p99_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_flush_counts_from_arrival_to_the_frame_that_carries_it() {
        let t0 = Instant::now();
        let mut s = FlushStats::default();
        s.flushed(t0);
        s.flushed(t0 + 2 * MS); // folds into the same frame: the oldest arrival counts
        s.frame_started();
        s.flushed(t0 + 5 * MS); // after the frame took its pixels: in the next frame
        s.presented(t0 + 16 * MS);
        assert_eq!(s.latencies.iter().copied().collect::<Vec<_>>(), [16 * MS]);
        s.frame_started();
        s.presented(t0 + 33 * MS);
        assert_eq!(s.latencies.back(), Some(&(28 * MS)));
        // a frame without a new flush adds no sample
        s.frame_started();
        s.presented(t0 + 50 * MS);
        assert_eq!(s.latencies.len(), 2);
    }

    #[test]
    fn rate_counts_the_last_second_and_quantiles_round() {
        let t0 = Instant::now();
        let mut s = FlushStats::default();
        for i in 0..10 {
            s.flushed(t0 + i * 200 * MS);
            s.frame_started();
            s.presented(t0 + i * 200 * MS + Duration::from_millis(u64::from(i) + 1));
        }
        let summary = s.summary(t0 + 1800 * MS);
        assert_eq!(summary.flush_rate, 6); // 0.8 s ..= 1.8 s
        assert_eq!(summary.latency_p50_ms, Some(6.0));
        assert_eq!(summary.latency_p99_ms, Some(10.0));
    }
}

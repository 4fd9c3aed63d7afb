//! Benchmarks for AI SuperApp. Each is a binary a person runs and reads; results and the
//! machine they were measured on are in `benches/README.md`. Nothing here asserts a
//! speed: the numbers are reported, not tested.

/// Percentile `p` (0–100) of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub mod report;

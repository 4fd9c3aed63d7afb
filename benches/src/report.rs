//! Machine-readable figures, besides the lines each benchmark prints for a person.
//!
//! When `AISA_BENCH_JSON` names a file, every [`Figure::record`] appends one JSON object
//! per line to it. `benches/run-all` sets it, runs every benchmark, and turns the lines
//! into one table and one JSON file. Without the variable nothing is written.
//! `AISA_BENCH_TAG` (optional) labels every figure of a run, e.g. `pinned` for the run
//! with the relay on its own core.

use std::io::Write;

/// One measured figure: what was measured, its value, and what it compares against.
#[derive(Debug, Clone)]
pub struct Figure {
    /// The benchmark binary that measured it (`chain`, `relay-bench`, …).
    pub bench: &'static str,
    /// What was measured, in words (`echo: request → first chunk, p50`).
    pub measure: String,
    /// The value, in `unit`.
    pub value: f64,
    /// The unit (`ms`, `µs`, `ns/byte`, `KiB`, `MiB/s`, `%`).
    pub unit: &'static str,
    /// The same-run baseline in the same unit, and what it is (`direct quinn`).
    pub baseline: Option<(f64, &'static str)>,
    /// The goal as written in the issue (`≤ 0.25 ms`), if there is one.
    pub goal: Option<&'static str>,
}

impl Figure {
    /// A figure without a baseline or a goal.
    pub fn new(
        bench: &'static str,
        measure: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Figure {
        Figure {
            bench,
            measure: measure.into(),
            value,
            unit,
            baseline: None,
            goal: None,
        }
    }

    /// Adds the same-run baseline this figure is compared with.
    pub fn baseline(mut self, value: f64, what: &'static str) -> Figure {
        self.baseline = Some((value, what));
        self
    }

    /// Adds the goal (as text, e.g. `≤ 0.25 ms`).
    pub fn goal(mut self, goal: &'static str) -> Figure {
        self.goal = Some(goal);
        self
    }

    /// The figure as one line of JSON, labelled with `tag` if given.
    pub fn to_json(&self, tag: Option<&str>) -> String {
        let mut object = serde_json::json!({
            "bench": self.bench,
            "measure": self.measure,
            "value": finite(self.value),
            "unit": self.unit,
        });
        if let Some((baseline, what)) = self.baseline {
            object["baseline"] = finite(baseline);
            object["baseline_is"] = what.into();
            object["ratio"] = finite(self.value / baseline);
        }
        if let Some(goal) = self.goal {
            object["goal"] = goal.into();
        }
        if let Some(tag) = tag {
            object["tag"] = tag.into();
        }
        object.to_string()
    }

    /// Appends the figure to the file `AISA_BENCH_JSON` names, if it names one. A file
    /// that cannot be written is reported on stderr and does not stop the benchmark.
    pub fn record(&self) {
        let Some(path) = std::env::var_os("AISA_BENCH_JSON") else {
            return;
        };
        let tag = std::env::var("AISA_BENCH_TAG").ok();
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut file| writeln!(file, "{}", self.to_json(tag.as_deref())));
        if let Err(e) = written {
            eprintln!("AISA_BENCH_JSON={}: {e}", path.to_string_lossy());
        }
    }
}

/// JSON has no NaN or infinity: those become `null`.
fn finite(value: f64) -> serde_json::Value {
    serde_json::Number::from_f64(value).map_or(serde_json::Value::Null, Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_figure_with_a_baseline_carries_its_ratio_and_goal() {
        let line = Figure::new("chain", "echo p50", 0.5, "ms")
            .baseline(0.25, "direct")
            .goal("≤ 0.25 ms")
            .to_json(Some("pinned"));
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["ratio"], 2.0);
        assert_eq!(value["goal"], "≤ 0.25 ms");
        assert_eq!(value["baseline_is"], "direct");
        assert_eq!(value["tag"], "pinned");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_value_that_is_not_a_number_is_null() {
        let line = Figure::new("x", "y", f64::NAN, "ms").to_json(None);
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert!(value["value"].is_null());
        assert!(value.get("ratio").is_none());
        assert!(value.get("tag").is_none());
    }
}

//! What the benchmark prints: the machine, and one table of rows (or the same rows as JSON).
//! Every figure in a row was measured in this run; nothing here is a constant.

use std::time::Duration;

use serde::Serialize;

/// Latency percentiles of a set of samples.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(samples: &mut [Duration]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let at = |p: f64| {
            let rank = (p * (samples.len() - 1) as f64).round() as usize;
            ms(samples[rank.min(samples.len() - 1)])
        };
        let total: f64 = samples.iter().map(|d| ms(*d)).sum();
        Self {
            count: samples.len(),
            mean_ms: total / samples.len() as f64,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: ms(samples[samples.len() - 1]),
        }
    }
}

/// One measured figure with its unit.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub value: f64,
    pub unit: &'static str,
}

impl Figure {
    pub fn new(value: f64, unit: &'static str) -> Self {
        Self { value, unit }
    }

    fn render(&self) -> String {
        format!("{} {}", number(self.value), self.unit)
    }
}

/// Whether a row's target was met.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    /// The row has no target of its own (a baseline, a figure for a decision).
    Info,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: String,
    /// The work, with the sizes used.
    pub work: String,
    pub ours: Option<Figure>,
    pub baseline: Option<Figure>,
    /// ours ÷ baseline, in the direction where more is better unless the work says otherwise.
    pub ratio: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub target: String,
    pub verdict: Verdict,
}

impl Row {
    pub fn new(id: &str, work: impl Into<String>) -> Self {
        Self {
            id: id.to_owned(),
            work: work.into(),
            ours: None,
            baseline: None,
            ratio: None,
            p50_ms: None,
            p99_ms: None,
            target: String::new(),
            verdict: Verdict::Info,
        }
    }

    pub fn ours(mut self, value: f64, unit: &'static str) -> Self {
        self.ours = Some(Figure::new(value, unit));
        self
    }

    pub fn baseline(mut self, value: f64, unit: &'static str) -> Self {
        self.baseline = Some(Figure::new(value, unit));
        self
    }

    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = Some(ratio);
        self
    }

    pub fn latency(mut self, p: &Percentiles) -> Self {
        self.p50_ms = Some(p.p50_ms);
        self.p99_ms = Some(p.p99_ms);
        self
    }

    pub fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = target.into();
        self.verdict = if met { Verdict::Met } else { Verdict::Missed };
        self
    }
}

/// A number for a table: grouped thousands for big ones, a few significant digits for small.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if v.abs() >= 1000.0 {
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 {
            out.insert(0, '-');
        }
        out
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{} ms", number(v)))
        .unwrap_or_else(|| "–".into())
}

/// The rows as a Markdown table (what the README carries).
pub fn table(rows: &[Row]) -> String {
    let header = [
        "#", "work", "ours", "baseline", "ratio", "p50", "p99", "target", "met",
    ];
    let mut lines = vec![
        format!("| {} |", header.join(" | ")),
        format!("|{}", "---|".repeat(header.len())),
    ];
    for r in rows {
        let cells = [
            r.id.clone(),
            r.work.clone(),
            r.ours
                .as_ref()
                .map(Figure::render)
                .unwrap_or_else(|| "–".into()),
            r.baseline
                .as_ref()
                .map(Figure::render)
                .unwrap_or_else(|| "–".into()),
            r.ratio
                .map(|x| format!("{x:.2}×"))
                .unwrap_or_else(|| "–".into()),
            ms(r.p50_ms),
            ms(r.p99_ms),
            if r.target.is_empty() {
                "–".into()
            } else {
                r.target.clone()
            },
            match r.verdict {
                Verdict::Met => "yes".into(),
                Verdict::Missed => "**no**".into(),
                Verdict::Info => "–".into(),
            },
        ];
        lines.push(format!("| {} |", cells.join(" | ")));
    }
    lines.join("\n")
}

pub fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(1234567.0), "1,234,567");
        assert_eq!(number(-1234.0), "-1,234");
        assert_eq!(number(999.4), "999");
        assert_eq!(number(12.34), "12.3");
        assert_eq!(number(0.456), "0.46");
    }

    #[test]
    fn percentiles_pick_ranks() {
        let mut samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(p.count, 100);
        assert!((p.p50_ms - 51.0).abs() < 1.01);
        assert!((p.p99_ms - 99.0).abs() < 1.01);
        assert!((p.max_ms - 100.0).abs() < 1e-9);
    }
}

//! The metrics registry: Prometheus text for `/metrics`, and every series
//! readable back for the OTLP bridge (`otlp_metrics.rs`). Kept by hand:
//! `prometheus-client` only encodes its registry to text and cannot hand the
//! series back to another exporter; services declare their families once as
//! typed [`Counter`]/[`Gauge`]/[`Histogram`] fields.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

/// The Prometheus type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Upper bounds of histogram buckets, in seconds: 100 µs to 60 s.
const BUCKETS: [f64; 17] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0];

type Labels = Vec<(String, String)>;

/// One series read out: its labels, its value (a histogram's sum), and for
/// histograms the observation count.
pub type SeriesValue = (Labels, f64, Option<u64>);

#[derive(Debug)]
enum Series {
    Value(f64),
    Histogram { counts: [u64; BUCKETS.len()], sum: f64, count: u64 },
}

#[derive(Debug)]
struct Family {
    kind: Kind,
    help: String,
    series: BTreeMap<Labels, Series>,
}

/// Metric families by name. Every update takes one short lock.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<String, Family>>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn render_labels(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// A counter family of a [`Registry`], declared once: a service keeps its
/// metrics as fields of a struct of these, so a misspelt metric does not
/// compile.
#[derive(Clone, Debug)]
pub struct Counter(Metric);

/// A gauge family of a [`Registry`] (see [`Counter`]).
#[derive(Clone, Debug)]
pub struct Gauge(Metric);

/// A histogram family of a [`Registry`], in seconds (see [`Counter`]).
#[derive(Clone, Debug)]
pub struct Histogram(Metric);

#[derive(Clone, Debug)]
struct Metric {
    registry: Arc<Registry>,
    name: &'static str,
}

impl Counter {
    /// Adds `by` to the series without labels.
    pub fn inc(&self, by: f64) {
        self.0.registry.inc(self.0.name, &[], by);
    }

    /// Adds `by` to the series with `labels`.
    pub fn inc_with(&self, labels: &[(&str, &str)], by: f64) {
        self.0.registry.inc(self.0.name, labels, by);
    }
}

impl Gauge {
    pub fn set(&self, value: f64) {
        self.0.registry.set(self.0.name, &[], value);
    }

    pub fn set_with(&self, labels: &[(&str, &str)], value: f64) {
        self.0.registry.set(self.0.name, labels, value);
    }
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        self.0.registry.observe(self.0.name, &[], seconds);
    }

    pub fn observe_with(&self, labels: &[(&str, &str)], seconds: f64) {
        self.0.registry.observe(self.0.name, labels, seconds);
    }
}

impl Registry {
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn declare(self: &Arc<Self>, name: &'static str, kind: Kind, help: &str) -> Metric {
        self.describe(name, kind, help);
        Metric { registry: Arc::clone(self), name }
    }

    /// Declares a counter family.
    pub fn counter(self: &Arc<Self>, name: &'static str, help: &str) -> Counter {
        Counter(self.declare(name, Kind::Counter, help))
    }

    /// Declares a gauge family.
    pub fn gauge(self: &Arc<Self>, name: &'static str, help: &str) -> Gauge {
        Gauge(self.declare(name, Kind::Gauge, help))
    }

    /// Declares a histogram family (seconds).
    pub fn histogram(self: &Arc<Self>, name: &'static str, help: &str) -> Histogram {
        Histogram(self.declare(name, Kind::Histogram, help))
    }

    /// Declares a family so it is listed (with HELP and TYPE) before it has samples.
    pub fn describe(&self, name: &str, kind: Kind, help: &str) {
        let mut families = self.families.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        families.entry(name.to_owned()).or_insert_with(|| Family {
            kind,
            help: help.to_owned(),
            series: BTreeMap::new(),
        });
    }

    fn with_series(&self, name: &str, kind: Kind, pairs: &[(&str, &str)], f: impl FnOnce(&mut Series)) {
        let mut families = self.families.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let family = families.entry(name.to_owned()).or_insert_with(|| Family {
            kind,
            help: String::new(),
            series: BTreeMap::new(),
        });
        let series = family.series.entry(labels(pairs)).or_insert_with(|| match kind {
            Kind::Histogram => Series::Histogram { counts: [0; BUCKETS.len()], sum: 0.0, count: 0 },
            Kind::Counter | Kind::Gauge => Series::Value(0.0),
        });
        f(series);
    }

    /// Adds `by` to a counter.
    pub fn inc(&self, name: &str, pairs: &[(&str, &str)], by: f64) {
        self.with_series(name, Kind::Counter, pairs, |s| {
            if let Series::Value(v) = s {
                *v += by;
            }
        });
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, pairs: &[(&str, &str)], value: f64) {
        self.with_series(name, Kind::Gauge, pairs, |s| {
            if let Series::Value(v) = s {
                *v = value;
            }
        });
    }

    /// Records one observation (seconds) in a histogram.
    pub fn observe(&self, name: &str, pairs: &[(&str, &str)], value: f64) {
        self.with_series(name, Kind::Histogram, pairs, |s| {
            if let Series::Histogram { counts, sum, count } = s {
                for (bound, c) in BUCKETS.iter().zip(counts.iter_mut()) {
                    if value <= *bound {
                        *c += 1;
                    }
                }
                *sum += value;
                *count += 1;
            }
        });
    }

    /// Drops every series of `name` whose labels contain `key = value`
    /// (e.g. the series of a job that ended).
    pub fn remove_matching(&self, name: &str, key: &str, value: &str) {
        let mut families = self.families.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = families.get_mut(name) {
            f.series.retain(|labels, _| !labels.iter().any(|(k, v)| k == key && v == value));
        }
    }

    /// The current value of a counter or gauge series, if it exists.
    #[must_use]
    pub fn value(&self, name: &str, pairs: &[(&str, &str)]) -> Option<f64> {
        let families = self.families.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match families.get(name)?.series.get(&labels(pairs))? {
            Series::Value(v) => Some(*v),
            Series::Histogram { .. } => None,
        }
    }

    /// Every family: name, kind and help.
    #[must_use]
    pub fn families(&self) -> Vec<(String, Kind, String)> {
        let families = self.families.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        families.iter().map(|(n, f)| (n.clone(), f.kind, f.help.clone())).collect()
    }

    /// The series of a family now.
    #[must_use]
    pub fn series(&self, name: &str) -> Vec<SeriesValue> {
        let families = self.families.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        families.get(name).map_or_else(Vec::new, |f| {
            f.series
                .iter()
                .map(|(labels, s)| match s {
                    Series::Value(v) => (labels.clone(), *v, None),
                    Series::Histogram { sum, count, .. } => (labels.clone(), *sum, Some(*count)),
                })
                .collect()
        })
    }

    /// Everything in the Prometheus text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = String::new();
        for (name, family) in families.iter() {
            let kind = match family.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            if !family.help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {}", family.help);
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, series) in &family.series {
                match series {
                    Series::Value(v) => {
                        let _ = writeln!(out, "{name}{} {v}", render_labels(labels, None));
                    }
                    Series::Histogram { counts, sum, count } => {
                        for (bound, c) in BUCKETS.iter().zip(counts) {
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {c}",
                                render_labels(labels, Some(("le", bound.to_string())))
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {count}",
                            render_labels(labels, Some(("le", "+Inf".into())))
                        );
                        let _ = writeln!(out, "{name}_sum{} {sum}", render_labels(labels, None));
                        let _ = writeln!(out, "{name}_count{} {count}", render_labels(labels, None));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_prometheus_text_format() {
        let r = Registry::new();
        r.describe("rwp_pending_tasks", Kind::Gauge, "Tasks waiting for a worker.");
        r.set("rwp_pending_tasks", &[], 3.0);
        r.inc("rwp_updates_total", &[("job", "a\"b")], 1.0);
        r.inc("rwp_updates_total", &[("job", "a\"b")], 2.0);
        r.observe("rwp_step_seconds", &[("phase", "update")], 0.003);
        r.observe("rwp_step_seconds", &[("phase", "update")], 2.0);
        let text = r.render();
        assert!(text.contains("# HELP rwp_pending_tasks Tasks waiting for a worker.\n# TYPE rwp_pending_tasks gauge\nrwp_pending_tasks 3\n"), "{text}");
        assert!(text.contains("rwp_updates_total{job=\"a\\\"b\"} 3\n"), "{text}");
        assert!(text.contains("rwp_step_seconds_bucket{phase=\"update\",le=\"0.0025\"} 0\n"), "{text}");
        assert!(text.contains("rwp_step_seconds_bucket{phase=\"update\",le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("rwp_step_seconds_bucket{phase=\"update\",le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("rwp_step_seconds_count{phase=\"update\"} 2\n"), "{text}");
        assert_eq!(r.value("rwp_updates_total", &[("job", "a\"b")]), Some(3.0));
        r.remove_matching("rwp_updates_total", "job", "a\"b");
        assert_eq!(r.value("rwp_updates_total", &[("job", "a\"b")]), None);
    }
}

//! One benchmark result: a figure for trio and one for tokio (and, for some
//! micro workloads, one for Python Trio), with the ratio that says which is
//! better, and the `--json` form of a list of them.

/// How much to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Size {
    /// The default: more rounds and longer windows, steadier figures.
    Full,
    /// `--quick`: everything in under 2 minutes.
    Quick,
    /// `--tiny`: every workload once at a tiny size, so CI can check that
    /// the suite still runs (the figures mean nothing).
    Tiny,
}

/// One workload's figures.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Record {
    /// What was measured, for example `"spawn+join 1k children"`.
    pub(crate) name: String,
    /// Which part of the suite it belongs to: `"micro"`, `"echo"`,
    /// `"connect"`, `"memory"`, `"tls"`, ... (the report groups by it).
    pub(crate) group: &'static str,
    /// Our figure.
    pub(crate) trio: f64,
    /// tokio's current-thread runtime's figure.
    pub(crate) tokio: f64,
    /// The unit of both, for example `"ns/op"`, `"msgs/s"`, `"KiB/task"`.
    pub(crate) unit: &'static str,
    /// Whether a larger figure is better (a rate) or worse (a time, a size).
    pub(crate) higher_is_better: bool,
    /// Python Trio's figure in the same unit, where it was measured.
    pub(crate) python_trio: Option<f64>,
    /// monoio's figure in the same unit, where it was measured (the
    /// io_uring rows, whose `trio` figure is trio on io_uring).
    pub(crate) monoio: Option<f64>,
}

impl Record {
    /// A figure where lower is better (a time per operation, a size).
    pub(crate) fn lower(
        group: &'static str,
        name: impl Into<String>,
        trio: f64,
        tokio: f64,
        unit: &'static str,
    ) -> Record {
        Record { name: name.into(), group, trio, tokio, unit, higher_is_better: false, python_trio: None, monoio: None }
    }

    /// A figure where higher is better (a rate).
    pub(crate) fn higher(
        group: &'static str,
        name: impl Into<String>,
        trio: f64,
        tokio: f64,
        unit: &'static str,
    ) -> Record {
        Record { name: name.into(), group, trio, tokio, unit, higher_is_better: true, python_trio: None, monoio: None }
    }

    /// trio/tokio for times and sizes, tokio/trio for rates: below 1 always
    /// means trio is faster or leaner. NaN when the divisor is 0.
    pub(crate) fn ratio(&self) -> f64 {
        let (num, den) = if self.higher_is_better { (self.tokio, self.trio) } else { (self.trio, self.tokio) };
        if den == 0.0 { f64::NAN } else { num / den }
    }
}

/// A JSON number (`null` for NaN and infinities, which JSON cannot hold).
fn json_number(x: f64) -> String {
    if x.is_finite() { format!("{x}") } else { "null".to_owned() }
}

/// A JSON string literal.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `--json` document: a list of `{"name", "trio", "tokio", "unit",
/// "ratio"}` objects (plus `"group"`, and `"python_trio"` and `"monoio"`
/// where measured),
/// one per line.
pub(crate) fn to_json(records: &[Record]) -> String {
    let mut out = String::from("[\n");
    for (i, r) in records.iter().enumerate() {
        out.push_str(&format!(
            "  {{\"name\": {}, \"group\": {}, \"trio\": {}, \"tokio\": {}, \"unit\": {}, \"ratio\": {}",
            json_string(&r.name),
            json_string(r.group),
            json_number(r.trio),
            json_number(r.tokio),
            json_string(r.unit),
            json_number(r.ratio()),
        ));
        if let Some(p) = r.python_trio {
            out.push_str(&format!(", \"python_trio\": {}", json_number(p)));
        }
        if let Some(m) = r.monoio {
            out.push_str(&format!(", \"monoio\": {}", json_number(m)));
        }
        out.push('}');
        if i + 1 < records.len() {
            out.push(',');
        }
        out.push('\n');
    }
    out.push(']');
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_below_one_means_trio_is_better() {
        // A time: trio 50 ns against tokio 100 ns is better.
        assert_eq!(Record::lower("micro", "t", 50.0, 100.0, "ns/op").ratio(), 0.5);
        // A rate: trio 200/s against tokio 100/s is better.
        assert_eq!(Record::higher("echo", "r", 200.0, 100.0, "msgs/s").ratio(), 0.5);
        // And the other way round.
        assert_eq!(Record::lower("memory", "m", 4.0, 2.0, "KiB/task").ratio(), 2.0);
        assert_eq!(Record::higher("connect", "c", 50.0, 100.0, "connections/s").ratio(), 2.0);
        assert!(Record::lower("micro", "z", 1.0, 0.0, "ns/op").ratio().is_nan());
    }

    #[test]
    fn json_has_the_documented_shape() {
        let mut r = Record::lower("micro", "spawn \"1k\"", 50.0, 100.0, "ns/op");
        r.python_trio = Some(2500.0);
        let json = to_json(&[r, Record::higher("echo", "e", 1.0, 0.0, "msgs/s")]);
        assert_eq!(
            json,
            "[\n  {\"name\": \"spawn \\\"1k\\\"\", \"group\": \"micro\", \"trio\": 50, \"tokio\": 100, \
             \"unit\": \"ns/op\", \"ratio\": 0.5, \"python_trio\": 2500},\n  {\"name\": \"e\", \"group\": \
             \"echo\", \"trio\": 1, \"tokio\": 0, \"unit\": \"msgs/s\", \"ratio\": 0}\n]\n"
        );
        assert_eq!(to_json(&[]), "[\n]\n");
        assert_eq!(json_number(f64::NAN), "null");
        assert_eq!(json_string("a\nb\u{1}"), "\"a\\nb\\u0001\"");
    }
}

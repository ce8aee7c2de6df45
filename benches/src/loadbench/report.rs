//! Results: one table per scenario (printed, and written to `benches/results/REPORT.md` with
//! the machine, date and command) and a latency CDF plot per scenario as SVG.

use std::fmt::Write;
use std::time::Duration;

use super::hist::Histogram;
use super::load::LoadResult;

/// One measured row of a scenario table.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// Who carried the traffic: `waypoint`, `envoy`, `direct`, or a tool name for cross-checks.
    pub proxy: String,
    /// What variant of the scenario (`10 routes`, `wrk`, ...); rows of one variant are compared.
    pub variant: String,
    /// Successful requests per second.
    pub rps: Option<f64>,
    /// Median latency.
    pub p50: Option<Duration>,
    /// 99th percentile.
    pub p99: Option<Duration>,
    /// 99.9th percentile.
    pub p999: Option<Duration>,
    /// Proxy CPU seconds per 1000 successful requests.
    pub cpu_per_1000: Option<f64>,
    /// Proxy peak resident memory (VmHWM), MiB.
    pub rss_mib: Option<f64>,
    /// Failed requests.
    pub errors: u64,
    /// Anything the numbers need to be read with.
    pub note: String,
    /// Latency CDF for the plot.
    pub cdf: Vec<(Duration, f64)>,
}

impl Row {
    /// A row from a load result; `cpu` is the proxy's CPU seconds in the window.
    pub fn from_load(proxy: &str, variant: &str, r: &LoadResult, cpu: Option<f64>) -> Row {
        let h: &Histogram = &r.hist;
        let mut note = String::new();
        if let Some(e) = &r.first_error {
            let _ = write!(note, "first error: {e}");
        }
        Row {
            proxy: proxy.into(),
            variant: variant.into(),
            rps: Some(r.rps()),
            p50: h.quantile(0.5),
            p99: h.quantile(0.99),
            p999: h.quantile(0.999),
            cpu_per_1000: cpu.filter(|_| r.ok > 0).map(|c| c / (r.ok as f64 / 1000.0)),
            errors: r.errors,
            note,
            cdf: h.cdf(),
            ..Default::default()
        }
    }

    /// A row that could not be measured.
    pub fn failed(proxy: &str, variant: &str, why: &str) -> Row {
        Row {
            proxy: proxy.into(),
            variant: variant.into(),
            note: format!("FAILED: {why}"),
            ..Default::default()
        }
    }

    fn label(&self) -> String {
        if self.variant.is_empty() {
            self.proxy.clone()
        } else {
            format!("{} ({})", self.proxy, self.variant)
        }
    }
}

/// One scenario's results.
#[derive(Clone, Debug, Default)]
pub struct Section {
    /// Scenario name (`sandwich-h1`, ...).
    pub name: String,
    /// What was run, one paragraph.
    pub description: String,
    /// The table.
    pub rows: Vec<Row>,
    /// Facts that are not rows (reload times, start times), as `(what, value)`.
    pub facts: Vec<(String, String)>,
    /// Caveats: where the proxies did not do the same job.
    pub notes: Vec<String>,
    /// File name of the CDF plot, when one was written.
    pub plot: Option<String>,
}

/// The whole run.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// `nproc`, CPU model, kernel.
    pub machine: String,
    /// When (UTC).
    pub date: String,
    /// The command line.
    pub command: String,
    /// Pinning, peers' versions, modes.
    pub setup: Vec<String>,
    /// One per scenario.
    pub sections: Vec<Section>,
}

/// Formats a latency: µs below 10 ms, ms above.
pub fn fmt_latency(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) if d < Duration::from_millis(10) => format!("{:.0} µs", d.as_secs_f64() * 1e6),
        Some(d) => format!("{:.2} ms", d.as_secs_f64() * 1e3),
    }
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

const HEADER: [&str; 9] = [
    "row",
    "rps",
    "p50",
    "p99",
    "p99.9",
    "CPU s/1000 req",
    "peak RSS MiB",
    "errors",
    "notes",
];

impl Section {
    /// The table's cells, rows then one `ratio waypoint/envoy` row per variant that has both.
    pub fn table(&self) -> Vec<[String; 9]> {
        let mut out = Vec::new();
        for r in &self.rows {
            out.push([
                r.label(),
                fmt_opt(r.rps, 0),
                fmt_latency(r.p50),
                fmt_latency(r.p99),
                fmt_latency(r.p999),
                fmt_opt(r.cpu_per_1000, 3),
                fmt_opt(r.rss_mib, 1),
                r.errors.to_string(),
                r.note.clone(),
            ]);
        }
        let mut variants: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !variants.contains(&r.variant.as_str()) {
                variants.push(&r.variant);
            }
        }
        for v in variants {
            let find = |p: &str| {
                self.rows
                    .iter()
                    .find(|r| r.proxy == p && r.variant == v && r.rps.is_some())
            };
            let (Some(w), Some(e)) = (find("waypoint"), find("envoy")) else {
                continue;
            };
            let label = if v.is_empty() {
                "ratio waypoint/envoy".to_owned()
            } else {
                format!("ratio waypoint/envoy ({v})")
            };
            if w.errors > 0 || e.errors > 0 {
                let mut cells: [String; 9] = Default::default();
                cells[0] = label;
                cells[8] = "not compared: a row has failed requests".into();
                out.push(cells);
                continue;
            }
            out.push([
                label,
                ratio(w.rps, e.rps),
                ratio(secs(w.p50), secs(e.p50)),
                ratio(secs(w.p99), secs(e.p99)),
                ratio(secs(w.p999), secs(e.p999)),
                ratio(w.cpu_per_1000, e.cpu_per_1000),
                ratio(w.rss_mib, e.rss_mib),
                String::new(),
                "rps: higher is better for waypoint; the rest: lower is".into(),
            ]);
        }
        out
    }

    /// The table as aligned plain text for the terminal.
    pub fn text(&self) -> String {
        let rows = self.table();
        let mut widths = HEADER.map(|h| h.chars().count());
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r.iter()).take(8) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = format!("== {} ==\n", self.name);
        let line = |cells: &[String]| {
            let mut l = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i < 8 {
                    let pad = widths[i].saturating_sub(c.chars().count());
                    if i == 0 {
                        let _ = write!(l, "{c}{}  ", " ".repeat(pad));
                    } else {
                        let _ = write!(l, "{}{c}  ", " ".repeat(pad));
                    }
                } else {
                    l.push_str(c);
                }
            }
            l.trim_end().to_owned() + "\n"
        };
        out.push_str(&line(&HEADER.map(String::from)));
        for r in &rows {
            out.push_str(&line(r));
        }
        for (k, v) in &self.facts {
            let _ = writeln!(out, "  {k}: {v}");
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        out
    }
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

impl Report {
    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut out = String::from("# waypoint vs Envoy: load benchmark\n\n");
        let _ = writeln!(out, "- date: {}", self.date);
        let _ = writeln!(out, "- machine: {}", self.machine);
        let _ = writeln!(out, "- command: `{}`", self.command);
        for s in &self.setup {
            let _ = writeln!(out, "- {s}");
        }
        out.push_str(
            "\nLatency is per request (closed loop: from send to the last body byte; fixed rate: \
             from the scheduled send time). CPU is the proxy process's user+system time inside \
             the measured window; RSS is its peak (VmHWM) over its life. The `ratio` rows divide \
             waypoint by Envoy.\n",
        );
        for sec in &self.sections {
            let _ = write!(out, "\n## {}\n\n{}\n\n", sec.name, sec.description);
            let _ = writeln!(out, "| {} |", HEADER.join(" | "));
            let _ = writeln!(out, "|{}", "---|".repeat(HEADER.len()));
            for r in sec.table() {
                let cells: Vec<String> = r.iter().map(|c| md_cell(c)).collect();
                let _ = writeln!(out, "| {} |", cells.join(" | "));
            }
            if !sec.facts.is_empty() {
                out.push('\n');
                for (k, v) in &sec.facts {
                    let _ = writeln!(out, "- {k}: {v}");
                }
            }
            if !sec.notes.is_empty() {
                out.push('\n');
                for n in &sec.notes {
                    let _ = writeln!(out, "- **Not equivalent / caveat:** {n}");
                }
            }
            if let Some(plot) = &sec.plot {
                let _ = writeln!(
                    out,
                    "\n![latency CDF, {}]({plot})\n\n[{plot}]({plot})",
                    sec.name
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(proxy: &str, variant: &str, rps: f64, p50_us: u64, cpu: f64, rss: f64) -> Row {
        Row {
            proxy: proxy.into(),
            variant: variant.into(),
            rps: Some(rps),
            p50: Some(Duration::from_micros(p50_us)),
            p99: Some(Duration::from_micros(p50_us * 4)),
            p999: Some(Duration::from_millis(12)),
            cpu_per_1000: Some(cpu),
            rss_mib: Some(rss),
            ..Default::default()
        }
    }

    fn section() -> Section {
        Section {
            name: "sandwich-h1".into(),
            description: "64 connections".into(),
            rows: vec![
                row("waypoint", "", 20000.0, 500, 0.05, 12.5),
                row("envoy", "", 10000.0, 1000, 0.10, 50.0),
                row("direct", "", 40000.0, 250, 0.0, 0.0),
                Row::failed("wrk", "plain", "wrk | not found"),
            ],
            facts: vec![("reload".into(), "1.2 s".into())],
            notes: vec!["waypoint has no authz filter".into()],
            plot: Some("sandwich-h1.svg".into()),
        }
    }

    #[test]
    fn ratio_row_divides_waypoint_by_envoy() {
        let t = section().table();
        assert_eq!(t.len(), 5);
        let ratio = &t[4];
        assert_eq!(ratio[0], "ratio waypoint/envoy");
        assert_eq!(ratio[1], "2.00x");
        assert_eq!(ratio[2], "0.50x");
        assert_eq!(ratio[5], "0.50x");
        assert_eq!(ratio[6], "0.25x");
        assert_eq!(t[0][2], "500 µs");
        assert_eq!(t[0][4], "12.00 ms");
        assert_eq!(t[3][1], "-");
    }

    #[test]
    fn one_ratio_row_per_variant_even_when_interleaved_and_none_over_failures() {
        let mut failing = row("waypoint", "wrk", 90000.0, 100, 0.01, 10.0);
        failing.errors = 5;
        let s = Section {
            rows: vec![
                row("waypoint", "10 routes", 2.0, 100, 0.1, 1.0),
                row("waypoint", "10,000 routes", 1.0, 100, 0.1, 1.0),
                row("envoy", "10 routes", 1.0, 100, 0.1, 1.0),
                row("envoy", "10,000 routes", 1.0, 100, 0.1, 1.0),
                failing,
                row("envoy", "wrk", 10000.0, 100, 0.1, 1.0),
            ],
            ..Default::default()
        };
        let t = s.table();
        let ratios: Vec<&[String; 9]> = t.iter().filter(|r| r[0].starts_with("ratio")).collect();
        assert_eq!(ratios.len(), 3);
        assert_eq!(ratios[0][0], "ratio waypoint/envoy (10 routes)");
        assert_eq!(ratios[0][1], "2.00x");
        assert_eq!(ratios[2][0], "ratio waypoint/envoy (wrk)");
        assert_eq!(ratios[2][1], "");
        assert!(ratios[2][8].starts_with("not compared"));
    }

    #[test]
    fn markdown_has_machine_tables_caveats_and_plot_links() {
        let report = Report {
            machine: "2 x Xeon, Linux 6.1".into(),
            date: "2026-08-01 12:00 UTC".into(),
            command: "loadbench --quick".into(),
            setup: vec!["pinned".into()],
            sections: vec![section()],
        };
        let md = report.markdown();
        assert!(md.contains("- machine: 2 x Xeon, Linux 6.1"));
        assert!(md.contains("- command: `loadbench --quick`"));
        assert!(md.contains("## sandwich-h1"));
        assert!(md.contains("| row | rps | p50 | p99 | p99.9 | CPU s/1000 req | peak RSS MiB |"));
        assert!(
            md.contains("| waypoint | 20000 | 500 µs | 2000 µs | 12.00 ms | 0.050 | 12.5 | 0 |")
        );
        assert!(md.contains("| ratio waypoint/envoy | 2.00x |"));
        // A pipe inside a cell must not break the table.
        assert!(md.contains("FAILED: wrk \\| not found"));
        assert!(md.contains("**Not equivalent / caveat:** waypoint has no authz filter"));
        assert!(md.contains("](sandwich-h1.svg)"));
        assert!(md.contains("- reload: 1.2 s"));
    }

    #[test]
    fn text_table_aligns_columns() {
        let text = section().text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "== sandwich-h1 ==");
        // Right-aligned numeric columns end at the same offset in every row.
        let end_of_rps = |l: &str| l.find(" µs").map(|_| ());
        assert!(lines[1].starts_with("row"));
        assert!(lines.iter().any(|l| l.starts_with("ratio waypoint/envoy")));
        assert!(end_of_rps(lines[2]).is_some());
        assert!(text.contains("note: waypoint has no authz filter"));
    }
}

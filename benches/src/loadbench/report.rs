//! Results: one table per scenario (printed, and written to `benches/results/REPORT.md` with
//! the machine, date and command) and a latency CDF plot per scenario as SVG.
//!
//! An open-loop row (the `fixed-rate` scenario) brings two lines under it: its latency from the
//! actual send, and the generator's own lateness during that run, so the main line (latency from
//! the scheduled time) can be read against both. When the table also has the `direct` floor, one
//! line per proxy gives its added latency over direct.

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
    /// Open loop only: what the precise generator measured besides the main latencies.
    pub open: Option<OpenRow>,
}

/// Percentiles of one histogram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<Duration>,
    /// 99th percentile.
    pub p99: Option<Duration>,
    /// 99.9th percentile.
    pub p999: Option<Duration>,
    /// Largest value.
    pub max: Option<Duration>,
}

impl Percentiles {
    /// Of `h` (all `None` when it is empty).
    pub fn of(h: &Histogram) -> Percentiles {
        Percentiles {
            p50: h.quantile(0.5),
            p99: h.quantile(0.99),
            p999: h.quantile(0.999),
            max: (h.count() > 0).then(|| h.max()),
        }
    }
}

/// The open-loop generator's extra measures for one row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenRow {
    /// Latency from the actual send (the row's own columns are from the scheduled time).
    pub from_send: Percentiles,
    /// The generator's lateness: actual send - scheduled send.
    pub lateness: Percentiles,
    /// Requests that found every connection busy and waited for one (not in `lateness`).
    pub waited: u64,
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
            open: r.open.as_ref().map(|o| OpenRow {
                from_send: Percentiles::of(&o.from_send),
                lateness: Percentiles::of(&o.lateness),
                waited: o.waited,
            }),
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

/// `a - b` as a signed latency, `+12 µs` / `-3 µs` (ms above 10 ms).
fn fmt_added(a: Option<Duration>, b: Option<Duration>) -> String {
    let (Some(a), Some(b)) = (a, b) else {
        return "-".into();
    };
    let d = a.as_secs_f64() - b.as_secs_f64();
    let sign = if d < 0.0 { "-" } else { "+" };
    let d = d.abs();
    if d < 0.010 {
        format!("{sign}{:.0} µs", d * 1e6)
    } else {
        format!("{sign}{:.2} ms", d * 1e3)
    }
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

/// A line with only a label, the three latency cells and a note.
fn latency_line(label: String, cells: [String; 3], note: String) -> [String; 9] {
    let [p50, p99, p999] = cells;
    [
        label,
        String::new(),
        p50,
        p99,
        p999,
        String::new(),
        String::new(),
        String::new(),
        note,
    ]
}

impl Section {
    /// The table's cells: rows (an open-loop row followed by its from-send and generator
    /// lateness lines), one `ratio waypoint/envoy` row per variant that has both, then for
    /// open-loop rows one `added over direct` line per proxy when the variant has a direct row.
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
            if let Some(o) = &r.open {
                let f = o.from_send;
                out.push(latency_line(
                    format!("{}: from actual send", r.label()),
                    [f.p50, f.p99, f.p999].map(fmt_latency),
                    format!("max {}", fmt_latency(f.max)),
                ));
                let l = o.lateness;
                out.push(latency_line(
                    format!("{}: generator lateness", r.label()),
                    [l.p50, l.p99, l.p999].map(fmt_latency),
                    format!(
                        "actual - scheduled send; max {}; {} sent late for want of a free connection (not in these columns)",
                        fmt_latency(l.max),
                        o.waited
                    ),
                ));
            }
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
        out.extend(self.added_over_direct());
        out
    }

    /// For each open-loop proxy row whose variant has an open-loop `direct` row: the proxy's
    /// percentiles minus direct's (from the scheduled time in the cells, from the actual send in
    /// the note). A difference of percentiles, not a percentile of differences.
    fn added_over_direct(&self) -> Vec<[String; 9]> {
        let mut out = Vec::new();
        for r in &self.rows {
            let Some(open) = &r.open else { continue };
            if r.proxy == "direct" || r.rps.is_none() {
                continue;
            }
            let Some(direct) = self
                .rows
                .iter()
                .find(|d| d.proxy == "direct" && d.variant == r.variant && d.open.is_some())
            else {
                continue;
            };
            let Some(dopen) = &direct.open else { continue };
            let label = format!("{}: added over direct", r.label());
            if r.errors > 0 || direct.errors > 0 {
                let note = "not compared: a row has failed requests".to_owned();
                out.push(latency_line(label, Default::default(), note));
                continue;
            }
            let (f, g) = (open.from_send, dopen.from_send);
            out.push(latency_line(
                label,
                [
                    fmt_added(r.p50, direct.p50),
                    fmt_added(r.p99, direct.p99),
                    fmt_added(r.p999, direct.p999),
                ],
                format!(
                    "{} p50, {} p99 from the actual send; difference of percentiles",
                    fmt_added(f.p50, g.p50),
                    fmt_added(f.p99, g.p99)
                ),
            ));
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
        // A section of facts alone (allocations) has no table.
        if !rows.is_empty() {
            out.push_str(&line(&HEADER.map(String::from)));
        }
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

/// The waypoint/Envoy bulk fact of a section: throughput and CPU per GiB, each given as
/// `(GiB/s, CPU s per GiB)` (CPU when it was measured).
pub fn bulk_ratio_fact(
    waypoint: (f64, Option<f64>),
    envoy: (f64, Option<f64>),
) -> (String, String) {
    let cpu = match (waypoint.1, envoy.1) {
        (Some(w), Some(e)) if e > 0.0 => format!("{:.2}x", w / e),
        _ => "-".into(),
    };
    (
        "ratio waypoint/envoy bulk".into(),
        format!(
            "throughput {:.2}x (higher is better), CPU per GiB {cpu} (lower is better)",
            waypoint.0 / envoy.0.max(1e-9)
        ),
    )
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
             from the scheduled send time, with a line from the actual send, the generator's own \
             lateness and the added latency over direct under it). CPU is the proxy process's \
             user+system time inside the measured window; RSS is its peak (VmHWM) over its life. \
             The `ratio` rows divide waypoint by Envoy.\n",
        );
        for sec in &self.sections {
            let _ = write!(out, "\n## {}\n\n{}\n", sec.name, sec.description);
            let rows = sec.table();
            if !rows.is_empty() {
                let _ = writeln!(out, "\n| {} |", HEADER.join(" | "));
                let _ = writeln!(out, "|{}", "---|".repeat(HEADER.len()));
            }
            for r in rows {
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
    fn a_section_of_facts_alone_prints_no_empty_table() {
        let facts = Section {
            name: "allocations".into(),
            description: "per request".into(),
            facts: vec![("through the waypoint".into(), "49.0 allocations".into())],
            ..Default::default()
        };
        let report = Report {
            sections: vec![facts.clone()],
            ..Default::default()
        };
        let markdown = report.markdown();
        assert!(
            markdown.contains(
                "## allocations\n\nper request\n\n- through the waypoint: 49.0 allocations"
            ),
            "{markdown}"
        );
        assert!(!markdown.contains("| row |"), "{markdown}");
        let text = facts.text();
        assert_eq!(
            text,
            "== allocations ==\n  through the waypoint: 49.0 allocations\n"
        );
        // A section with rows keeps its header.
        assert!(
            section()
                .text()
                .lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("row"))
        );
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

    fn open_row(proxy: &str, p50_us: u64, send_p50_us: u64) -> Row {
        let mut r = row(proxy, "", 1000.0, p50_us, 0.1, 10.0);
        let us = |n| Some(Duration::from_micros(n));
        r.open = Some(OpenRow {
            from_send: Percentiles {
                p50: us(send_p50_us),
                p99: us(send_p50_us * 2),
                p999: us(send_p50_us * 3),
                max: us(send_p50_us * 10),
            },
            lateness: Percentiles {
                p50: us(3),
                p99: us(9),
                p999: us(40),
                max: us(250),
            },
            waited: 2,
        });
        r
    }

    #[test]
    fn open_loop_rows_show_from_send_lateness_and_added_latency_over_direct() {
        let s = Section {
            rows: vec![
                open_row("waypoint", 90, 80),
                open_row("envoy", 150, 140),
                open_row("direct", 40, 35),
            ],
            ..Default::default()
        };
        let t = s.table();
        let labels: Vec<&str> = t.iter().map(|r| r[0].as_str()).collect();
        assert_eq!(
            labels,
            [
                "waypoint",
                "waypoint: from actual send",
                "waypoint: generator lateness",
                "envoy",
                "envoy: from actual send",
                "envoy: generator lateness",
                "direct",
                "direct: from actual send",
                "direct: generator lateness",
                "ratio waypoint/envoy",
                "waypoint: added over direct",
                "envoy: added over direct",
            ]
        );
        assert_eq!(t[1][2..5], ["80 µs", "160 µs", "240 µs"]);
        assert_eq!(t[1][8], "max 800 µs");
        assert_eq!(t[2][2..5], ["3 µs", "9 µs", "40 µs"]);
        assert!(t[2][8].contains("max 250 µs; 2 sent late"), "{}", t[2][8]);
        // From the scheduled time: 90 - 40 at p50, 360 - 160 at p99; from send in the note.
        assert_eq!(t[10][2..5], ["+50 µs", "+200 µs", "+0 µs"]);
        assert!(t[10][8].starts_with("+45 µs p50, +90 µs p99 from the actual send"));
        assert_eq!(t[11][2], "+110 µs");
        // A closed-loop table (no open rows) gets none of these lines.
        assert!(section().table().iter().all(|r| !r[0].contains(':')));
    }

    #[test]
    fn added_latency_is_not_computed_over_failed_requests_and_can_be_negative() {
        let mut failing = open_row("waypoint", 90, 80);
        failing.errors = 1;
        let s = Section {
            rows: vec![
                failing,
                open_row("envoy", 30, 20),
                open_row("direct", 40, 35),
            ],
            ..Default::default()
        };
        let t = s.table();
        let added: Vec<&[String; 9]> = t.iter().filter(|r| r[0].ends_with("over direct")).collect();
        assert_eq!(added.len(), 2);
        assert!(added[0][8].starts_with("not compared"));
        assert_eq!(added[1][2], "-10 µs");
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

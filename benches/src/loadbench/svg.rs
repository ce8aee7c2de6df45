//! Latency CDF plots as standalone SVG: one polyline per row, latency on a log x-axis, the
//! fraction of requests at or below it on the y-axis.

use std::fmt::Write;

use super::report::Row;

const W: f64 = 760.0;
const H: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn decade_label(exp: i32) -> String {
    // exp is log10 of seconds.
    match exp {
        e if e <= -6 => format!("{} µs", 10f64.powi(e + 6).round()),
        -5 => "10 µs".into(),
        -4 => "100 µs".into(),
        -3 => "1 ms".into(),
        -2 => "10 ms".into(),
        -1 => "100 ms".into(),
        0 => "1 s".into(),
        e => format!("{} s", 10f64.powi(e)),
    }
}

/// The plot of every row that has a CDF; `None` when no row has one.
pub fn cdf_plot(title: &str, rows: &[Row]) -> Option<String> {
    let lines: Vec<&Row> = rows.iter().filter(|r| !r.cdf.is_empty()).collect();
    if lines.is_empty() {
        return None;
    }
    let all = lines
        .iter()
        .flat_map(|r| r.cdf.iter().map(|p| p.0.as_secs_f64()));
    let (mut lo, mut hi) = (f64::MAX, f64::MIN);
    for v in all {
        let v = v.max(1e-7);
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let lo_exp = lo.log10().floor() as i32;
    let hi_exp = (hi.log10().ceil() as i32).max(lo_exp + 1);
    let x = |secs: f64| {
        let l = secs.max(1e-7).log10();
        LEFT + (l - f64::from(lo_exp)) / f64::from(hi_exp - lo_exp) * (W - LEFT - RIGHT)
    };
    let y = |frac: f64| TOP + (1.0 - frac) * (H - TOP - BOTTOM);

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        escape(title)
    );
    // Grid: decades on x, tenths on y.
    for e in lo_exp..=hi_exp {
        let gx = x(10f64.powi(e));
        let _ = writeln!(
            s,
            r##"<line x1="{gx:.1}" y1="{TOP}" x2="{gx:.1}" y2="{:.1}" stroke="#ddd"/><text x="{gx:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 16.0,
            decade_label(e)
        );
    }
    for i in 0..=10 {
        let f = f64::from(i) / 10.0;
        let gy = y(f);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}%</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            gy + 4.0,
            f * 100.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">latency (log scale)</text>"#,
        (LEFT + W - RIGHT) / 2.0,
        H - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">requests at or below</text>"#,
        H / 2.0,
        H / 2.0
    );
    for (i, row) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut points = String::new();
        // Start the line at 0 % just left of the first bucket so the step is visible.
        if let Some(first) = row.cdf.first() {
            let _ = write!(points, "{:.1},{:.1} ", x(first.0.as_secs_f64()), y(0.0));
        }
        for (lat, frac) in &row.cdf {
            let _ = write!(points, "{:.1},{:.1} ", x(lat.as_secs_f64()), y(*frac));
        }
        let label = if row.variant.is_empty() {
            row.proxy.clone()
        } else {
            format!("{} ({})", row.proxy, row.variant)
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"><title>{}</title></polyline>"#,
            points.trim_end(),
            escape(&label)
        );
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = W - RIGHT + 14.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            lx + 22.0,
            lx + 28.0,
            ly + 4.0,
            escape(&label)
        );
    }
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="black"/>"#,
        W - LEFT - RIGHT,
        H - TOP - BOTTOM
    );
    s.push_str("</svg>\n");
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_line_per_row_on_a_log_axis() {
        let mk = |proxy: &str, base_us: u64| Row {
            proxy: proxy.into(),
            cdf: vec![
                (Duration::from_micros(base_us), 0.5),
                (Duration::from_micros(base_us * 10), 0.99),
                (Duration::from_micros(base_us * 100), 1.0),
            ],
            ..Default::default()
        };
        let rows = vec![
            mk("waypoint", 100),
            mk("envoy <&>", 200),
            Row::failed("direct", "", "x"),
        ];
        let svg = cdf_plot("sandwich-h1", &rows).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("envoy &lt;&amp;&gt;"));
        // 100 µs .. 20 ms spans the decades 100 µs .. 100 ms, each labelled once.
        for label in ["100 µs", "1 ms", "10 ms", "100 ms"] {
            assert_eq!(svg.matches(&format!(">{label}<")).count(), 1, "{label}");
        }
        // Equal steps in log latency are equal steps in x: 100 µs→1 ms and 1 ms→10 ms.
        let x = |frac_pts: &str| -> Vec<f64> {
            frac_pts
                .split(' ')
                .map(|p| p.split(',').next().unwrap().parse().unwrap())
                .collect()
        };
        let first = svg.split("points=\"").nth(1).unwrap();
        let pts = x(first.split('"').next().unwrap());
        assert!(
            ((pts[2] - pts[1]) - (pts[3] - pts[2])).abs() < 0.2,
            "{pts:?}"
        );
        assert!(cdf_plot("empty", &[Row::failed("x", "", "y")]).is_none());
    }
}

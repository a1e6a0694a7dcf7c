//! The plot of the results file: a hand-written SVG (no plotting dependency) with two bar
//! charts side by side — requests/s per scenario (closed loop, median, min–max whisker, the
//! 0.85 × bare goal dashed) and p99 at half load on a log scale (open loop; the cache-miss
//! scenario's closed-loop p99, marked).

use crate::report::{Results, summarize};
use std::fmt::Write as _;

const WIDTH: f64 = 960.0;
const ROW: f64 = 30.0;
const TOP: f64 = 64.0;
const LABEL: f64 = 250.0;
const PANEL: f64 = 300.0;
const GAP: f64 = 60.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" axis maximum ≥ `v` (1, 2 or 5 × 10ⁿ).
pub fn nice_max(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|m| *m >= v)
        .unwrap_or(10.0 * mag)
}

/// Decades of the log-scale latency axis: (lowest, highest) power of ten in µs covering
/// `lo..=hi`.
pub fn decades(lo: f64, hi: f64) -> (i32, i32) {
    let floor = if lo.is_finite() && lo > 0.0 {
        lo.log10().floor() as i32
    } else {
        2
    };
    let ceil = if hi.is_finite() && hi > 0.0 {
        hi.log10().ceil() as i32
    } else {
        3
    };
    (floor.min(2), ceil.max(floor.min(2) + 1))
}

/// The SVG document.
pub fn plot(r: &Results) -> String {
    let s = summarize(r);
    let height = TOP + ROW * (s.len().max(1) as f64) + 50.0;
    let left0 = LABEL;
    let left1 = LABEL + PANEL + GAP;
    let rps_max = nice_max(s.iter().map(|x| x.rps.hi).fold(0.0, f64::max));
    let p99 = |x: &crate::report::Summary| x.open.map_or((x.p99, true), |o| (o.p99, false));
    let (d_lo, d_hi) = decades(
        s.iter().map(|x| p99(x).0).fold(f64::INFINITY, f64::min),
        s.iter().map(|x| p99(x).0).fold(0.0, f64::max),
    );
    // Position of a latency on the log axis, 0..=PANEL.
    let lat_x = |v: f64| {
        let v = v.max(10f64.powi(d_lo));
        PANEL * (v.log10() - f64::from(d_lo)) / f64::from(d_hi - d_lo)
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">Portcullis benchmark {} ({} run)</text>"#,
        esc(&r.meta.date),
        esc(&r.meta.mode)
    );
    let _ = writeln!(
        out,
        r#"<text x="{left0}" y="{}" font-weight="bold">requests/s (closed loop, median; whisker: min–max)</text>"#,
        TOP - 14.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{left1}" y="{}" font-weight="bold">p99 µs at half load ({:.0} req/s, open loop; log scale)</text>"#,
        TOP - 14.0,
        r.meta.half_rate
    );
    for (k, x) in s.iter().enumerate() {
        let y = TOP + ROW * k as f64;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end">{} {}</text>"#,
            LABEL - 8.0,
            y + ROW * 0.6,
            esc(x.row.id),
            esc(x.row.name)
        );
        // Requests/s.
        let w = PANEL * x.rps.median / rps_max;
        let _ = writeln!(
            out,
            r##"<rect x="{left0}" y="{}" width="{w:.1}" height="{}" fill="#4e79a7"/>"##,
            y + 4.0,
            ROW - 8.0
        );
        let (lo, hi) = (
            left0 + PANEL * x.rps.lo / rps_max,
            left0 + PANEL * x.rps.hi / rps_max,
        );
        let mid = y + ROW / 2.0;
        let _ = writeln!(
            out,
            r##"<line x1="{lo:.1}" y1="{mid}" x2="{hi:.1}" y2="{mid}" stroke="#222" stroke-width="1.5"/>"##
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" >{:.0}</text>"#,
            left0 + w.max(hi - left0) + 4.0,
            y + ROW * 0.6,
            x.rps.median
        );
        // p99.
        let (lat, closed) = p99(x);
        let w = lat_x(lat);
        let colour = if closed { "#bab0ac" } else { "#f28e2b" };
        let _ = writeln!(
            out,
            r#"<rect x="{left1}" y="{}" width="{w:.1}" height="{}" fill="{colour}"/>"#,
            y + 4.0,
            ROW - 8.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}">{:.0}{}</text>"#,
            left1 + w + 4.0,
            y + ROW * 0.6,
            lat,
            if closed {
                " (closed loop, full load)"
            } else {
                ""
            }
        );
    }
    let axis_y = TOP + ROW * s.len() as f64 + 4.0;
    for left in [left0, left1] {
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{axis_y}" x2="{}" y2="{axis_y}" stroke="#888"/>"##,
            left + PANEL
        );
    }
    for t in 0..=4 {
        let x = left0 + PANEL * f64::from(t) / 4.0;
        let _ = writeln!(
            out,
            r##"<text x="{x:.1}" y="{}" text-anchor="middle" fill="#555">{:.0}</text>"##,
            axis_y + 16.0,
            rps_max * f64::from(t) / 4.0
        );
    }
    for d in d_lo..=d_hi {
        let x = left1 + lat_x(10f64.powi(d));
        let _ = writeln!(
            out,
            r##"<text x="{x:.1}" y="{}" text-anchor="middle" fill="#555">{:.0}</text>"##,
            axis_y + 16.0,
            10f64.powi(d)
        );
    }
    // The headline goal: scenario 2 at ≥ 0.85 × bare Envoy's requests/s.
    if let Some(bare) = s.first() {
        let x = left0 + PANEL * 0.85 * bare.rps.median / rps_max;
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{axis_y}" stroke="#e15759" stroke-dasharray="4 3"/>"##,
            TOP - 4.0
        );
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{}" fill="#e15759" font-size="10">0.85 × bare</text>"##,
            x + 3.0,
            TOP + 2.0
        );
    }
    let _ = writeln!(
        out,
        r##"<text x="10" y="{}" fill="#555">Same upstream, same request, same run; {} rounds. Numbers of one run only: see docs/benchmarks.md.</text>"##,
        height - 8.0,
        r.meta.rounds
    );
    let _ = writeln!(out, "</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axis_maxima() {
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(1234.0), 2000.0);
        assert_eq!(nice_max(4999.0), 5000.0);
        assert_eq!(nice_max(0.0), 1.0);
    }

    #[test]
    fn log_axis_decades_cover_the_values() {
        assert_eq!(decades(350.0, 63_000.0), (2, 5));
        assert_eq!(decades(20.0, 90.0), (1, 2));
        assert_eq!(decades(f64::INFINITY, 0.0), (2, 3));
    }

    #[test]
    fn the_plot_is_an_svg_with_a_bar_pair_per_scenario() {
        let r = crate::report::tests::results();
        let svg = plot(&r);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Background + 2 bars per measured configuration.
        assert_eq!(svg.matches("<rect").count(), 1 + 2 * r.rows.len());
        assert!(svg.contains(">1 bare</text>"));
        // Scenario "4" had no open-loop run: its p99 bar is the closed loop's, labelled so.
        assert!(svg.contains("(closed loop, full load)"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }
}

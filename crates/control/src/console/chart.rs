//! A bar chart as inline SVG, drawn on the server: one group of bars per day, one bar per
//! series (usage mode). Colours come from the stylesheet's classes (`.s0` …), so the page
//! needs no inline style and no script.

use maud::{html, Markup};

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const LEFT: f64 = 56.0;
const BOTTOM: f64 = 36.0;
const TOP: f64 = 12.0;

/// One series: its label and a value per day.
pub(super) struct Series<'a> {
    pub label: &'a str,
    pub values: Vec<f64>,
}

/// Bars for `days` (labels along the x axis) and `series`, with a y axis from 0 to the
/// largest value; `title` is the chart's accessible name.
pub(super) fn bars(title: &str, days: &[String], series: &[Series<'_>]) -> Markup {
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0_f64, f64::max);
    let top = nice_ceiling(max);
    let plot_w = WIDTH - LEFT - 8.0;
    let plot_h = HEIGHT - BOTTOM - TOP;
    let group = plot_w / days.len().max(1) as f64;
    let bar = (group * 0.8 / series.len().max(1) as f64).max(1.0);
    let y = |v: f64| TOP + plot_h - (v / top) * plot_h;
    // Every few days a label, so they do not overlap.
    let label_every = (days.len() / 8).max(1);
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) }
            role="img" aria-label=(title) {
            title { (title) }
            @for i in 0..=4 {
                @let v = top * f64::from(i) / 4.0;
                // `{}`, not `;`: inline SVG is parsed as HTML, where `<line>` and `<rect>` are not
                // void, so an unclosed one would swallow the rest of the chart.
                line.grid x1=(LEFT) x2=(WIDTH - 8.0) y1=(y(v)) y2=(y(v)) {}
                text.axis x=(LEFT - 6.0) y=(y(v) + 4.0) text-anchor="end" { (fmt(v)) }
            }
            @for (d, day) in days.iter().enumerate() {
                @let x0 = LEFT + group * d as f64 + group * 0.1;
                @for (k, s) in series.iter().enumerate() {
                    @let v = s.values.get(d).copied().unwrap_or(0.0);
                    @if v > 0.0 {
                        // A visible sliver even for a few seconds of use.
                        @let h = ((v / top) * plot_h).max(2.0);
                        rect class={ "s" (k) } x=(x0 + bar * k as f64) y=(TOP + plot_h - h)
                            width=(bar) height=(h) {
                            title { (day) " " (s.label) ": " (fmt(v)) }
                        }
                    }
                }
                @if d % label_every == 0 {
                    text.axis x=(x0 + group * 0.4) y=(HEIGHT - BOTTOM + 16.0) text-anchor="middle" {
                        (day.get(5..).unwrap_or(day))
                    }
                }
            }
            @for (k, s) in series.iter().enumerate() {
                rect class={ "s" (k) } x=(LEFT + 150.0 * k as f64) y=(HEIGHT - 14.0) width="10" height="10" {}
                text.axis x=(LEFT + 14.0 + 150.0 * k as f64) y=(HEIGHT - 5.0) { (s.label) }
            }
        }
    }
}

/// 1, 2 or 5 times a power of ten at or above `v` (at least 1).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 1.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

fn fmt(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_are_round() {
        assert_eq!(nice_ceiling(0.3), 1.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(12.0), 20.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }

    #[test]
    fn a_bar_per_nonzero_value_and_escaped_labels() {
        let days = vec!["2026-12-01".to_owned(), "2026-12-02".to_owned()];
        let svg = bars(
            "<b>",
            &days,
            &[Series {
                label: "Force TCP",
                values: vec![0.0, 3.0],
            }],
        )
        .into_string();
        assert_eq!(svg.matches("<rect class=\"s0\"").count(), 2, "{svg}"); // bar + legend
        assert!(svg.contains("aria-label=\"&lt;b&gt;\""));
        assert!(!svg.contains("<b>"));
        // Every element closed: an HTML parser does not self-close SVG's `<line>` or `<rect>`.
        assert_eq!(
            svg.matches("<line").count(),
            svg.matches("</line>").count(),
            "{svg}"
        );
        assert_eq!(
            svg.matches("<rect").count(),
            svg.matches("</rect>").count(),
            "{svg}"
        );
    }
}

//! The SVG and bars drawn on the server: the list's response-time
//! sparklines, a service's response-time chart (axes, units, a `<title>`
//! per point for the value on hover) and the bar of its last checks (one
//! colour per result, the reason on hover). No script draws anything.

use crate::clock::rfc3339;
use crate::store::CheckRecord;
use healthchecker_core::CheckResult;
use maud::{html, Markup};

/// Checks in the bar of a service page.
pub(super) const BAR: usize = 50;
/// Checks in the response-time chart.
pub(super) const CHART: usize = 120;

fn ms(c: &CheckRecord) -> f64 {
    c.duration_us as f64 / 1000.0
}

fn short_time(at: i64) -> String {
    let t = rfc3339(at);
    t.get(11..19).unwrap_or(&t).to_string()
}

fn hover(c: &CheckRecord) -> String {
    let mut s = format!(
        "{} UTC: {} in {:.1} ms",
        rfc3339(c.at)
            .get(..19)
            .unwrap_or_default()
            .replace('T', " "),
        c.result.as_str(),
        ms(c)
    );
    if let Some(r) = &c.reason {
        s.push_str(" — ");
        s.push_str(r);
    }
    s
}

/// A response-time sparkline: a polyline of durations, failures as red dots.
pub(super) fn sparkline(checks: &[CheckRecord], w: f64, h: f64) -> Markup {
    if checks.is_empty() {
        return html! { span class="reason" { "no checks yet" } };
    }
    let max = checks
        .iter()
        .map(|c| c.duration_us)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let step = if checks.len() > 1 {
        w / (checks.len() - 1) as f64
    } else {
        0.0
    };
    let pts: Vec<(f64, f64)> = checks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                i as f64 * step,
                h - 2.0 - (c.duration_us as f64 / max) * (h - 4.0),
            )
        })
        .collect();
    let line: String = pts
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ");
    let label = format!(
        "response time, last {} checks, max {:.1} ms",
        checks.len(),
        max / 1000.0
    );
    html! {
        svg class="spark" width=(w) height=(h) viewBox={"0 0 " (w) " " (h)} role="img" aria-label=(label) {
            title { (label) }
            polyline points=(line) fill="none" stroke="#0969da" stroke-width="1.5" {}
            @for (c, (x, y)) in checks.iter().zip(&pts) {
                @if c.result == CheckResult::Fail {
                    circle class="fail-dot" cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="2.5" fill="#cf222e" {}
                }
            }
        }
    }
}

/// A round top for the y axis: 1, 2 or 5 times a power of ten.
fn nice_ceiling(v: f64) -> f64 {
    let v = v.max(0.001);
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * p)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * p)
}

/// The response-time chart of a service page (checks oldest first): a y
/// axis in milliseconds with gridlines, an x axis with the first and last
/// check's time (UTC), and one point per check whose `<title>` gives its
/// time, result, duration and reason on hover.
pub(super) fn chart(checks: &[CheckRecord]) -> Markup {
    if checks.is_empty() {
        return html! { p { "No checks yet." } };
    }
    let (w, h) = (900.0, 220.0);
    let (left, right, top, bottom) = (58.0, 12.0, 12.0, 34.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let max = nice_ceiling(checks.iter().map(ms).fold(0.0, f64::max));
    let step = if checks.len() > 1 {
        pw / (checks.len() - 1) as f64
    } else {
        0.0
    };
    let pt = |i: usize, c: &CheckRecord| {
        (
            left + i as f64 * step,
            top + ph - (ms(c) / max).min(1.0) * ph,
        )
    };
    let line: String = checks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (x, y) = pt(i, c);
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    let ticks = [0.0, 0.25, 0.5, 0.75, 1.0];
    let label = format!(
        "response time in milliseconds of the last {} checks, from {} to {} UTC",
        checks.len(),
        rfc3339(checks[0].at),
        rfc3339(checks[checks.len() - 1].at)
    );
    html! {
        figure {
            svg class="chart" width="100%" viewBox={"0 0 " (w) " " (h)} role="img" aria-label=(label) preserveAspectRatio="xMidYMid meet" {
                title { (label) }
                @for t in ticks {
                    @let y = top + ph - t * ph;
                    line class="grid" x1=(left) x2=(w - right) y1=(format!("{y:.1}")) y2=(format!("{y:.1}")) {}
                    text x=(left - 6.0) y=(format!("{:.1}", y + 4.0)) text-anchor="end" { (fmt_ms(t * max)) }
                }
                line class="axis" x1=(left) x2=(left) y1=(top) y2=(top + ph) {}
                line class="axis" x1=(left) x2=(w - right) y1=(top + ph) y2=(top + ph) {}
                text x="12" y=(top + ph / 2.0) text-anchor="middle" transform={"rotate(-90 12 " (top + ph / 2.0) ")"} { "ms" }
                text x=(left) y=(h - 10.0) { (short_time(checks[0].at)) " UTC" }
                text x=(w - right) y=(h - 10.0) text-anchor="end" { (short_time(checks[checks.len() - 1].at)) " UTC" }
                text x=(left + pw / 2.0) y=(h - 10.0) text-anchor="middle" { "time of check" }
                polyline class="line" points=(line) {}
                @for (i, c) in checks.iter().enumerate() {
                    @let (x, y) = pt(i, c);
                    circle class={"pt" @if c.result == CheckResult::Fail { " fail" }} cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="3" {
                        title { (hover(c)) }
                    }
                }
            }
            figcaption class="reason" {
                "Response time (ms) of the last " (checks.len()) " checks; red points are failures. Hover a point for its value."
            }
        }
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

/// The bar of the last checks (oldest first): one block per check coloured
/// by its result, with its time, result, duration and reason as `title`.
pub(super) fn check_bar(checks: &[CheckRecord]) -> Markup {
    if checks.is_empty() {
        return html! { p class="reason" { "No checks yet." } };
    }
    let fails = checks
        .iter()
        .filter(|c| c.result == CheckResult::Fail)
        .count();
    let label = format!(
        "last {} checks: {} failed, {} passed or warned",
        checks.len(),
        fails,
        checks.len() - fails
    );
    html! {
        div class="checkbar" id="checkbar" role="img" aria-label=(label) {
            @for c in checks {
                span class={"r-" (c.result.as_str())} data-result=(c.result.as_str()) title=(hover(c)) {}
            }
        }
        p class="reason" { (label) " (oldest left; hover a block for its reason)." }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_y_axis_ends_on_a_round_number() {
        for (v, top) in [
            (0.0, 0.001),
            (0.7, 1.0),
            (3.2, 5.0),
            (12.0, 20.0),
            (99.0, 100.0),
            (101.0, 200.0),
        ] {
            assert!(
                (nice_ceiling(v) - top).abs() < 1e-9,
                "{v} -> {}",
                nice_ceiling(v)
            );
        }
    }
}

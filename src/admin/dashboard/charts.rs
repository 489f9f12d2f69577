//! Charts drawn on the server as SVG geometry: the templates (`charts.html`) place these
//! numbers and escape every label, so no script and no inline style is needed.

/// The drawing's coordinate system; CSS scales it to the page.
pub const WIDTH: f64 = 640.0;
const LINE_HEIGHT: f64 = 200.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 26.0;

/// Short decimals keep the SVG small.
fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub struct Tick {
    pub pos: f64,
    pub label: String,
}

pub struct Point {
    pub x: f64,
    pub y: f64,
}

pub struct Series {
    pub name: String,
    /// CSS class giving the colour: `s1`, `s2`.
    pub class: &'static str,
    /// `M x y L x y …`: numbers only. Gaps (no data) break the line.
    pub path: String,
    /// Points with no neighbour, which a line cannot show.
    pub dots: Vec<Point>,
}

pub struct LineChart {
    pub id: &'static str,
    pub title: String,
    /// A sentence for screen readers, and under the chart.
    pub description: String,
    pub series: Vec<Series>,
    pub x_ticks: Vec<Tick>,
    pub y_ticks: Vec<Tick>,
    pub empty: bool,
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
}

pub struct SeriesData {
    pub name: &'static str,
    pub class: &'static str,
    pub values: Vec<Option<f64>>,
}

/// The smallest 1, 2, 2.5 or 5 × 10^k at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude)
}

/// Value axis from zero: at most five ticks at round values.
fn value_axis(max: f64, format: fn(f64) -> String) -> (f64, Vec<f64>, Vec<String>) {
    let step = nice_step(max / 4.0);
    let top = (max / step).ceil().max(1.0) * step;
    let values: Vec<f64> = (0..).map(|i| f64::from(i) * step).take_while(|v| *v <= top + step / 2.0).collect();
    let labels = values.iter().map(|v| format(*v)).collect();
    (top, values, labels)
}

/// A time series per bucket. `labels[i]` names bucket `i`; every `label_every`-th is shown.
pub fn line_chart(
    id: &'static str,
    title: impl Into<String>,
    description: String,
    labels: &[String],
    label_every: usize,
    format: fn(f64) -> String,
    data: Vec<SeriesData>,
) -> LineChart {
    let n = labels.len().max(1);
    let (right, bottom) = (WIDTH - RIGHT, LINE_HEIGHT - BOTTOM);
    let x = |i: usize| r1(LEFT + (right - LEFT) * (i as f64 + 0.5) / n as f64);
    let max = data.iter().flat_map(|s| s.values.iter().flatten()).fold(0.0f64, |a, b| a.max(*b));
    let empty = data.iter().all(|s| s.values.iter().all(Option::is_none));
    let (top_value, tick_values, tick_labels) = value_axis(max, format);
    let y = |v: f64| r1(bottom - (bottom - TOP) * (v / top_value));
    let series = data
        .into_iter()
        .map(|s| {
            let mut path = String::new();
            let mut dots = Vec::new();
            for (i, v) in s.values.iter().enumerate() {
                let Some(v) = v else { continue };
                let joined = i > 0 && s.values[i - 1].is_some();
                path.push_str(&format!("{}{} {} ", if joined { 'L' } else { 'M' }, x(i), y(*v)));
                let alone = !joined && s.values.get(i + 1).is_none_or(Option::is_none);
                if alone {
                    dots.push(Point { x: x(i), y: y(*v) });
                }
            }
            Series { name: s.name.to_string(), class: s.class, path: path.trim_end().to_string(), dots }
        })
        .collect();
    LineChart {
        id,
        title: title.into(),
        description,
        series,
        x_ticks: labels
            .iter()
            .enumerate()
            .filter(|(i, _)| i % label_every.max(1) == 0)
            .map(|(i, l)| Tick { pos: x(i), label: l.clone() })
            .collect(),
        y_ticks: tick_values.iter().zip(tick_labels).map(|(v, label)| Tick { pos: y(*v), label }).collect(),
        empty,
        width: WIDTH,
        height: LINE_HEIGHT,
        left: LEFT,
        right,
        top: TOP,
        bottom,
    }
}

/// The bar chart is narrower than the line charts: its labels stay legible on a phone.
const BAR_WIDTH: f64 = 480.0;
const BAR_ROW: f64 = 46.0;
const BAR_THICKNESS: f64 = 10.0;
/// Room for the first and last axis labels, which are centred on their ticks.
const BAR_LEFT: f64 = 28.0;
const BAR_RIGHT: f64 = 32.0;

pub struct BarRow {
    pub label: String,
    /// Printed beside the label (the margin).
    pub note: String,
    pub loss: bool,
    pub label_y: f64,
    pub first_y: f64,
    pub first_w: f64,
    pub second_y: f64,
    pub second_w: f64,
}

/// Two bars per row (revenue and cost) on one scale from zero.
pub struct BarChart {
    pub id: &'static str,
    pub title: String,
    pub description: String,
    pub rows: Vec<BarRow>,
    pub ticks: Vec<Tick>,
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub axis_y: f64,
}

pub struct BarData {
    pub label: String,
    pub note: String,
    pub loss: bool,
    pub first: f64,
    pub second: f64,
}

pub fn bar_chart(
    id: &'static str,
    title: impl Into<String>,
    description: String,
    format: fn(f64) -> String,
    data: Vec<BarData>,
) -> BarChart {
    let max = data.iter().fold(0.0f64, |a, d| a.max(d.first).max(d.second));
    let (top_value, tick_values, tick_labels) = value_axis(max, format);
    let span = BAR_WIDTH - BAR_RIGHT - BAR_LEFT;
    let w = |v: f64| r1((v.max(0.0) / top_value) * span);
    let rows: Vec<BarRow> = data
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            let y = i as f64 * BAR_ROW;
            BarRow {
                label: d.label,
                note: d.note,
                loss: d.loss,
                label_y: y + 14.0,
                first_y: y + 19.0,
                first_w: w(d.first),
                second_y: y + 19.0 + BAR_THICKNESS + 2.0,
                second_w: w(d.second),
            }
        })
        .collect();
    let axis_y = rows.len() as f64 * BAR_ROW + 4.0;
    BarChart {
        id,
        title: title.into(),
        description,
        ticks: tick_values
            .iter()
            .zip(tick_labels)
            .map(|(v, label)| Tick { pos: r1(BAR_LEFT + (v / top_value) * span), label })
            .collect(),
        rows,
        width: BAR_WIDTH,
        height: axis_y + 20.0,
        left: BAR_LEFT,
        axis_y,
    }
}

/// A customer's month by UTC day from the rollup: requests, and cost (called `cost_label`:
/// the operator's upstream cost is what the customer's budget counts as spend). Days after
/// today are left blank, not drawn as zero. The admin's customer page and the portal share it.
pub fn daily_usage(
    month: &str,
    days: &std::ops::Range<chrono::NaiveDate>,
    daily: &[crate::store::DailyUsage],
    cost_label: &str,
) -> Vec<LineChart> {
    let today = chrono::Utc::now().date_naive();
    let month_days = || days.start.iter_days().take_while(|d| *d < days.end);
    let labels: Vec<String> = month_days().map(|d| d.format("%d").to_string()).collect();
    let per_day = |f: fn(&crate::store::DailyUsage) -> f64| -> Vec<Option<f64>> {
        month_days()
            .map(|d| {
                let key = crate::store::day_key(d);
                let value = daily.iter().find(|u| u.day == key).map(f);
                if d > today { None } else { Some(value.unwrap_or(0.0)) }
            })
            .collect()
    };
    let requests = per_day(|u| u.requests as f64);
    let cost = per_day(|u| u.cost_nano as f64 / 1e9);
    let whole = |n: f64| super::format::count(n as i64);
    vec![
        line_chart(
            "daily-requests",
            "Requests per day",
            format!("Requests per day in {month}."),
            &labels,
            5,
            whole,
            vec![SeriesData { name: "requests", class: "s1", values: requests }],
        ),
        line_chart(
            "daily-cost",
            format!("{cost_label} per day"),
            format!("{cost_label} per day in {month}."),
            &labels,
            5,
            super::format::usd,
            vec![SeriesData { name: "cost", class: "s2", values: cost }],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(x: f64) -> String {
        format!("{x}")
    }

    #[test]
    fn axes_end_on_round_values() {
        assert_eq!(nice_step(0.3), 0.5);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(2.2), 2.5);
        let (top, ticks, _) = value_axis(37.0, plain);
        assert_eq!(top, 40.0);
        assert_eq!(ticks, vec![0.0, 10.0, 20.0, 30.0, 40.0]);
        let (top, _, _) = value_axis(0.0, plain);
        assert!(top > 0.0, "an empty chart still has a scale");
    }

    #[test]
    fn gaps_break_lines_and_lone_points_get_dots() {
        let labels: Vec<String> = (0..5).map(|i| i.to_string()).collect();
        let chart = line_chart(
            "t",
            "t",
            String::new(),
            &labels,
            1,
            plain,
            vec![SeriesData { name: "a", class: "s1", values: vec![Some(1.0), Some(2.0), None, Some(3.0), None] }],
        );
        let s = &chart.series[0];
        assert_eq!(s.path.matches('M').count(), 2);
        assert_eq!(s.path.matches('L').count(), 1);
        assert_eq!(s.dots.len(), 1);
        assert!(!chart.empty);
    }
}

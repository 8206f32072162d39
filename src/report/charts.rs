//! The report's charts, drawn as SVG with plotters from the output tables.
//! Each function takes the table(s) as written and returns one [`Chart`], or
//! `None` when the table has nothing to draw (no model, no holdout).

use plotters::prelude::*;
use polars::prelude::*;

use super::{floats, ints, strings};

const SIZE: (u32, u32) = (760, 380);
const FONT: &str = "sans-serif";

/// One chart of the report: an element id, a title, a caption and the inline SVG.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Chart {
    pub id: &'static str,
    pub title: String,
    pub caption: String,
    pub svg: String,
}

type Drawn = Result<(), Box<dyn std::error::Error>>;

/// Runs `draw` on a fresh white SVG canvas and returns the SVG text.
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<SVGBackend, plotters::coord::Shift>) -> Drawn,
) -> PolarsResult<String> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        let drawn: Drawn = (|| {
            root.fill(&WHITE)?;
            draw(root.clone())?;
            root.present()?;
            Ok(())
        })();
        drawn.map_err(|e| polars_err!(ComputeError: "drawing a chart: {e}"))?;
    }
    Ok(text)
}

type Plot<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The series legend, in one style for every chart.
fn legend<'a, 'b: 'a>(chart: &mut Plot<'a, 'b>, position: SeriesLabelPosition) -> Drawn {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 11))
        .draw()?;
    Ok(())
}

/// White (0) to dark blue (1).
fn blue(level: f64) -> RGBColor {
    let t = level.clamp(0.0, 1.0);
    let mix = |from: f64, to: f64| (from + (to - from) * t).round() as u8;
    RGBColor(mix(247.0, 8.0), mix(251.0, 48.0), mix(255.0, 107.0))
}

fn series_color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLORS[i % COLORS.len()]
}

/// Category labels left of the plot, one per row, centred on it: plotters puts
/// numeric axis labels at round values, not at categories.
fn row_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    at: impl Fn(f64) -> (i32, i32),
    labels: &[String],
    every: usize,
) -> Drawn
where
    DB::ErrorType: 'static,
{
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let style = TextStyle::from((FONT, 11)).pos(Pos::new(HPos::Right, VPos::Center));
    let rows = labels.len();
    for (row, label) in labels.iter().enumerate().step_by(every.max(1)) {
        let (x, y) = at((rows - 1 - row) as f64 + 0.5);
        root.draw(&Text::new(label.clone(), (x - 6, y), style.clone()))?;
    }
    Ok(())
}

/// The cohorts to draw lines for: up to `n` with at least two periods, evenly
/// spread from the first to the last, so long and short histories both show.
fn spread_cohorts(cohort: &DataFrame, n: usize) -> PolarsResult<Vec<String>> {
    let names = strings(cohort, "cohort")?;
    let index = ints(cohort, "period_index")?;
    let mut with_two: Vec<String> = names
        .iter()
        .zip(&index)
        .filter(|(_, k)| k.is_some_and(|k| k >= 1))
        .map(|(c, _)| c.clone())
        .collect();
    with_two.dedup();
    with_two.sort();
    with_two.dedup();
    if with_two.len() <= n {
        return Ok(with_two);
    }
    let last = with_two.len() - 1;
    let mut chosen: Vec<String> = (0..n).map(|i| with_two[i * last / (n - 1)].clone()).collect();
    chosen.dedup();
    Ok(chosen)
}

/// Retention rate by cohort (rows) and periods since the first purchase (columns).
pub fn retention_heatmap(cohort: &DataFrame) -> PolarsResult<Option<Chart>> {
    let names = strings(cohort, "cohort")?;
    let index = ints(cohort, "period_index")?;
    let rate = floats(cohort, "retention_rate")?;
    if names.is_empty() {
        return Ok(None);
    }
    let mut cohorts = names.clone();
    cohorts.sort();
    cohorts.dedup();
    let periods = index.iter().flatten().max().copied().unwrap_or(0) + 1;
    // Colour against the best repeat-period rate, so the shades show more than period 0's 100%.
    let top = index
        .iter()
        .zip(&rate)
        .filter(|(k, _)| k.is_some_and(|k| k >= 1))
        .filter_map(|(_, r)| *r)
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let rows = cohorts.len();
    let svg = svg((SIZE.0, (140 + 18 * rows as u32).clamp(260, 900)), |root| {
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..periods as f64, 0f64..rows as f64)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("periods since first purchase")
            .x_labels(periods.min(24) as usize)
            .x_label_formatter(&|x| format!("{}", x.floor() as i64))
            .y_labels(0)
            .label_style((FONT, 11))
            .draw()?;
        row_labels(
            &root,
            |y| chart.backend_coord(&(0.0, y)),
            &cohorts,
            rows.div_ceil(40),
        )?;
        chart.draw_series(names.iter().zip(&index).zip(&rate).filter_map(|((c, k), r)| {
            let (k, r) = ((*k)?, (*r)?);
            let row = cohorts.binary_search(c).ok()?;
            let y = (rows - 1 - row) as f64;
            let color = if k == 0 {
                RGBColor(200, 200, 200)
            } else {
                blue(r / top)
            };
            Some(Rectangle::new(
                [(k as f64, y), (k as f64 + 1.0, y + 1.0)],
                color.filled(),
            ))
        }))?;
        Ok(())
    })?;
    Ok(Some(Chart {
        id: "retention-heatmap",
        title: "Cohort retention".into(),
        caption: format!(
            "Share of each cohort buying in each period (darker = higher; darkest = {:.1}%). Period 0, the acquisition period, is grey.",
            top * 100.0
        ),
        svg,
    }))
}

/// One line per recent cohort of `column` against the period index.
fn cohort_lines(
    cohort: &DataFrame,
    column: &str,
    y_desc: &str,
    id: &'static str,
    title: &str,
    caption: &str,
) -> PolarsResult<Option<Chart>> {
    let chosen = spread_cohorts(cohort, 8)?;
    if chosen.is_empty() {
        return Ok(None);
    }
    let names = strings(cohort, "cohort")?;
    let index = ints(cohort, "period_index")?;
    let values = floats(cohort, column)?;
    let lines: Vec<(String, Vec<(f64, f64)>)> = chosen
        .iter()
        .map(|c| {
            let points = names
                .iter()
                .zip(&index)
                .zip(&values)
                .filter(|((name, _), _)| *name == c)
                .filter_map(|((_, k), v)| Some(((*k)? as f64, (*v)?)))
                .collect();
            (c.clone(), points)
        })
        .collect();
    let max_x = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let max_y = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        * 1.1;
    let svg = svg(SIZE, |root| {
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..max_x, 0f64..max_y.max(1e-9))?;
        chart
            .configure_mesh()
            .x_desc("periods since first purchase")
            .y_desc(y_desc)
            .label_style((FONT, 11))
            .draw()?;
        for (i, (name, points)) in lines.iter().enumerate() {
            let color = series_color(i);
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        }
        legend(&mut chart, SeriesLabelPosition::MiddleRight)?;
        Ok(())
    })?;
    Ok(Some(Chart {
        id,
        title: title.into(),
        caption: caption.into(),
        svg,
    }))
}

pub fn revenue_retention(cohort: &DataFrame) -> PolarsResult<Option<Chart>> {
    cohort_lines(
        cohort,
        "revenue_retention",
        "revenue / acquisition-period revenue",
        "revenue-retention",
        "Revenue retention by cohort",
        "Each period's revenue from a cohort as a share of its acquisition-period revenue (up to 8 cohorts, from the first to the last with a repeat period).",
    )
}

pub fn cumulative_revenue(cohort: &DataFrame) -> PolarsResult<Option<Chart>> {
    cohort_lines(
        cohort,
        "cumulative_revenue_per_customer",
        "cumulative revenue per customer",
        "cumulative-revenue",
        "Cumulative revenue per customer by cohort",
        "Revenue to date divided by cohort size: the average historical CLV curve of each cohort.",
    )
}

/// The Lorenz curve with the point where the top customers reach 80% of revenue.
pub fn lorenz(lorenz: &DataFrame, kpis: &DataFrame) -> PolarsResult<Option<Chart>> {
    let x = floats(lorenz, "customer_share")?;
    let y = floats(lorenz, "revenue_share")?;
    let points: Vec<(f64, f64)> = x
        .iter()
        .zip(&y)
        .filter_map(|(x, y)| Some(((*x)?, (*y)?)))
        .collect();
    if points.is_empty() {
        return Ok(None);
    }
    let top_share = floats(kpis, "customers_for_80pct_share")?
        .first()
        .copied()
        .flatten();
    let gini = floats(kpis, "gini")?.first().copied().flatten();
    let svg = svg(SIZE, |root| {
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("share of customers, lowest revenue first")
            .y_desc("share of revenue")
            .label_style((FONT, 11))
            .draw()?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], BLACK.mix(0.4)))?
            .label("equality")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.mix(0.4)));
        let color = series_color(0);
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
            .label("Lorenz curve")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        if let Some(top) = top_share {
            // The top `top` of customers hold 80%: the bottom 1 − top hold 20%.
            let at = (1.0 - top, 0.2);
            let red = series_color(3);
            chart.draw_series([Circle::new(at, 5, red.filled())])?;
            chart.draw_series([Text::new(
                format!("top {:.1}% of customers → 80% of revenue", top * 100.0),
                (at.0 - 0.45, at.1 + 0.08),
                (FONT, 12).into_font().color(&red),
            )])?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    })?;
    Ok(Some(Chart {
        id: "lorenz",
        title: "Revenue concentration (Lorenz curve)".into(),
        caption: match gini {
            Some(g) => format!("Gini coefficient {g:.3}. The red point marks the 80/20 split."),
            None => "The red point marks the 80/20 split.".into(),
        },
        svg,
    }))
}

/// Horizontal grouped bars: one group per label, one bar per series.
fn grouped_bars(
    labels: &[String],
    series: &[(&str, Vec<f64>)],
    x_desc: &str,
    format_value: &dyn Fn(f64) -> String,
) -> PolarsResult<String> {
    let rows = labels.len();
    let max_x = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0, f64::max)
        * 1.15;
    let height = (90 + rows as u32 * (12 * series.len() as u32 + 14)).clamp(220, 1200);
    svg((SIZE.0, height), |root| {
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(150)
            .build_cartesian_2d(0f64..max_x.max(1e-9), 0f64..rows as f64)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc(x_desc)
            .x_label_formatter(&|x| format_value(*x))
            .y_labels(0)
            .label_style((FONT, 11))
            .draw()?;
        row_labels(&root, |y| chart.backend_coord(&(0.0, y)), labels, 1)?;
        let band = 0.8 / series.len() as f64;
        for (s, (name, values)) in series.iter().enumerate() {
            let color = series_color(s);
            chart
                .draw_series(values.iter().enumerate().map(|(row, &v)| {
                    let y0 = (rows - 1 - row) as f64 + 0.9 - band * (s as f64 + 1.0);
                    Rectangle::new([(0.0, y0), (v, y0 + band * 0.9)], color.filled())
                }))?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)?;
        Ok(())
    })
}

/// RFM segments: share of customers against share of revenue.
pub fn segments(rfm_segments: &DataFrame) -> PolarsResult<Option<Chart>> {
    let labels = strings(rfm_segments, "segment")?;
    if labels.is_empty() {
        return Ok(None);
    }
    let values = |name: &str| -> PolarsResult<Vec<f64>> {
        Ok(floats(rfm_segments, name)?
            .into_iter()
            .map(|v| v.unwrap_or(0.0))
            .collect())
    };
    let svg = grouped_bars(
        &labels,
        &[
            ("share of customers", values("share_of_customers")?),
            ("share of revenue", values("share_of_revenue")?),
        ],
        "share",
        &|x| format!("{:.0}%", x * 100.0),
    )?;
    Ok(Some(Chart {
        id: "segments",
        title: "RFM segments: size against revenue".into(),
        caption:
            "Segments whose revenue bar is longer than their customer bar earn more than their headcount."
                .into(),
        svg,
    }))
}

/// Mean CLV per RFM segment: historical, rule-of-thumb and (with a model) predicted.
pub fn clv_by_segment(clv: &DataFrame) -> PolarsResult<Option<Chart>> {
    let dimension = strings(clv, "dimension")?;
    let keep: Vec<usize> = (0..dimension.len())
        .filter(|&i| dimension[i] == "segment")
        .collect();
    if keep.is_empty() {
        return Ok(None);
    }
    let value = strings(clv, "value")?;
    let labels: Vec<String> = keep.iter().map(|&i| value[i].clone()).collect();
    let mut series = Vec::new();
    for (name, column) in [
        ("historical CLV", "historical_clv_mean"),
        ("formula CLV", "formula_clv_mean"),
        ("predicted CLV", "predicted_clv_mean"),
    ] {
        let values = floats(clv, column)?;
        let chosen: Vec<Option<f64>> = keep.iter().map(|&i| values[i]).collect();
        if chosen.iter().any(Option::is_some) {
            series.push((name, chosen.into_iter().map(|v| v.unwrap_or(0.0)).collect()));
        }
    }
    let svg = grouped_bars(&labels, &series, "mean CLV per customer", &|x| format!("{x:.0}"))?;
    Ok(Some(Chart {
        id: "clv-by-segment",
        title: "CLV by RFM segment".into(),
        caption: "Mean per customer: historical (revenue × margin), the rule-of-thumb formula, and the model's discounted prediction over the horizon.".into(),
        svg,
    }))
}

/// Mean of `value` by frequency (rows) and recency t_x (columns), as lifetimes'
/// probability-alive matrix.
fn frequency_recency_matrix(
    customers: &DataFrame,
    value: &str,
    id: &'static str,
    title: &str,
    caption: &str,
) -> PolarsResult<Option<Chart>> {
    if customers
        .column(value)
        .map_or(true, |c| c.null_count() == c.len())
    {
        return Ok(None);
    }
    const FREQUENCIES: i64 = 15;
    const RECENCY_BINS: i64 = 20;
    let max_t = floats(customers, "T")?
        .into_iter()
        .flatten()
        .fold(0.0, f64::max)
        .max(1e-9);
    let cells = customers
        .clone()
        .lazy()
        .filter(col(value).is_not_null())
        .select([
            col("frequency")
                .cast(DataType::Int64)
                .clip_max(lit(FREQUENCIES))
                .alias("row"),
            (col("t_x") / lit(max_t) * lit(RECENCY_BINS as f64))
                .floor()
                .cast(DataType::Int64)
                .clip_max(lit(RECENCY_BINS - 1))
                .alias("column"),
            col(value),
        ])
        .group_by([col("row"), col("column")])
        .agg([col(value).mean()])
        // Drawn in a fixed order, so the same data gives the same SVG.
        .sort(["row", "column"], Default::default())
        .collect()?;
    let (rows, columns, means) = (
        ints(&cells, "row")?,
        ints(&cells, "column")?,
        floats(&cells, value)?,
    );
    let top = means.iter().flatten().fold(0.0f64, |a, &b| a.max(b)).max(1e-9);
    let svg = svg(SIZE, |root| {
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..max_t, 0f64..(FREQUENCIES + 1) as f64)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("recency t_x (time of the last purchase, model time units)")
            .y_desc("frequency (repeat purchase days)")
            .y_label_formatter(&|y| {
                let f = y.floor() as i64;
                if f >= FREQUENCIES {
                    format!("{FREQUENCIES}+")
                } else {
                    f.to_string()
                }
            })
            .label_style((FONT, 11))
            .draw()?;
        let width = max_t / RECENCY_BINS as f64;
        chart.draw_series(rows.iter().zip(&columns).zip(&means).filter_map(|((r, c), m)| {
            let (r, c, m) = ((*r)?, (*c)?, (*m)?);
            let x = c as f64 * width;
            Some(Rectangle::new(
                [(x, r as f64), (x + width, r as f64 + 1.0)],
                blue(m / top).filled(),
            ))
        }))?;
        Ok(())
    })?;
    Ok(Some(Chart {
        id,
        title: title.into(),
        caption: format!("{caption} Darkest = {top:.3}."),
        svg,
    }))
}

pub fn p_alive(customers: &DataFrame) -> PolarsResult<Option<Chart>> {
    frequency_recency_matrix(
        customers,
        "p_alive",
        "p-alive",
        "P(alive) by frequency and recency",
        "Mean probability that a customer is still active, by repeat purchases and the time of the last one.",
    )
}

pub fn expected_purchases(customers: &DataFrame) -> PolarsResult<Option<Chart>> {
    frequency_recency_matrix(
        customers,
        "expected_purchases",
        "expected-purchases",
        "Expected purchases by frequency and recency",
        "Mean expected purchases over the CLV horizon.",
    )
}

/// Holdout calibration: mean actual, model-predicted and naive purchases per calibration frequency.
pub fn holdout(holdout: &DataFrame) -> PolarsResult<Option<Chart>> {
    let labels = strings(holdout, "calibration_frequency")?;
    if labels.is_empty() {
        return Ok(None);
    }
    let series: Vec<(&str, Vec<f64>)> = [
        ("actual", "actual_purchases"),
        ("model", "predicted_purchases"),
        ("naive", "naive_purchases"),
    ]
    .iter()
    .map(|&(name, column)| {
        Ok((
            name,
            floats(holdout, column)?
                .into_iter()
                .map(|v| v.unwrap_or(0.0))
                .collect(),
        ))
    })
    .collect::<PolarsResult<_>>()?;
    let max_y = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .fold(0.0, f64::max)
        * 1.15;
    let n = labels.len();
    let svg = svg(SIZE, |root| {
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(50)
            .build_cartesian_2d(-0.5f64..n as f64 - 0.5, 0f64..max_y.max(1e-9))?;
        chart
            .configure_mesh()
            .x_desc("purchases in the calibration period (repeat days)")
            .y_desc("mean purchases in the holdout")
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    labels.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .label_style((FONT, 11))
            .draw()?;
        for (s, (name, values)) in series.iter().enumerate() {
            let color = series_color(s);
            let style = if s == 0 {
                color.stroke_width(3)
            } else {
                color.stroke_width(2)
            };
            chart
                .draw_series(LineSeries::new(
                    values.iter().enumerate().map(|(i, &v)| (i as f64, v)),
                    style,
                ))?
                .label(*name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], style));
            chart.draw_series(
                values
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| Circle::new((i as f64, v), 3, color.filled())),
            )?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)?;
        Ok(())
    })?;
    Ok(Some(Chart {
        id: "holdout",
        title: "Holdout calibration".into(),
        caption: "Mean purchases in the held-out days, by calibration frequency: what customers did, what the model predicted, and the naive rate × time baseline.".into(),
        svg,
    }))
}

/// The segment migration as a from × to grid: each cell's shade is the share of
/// the from-segment's customers that moved to the to-segment, with the count
/// written in it. Segments follow `order` (the RFM segment table's), with
/// `(new)` as the last row and `(lost)` as the last column.
pub fn migration(moves: &DataFrame, order: &[String]) -> PolarsResult<Option<Chart>> {
    use crate::metrics::migration::{LOST, NEW};
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let from = strings(moves, "from_segment")?;
    let to = strings(moves, "to_segment")?;
    let customers = ints(moves, "customers")?;
    if from.is_empty() {
        return Ok(None);
    }
    // Every segment either snapshot holds, in the table's order, then any others by name.
    let mut segments: Vec<String> = order.to_vec();
    let mut others: Vec<String> = from
        .iter()
        .chain(&to)
        .filter(|s| *s != NEW && *s != LOST && !segments.contains(s))
        .cloned()
        .collect();
    others.sort();
    others.dedup();
    segments.extend(others);
    segments.retain(|s| from.contains(s) || to.contains(s));
    let rows: Vec<String> = segments.iter().cloned().chain([NEW.to_string()]).collect();
    let columns: Vec<String> = segments.iter().cloned().chain([LOST.to_string()]).collect();
    let position = |list: &[String], name: &str| list.iter().position(|s| s == name);
    let mut row_totals = vec![0i64; rows.len()];
    for (f, n) in from.iter().zip(&customers) {
        if let Some(r) = position(&rows, f) {
            row_totals[r] += n.unwrap_or(0);
        }
    }
    let (n_rows, n_columns) = (rows.len(), columns.len());
    let height = (160 + 28 * n_rows as u32).clamp(300, 900);
    let svg = svg((SIZE.0 + 100, height), |root| {
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(110)
            .y_label_area_size(130)
            .build_cartesian_2d(0f64..n_columns as f64, 0f64..n_rows as f64)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .label_style((FONT, 11))
            .draw()?;
        row_labels(&root, |y| chart.backend_coord(&(0.0, y)), &rows, 1)?;
        // Column labels below the grid, turned so long segment names fit.
        let style = TextStyle::from((FONT, 11))
            .transform(FontTransform::Rotate90)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (c, label) in columns.iter().enumerate() {
            let (x, bottom) = chart.backend_coord(&(c as f64 + 0.5, 0.0));
            root.draw(&Text::new(label.clone(), (x, bottom + 6), style.clone()))?;
        }
        let cells = from.iter().zip(&to).zip(&customers).filter_map(|((f, t), n)| {
            let (r, c, n) = (position(&rows, f)?, position(&columns, t)?, (*n)?);
            Some((r, c, n))
        });
        let cells: Vec<(usize, usize, i64)> = cells.collect();
        chart.draw_series(cells.iter().map(|&(r, c, n)| {
            let y = (n_rows - 1 - r) as f64;
            let share = n as f64 / row_totals[r].max(1) as f64;
            Rectangle::new([(c as f64, y), (c as f64 + 1.0, y + 1.0)], blue(share).filled())
        }))?;
        let centred = TextStyle::from((FONT, 10)).pos(Pos::new(HPos::Center, VPos::Center));
        let (on_dark, on_light) = (centred.color(&WHITE), centred.color(&BLACK));
        chart.draw_series(cells.iter().map(|&(r, c, n)| {
            let y = (n_rows - 1 - r) as f64;
            let share = n as f64 / row_totals[r].max(1) as f64;
            let ink = if share > 0.55 { &on_dark } else { &on_light };
            Text::new(n.to_string(), (c as f64 + 0.5, y + 0.5), ink.clone())
        }))?;
        Ok(())
    })?;
    Ok(Some(Chart {
        id: "migration",
        title: "Segment migration".into(),
        caption: format!(
            "Customers by segment in the previous snapshot (rows) and now (columns); the shade is the share of the row's customers. {NEW} had no purchase then, {LOST} is missing now."
        ),
        svg,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two segments, a new and a lost customer: every count is written, and the
    /// shade is the share of the row (A's 3 of 4 to A, B's only customer to A).
    #[test]
    fn migration_grid_shades_by_share_of_the_row() {
        let moves = df!(
            "from_segment" => ["A", "A", "B", "(new)"],
            "to_segment" => ["A", "(lost)", "A", "B"],
            "customers" => [3i64, 1, 1, 2],
        )
        .unwrap();
        let chart = migration(&moves, &["B".into(), "A".into()]).unwrap().unwrap();
        let fill = |share: f64| {
            let RGBColor(r, g, b) = blue(share);
            format!("fill=\"#{r:02X}{g:02X}{b:02X}\"")
        };
        let texts: Vec<&str> = chart
            .svg
            .split("<text")
            .skip(1)
            .map(|t| t.split('>').nth(1).unwrap().split('<').next().unwrap().trim())
            .collect();
        for (text, count) in [
            ("3", 1),
            ("2", 1),
            ("1", 2),
            ("(new)", 1),
            ("(lost)", 1),
            ("A", 2),
            ("B", 2),
        ] {
            assert_eq!(
                texts.iter().filter(|t| **t == text).count(),
                count,
                "{text} in {texts:?}"
            );
        }
        // B → A and (new) → B are whole rows; A → A is three quarters, A → (lost) one.
        assert_eq!(chart.svg.matches(&fill(1.0)).count(), 2);
        assert_eq!(chart.svg.matches(&fill(0.75)).count(), 1);
        assert_eq!(chart.svg.matches(&fill(0.25)).count(), 1);
        assert!(migration(&moves.head(Some(0)), &[]).unwrap().is_none());
    }
}

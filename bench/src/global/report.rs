//! `bench global`'s report: Markdown tables and SVG plots.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use super::{FailoverResult, StrategyResult};

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The emulated world (`iad=3,cdg=1,syd=1`), None for a real target.
    pub world: Option<String>,
    pub strategies: Vec<StrategyResult>,
    pub failover: Option<FailoverResult>,
}

fn f(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let mut o = String::from("# bench global\n\n");
        if let Some(w) = &self.world {
            let _ = writeln!(
                o,
                "Emulated world `{w}` on one machine (the RTTs of `bench/data/region-rtt.csv` on every inter-node byte). Clients connect to their own region's node. Times in ms.\n"
            );
        }
        for s in &self.strategies {
            let _ = writeln!(
                o,
                "## {} (consistency `{}`, durability `{}`)\n",
                s.strategy, s.consistency, s.durability
            );
            o.push_str("| region | RTT to primary | local PING p50 | read p50 | read p99 | write p50 | write p99 | staleness p50 | staleness p99 | RYW violations | replica lag p50 / max | errors |\n");
            o.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
            for r in &s.regions {
                let lag = match (r.lag_p50_ms, r.lag_max_ms) {
                    (Some(p), Some(m)) => format!("{} / {}", f(p), f(m)),
                    _ => "-".into(),
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} of {} | {} | {} |",
                    r.region,
                    r.rtt_to_primary_ms.map_or("-".into(), f),
                    f(r.local_p50_ms),
                    f(r.read_p50_ms),
                    f(r.read_p99_ms),
                    f(r.write_p50_ms),
                    f(r.write_p99_ms),
                    f(r.staleness_p50_ms),
                    f(r.staleness_p99_ms),
                    r.ryw_violations,
                    r.ryw_checks,
                    lag,
                    r.errors
                );
            }
            o.push('\n');
        }
        if let Some(fo) = &self.failover {
            let _ = writeln!(
                o,
                "## Failover (anykv)\n\nThe primary ({}) killed with SIGKILL {:.1} s into the run; new primary: {}. {} writes acknowledged, {} lost; {} errors seen.\n",
                fo.killed,
                fo.killed_at,
                fo.new_primary.as_deref().unwrap_or("none seen"),
                fo.acknowledged,
                fo.lost,
                fo.errors
            );
            o.push_str(
                "| region | first acknowledged write after the kill (s) |\n| --- | ---: |\n",
            );
            for (r, t) in &fo.first_ack_after_kill_s {
                let _ = writeln!(
                    o,
                    "| {r} | {} |",
                    t.map_or("none".into(), |t| format!("{t:.2}"))
                );
            }
            o.push('\n');
        }
        o.push_str("Plots: [latency](latency.svg), [replication lag](lag.svg)");
        if self.failover.is_some() {
            o.push_str(", [failover](failover.svg)");
        }
        o.push('\n');
        o
    }
}

/// Writes `report.md`, `report.json` and the plots into `dir`.
pub fn write(r: &Report, dir: &Path) -> Result<(), String> {
    std::fs::write(dir.join("report.md"), r.markdown()).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("report.json"), json).map_err(|e| e.to_string())?;
    latency_plot(r, &dir.join("latency.svg")).map_err(|e| format!("latency.svg: {e}"))?;
    lag_plot(r, &dir.join("lag.svg")).map_err(|e| format!("lag.svg: {e}"))?;
    if let Some(fo) = &r.failover {
        failover_plot(fo, &dir.join("failover.svg")).map_err(|e| format!("failover.svg: {e}"))?;
    }
    Ok(())
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// Read and write p50 per region, one bar per strategy (log scale).
fn latency_plot(r: &Report, path: &Path) -> PlotResult {
    let regions: Vec<String> = r
        .strategies
        .first()
        .map(|s| s.regions.iter().map(|x| x.region.clone()).collect())
        .unwrap_or_default();
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let halves = root.split_evenly((1, 2));
    for (half, (title, write)) in halves
        .iter()
        .zip([("read p50 (ms)", false), ("write p50 (ms)", true)])
    {
        let groups = regions.len().max(1) as f64;
        let mut chart = ChartBuilder::on(half)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..groups, (0.01f64..1000f64).log_scale())?;
        let names = regions.clone();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(regions.len().max(1) * 2 + 1)
            .x_label_formatter(&move |x| {
                let i = x.floor() as usize;
                if (x - i as f64 - 0.5).abs() < 0.01 {
                    names.get(i).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()?;
        let n = r.strategies.len().max(1) as f64;
        for (si, s) in r.strategies.iter().enumerate() {
            let color = COLORS[si % COLORS.len()];
            let bars = s.regions.iter().enumerate().map(|(ri, x)| {
                let v = if write { x.write_p50_ms } else { x.read_p50_ms }.max(0.011);
                let x0 = ri as f64 + 0.1 + 0.8 * si as f64 / n;
                let x1 = x0 + 0.8 / n;
                Rectangle::new([(x0, 0.01), (x1, v)], color.filled())
            });
            let series = chart.draw_series(bars)?;
            if !write {
                series.label(s.strategy.clone()).legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
            }
        }
        if !write {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

/// Each read region's replication lag over time, per strategy's run.
fn lag_plot(r: &Report, path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (900, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let samples: Vec<&(f64, String, f64)> = r.strategies.iter().flat_map(|s| &s.lag).collect();
    let t_max = samples.iter().map(|s| s.0).fold(1.0, f64::max);
    let l_max = samples.iter().map(|s| s.2).fold(10.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "replica lag (ms) over time (s), anykv's run",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..t_max, 0f64..l_max)?;
    chart.configure_mesh().draw()?;
    let Some(first) = r.strategies.first() else {
        root.present()?;
        return Ok(());
    };
    let mut regions: Vec<&String> = first.lag.iter().map(|s| &s.1).collect();
    regions.sort();
    regions.dedup();
    for (i, region) in regions.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = first
            .lag
            .iter()
            .filter(|s| &s.1 == region)
            .map(|s| (s.0, s.2))
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(region.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Every failover write: its latency at the time it started, per region;
/// failed writes at the bottom in red; the kill as a vertical line.
fn failover_plot(fo: &FailoverResult, path: &Path) -> PlotResult {
    let root = SVGBackend::new(path, (900, 360)).into_drawing_area();
    root.fill(&WHITE)?;
    let t_max = fo.events.iter().map(|e| e.at).fold(1.0, f64::max);
    let ms_max = fo
        .events
        .iter()
        .filter(|e| e.ok)
        .map(|e| e.ms)
        .fold(10.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "failover: write latency (ms) by start time (s)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..t_max, 0f64..ms_max)?;
    chart.configure_mesh().draw()?;
    let mut regions: Vec<&String> = fo.events.iter().map(|e| &e.region).collect();
    regions.sort();
    regions.dedup();
    for (i, region) in regions.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts = fo
            .events
            .iter()
            .filter(|e| &e.region == region && e.ok)
            .map(|e| Circle::new((e.at, e.ms), 2, color.filled()));
        chart
            .draw_series(pts)?
            .label(region.clone())
            .legend(move |(x, y)| Circle::new((x + 5, y), 3, color.filled()));
    }
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(
            fo.events
                .iter()
                .filter(|e| !e.ok)
                .map(|e| Cross::new((e.at, 0.0), 3, red.stroke_width(1))),
        )?
        .label("failed")
        .legend(move |(x, y)| Cross::new((x + 5, y), 3, red.stroke_width(1)));
    chart.draw_series(LineSeries::new(
        vec![(fo.killed_at, 0.0), (fo.killed_at, ms_max)],
        BLACK.stroke_width(1),
    ))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

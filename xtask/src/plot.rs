//! The benchmark report's pictures. Each benchmark prints the data of its
//! plots in its output as an HTML comment,
//! `<!-- plot {"name", "kind": "line"|"bar", "title", "x", "y", "log_x",
//! "series": [{"name", "points": [[x, y], …]}]} -->`, so a plot shows the
//! figures of the run it comes from. Plots of the same name from several
//! benchmarks (redb's and PostgreSQL's admit latency) become one. Drawn as
//! plain SVG: axes, ticks, one polyline or bar group per series, a legend.

use serde_json::Value;

/// One plot's data.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plot {
    pub(crate) name: String,
    pub(crate) bar: bool,
    pub(crate) title: String,
    pub(crate) x: String,
    pub(crate) y: String,
    pub(crate) log_x: bool,
    /// Series: name, points. For a bar plot, x is an index into `labels`.
    pub(crate) series: Vec<(String, Vec<(f64, f64)>)>,
    pub(crate) labels: Vec<String>,
}

/// The plots in `report`, those of one name merged, in order of appearance.
pub(crate) fn plots_in(report: &str) -> Vec<Plot> {
    let mut plots: Vec<Plot> = Vec::new();
    for line in report.lines() {
        let Some(json) = line
            .trim()
            .strip_prefix("<!-- plot ")
            .and_then(|l| l.strip_suffix("-->"))
        else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(json.trim()) else {
            continue;
        };
        let text = |k: &str| v[k].as_str().unwrap_or("").to_owned();
        let series: Vec<(String, Vec<(f64, f64)>)> = v["series"]
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|s| {
                        let points = s["points"]
                            .as_array()
                            .map(|ps| {
                                ps.iter()
                                    .filter_map(|p| Some((p[0].as_f64()?, p[1].as_f64()?)))
                                    .collect()
                            })
                            .unwrap_or_default();
                        (s["name"].as_str().unwrap_or("").to_owned(), points)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let labels = v["labels"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let plot = Plot {
            name: text("name"),
            bar: v["kind"] == "bar",
            title: text("title"),
            x: text("x"),
            y: text("y"),
            log_x: v["log_x"] == true,
            series,
            labels,
        };
        match plots.iter_mut().find(|p| p.name == plot.name) {
            Some(held) => held.series.extend(plot.series),
            None => plots.push(plot),
        }
    }
    plots
}

const W: f64 = 640.0;
const H: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 160.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLOURS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn figure(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 10_000.0 {
        format!("{:.0e}", v)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// `plot` as an SVG document.
pub(crate) fn svg(plot: &Plot) -> String {
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        (LEFT + W - RIGHT) / 2.0,
        escape(&plot.title)
    );
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, H - BOTTOM, TOP);
    let points: Vec<(f64, f64)> = plot
        .series
        .iter()
        .flat_map(|(_, p)| p.iter().copied())
        .collect();
    let ymax = points
        .iter()
        .map(|p| p.1)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.1;
    let sy = |y: f64| y0 - (y / ymax) * (y0 - y1);
    // Axes and y ticks.
    out.push_str(&format!(
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"black\"/>\n<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"black\"/>\n"
    ));
    for i in 0..=4 {
        let v = ymax * f64::from(i) / 4.0;
        let y = sy(v);
        out.push_str(&format!(
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\n<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            x0 - 6.0,
            y + 4.0,
            figure(v)
        ));
    }
    out.push_str(&format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>\n",
        (x0 + x1) / 2.0,
        H - 12.0,
        escape(&plot.x),
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
        escape(&plot.y)
    ));
    if plot.bar {
        let groups = plot.labels.len().max(1);
        let n = plot.series.len().max(1);
        let slot = (x1 - x0) / groups as f64;
        let width = slot * 0.8 / n as f64;
        for (g, label) in plot.labels.iter().enumerate() {
            let cx = x0 + slot * (g as f64 + 0.5);
            out.push_str(&format!(
                "<text x=\"{cx:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">{}</text>\n",
                y0 + 14.0,
                escape(label)
            ));
        }
        for (s, (_, pts)) in plot.series.iter().enumerate() {
            let colour = COLOURS[s % COLOURS.len()];
            for (x, y) in pts {
                let left = x0 + slot * x + slot * 0.1 + width * s as f64;
                out.push_str(&format!(
                    "<rect x=\"{left:.1}\" y=\"{:.1}\" width=\"{width:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{}</title></rect>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" font-size=\"10\">{}</text>\n",
                    sy(*y),
                    y0 - sy(*y),
                    figure(*y),
                    left + width / 2.0,
                    sy(*y) - 3.0,
                    figure(*y)
                ));
            }
        }
    } else {
        let tx = |x: f64| {
            if plot.log_x {
                x.max(f64::MIN_POSITIVE).log10()
            } else {
                x
            }
        };
        let (xmin, xmax) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| {
            (lo.min(tx(p.0)), hi.max(tx(p.0)))
        });
        let (xmin, xmax) = if xmax > xmin {
            (xmin, xmax)
        } else {
            (xmin - 1.0, xmin + 1.0)
        };
        let sx = |x: f64| x0 + 20.0 + (tx(x) - xmin) / (xmax - xmin) * (x1 - x0 - 40.0);
        let mut ticks: Vec<f64> = points.iter().map(|p| p.0).collect();
        ticks.sort_by(f64::total_cmp);
        ticks.dedup();
        for x in ticks {
            out.push_str(&format!(
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                sx(x),
                y0 + 16.0,
                figure(x)
            ));
        }
        for (s, (_, pts)) in plot.series.iter().enumerate() {
            let colour = COLOURS[s % COLOURS.len()];
            let line: Vec<String> = pts
                .iter()
                .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
                .collect();
            out.push_str(&format!(
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
                line.join(" ")
            ));
            for (x, y) in pts {
                out.push_str(&format!(
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{}</title></circle>\n<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>\n",
                    sx(*x),
                    sy(*y),
                    figure(*y),
                    sx(*x) + 5.0,
                    sy(*y) - 5.0,
                    figure(*y)
                ));
            }
        }
    }
    for (s, (name, _)) in plot.series.iter().enumerate() {
        let y = TOP + 10.0 + 18.0 * s as f64;
        out.push_str(&format!(
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>\n<text x=\"{}\" y=\"{}\">{}</text>\n",
            W - RIGHT + 12.0,
            y,
            COLOURS[s % COLOURS.len()],
            W - RIGHT + 30.0,
            y + 10.0,
            escape(name)
        ));
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_are_read_from_a_report_merged_by_name_and_drawn_with_their_figures() {
        let report = "# a\n<!-- plot {\"name\":\"admit\",\"kind\":\"line\",\"title\":\"Admit\",\"x\":\"events\",\"y\":\"µs\",\"log_x\":true,\"series\":[{\"name\":\"redb\",\"points\":[[1000,6.0],[1000000,11.3]]}]} -->\n| x |\n<!-- plot {\"name\":\"admit\",\"kind\":\"line\",\"title\":\"Admit\",\"x\":\"events\",\"y\":\"µs\",\"log_x\":true,\"series\":[{\"name\":\"PostgreSQL\",\"points\":[[1000,192.7],[1000000,132.8]]}]} -->\n<!-- plot {\"name\":\"routes\",\"kind\":\"bar\",\"title\":\"R\",\"x\":\"route\",\"y\":\"per dispatch\",\"labels\":[\"GET\",\"PATCH\"],\"series\":[{\"name\":\"always\",\"points\":[[0,1.0],[1,2.0]]}]} -->\n";
        let plots = plots_in(report);
        assert_eq!(plots.len(), 2);
        assert_eq!(
            plots[0].series.len(),
            2,
            "two benchmarks' series in one plot"
        );
        let drawn = svg(&plots[0]);
        assert!(drawn.starts_with("<svg") && drawn.trim_end().ends_with("</svg>"));
        for figure in ["11.3", "193", "133", "redb", "PostgreSQL"] {
            assert!(drawn.contains(figure), "{figure} is not in the plot");
        }
        let bars = svg(&plots[1]);
        assert_eq!(
            bars.matches("<rect x=").count(),
            2 + 1,
            "two bars and one legend key"
        );
    }
}

//! A benchmark report: the machine and settings it was measured on, tables
//! of figures, bar charts of the comparisons, written as JSON and as one
//! self-contained HTML page (inline SVG; no script, no network).

use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One bar chart: labelled values in one unit, compared within the chart.
pub struct Chart {
    pub title: String,
    pub unit: String,
    pub bars: Vec<(String, f64)>,
}

/// One table: a header row and rows of text cells.
pub struct Table {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// What a report holds, in order.
pub struct Report {
    pub title: String,
    pub environment: Vec<(String, String)>,
    pub settings: Vec<(String, String)>,
    pub tables: Vec<Table>,
    pub charts: Vec<Chart>,
    /// Ratios and targets, as sentences.
    pub findings: Vec<String>,
    /// The figures, machine-readable.
    pub figures: Value,
}

/// The machine, the build and the versions the figures were measured with.
pub async fn environment(stack: &xtask::Stack) -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find(|l| l.starts_with("model name"))?.split(':').nth(1).map(str::trim).map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| info.lines().next()?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or_else(|| "unknown".into(), |kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0));
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
    let rustc = command_output("rustc", &["--version"]).await;
    let postgres = match sqlx::PgPool::connect(&stack.postgres_url("postgres")).await {
        Ok(pool) => sqlx::query_scalar::<_, String>("SHOW server_version").fetch_one(&pool).await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let rabbitmq = match stack.rabbitmq().ctl(&["version"], Duration::from_secs(30)).await {
        Ok(output) => String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        Err(_) => String::new(),
    };
    let tansu = match xtask::tools::locate_tansu() {
        Ok(Some(path)) => command_output(&path.to_string_lossy(), &["--version"]).await,
        _ => String::new(),
    };
    let profile = if cfg!(debug_assertions) { "debug (use --release for figures)" } else { "release" };
    vec![
        ("CPU".into(), format!("{cpu}, {cores} cores available")),
        ("memory".into(), memory),
        ("kernel".into(), kernel),
        ("build profile".into(), profile.into()),
        ("rustc".into(), rustc),
        ("PostgreSQL".into(), postgres),
        ("RabbitMQ".into(), rabbitmq),
        ("Tansu (Kafka API)".into(), tansu),
        ("ordermesh commit".into(), command_output("git", &["rev-parse", "--short", "HEAD"]).await),
        ("measured at".into(), chrono::Utc::now().to_rfc3339()),
    ]
}

async fn command_output(program: &str, args: &[&str]) -> String {
    match tokio::process::Command::new(program).args(args).output().await {
        Ok(output) => String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        Err(_) => String::new(),
    }
}

impl Report {
    /// The tables as aligned text, then the findings, on stdout.
    pub fn print(&self) {
        for table in &self.tables {
            println!("\n{}", table.title);
            let widths: Vec<usize> = (0..table.header.len())
                .map(|c| {
                    std::iter::once(&table.header)
                        .chain(&table.rows)
                        .map(|r| r.get(c).map_or(0, |cell| cell.chars().count()))
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for row in std::iter::once(&table.header).chain(&table.rows) {
                let cells: Vec<String> = row
                    .iter()
                    .enumerate()
                    .map(|(c, cell)| {
                        if c == 0 { format!("{cell:<w$}", w = widths[c]) } else { format!("{cell:>w$}", w = widths[c]) }
                    })
                    .collect();
                println!("{}", cells.join("  "));
            }
        }
        println!();
        for finding in &self.findings {
            println!("{finding}");
        }
    }

    /// Writes `<name>.json` and `<name>.html` into `dir`; returns the HTML's path.
    pub fn write(&self, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let json = json!({
            "title": self.title,
            "environment": self.environment.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "settings": self.settings.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "findings": self.findings,
            "figures": self.figures,
        });
        let text = serde_json::to_string_pretty(&json).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(format!("{name}.json")), text + "\n")?;
        let html = dir.join(format!("{name}.html"));
        std::fs::write(&html, self.html())?;
        Ok(html)
    }

    fn html(&self) -> String {
        let mut page = String::new();
        let _ = write!(
            page,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>\
             body{{font:15px/1.45 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1d232b}}\
             table{{border-collapse:collapse;margin:.5rem 0 1.5rem}}td,th{{border:1px solid #c9d1d9;padding:.25rem .6rem;text-align:right}}\
             th:first-child,td:first-child{{text-align:left}}th{{background:#f0f3f6}}h2{{margin-top:2rem}}\
             .kv td{{text-align:left}}li{{margin:.2rem 0}}svg text{{font:13px system-ui,sans-serif}}</style></head><body>\
             <h1>{title}</h1>",
            title = escape(&self.title)
        );
        if !self.findings.is_empty() {
            page += "<h2>Findings</h2><ul>";
            for finding in &self.findings {
                let _ = write!(page, "<li>{}</li>", escape(finding));
            }
            page += "</ul>";
        }
        for table in &self.tables {
            let _ = write!(page, "<h2>{}</h2><table><tr>", escape(&table.title));
            for cell in &table.header {
                let _ = write!(page, "<th>{}</th>", escape(cell));
            }
            page += "</tr>";
            for row in &table.rows {
                page += "<tr>";
                for cell in row {
                    let _ = write!(page, "<td>{}</td>", escape(cell));
                }
                page += "</tr>";
            }
            page += "</table>";
        }
        for chart in &self.charts {
            page += &bar_chart(chart);
        }
        for (title, pairs) in [("Settings", &self.settings), ("Machine and versions", &self.environment)] {
            let _ = write!(page, "<h2>{title}</h2><table class=\"kv\">");
            for (key, value) in pairs {
                let _ = write!(page, "<tr><th>{}</th><td>{}</td></tr>", escape(key), escape(value));
            }
            page += "</table>";
        }
        page += "</body></html>\n";
        page
    }
}

/// A horizontal bar chart as inline SVG, bars scaled to the largest value.
fn bar_chart(chart: &Chart) -> String {
    let row = 28.0;
    let label_width = 260.0;
    let bar_width = 420.0;
    let height = row * chart.bars.len() as f64 + 10.0;
    let largest = chart.bars.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max).max(f64::MIN_POSITIVE);
    let mut svg = format!(
        "<h2>{}</h2><svg role=\"img\" width=\"{}\" height=\"{height}\" viewBox=\"0 0 {} {height}\">",
        escape(&chart.title),
        label_width + bar_width + 120.0,
        label_width + bar_width + 120.0
    );
    for (i, (label, value)) in chart.bars.iter().enumerate() {
        let y = i as f64 * row + 5.0;
        let width = (value / largest * bar_width).max(1.0);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{ty}\">{label}</text><rect x=\"{label_width}\" y=\"{y}\" width=\"{width:.1}\" height=\"{h}\" fill=\"#3b7dd8\"/>\
             <text x=\"{tx:.1}\" y=\"{ty}\">{value} {unit}</text>",
            ty = y + 15.0,
            label = escape(label),
            h = row - 8.0,
            tx = label_width + width + 6.0,
            value = figure(*value),
            unit = escape(&chart.unit),
        );
    }
    svg + "</svg>"
}

/// A figure with as many decimals as it deserves.
pub fn figure(value: f64) -> String {
    match value.abs() {
        v if v >= 100.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}"),
        _ => format!("{value:.2}"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_and_scales_its_bars() {
        let report = Report {
            title: "a <b> & c".into(),
            environment: vec![("k".into(), "v".into())],
            settings: vec![],
            tables: vec![],
            charts: vec![Chart {
                title: "t".into(),
                unit: "msg/s".into(),
                bars: vec![("x".into(), 50.0), ("y".into(), 100.0)],
            }],
            findings: vec!["1 < 2".into()],
            figures: json!({}),
        };
        let html = report.html();
        assert!(html.contains("a &lt;b&gt; &amp; c") && html.contains("1 &lt; 2"), "{html}");
        assert!(html.contains("width=\"210.0\"") && html.contains("width=\"420.0\""), "{html}");
    }
}

//! The dashboard: live throughput and IOPS per tier, capacity and latency per tier, the pool's
//! health, what is running and the latest events.

use appliance::api::Status;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

use super::{titled, Theme};
use crate::format::{bar, bytes, fraction, millis, percent, rate, short_time};
use crate::state::{App, IoPoint};

pub fn render(frame: &mut Frame, app: &App, theme: Theme, area: Rect) {
    let status = app.pool_entry().and_then(|e| e.status.as_ref());
    let tiers = tier_names(app, status);
    let pool_lines = pool_lines(app, theme, status, &tiers);
    let pool_height = u16::try_from(pool_lines.len() + 2).unwrap_or(u16::MAX);
    let activity_height = (area.height / 4).clamp(4, 12);
    let [charts, pool, activity] = Layout::vertical([
        Constraint::Min(4),
        Constraint::Length(pool_height),
        Constraint::Length(activity_height),
    ])
    .areas(area);
    render_charts(frame, app, theme, charts, &tiers);
    let title = format!("Pool {}", app.pool.as_deref().unwrap_or("-"));
    frame.render_widget(Paragraph::new(pool_lines).block(titled(title, theme)), pool);
    let [running, events] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)])
            .areas(activity);
    let running_lines = running_lines(app, theme);
    frame.render_widget(
        Paragraph::new(running_lines).block(titled("Running", theme)),
        running,
    );
    let shown = usize::from(events.height.saturating_sub(2));
    let event_lines: Vec<Line> = app
        .latest_events(shown)
        .iter()
        .rev()
        .map(|e| {
            let style = match e.level {
                appliance::api::Level::Error => theme.error(),
                appliance::api::Level::Warning => theme.warning(),
                appliance::api::Level::Info => ratatui::style::Style::new(),
            };
            Line::from(vec![
                Span::styled(
                    format!("{} ", short_time(e.time, app.now, app.utc_offset)),
                    theme.dim(),
                ),
                Span::styled(e.message.clone(), style),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(event_lines).block(titled("Latest events", theme)),
        events,
    );
}

/// The tiers to show: those of the pool's status, else those the stream reported.
fn tier_names(app: &App, status: Option<&Status>) -> Vec<String> {
    match status {
        Some(status) if !status.tiers.is_empty() => {
            status.tiers.iter().map(|t| t.tier.clone()).collect()
        }
        _ => app
            .pool
            .as_deref()
            .map(|pool| app.io.tiers(pool))
            .unwrap_or_default(),
    }
}

/// One line per tier (capacity, latency), then health.
fn pool_lines(
    app: &App,
    theme: Theme,
    status: Option<&Status>,
    tiers: &[String],
) -> Vec<Line<'static>> {
    let Some(status) = status else {
        let why = app
            .pool_entry()
            .and_then(|e| e.error.clone())
            .unwrap_or_else(|| "waiting for the pool's status".into());
        return vec![Line::styled(why, theme.dim())];
    };
    let pool = status.name.as_str();
    let mut lines = Vec::new();
    for tier in tiers {
        let Some(usage) = status.tiers.iter().find(|t| &t.tier == tier) else {
            continue;
        };
        let used = fraction(usage.used_bytes, usage.data_bytes);
        let latency = app.latency.get(&(pool.to_owned(), tier.clone()));
        let bar_style = if used >= 0.9 {
            theme.error()
        } else if used >= 0.8 {
            theme.warning()
        } else {
            theme.good()
        };
        lines.push(Line::from(vec![
            Span::styled(format!("{tier:<5}"), theme.heading()),
            Span::styled(bar(used, 16), bar_style),
            Span::raw(format!(
                " {:>4} {:>9} of {:<9}",
                percent(used),
                bytes(usage.used_bytes),
                bytes(usage.data_bytes)
            )),
            Span::styled(" latency r ", theme.dim()),
            Span::styled(millis(latency.and_then(|l| l.recent_read_ms)), theme.read()),
            Span::styled(" w ", theme.dim()),
            Span::styled(
                millis(latency.and_then(|l| l.recent_write_ms)),
                theme.write(),
            ),
        ]));
    }
    lines.push(health_line(app, theme, status));
    lines
}

fn health_line(app: &App, theme: Theme, status: &Status) -> Line<'static> {
    let device_errors: u64 = status
        .members
        .iter()
        .map(|m| m.read_errors + m.write_errors + m.checksum_errors)
        .sum();
    let repaired: u64 = status.members.iter().map(|m| m.repaired).sum();
    let unrecoverable = app.data.scrub.as_ref().map_or(0, |s| s.unrecoverable);
    let alerts = app.data.alerts.len();
    // Members missing (a degraded pool), faulted, or being emptied to leave the pool.
    let unwell: Vec<(String, bool)> = status
        .members
        .iter()
        .filter(|m| matches!(m.state.as_str(), "missing" | "faulted" | "removing"))
        .map(|m| {
            (
                format!("member {} {}", m.index, m.state),
                m.state != "removing",
            )
        })
        .collect();
    let mut spans = vec![Span::styled("health ", theme.heading())];
    if let Some(cause) = &status.read_only_cause {
        spans.push(Span::styled(format!("READ-ONLY: {cause}"), theme.error()));
    } else if unrecoverable > 0 || device_errors > 0 || unwell.iter().any(|(_, bad)| *bad) {
        spans.push(Span::styled("DEGRADED", theme.error()));
    } else {
        spans.push(Span::styled("OK", theme.good()));
    }
    let counted = |label: &str, value: u64| {
        let style = if value > 0 {
            theme.warning()
        } else {
            theme.dim()
        };
        Span::styled(format!(" · {label} {value}"), style)
    };
    for (what, bad) in unwell {
        let style = if bad { theme.error() } else { theme.warning() };
        spans.push(Span::styled(format!(" · {what}"), style));
    }
    spans.push(counted("device errors", device_errors));
    spans.push(counted("repaired", repaired));
    spans.push(counted("unrecoverable", unrecoverable));
    spans.push(counted("alerts", alerts as u64));
    Line::from(spans)
}

/// Migrations, scrubs, backups and jobs running now.
fn running_lines(app: &App, theme: Theme) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if let Some(migration) = app
        .data
        .tier
        .as_ref()
        .and_then(|t| t.migration.as_ref())
        .filter(|m| m.counts.running)
    {
        let done = fraction(
            migration.counts.moved_bytes(),
            migration.counts.planned_bytes,
        );
        lines.push(Line::raw(format!(
            "migration {} {} of {}",
            percent(done),
            bytes(migration.counts.moved_bytes()),
            bytes(migration.counts.planned_bytes)
        )));
    }
    if let Some(scrub) = app.data.scrub.as_ref().filter(|s| s.running) {
        lines.push(Line::raw(format!(
            "scrub {:.1}% at {}",
            scrub.percent,
            rate(scrub.rate_bytes_per_sec)
        )));
    }
    for backup in app.data.backups.iter().filter(|b| b.running) {
        let copied = backup.progress.as_ref().map_or(0, |p| p.copied.bytes_done);
        lines.push(Line::raw(format!(
            "backup {} {}",
            backup.name,
            bytes(copied)
        )));
    }
    for job in app
        .data
        .jobs
        .iter()
        .filter(|j| j.running && j.kind != "backup")
    {
        lines.push(Line::raw(format!("job {}", job.name)));
    }
    if lines.is_empty() {
        lines.push(Line::styled("nothing running", theme.dim()));
        if let Some(next) = app
            .data
            .jobs
            .iter()
            .filter_map(|j| j.next_run.map(|t| (t, &j.name)))
            .min()
        {
            lines.push(Line::styled(
                format!(
                    "next: {} at {}",
                    next.1,
                    short_time(next.0, app.now, app.utc_offset)
                ),
                theme.dim(),
            ));
        }
    }
    lines
}

/// One row of charts per tier: throughput on the left, operations on the right.
fn render_charts(frame: &mut Frame, app: &App, theme: Theme, area: Rect, tiers: &[String]) {
    let Some(pool) = app.pool.as_deref() else {
        frame.render_widget(
            Paragraph::new(Line::styled("no pool to show yet", theme.dim()))
                .block(titled("I/O", theme)),
            area,
        );
        return;
    };
    if tiers.is_empty() {
        frame.render_widget(
            Paragraph::new(Line::styled(
                "waiting for the first I/O sample",
                theme.dim(),
            ))
            .block(titled("I/O", theme)),
            area,
        );
        return;
    }
    let rows = Layout::vertical(vec![Constraint::Fill(1); tiers.len()]).split(area);
    for (tier, row) in tiers.iter().zip(rows.iter()) {
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(*row);
        // Two points per cell in braille: as many seconds as the plot shows, up to the history.
        let window =
            (i64::from(left.width.saturating_sub(10)) * 2).clamp(30, crate::state::HISTORY_SECONDS);
        let now = app.io.latest();
        let points: Vec<(i64, IoPoint)> = app
            .io
            .series(pool, tier)
            .filter(|(t, _)| *t > now - window)
            .collect();
        let current = app.io.current(pool, tier).unwrap_or_default();
        let mib = |b: u64| b as f64 / 1_048_576.0;
        let reads: Vec<(f64, f64)> = points
            .iter()
            .map(|(t, p)| ((t - now) as f64, mib(p.read_bytes)))
            .collect();
        let writes: Vec<(f64, f64)> = points
            .iter()
            .map(|(t, p)| ((t - now) as f64, mib(p.write_bytes)))
            .collect();
        let title = [
            format!("{tier} MiB/s"),
            format!("{:.1}", mib(current.read_bytes)),
            format!("{:.1}", mib(current.write_bytes)),
        ];
        render_chart(frame, theme, left, title, window, [&reads, &writes], |v| {
            format!("{v:.1}")
        });
        let read_ops: Vec<(f64, f64)> = points
            .iter()
            .map(|(t, p)| ((t - now) as f64, p.read_ops as f64))
            .collect();
        let write_ops: Vec<(f64, f64)> = points
            .iter()
            .map(|(t, p)| ((t - now) as f64, p.write_ops as f64))
            .collect();
        let title = [
            format!("{tier} IOPS"),
            current.read_ops.to_string(),
            current.write_ops.to_string(),
        ];
        render_chart(
            frame,
            theme,
            right,
            title,
            window,
            [&read_ops, &write_ops],
            |v| format!("{v:.0}"),
        );
    }
}

/// A chart of reads and writes over the last `window` seconds. The title names the chart
/// and gives the latest read and write figures, each with its line's marker (the legend).
fn render_chart(
    frame: &mut Frame,
    theme: Theme,
    area: Rect,
    [name, read_now, write_now]: [String; 3],
    window: i64,
    [reads, writes]: [&[(f64, f64)]; 2],
    label: impl Fn(f64) -> String,
) {
    let peak = reads
        .iter()
        .chain(writes)
        .map(|(_, v)| *v)
        .fold(0.0_f64, f64::max);
    // A round top with a little headroom, so the axis label reads well.
    let top = nice_ceiling(peak * 1.1);
    // Without colors the lines differ by marker.
    let (read_marker, write_marker) = if theme.color {
        (Marker::Braille, Marker::Braille)
    } else {
        (Marker::Braille, Marker::Dot)
    };
    let marker_symbol = |marker: Marker| match marker {
        Marker::Dot => "•",
        _ => "⣿",
    };
    let title = Line::from(vec![
        Span::styled(format!(" {name}  "), theme.heading()),
        Span::styled(
            format!("{} read {read_now}", marker_symbol(read_marker)),
            theme.read(),
        ),
        Span::raw("  "),
        Span::styled(
            format!("{} write {write_now} ", marker_symbol(write_marker)),
            theme.write(),
        ),
    ]);
    let datasets = vec![
        Dataset::default()
            .marker(read_marker)
            .graph_type(GraphType::Line)
            .style(theme.read())
            .data(reads),
        Dataset::default()
            .marker(write_marker)
            .graph_type(GraphType::Line)
            .style(theme.write())
            .data(writes),
    ];
    // Short charts give their rows to the lines; the window then shows only in the labels of
    // taller ones.
    let x_labels = if area.height >= 9 {
        vec![format!("-{window}s"), "now".to_owned()]
    } else {
        Vec::new()
    };
    let chart = Chart::new(datasets)
        .block(ratatui::widgets::Block::bordered().title(title))
        .x_axis(
            Axis::default()
                .bounds([-(window as f64), 0.0])
                .labels(x_labels)
                .style(theme.dim()),
        )
        .y_axis(
            Axis::default()
                .bounds([0.0, top])
                .labels(["0".to_owned(), label(top)])
                .style(theme.dim()),
        )
        .legend_position(None);
    frame.render_widget(chart, area);
}

/// The smallest 1, 2 or 5 times a power of ten at or above `value` (1 at least).
fn nice_ceiling(value: f64) -> f64 {
    if value <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|step| step * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(value)
}

#[cfg(test)]
mod tests {
    use super::nice_ceiling;

    #[test]
    fn axis_tops_are_round() {
        assert!((nice_ceiling(0.0) - 1.0).abs() < f64::EPSILON);
        assert!((nice_ceiling(3.3) - 5.0).abs() < f64::EPSILON);
        assert!((nice_ceiling(44.0) - 50.0).abs() < f64::EPSILON);
        assert!((nice_ceiling(120.0) - 200.0).abs() < f64::EPSILON);
    }
}

//! The backups screen: each backup job with its schedule, last result and next run, and for
//! the selected one where it copies from and to, and the live progress of a running run.

use appliance::api::BackupInfo;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row};
use ratatui::Frame;

use super::{render_list, titled, ListTable, Theme};
use crate::format::{age, bar, bytes, fraction, local_time, next_time, percent, rate, short_time};
use crate::state::{App, ListId};

pub fn render(
    frame: &mut Frame,
    app: &App,
    theme: Theme,
    area: Rect,
) -> Option<(Rect, usize, ListId)> {
    let [list, details] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(8)]).areas(area);
    let rows = app
        .visible_backups()
        .into_iter()
        .map(|b| {
            let last = match (&b.last_run, b.running) {
                (_, true) => "running".to_owned(),
                (Some(run), false) => format!(
                    "{} {}",
                    run.outcome
                        .map_or("running", appliance::api::RunOutcome::as_str),
                    short_time(run.started, app.now, app.utc_offset)
                ),
                (None, false) => "never run".to_owned(),
            };
            let row = Row::new(vec![
                b.name.clone(),
                b.engine.clone(),
                b.schedule.clone().unwrap_or_else(|| "on request".into()),
                last,
                next_time(b.next_run, app.now),
            ]);
            match b.last_run.as_ref().and_then(|r| r.outcome) {
                Some(appliance::api::RunOutcome::Failed) if !b.running => row.style(theme.error()),
                _ => row,
            }
        })
        .collect();
    let header = Row::new(vec![
        "name",
        "engine",
        "schedule",
        "last result",
        "next run",
    ]);
    let widths = [
        Constraint::Fill(2),
        Constraint::Length(6),
        Constraint::Fill(1),
        Constraint::Length(20),
        Constraint::Length(11),
    ];
    let hits = render_list(
        frame,
        app,
        theme,
        list,
        ListTable {
            id: ListId::Backups,
            title: "Backups",
            header,
            widths: &widths,
            rows,
        },
    );
    let lines = app.selected_backup().map_or_else(
        || vec![Line::styled("no backup selected", theme.dim())],
        |backup| detail_lines(app, theme, backup),
    );
    let title = app
        .selected_backup()
        .map_or_else(|| "Backup".to_owned(), |b| format!("Backup {}", b.name));
    frame.render_widget(Paragraph::new(lines).block(titled(title, theme)), details);
    hits
}

fn detail_lines(app: &App, theme: Theme, backup: &BackupInfo) -> Vec<Line<'static>> {
    let source = if backup.source.is_empty() {
        "/".to_owned()
    } else {
        backup.source.clone()
    };
    let mut lines = vec![Line::raw(format!(
        "{}:{source} → {} ({}, {}, keeps {} versions)",
        backup.pool, backup.destination, backup.engine, backup.mode, backup.keep_versions
    ))];
    if let Some(progress) = backup.progress.as_ref().filter(|_| backup.running) {
        let copied = &progress.copied;
        let done = copied
            .bytes_total
            .map(|total| fraction(copied.bytes_done, total));
        let mut spans = vec![Span::styled(format!("{} ", progress.phase), theme.accent())];
        if let Some(done) = done {
            spans.push(Span::styled(bar(done, 20), theme.good()));
            spans.push(Span::raw(format!(" {} ", percent(done))));
        }
        spans.push(Span::raw(format!(
            "{} copied, {} file(s){}",
            bytes(copied.bytes_done),
            copied.files_done,
            copied
                .files_total
                .map_or_else(String::new, |total| format!(" of {total}"))
        )));
        lines.push(Line::from(spans));
        lines.push(Line::raw(format!(
            "rate {}, ETA {}, running for {}",
            rate(copied.rate_bytes_per_sec),
            copied.eta_secs.map_or_else(
                || "-".to_owned(),
                |eta| age(i64::try_from(eta).unwrap_or(i64::MAX))
            ),
            age(app.now - progress.started)
        )));
    }
    match &backup.last_run {
        Some(run) => {
            let outcome = run
                .outcome
                .map_or("running", appliance::api::RunOutcome::as_str);
            let style = if run.outcome == Some(appliance::api::RunOutcome::Failed) {
                theme.error()
            } else {
                ratatui::style::Style::new()
            };
            lines.push(Line::styled(
                format!(
                    "last run {} {}: {outcome}, {} in {} file(s)",
                    run.id,
                    local_time(run.started, app.utc_offset),
                    bytes(run.bytes),
                    run.files
                ),
                style,
            ));
            if let Some(error) = &run.error {
                lines.push(Line::styled(format!("  {error}"), theme.error()));
            }
        }
        None => lines.push(Line::styled("no run yet", theme.dim())),
    }
    lines
}

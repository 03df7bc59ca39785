//! The scrub and events screen: the selected pool's scrub (progress, findings and damaged
//! paths) above the scrollable, filterable event log.

use appliance::api::{Level, ScrubStatus};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row};
use ratatui::Frame;

use super::{render_list, titled, ListTable, Theme};
use crate::format::{age, bar, bytes, local_time, rate, short_time};
use crate::state::{App, ListId};

pub fn render(
    frame: &mut Frame,
    app: &App,
    theme: Theme,
    area: Rect,
) -> Option<(Rect, usize, ListId)> {
    let scrub = scrub_lines(app, theme, app.data.scrub.as_ref());
    let scrub_height = u16::try_from(scrub.len() + 2).unwrap_or(u16::MAX);
    let [scrub_area, list] =
        Layout::vertical([Constraint::Length(scrub_height), Constraint::Fill(1)]).areas(area);
    frame.render_widget(
        Paragraph::new(scrub).block(titled("Scrub", theme)),
        scrub_area,
    );
    let rows = app
        .visible_events()
        .into_iter()
        .map(|e| {
            let style = match e.level {
                Level::Error => theme.error(),
                Level::Warning => theme.warning(),
                Level::Info => Style::new(),
            };
            Row::new(vec![
                short_time(e.time, app.now, app.utc_offset),
                e.level.as_str().to_owned(),
                e.kind.clone(),
                e.pool.clone().unwrap_or_else(|| "-".into()),
                e.message.clone(),
            ])
            .style(style)
        })
        .collect();
    let header = Row::new(vec!["time", "level", "kind", "pool", "message"]);
    let widths = [
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Length(14),
        Constraint::Length(8),
        Constraint::Fill(1),
    ];
    render_list(
        frame,
        app,
        theme,
        list,
        ListTable {
            id: ListId::Events,
            title: "Events",
            header,
            widths: &widths,
            rows,
        },
    )
}

fn scrub_lines(app: &App, theme: Theme, scrub: Option<&ScrubStatus>) -> Vec<Line<'static>> {
    let Some(scrub) = scrub else {
        return vec![Line::styled(
            "waiting for the pool's scrub status",
            theme.dim(),
        )];
    };
    let mut lines = Vec::new();
    if scrub.running {
        lines.push(Line::from(vec![
            Span::styled(format!("{} ", scrub.state), theme.accent()),
            Span::styled(bar(scrub.percent / 100.0, 20), theme.good()),
            Span::raw(format!(
                " {:.1}%  {} checked at {}, ETA {}",
                scrub.percent,
                bytes(scrub.bytes_checked),
                rate(scrub.rate_bytes_per_sec),
                scrub.eta_secs.map_or_else(
                    || "-".to_owned(),
                    |eta| age(i64::try_from(eta).unwrap_or(i64::MAX))
                )
            )),
        ]));
    } else {
        let when = scrub.finished.or(scrub.started).map_or_else(
            || "never scrubbed".to_owned(),
            |t| local_time(t, app.utc_offset),
        );
        lines.push(Line::raw(format!("{}: {when}", scrub.state)));
    }
    let findings_style = if scrub.unrecoverable > 0 {
        theme.error()
    } else if scrub.errors_found > 0 {
        theme.warning()
    } else {
        theme.good()
    };
    lines.push(Line::styled(
        format!(
            "{} block(s) checked, {} error(s) found, {} repaired, {} unrecoverable",
            scrub.blocks_checked, scrub.errors_found, scrub.repaired, scrub.unrecoverable
        ),
        findings_style,
    ));
    for path in scrub.damaged_paths.iter().take(3) {
        lines.push(Line::styled(format!("damaged: {path}"), theme.error()));
    }
    if scrub.damaged_paths.len() > 3 {
        lines.push(Line::styled(
            format!(
                "… and {} more damaged file(s) (aegis scrub status lists them all)",
                scrub.damaged_paths.len() - 3
            ),
            theme.error(),
        ));
    }
    lines
}

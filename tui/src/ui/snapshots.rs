//! The snapshots screen: every snapshot of the pool with when it was taken and the bytes it
//! references and holds alone, and the pool's snapshot totals.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Row};
use ratatui::Frame;

use super::{render_list, ListTable, Theme};
use crate::format::{age, bytes, local_time};
use crate::state::{App, ListId};

pub fn render(
    frame: &mut Frame,
    app: &App,
    theme: Theme,
    area: Rect,
) -> Option<(Rect, usize, ListId)> {
    let [list, summary] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(1)]).areas(area);
    let rows = app
        .visible_snapshots()
        .into_iter()
        .map(|s| {
            Row::new(vec![
                s.name.clone(),
                local_time(s.created, app.utc_offset),
                age(app.now - s.created),
                bytes(s.referenced_bytes),
                bytes(s.unique_bytes),
            ])
        })
        .collect();
    let header = Row::new(vec!["name", "created", "age", "referenced", "unique"]);
    let widths = [
        Constraint::Fill(1),
        Constraint::Length(19),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(10),
    ];
    let hits = render_list(
        frame,
        app,
        theme,
        list,
        ListTable {
            id: ListId::Snapshots,
            title: "Snapshots",
            header,
            widths: &widths,
            rows,
        },
    );
    let totals = match app.pool_entry().and_then(|e| e.status.as_ref()) {
        Some(status) => format!(
            "{} snapshot(s); {} held only by snapshots (freed when they are deleted)",
            status.snapshots,
            bytes(status.snapshot_bytes)
        ),
        None => "waiting for the pool's status".to_owned(),
    };
    frame.render_widget(Paragraph::new(Line::raw(totals)), summary);
    hits
}

//! Rendering: draws the [`App`] into a frame and reports where it put what a click can hit.
//! It reads the state and changes nothing, so every screen is snapshot-tested with ratatui's
//! `TestBackend`. The frame is a header (pool, daemon, connection), the tab bar, the current
//! screen, and a footer (the status message, else the screen's keys); dialogs draw on top.
//! Colors are only foregrounds on the terminal's own background, so both light and dark
//! themes read; without color, bold, dim and reverse carry the emphasis.

mod backups;
mod dashboard;
mod events;
mod snapshots;
mod tiers;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use crate::format::age;
use crate::state::{App, Connection, HitAreas, ListId, Modal, Tab};
use crate::update::{screen_keys, GLOBAL_KEYS};

/// The styles of one frame: colored, or by modifiers only.
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    color: bool,
}

impl Theme {
    fn pick(self, colored: Style, plain: Style) -> Style {
        if self.color {
            colored
        } else {
            plain
        }
    }

    pub fn accent(self) -> Style {
        self.pick(
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::BOLD),
        )
    }

    pub fn error(self) -> Style {
        self.pick(
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::BOLD | Modifier::REVERSED),
        )
    }

    pub fn warning(self) -> Style {
        self.pick(
            Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            Style::new().add_modifier(Modifier::BOLD),
        )
    }

    pub fn good(self) -> Style {
        self.pick(Style::new().fg(Color::Green), Style::new())
    }

    pub fn dim(self) -> Style {
        Style::new().add_modifier(Modifier::DIM)
    }

    pub fn selected(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    pub fn heading(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }

    /// Reads in charts and figures.
    pub fn read(self) -> Style {
        self.pick(Style::new().fg(Color::Cyan), Style::new())
    }

    /// Writes in charts and figures.
    pub fn write(self) -> Style {
        self.pick(Style::new().fg(Color::Magenta), Style::new())
    }
}

/// Draws the whole console; returns the clickable areas of this frame.
pub fn render(frame: &mut Frame, app: &App) -> HitAreas {
    let theme = Theme { color: app.color };
    let mut hits = HitAreas::default();
    let banner = disconnected_banner(app);
    let banner_height = banner
        .as_ref()
        .map_or(0, |text| wrapped_height(text, frame.area().width).min(3));
    let [header, tabs, banner_area, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(banner_height),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(header_line(app, theme), header);
    hits.tabs = render_tabs(frame, app, theme, tabs);
    if let Some(banner) = banner {
        frame.render_widget(
            Paragraph::new(banner)
                .style(theme.error())
                .wrap(Wrap { trim: true }),
            banner_area,
        );
    }
    hits.rows = match app.tab {
        Tab::Dashboard => {
            dashboard::render(frame, app, theme, body);
            None
        }
        Tab::Tiers => {
            tiers::render(frame, app, theme, body);
            None
        }
        Tab::Snapshots => snapshots::render(frame, app, theme, body),
        Tab::Backups => backups::render(frame, app, theme, body),
        Tab::Events => events::render(frame, app, theme, body),
    };
    frame.render_widget(footer_line(app, theme), footer);
    if let Some(modal) = &app.modal {
        render_modal(frame, app, theme, modal);
    }
    hits
}

fn header_line(app: &App, theme: Theme) -> Line<'static> {
    let mut spans = vec![
        Span::styled(" AegisFS ", theme.accent()),
        match &app.connection {
            Connection::Connecting => Span::styled("connecting…", theme.warning()),
            Connection::Connected => Span::styled("● live", theme.good()),
            Connection::Disconnected { .. } => Span::styled("✖ disconnected", theme.error()),
        },
    ];
    match &app.pool {
        Some(pool) => {
            spans.push(Span::raw(" │ pool "));
            spans.push(Span::styled(pool.clone(), theme.heading()));
            if app.data.pools.len() > 1 {
                let at = app
                    .data
                    .pools
                    .iter()
                    .position(|p| &p.name == pool)
                    .map_or(0, |i| i + 1);
                spans.push(Span::styled(
                    format!(" ({at}/{}, p: next)", app.data.pools.len()),
                    theme.dim(),
                ));
            }
            if app.pool_entry().is_some_and(|entry| !entry.mounted) {
                spans.push(Span::styled(" not mounted", theme.error()));
            }
        }
        None => spans.push(Span::styled(" │ no pool yet", theme.dim())),
    }
    match &app.data.daemon {
        Some(daemon) => spans.push(Span::raw(format!(
            " │ aegisd {} pid {} up {}",
            daemon.version,
            daemon.pid,
            age(i64::try_from(daemon.uptime_secs).unwrap_or(i64::MAX))
        ))),
        None if app.connection == Connection::Connected => {
            spans.push(Span::raw(" │ serving process (aegis mount)"));
        }
        None => {}
    }
    Line::from(spans)
}

/// Draws the tab bar; returns each tab's area.
fn render_tabs(frame: &mut Frame, app: &App, theme: Theme, area: Rect) -> Vec<(Rect, Tab)> {
    let mut spans = Vec::new();
    let mut hits = Vec::new();
    let mut x = area.x;
    for (number, tab) in Tab::ALL.iter().enumerate() {
        let title = format!(" {} {} ", number + 1, tab.title());
        let width = u16::try_from(title.chars().count()).unwrap_or(u16::MAX);
        let visible = width.min(area.right().saturating_sub(x));
        if visible > 0 {
            hits.push((Rect::new(x, area.y, visible, 1), *tab));
        }
        x = x.saturating_add(width);
        let style = if *tab == app.tab {
            theme.accent().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        };
        spans.push(Span::styled(title, style));
        spans.push(Span::raw(" "));
        x = x.saturating_add(1);
    }
    frame.render_widget(Line::from(spans), area);
    hits
}

fn disconnected_banner(app: &App) -> Option<String> {
    let Connection::Disconnected {
        reason,
        since,
        retry_in_secs,
    } = &app.connection
    else {
        return None;
    };
    let stale = if app.data.daemon.is_some() || !app.data.pools.is_empty() {
        " Figures below are from before."
    } else {
        ""
    };
    Some(format!(
        "aegisd is not answering at {} (for {}): {reason}. Retrying every {retry_in_secs}s.{stale}",
        app.socket,
        age(app.now - since)
    ))
}

fn footer_line(app: &App, theme: Theme) -> Line<'static> {
    if let Some(status) = &app.status {
        let style = if status.is_error {
            theme.error()
        } else {
            theme.accent()
        };
        return Line::styled(format!(" {}", status.text), style);
    }
    if let Some((what, message)) = app.data.poll_errors.iter().next() {
        return Line::styled(format!(" {what}: {message}"), theme.warning());
    }
    let mut spans = vec![Span::raw(" ")];
    let keys = screen_keys(app.tab)
        .iter()
        .chain(&[("?", "help"), ("q", "quit")]);
    for (key, what) in keys {
        spans.push(Span::styled((*key).to_owned(), theme.heading()));
        spans.push(Span::styled(format!(" {what}  "), theme.dim()));
    }
    Line::from(spans)
}

/// A block with a title, in the frame's style.
pub fn titled(title: impl Into<String>, theme: Theme) -> Block<'static> {
    Block::bordered().title(Span::styled(format!(" {} ", title.into()), theme.heading()))
}

/// A list's visible rows: the index of the first row shown so that `selected` is in view.
pub fn first_visible(selected: usize, rows: u16) -> usize {
    selected.saturating_sub(usize::from(rows.max(1)) - 1)
}

/// A screen's selectable list, its rows already filtered.
pub struct ListTable<'a> {
    pub id: ListId,
    pub title: &'a str,
    pub header: Row<'static>,
    pub widths: &'a [Constraint],
    pub rows: Vec<Row<'static>>,
}

/// Draws a list in `area`, with its filter, if any, in the title and the selected row in
/// view; returns the rows' area, the first row's index and the list, for clicks.
pub fn render_list(
    frame: &mut Frame,
    app: &App,
    theme: Theme,
    area: Rect,
    list: ListTable,
) -> Option<(Rect, usize, ListId)> {
    let view = app.list(list.id);
    let count = list.rows.len();
    let mut title = format!("{} ({count})", list.title);
    if !view.filter.is_empty() {
        title.push_str(&format!(" filter: {}", view.filter));
    }
    let block = titled(title, theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if list.rows.is_empty() {
        let text = if view.filter.is_empty() {
            "nothing here yet"
        } else {
            "nothing matches the filter (Esc clears it)"
        };
        frame.render_widget(Line::styled(format!(" {text}"), theme.dim()), inner);
        return None;
    }
    let body_rows = inner.height.saturating_sub(1);
    let first = first_visible(view.selected, body_rows);
    let shown: Vec<Row<'static>> = list
        .rows
        .into_iter()
        .enumerate()
        .skip(first)
        .take(usize::from(body_rows))
        .map(|(index, row)| {
            if index == view.selected {
                row.style(theme.selected())
            } else {
                row
            }
        })
        .collect();
    let table = Table::new(shown, list.widths.to_vec())
        .header(list.header.style(theme.heading()))
        .column_spacing(1);
    frame.render_widget(table, inner);
    let rows_area = Rect::new(inner.x, inner.y + 1, inner.width, body_rows);
    Some((rows_area, first, list.id))
}

/// A rectangle of at most `width` x `height` centered in `area`.
fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect::new(
        area.x + (area.width - width) / 2,
        area.y + (area.height - height) / 2,
        width,
        height,
    )
}

/// Lines `text` takes when wrapped at `width` (an estimate by words, as `Wrap` breaks).
fn wrapped_height(text: &str, width: u16) -> u16 {
    let width = usize::from(width.max(1));
    let mut lines = 0usize;
    for paragraph in text.split('\n') {
        let mut used = 0usize;
        lines += 1;
        for word in paragraph.split(' ') {
            let len = word.chars().count();
            if used > 0 && used + 1 + len > width {
                lines += 1;
                used = len;
            } else {
                used += len + usize::from(used > 0);
            }
        }
    }
    u16::try_from(lines).unwrap_or(u16::MAX)
}

fn render_modal(frame: &mut Frame, app: &App, theme: Theme, modal: &Modal) {
    let screen = frame.area();
    match modal {
        Modal::Help => render_help(frame, app, theme, screen),
        Modal::Confirm { title, message, .. } => {
            let width = screen.width.saturating_sub(4).min(72);
            let text_height = wrapped_height(message, width.saturating_sub(4));
            let area = centered(screen, width, text_height + 4);
            let text = vec![
                Line::raw(message.clone()),
                Line::raw(""),
                Line::from(vec![
                    Span::styled("y", theme.accent()),
                    Span::raw(" do it    "),
                    Span::styled("n / Esc", theme.accent()),
                    Span::raw(" cancel"),
                ]),
            ];
            draw_dialog(frame, theme, area, title, text);
        }
        Modal::Details {
            title,
            lines,
            scroll,
        } => {
            let longest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0);
            let width = u16::try_from(longest + 4)
                .unwrap_or(u16::MAX)
                .clamp(40, screen.width.saturating_sub(2).max(40));
            let height = u16::try_from(lines.len() + 3)
                .unwrap_or(u16::MAX)
                .min(screen.height.saturating_sub(2));
            let area = centered(screen, width, height);
            let visible = usize::from(area.height.saturating_sub(3));
            let mut text: Vec<Line> = lines
                .iter()
                .skip(*scroll)
                .take(visible)
                .map(|l| Line::raw(l.clone()))
                .collect();
            text.resize(visible, Line::raw(""));
            let last = (*scroll + visible).min(lines.len());
            text.push(Line::styled(
                format!(
                    "lines {}-{last} of {}   ↑↓ PgUp PgDn scroll   Esc close",
                    (*scroll + 1).min(last),
                    lines.len()
                ),
                theme.dim(),
            ));
            frame.render_widget(Clear, area);
            frame.render_widget(
                Paragraph::new(text).block(titled(title.clone(), theme)),
                area,
            );
        }
        Modal::Input { prompt, buffer, .. } => {
            let width = screen.width.saturating_sub(4).min(72);
            let prompt_height = wrapped_height(prompt, width.saturating_sub(4));
            let area = centered(screen, width, prompt_height + 5);
            let text = vec![
                Line::raw(prompt.clone()),
                Line::raw(""),
                Line::from(vec![
                    Span::styled("> ", theme.accent()),
                    Span::raw(buffer.clone()),
                    Span::styled("▏", theme.accent()),
                ]),
                Line::styled("Enter confirm   Esc cancel", theme.dim()),
            ];
            draw_dialog(frame, theme, area, "Input", text);
        }
    }
}

fn draw_dialog(frame: &mut Frame, theme: Theme, area: Rect, title: &str, text: Vec<Line>) {
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .block(titled(title, theme).padding(ratatui::widgets::Padding::horizontal(1))),
        area,
    );
}

/// Every key: the global ones on the left, each screen's on the right.
fn render_help(frame: &mut Frame, app: &App, theme: Theme, screen: Rect) {
    let key_line = |key: &str, what: &str, width: usize| {
        Line::from(vec![
            Span::styled(format!("{key:<width$}"), theme.accent()),
            Span::raw(what.to_owned()),
        ])
    };
    let key_width = |keys: &[(&str, &str)]| {
        keys.iter()
            .map(|(k, _)| k.chars().count())
            .max()
            .unwrap_or(0)
            + 1
    };
    let width = key_width(GLOBAL_KEYS);
    let mut left = vec![Line::styled("Everywhere", theme.heading())];
    left.extend(GLOBAL_KEYS.iter().map(|(k, w)| key_line(k, w, width)));
    left.push(Line::raw(""));
    left.push(Line::styled("In a dialog", theme.heading()));
    left.push(key_line("y", "confirm the action", width));
    left.push(key_line("n, Esc", "cancel", width));
    let left_width = left.iter().map(Line::width).max().unwrap_or(0) + 2;
    let width = Tab::ALL
        .into_iter()
        .map(|tab| key_width(screen_keys(tab)))
        .max()
        .unwrap_or(0);
    let mut right = Vec::new();
    for tab in Tab::ALL {
        let keys = screen_keys(tab);
        if keys.is_empty() {
            continue;
        }
        let style = if tab == app.tab {
            theme.accent()
        } else {
            theme.heading()
        };
        right.push(Line::styled(tab.title(), style));
        right.extend(keys.iter().map(|(k, w)| key_line(k, w, width)));
    }
    let height = u16::try_from(left.len().max(right.len()) + 2).unwrap_or(u16::MAX);
    let area = centered(screen, screen.width.min(100), height);
    frame.render_widget(Clear, area);
    let block = titled("Keys (Esc closes)", theme);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let left_width = u16::try_from(left_width).unwrap_or(u16::MAX);
    let [left_area, right_area] =
        Layout::horizontal([Constraint::Length(left_width), Constraint::Fill(1)]).areas(inner);
    frame.render_widget(Paragraph::new(left), left_area);
    frame.render_widget(Paragraph::new(right), right_area);
}

#[cfg(test)]
mod tests;

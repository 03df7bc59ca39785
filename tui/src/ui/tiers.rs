//! The tiers screen: usage and the heat histogram per tier, the fast tier's watermarks, pins,
//! the running migration with its ETA (or the last and next one), and the last dry run.

use appliance::api::{MigrationProgress, TierStatus};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{titled, Theme};
use crate::format::{age, bar, bytes, fraction, local_time, next_time, percent, rate};
use crate::state::App;

pub fn render(frame: &mut Frame, app: &App, theme: Theme, area: Rect) {
    let Some(status) = &app.data.tier else {
        let text = app
            .data
            .poll_errors
            .get("tier")
            .cloned()
            .unwrap_or_else(|| "waiting for the pool's tiers".into());
        frame.render_widget(
            Paragraph::new(Line::styled(text, theme.dim())).block(titled("Tiers", theme)),
            area,
        );
        return;
    };
    let tiers_height = u16::try_from(status.tiers.len() * 2 + 2).unwrap_or(u16::MAX);
    let [usage, lower] =
        Layout::vertical([Constraint::Length(tiers_height), Constraint::Fill(1)]).areas(area);
    render_usage(frame, theme, status, usage);
    let [migration, pins] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(lower);
    frame.render_widget(
        Paragraph::new(migration_lines(app, theme, status)).block(titled("Migration", theme)),
        migration,
    );
    let mut pin_lines: Vec<Line> = status
        .pins
        .iter()
        .map(|pin| {
            Line::from(vec![
                Span::styled(format!("{:<5} ", pin.tier), theme.accent()),
                Span::raw(pin.path.clone()),
            ])
        })
        .collect();
    if pin_lines.is_empty() {
        pin_lines.push(Line::styled(
            "nothing pinned: placement follows heat",
            theme.dim(),
        ));
    }
    frame.render_widget(
        Paragraph::new(pin_lines).block(titled(format!("Pins ({})", status.pins.len()), theme)),
        pins,
    );
}

/// Two lines per tier: its usage, then its heat histogram (the share of its blocks that are
/// hot, warm and cold).
fn render_usage(frame: &mut Frame, theme: Theme, status: &TierStatus, area: Rect) {
    let mut lines = Vec::new();
    for tier in &status.tiers {
        let used = fraction(tier.used_bytes, tier.capacity_bytes);
        lines.push(Line::from(vec![
            Span::styled(format!("{:<5} ", tier.tier), theme.heading()),
            Span::styled(bar(used, 16), theme.good()),
            Span::raw(format!(
                " {:>4}  {:>9} of {:<9} {:>9} blocks",
                percent(used),
                bytes(tier.used_bytes),
                bytes(tier.capacity_bytes),
                tier.blocks
            )),
        ]));
        let heat = |name: &str, count: u64, style| {
            vec![
                Span::raw(format!("{name} ")),
                Span::styled(bar(fraction(count, tier.blocks), 8), style),
                Span::raw(format!(" {count:<8} ")),
            ]
        };
        let mut spans = vec![Span::styled("  heat", theme.dim())];
        spans.push(Span::raw(" "));
        spans.extend(heat("hot", tier.hot_blocks, theme.error()));
        spans.extend(heat("warm", tier.warm_blocks, theme.warning()));
        spans.extend(heat("cold", tier.cold_blocks, theme.read()));
        lines.push(Line::from(spans));
    }
    let title = format!(
        "Tiers (fast tier kept between {} and {})",
        percent(status.low_watermark),
        percent(status.high_watermark)
    );
    frame.render_widget(Paragraph::new(lines).block(titled(title, theme)), area);
}

fn migration_lines(app: &App, theme: Theme, status: &TierStatus) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    match status.migration.as_ref().filter(|m| m.counts.running) {
        Some(running) => lines.extend(running_migration(theme, running)),
        None => {
            match &status.last_migration {
                Some(last) => {
                    lines.push(Line::raw(format!(
                        "last   {} ({})",
                        local_time(last.finished, app.utc_offset),
                        last.outcome
                    )));
                    lines.push(Line::raw(format!(
                        "       ↑ {} up, ↓ {} down",
                        bytes(last.promoted_bytes),
                        bytes(last.demoted_bytes)
                    )));
                }
                None => lines.push(Line::styled("no migration has run yet", theme.dim())),
            }
            lines.push(Line::raw(format!(
                "next   {}",
                match status.next_migration {
                    Some(_) => next_time(status.next_migration, app.now),
                    None => "not scheduled".to_owned(),
                }
            )));
        }
    }
    if let Some(plan) = &app.data.plan {
        lines.push(Line::raw(""));
        lines.push(Line::styled("last dry run", theme.heading()));
        lines.push(Line::raw(format!(
            "↑ {} up, ↓ {} down; fast {} → {}",
            bytes(plan.promote_bytes),
            bytes(plan.demote_bytes),
            bytes(plan.fast_used_before),
            bytes(plan.fast_used_after)
        )));
    }
    lines
}

fn running_migration(theme: Theme, migration: &MigrationProgress) -> Vec<Line<'static>> {
    let counts = &migration.counts;
    let moved = counts.moved_bytes();
    let done = fraction(moved, counts.planned_bytes);
    let seconds = counts.elapsed_ms as f64 / 1000.0;
    let speed = if seconds > 0.0 {
        (moved as f64 / seconds) as u64
    } else {
        0
    };
    let eta = counts
        .planned_bytes
        .saturating_sub(moved)
        .checked_div(speed)
        .map_or_else(
            || "-".to_owned(),
            |left| age(i64::try_from(left).unwrap_or(i64::MAX)),
        );
    vec![
        Line::from(vec![
            Span::styled("running ", theme.accent()),
            Span::styled(bar(done, 20), theme.good()),
            Span::raw(format!(" {}", percent(done))),
        ]),
        Line::raw(format!(
            "moved  {} of {} at {}, ETA {eta}",
            bytes(moved),
            bytes(counts.planned_bytes),
            rate(speed)
        )),
        Line::raw(format!(
            "       ↑ {} up, ↓ {} down, {} skipped",
            bytes(counts.promoted_bytes),
            bytes(counts.demoted_bytes),
            counts.skipped_blocks
        )),
    ]
}

//! Every screen rendered into ratatui's `TestBackend` at 80x24 and at 160x48, compared with
//! the snapshots under `snapshots/` (review changes with `cargo insta review`).

use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::Terminal;

use super::render;
use crate::fixture::{self, NOW};
use crate::state::{App, Connection, HitAreas, Modal, Tab};

fn draw(app: &App, width: u16, height: u16) -> (Terminal<TestBackend>, HitAreas) {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    let mut hits = HitAreas::default();
    terminal
        .draw(|frame| hits = render(frame, app))
        .expect("draw");
    (terminal, hits)
}

fn screen(app: &App, width: u16, height: u16) -> String {
    draw(app, width, height).0.backend().to_string()
}

fn on(tab: Tab) -> App {
    let mut app = fixture::app(true);
    app.tab = tab;
    app
}

#[test]
fn every_screen_at_80x24() {
    for tab in Tab::ALL {
        let name = format!("{}_80x24", tab.title().replace(" & ", "_").to_lowercase());
        insta::assert_snapshot!(name, screen(&on(tab), 80, 24));
    }
}

#[test]
fn every_screen_at_160x48() {
    for tab in Tab::ALL {
        let name = format!("{}_160x48", tab.title().replace(" & ", "_").to_lowercase());
        insta::assert_snapshot!(name, screen(&on(tab), 160, 48));
    }
}

#[test]
fn help_lists_every_key() {
    let mut app = on(Tab::Snapshots);
    app.modal = Some(Modal::Help);
    let text = screen(&app, 80, 24);
    insta::assert_snapshot!("help_80x24", text);
    for (key, _) in crate::update::GLOBAL_KEYS {
        assert!(text.contains(key), "help shows {key}");
    }
}

#[test]
fn a_confirmation_says_what_will_happen() {
    let mut app = on(Tab::Snapshots);
    crate::update::update(
        &mut app,
        crate::update::Msg::Key(ratatui::crossterm::event::KeyEvent::from(
            ratatui::crossterm::event::KeyCode::Char('r'),
        )),
    );
    insta::assert_snapshot!("rollback_confirmation_80x24", screen(&app, 80, 24));
}

#[test]
fn a_lost_daemon_is_shown_above_the_last_figures() {
    let mut app = fixture::app(true);
    app.connection = Connection::Disconnected {
        reason: "cannot connect to /run/aegis/aegisd.sock: Connection refused (os error 111)"
            .into(),
        since: NOW - 12,
        retry_in_secs: 1,
    };
    insta::assert_snapshot!("disconnected_80x24", screen(&app, 80, 24));
}

#[test]
fn before_any_answer() {
    let app = App::new("/run/aegis/aegisd.sock".into(), None, true, NOW, 0);
    for tab in Tab::ALL {
        let mut app = app.clone();
        app.tab = tab;
        let text = screen(&app, 80, 24);
        assert!(text.contains("connecting"), "{text}");
    }
    insta::assert_snapshot!("connecting_80x24", screen(&app, 80, 24));
}

#[test]
fn no_color_mode_draws_no_colors() {
    for tab in Tab::ALL {
        let mut app = fixture::app(false);
        app.tab = tab;
        let (terminal, _) = draw(&app, 120, 40);
        let buffer = terminal.backend().buffer();
        for cell in &buffer.content {
            assert_eq!(cell.fg, Color::Reset, "{tab:?} colors {:?}", cell.symbol());
            assert_eq!(cell.bg, Color::Reset, "{tab:?} colors {:?}", cell.symbol());
        }
    }
    // With colors, something is colored, and never a background.
    let (terminal, _) = draw(&fixture::app(true), 120, 40);
    let cells = &terminal.backend().buffer().content;
    assert!(cells.iter().any(|c| c.fg != Color::Reset));
    assert!(cells.iter().all(|c| c.bg == Color::Reset));
}

#[test]
fn tiny_and_odd_sizes_do_not_panic() {
    for tab in Tab::ALL {
        let mut app = on(tab);
        for (width, height) in [(1, 1), (10, 3), (20, 6), (40, 12), (79, 23), (300, 100)] {
            draw(&app, width, height);
        }
        app.modal = Some(Modal::Help);
        draw(&app, 30, 8);
    }
}

#[test]
fn tabs_and_rows_report_where_they_are() {
    let (_, hits) = draw(&on(Tab::Snapshots), 80, 24);
    assert_eq!(hits.tabs.len(), Tab::ALL.len());
    assert!(hits.tabs.iter().all(|(area, _)| area.y == 1));
    let (rows, first, _) = hits.rows.expect("the snapshot list is clickable");
    assert_eq!(first, 0);
    // The first row shows the first snapshot.
    let (terminal, _) = draw(&on(Tab::Snapshots), 80, 24);
    let buffer = terminal.backend().buffer();
    let line: String = (rows.x..rows.right())
        .map(|x| buffer[(x, rows.y)].symbol().to_owned())
        .collect();
    assert!(line.contains("before-upgrade"), "{line}");
}

#[test]
fn the_dashboard_names_missing_and_faulted_members() {
    let mut app = on(Tab::Dashboard);
    let status = app.data.pools[0].status.as_mut().expect("fixture status");
    status.members[1].state = "missing".into();
    let text = screen(&app, 160, 48);
    assert!(text.contains("DEGRADED"), "{text}");
    assert!(text.contains("member 1 missing"), "{text}");
    let status = app.data.pools[0].status.as_mut().expect("fixture status");
    status.members[1].state = "removing".into();
    let text = screen(&app, 160, 48);
    assert!(
        text.contains("member 1 removing") && !text.contains("DEGRADED"),
        "{text}"
    );
}

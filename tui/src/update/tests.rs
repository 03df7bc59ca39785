//! The console's reactions, without a terminal or a daemon.

use appliance::api::{Event, Level, SnapshotChange};
use ratatui::crossterm::event::{
    KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind,
};
use ratatui::layout::Rect;

use super::*;
use crate::fixture::{self, NOW};
use crate::state::{Connection, HitAreas, ListId, Modal, Tab};

fn key(app: &mut App, code: KeyCode) -> Vec<Command> {
    update(app, Msg::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

fn typed(app: &mut App, text: &str) {
    for c in text.chars() {
        assert!(key(app, KeyCode::Char(c)).is_empty());
    }
}

fn confirm_message(app: &App) -> String {
    match &app.modal {
        Some(Modal::Confirm { message, .. }) => message.clone(),
        other => panic!("expected a confirmation, got {other:?}"),
    }
}

fn click(app: &mut App, column: u16, row: u16) -> Vec<Command> {
    update(
        app,
        Msg::Mouse(MouseEvent {
            kind: MouseEventKind::Down(MouseButton::Left),
            column,
            row,
            modifiers: KeyModifiers::NONE,
        }),
    )
}

#[test]
fn the_first_mounted_pool_is_chosen_and_polled() {
    let mut app = App::new("sock".into(), None, true, NOW, 0);
    let commands = fixture::answers()
        .into_iter()
        .flat_map(|msg| update(&mut app, msg))
        .collect::<Vec<_>>();
    assert_eq!(commands, vec![Command::SelectPool(Some("tank".into()))]);
    assert_eq!(app.pool.as_deref(), Some("tank"));
    assert_eq!(app.data.snapshots.len(), 3);
}

#[test]
fn tabs_switch_by_number_tab_and_back_tab() {
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('3'));
    assert_eq!(app.tab, Tab::Snapshots);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.tab, Tab::Backups);
    key(&mut app, KeyCode::Tab);
    key(&mut app, KeyCode::Tab);
    assert_eq!(app.tab, Tab::Dashboard);
    key(&mut app, KeyCode::BackTab);
    assert_eq!(app.tab, Tab::Events);
}

#[test]
fn q_and_ctrl_c_quit_even_over_a_dialog() {
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('q'));
    assert!(app.quit);
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('?'));
    assert_eq!(app.modal, Some(Modal::Help));
    update(
        &mut app,
        Msg::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
    );
    assert!(app.quit);
}

#[test]
fn help_opens_and_closes() {
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('?'));
    assert_eq!(app.modal, Some(Modal::Help));
    key(&mut app, KeyCode::Char('j'));
    assert_eq!(app.modal, Some(Modal::Help), "other keys leave it open");
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.modal, None);
}

#[test]
fn a_snapshot_is_named_then_confirmed_then_created() {
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('3'));
    assert!(key(&mut app, KeyCode::Char('n')).is_empty());
    match &app.modal {
        Some(Modal::Input { buffer, .. }) => assert_eq!(buffer, "manual-20261125-175020"),
        other => panic!("expected the name prompt, got {other:?}"),
    }
    for _ in 0.."manual-20261125-175020".len() {
        key(&mut app, KeyCode::Backspace);
    }
    typed(&mut app, "before-move");
    assert!(key(&mut app, KeyCode::Enter).is_empty());
    let message = confirm_message(&app);
    assert!(message.contains("'before-move'") && message.contains("pool tank"));
    let commands = key(&mut app, KeyCode::Char('y'));
    assert_eq!(
        commands,
        vec![Command::CreateSnapshot {
            pool: Some("tank".into()),
            name: "before-move".into()
        }]
    );
    assert_eq!(app.modal, None);
    assert!(app
        .status
        .as_ref()
        .is_some_and(|s| s.text.contains("creating snapshot")));
}

#[test]
fn declining_a_confirmation_sends_nothing() {
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::Char('x'));
    let message = confirm_message(&app);
    assert!(message.contains("before-upgrade") && message.contains("61.0 MiB"));
    assert!(key(&mut app, KeyCode::Char('n')).is_empty());
    assert_eq!(app.modal, None);
    key(&mut app, KeyCode::Char('x'));
    assert!(key(&mut app, KeyCode::Esc).is_empty());
    assert!(
        key(&mut app, KeyCode::Char('y')).is_empty(),
        "y after Esc is not a yes"
    );
}

#[test]
fn rolling_back_past_newer_snapshots_says_they_go_and_forces() {
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::Char('r'));
    let message = confirm_message(&app);
    assert!(message.contains("Everything written to the pool since then is lost"));
    assert!(message.contains("auto-2026-11-25_15-50, auto-2026-11-25_16-50"));
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        vec![Command::Rollback {
            pool: Some("tank".into()),
            name: "before-upgrade".into(),
            force: true
        }]
    );
    // The newest has nothing newer: no force.
    key(&mut app, KeyCode::Char('G'));
    key(&mut app, KeyCode::Char('r'));
    assert!(!confirm_message(&app).contains("destroyed"));
    assert!(matches!(
        key(&mut app, KeyCode::Char('y')).as_slice(),
        [Command::Rollback { force: false, .. }]
    ));
}

#[test]
fn lists_move_within_bounds() {
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::Up);
    assert_eq!(app.snapshots.selected, 0);
    key(&mut app, KeyCode::Char('j'));
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    assert_eq!(app.snapshots.selected, 2);
    key(&mut app, KeyCode::Char('g'));
    assert_eq!(app.snapshots.selected, 0);
    key(&mut app, KeyCode::PageDown);
    assert_eq!(app.snapshots.selected, 2);
}

#[test]
fn slash_filters_and_esc_clears() {
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('3'));
    key(&mut app, KeyCode::Char('/'));
    typed(&mut app, "AUTO");
    assert_eq!(app.list_len(ListId::Snapshots), 2, "filters as it is typed");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.modal, None);
    assert_eq!(app.snapshots.filter, "AUTO");
    assert_eq!(
        app.selected_snapshot().map(|s| s.name.as_str()),
        Some("auto-2026-11-25_15-50")
    );
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.list_len(ListId::Snapshots), 3);
}

#[test]
fn enter_on_a_snapshot_asks_for_its_diff_and_shows_it() {
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('3'));
    assert_eq!(
        key(&mut app, KeyCode::Enter),
        vec![Command::SnapshotDiff {
            pool: Some("tank".into()),
            name: "before-upgrade".into()
        }]
    );
    let changes = (0..30)
        .map(|i| SnapshotChange {
            change: "added".into(),
            kind: "file".into(),
            path: format!("/new/{i}"),
            renamed_to: None,
        })
        .collect();
    update(
        &mut app,
        Msg::Done(Done::Diff {
            name: "before-upgrade".into(),
            changes,
        }),
    );
    let Some(Modal::Details { lines, .. }) = &app.modal else {
        panic!("the diff opens in a dialog");
    };
    assert_eq!(lines.len(), 30);
    assert_eq!(lines[0], "+ file      /new/0");
    key(&mut app, KeyCode::Char('G'));
    key(&mut app, KeyCode::Down);
    assert!(matches!(app.modal, Some(Modal::Details { scroll: 29, .. })));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.modal, None);
}

#[test]
fn tier_actions_plan_freely_but_confirm_moves() {
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('2'));
    assert_eq!(
        key(&mut app, KeyCode::Char('d')),
        vec![Command::MigrateDryRun {
            pool: Some("tank".into())
        }]
    );
    assert!(key(&mut app, KeyCode::Char('m')).is_empty());
    assert!(confirm_message(&app).contains("Start a migration of pool tank"));
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        vec![Command::Migrate {
            pool: Some("tank".into())
        }]
    );
    assert!(key(&mut app, KeyCode::Char('c')).is_empty());
    assert_eq!(app.modal, None, "nothing to cancel");
    assert_eq!(
        app.status.as_ref().map(|s| s.text.as_str()),
        Some("no migration is running")
    );
}

#[test]
fn a_pin_needs_a_path_and_a_known_tier() {
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('2'));
    key(&mut app, KeyCode::Char('t'));
    typed(&mut app, "/media warm");
    key(&mut app, KeyCode::Enter);
    assert_eq!(app.modal, None);
    assert!(app.status.as_ref().is_some_and(|s| s.is_error));
    key(&mut app, KeyCode::Char('t'));
    typed(&mut app, "/media/old films slow");
    key(&mut app, KeyCode::Enter);
    assert!(confirm_message(&app).contains("Pin /media/old films of pool tank"));
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        vec![Command::Pin {
            pool: Some("tank".into()),
            path: "/media/old films".into(),
            tier: "slow".into()
        }]
    );
}

#[test]
fn backups_run_dry_run_cancel_and_log() {
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('4'));
    key(&mut app, KeyCode::Char('r'));
    let message = confirm_message(&app);
    assert!(message.contains("photos-offsite") && message.contains("sync mode"));
    key(&mut app, KeyCode::Esc);
    key(&mut app, KeyCode::Char('c'));
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        vec![Command::CancelBackup {
            name: "photos-offsite".into()
        }]
    );
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Char('c'));
    assert_eq!(app.modal, None, "documents-usb is not running");
    key(&mut app, KeyCode::Char('d'));
    assert!(confirm_message(&app).contains("Nothing changes at the destination"));
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        vec![Command::RunBackup {
            name: "documents-usb".into(),
            dry_run: true
        }]
    );
    assert_eq!(
        key(&mut app, KeyCode::Char('l')),
        vec![Command::BackupLog {
            name: "documents-usb".into()
        }]
    );
}

#[test]
fn scrub_start_is_confirmed_and_cancel_needs_a_running_scrub() {
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('5'));
    key(&mut app, KeyCode::Char('c'));
    assert_eq!(app.modal, None);
    key(&mut app, KeyCode::Char('s'));
    assert!(confirm_message(&app).contains("Start a scrub of pool tank"));
    assert_eq!(
        key(&mut app, KeyCode::Char('y')),
        vec![Command::StartScrub {
            pool: Some("tank".into())
        }]
    );
}

#[test]
fn p_moves_to_the_next_pool_and_forgets_the_last_ones_details() {
    let mut app = fixture::app(true);
    assert_eq!(
        key(&mut app, KeyCode::Char('p')),
        vec![Command::SelectPool(Some("vault".into()))]
    );
    assert!(app.data.snapshots.is_empty() && app.data.tier.is_none());
    // A late answer about the previous pool is dropped.
    let stale = fixture::answers()
        .into_iter()
        .find(|m| matches!(m, Msg::Data(DataUpdate::Snapshots { .. })))
        .expect("the fixture has snapshots");
    update(&mut app, stale);
    assert!(app.data.snapshots.is_empty());
}

#[test]
fn clicks_switch_tabs_select_rows_and_open_on_a_second_click() {
    let mut app = fixture::app(true);
    app.hit_areas = HitAreas {
        tabs: vec![
            (Rect::new(0, 1, 13, 1), Tab::Dashboard),
            (Rect::new(14, 1, 13, 1), Tab::Snapshots),
        ],
        rows: Some((Rect::new(1, 4, 70, 10), 0, ListId::Snapshots)),
    };
    click(&mut app, 20, 1);
    assert_eq!(app.tab, Tab::Snapshots);
    assert!(click(&mut app, 10, 6).is_empty());
    assert_eq!(app.snapshots.selected, 2);
    assert!(matches!(
        click(&mut app, 10, 6).as_slice(),
        [Command::SnapshotDiff { .. }]
    ));
    // Below the last row: nothing.
    click(&mut app, 10, 9);
    assert_eq!(app.snapshots.selected, 2);
}

#[test]
fn losing_and_regaining_the_daemon_is_shown() {
    let mut app = fixture::app(true);
    update(
        &mut app,
        Msg::Disconnected {
            reason: "connection refused".into(),
            retry_in_secs: 1,
        },
    );
    update(&mut app, Msg::Tick { now: NOW + 5 });
    update(
        &mut app,
        Msg::Disconnected {
            reason: "connection refused".into(),
            retry_in_secs: 1,
        },
    );
    assert!(matches!(
        app.connection,
        Connection::Disconnected { since: NOW, .. }
    ));
    update(&mut app, Msg::Connected);
    assert_eq!(app.connection, Connection::Connected);
    assert_eq!(
        app.status.as_ref().map(|s| s.text.as_str()),
        Some("reconnected to aegisd")
    );
    let mut restarted = fixture::answers()
        .into_iter()
        .find_map(|m| match m {
            Msg::Data(DataUpdate::Daemon(info)) => Some(info),
            _ => None,
        })
        .expect("the fixture has the daemon");
    restarted.pid = 5151;
    update(&mut app, Msg::Data(DataUpdate::Daemon(restarted)));
    assert_eq!(
        app.status.as_ref().map(|s| s.text.as_str()),
        Some("aegisd restarted (pid 4242 → 5151)")
    );
}

#[test]
fn failures_show_on_the_footer_until_they_expire() {
    let mut app = fixture::app(true);
    update(
        &mut app,
        Msg::ActionFailed {
            action: "creating snapshot 'x' of tank".into(),
            message: "a snapshot named 'x' exists".into(),
        },
    );
    let status = app.status.clone().expect("a status line");
    assert!(status.is_error);
    assert_eq!(
        status.text,
        "creating snapshot 'x' of tank failed: a snapshot named 'x' exists"
    );
    update(&mut app, Msg::Tick { now: NOW + 10 });
    assert_eq!(app.status, None);
    update(
        &mut app,
        Msg::ApiFailed {
            what: "snapshots".into(),
            message: "pool is read-only".into(),
        },
    );
    assert_eq!(app.data.poll_errors.len(), 1);
    update(
        &mut app,
        Msg::Data(DataUpdate::Snapshots {
            pool: Some("tank".into()),
            snapshots: Vec::new(),
        }),
    );
    assert!(app.data.poll_errors.is_empty(), "a good answer clears it");
}

#[test]
fn new_events_keep_the_selection_on_the_same_event() {
    let mut app = fixture::app(true);
    key(&mut app, KeyCode::Char('5'));
    key(&mut app, KeyCode::Down);
    let selected = app.selected_event().map(|e| e.id);
    let newer = |id: i64| Event {
        id,
        time: NOW + id,
        level: Level::Info,
        kind: "snapshot".into(),
        pool: None,
        message: format!("event {id}"),
    };
    update(
        &mut app,
        Msg::Data(DataUpdate::Events(vec![newer(6), newer(7)])),
    );
    assert_eq!(app.selected_event().map(|e| e.id), selected);
    // At the top, the newest stays selected.
    key(&mut app, KeyCode::Char('g'));
    update(&mut app, Msg::Data(DataUpdate::Events(vec![newer(8)])));
    assert_eq!(app.selected_event().map(|e| e.id), Some(8));
    // Repeats are ignored.
    update(&mut app, Msg::Data(DataUpdate::Events(vec![newer(8)])));
    assert_eq!(app.data.events.len(), 8);
}

#[test]
fn latency_is_the_mean_over_the_last_interval() {
    let mut app = fixture::app(true);
    let latency = |app: &App| {
        app.latency
            .get(&("tank".to_owned(), "fast".to_owned()))
            .cloned()
            .expect("fast tier latency")
    };
    assert_eq!(latency(&app).recent_read_ms, Some(0.25));
    let next = LatencyTotals {
        pool: "tank".into(),
        tier: "fast".into(),
        read_seconds: 0.6,
        reads: 2_100,
        write_seconds: 1.2,
        writes: 1_000,
    };
    update(&mut app, Msg::Data(DataUpdate::Latency(vec![next])));
    let now = latency(&app);
    assert!((now.recent_read_ms.expect("reads happened") - 1.0).abs() < 1e-9);
    assert_eq!(now.recent_write_ms, None, "no writes in the interval");
}

#[test]
fn io_history_keeps_five_minutes() {
    let app = fixture::app(true);
    let seconds: Vec<i64> = app.io.series("tank", "fast").map(|(t, _)| t).collect();
    assert_eq!(seconds.first(), Some(&(NOW - 299)));
    assert_eq!(seconds.last(), Some(&NOW));
    assert_eq!(app.io.tiers("tank"), vec!["fast", "slow"]);
    let mut app = app;
    let later = appliance::api::IoSecond {
        time: NOW + 10,
        pools: Vec::new(),
    };
    update(&mut app, Msg::Io(later));
    let first = app.io.series("tank", "fast").next().map(|(t, _)| t);
    assert_eq!(first, Some(NOW + 10 - 300), "older seconds are dropped");
}

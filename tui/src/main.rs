//! `aegis-tui`: the live console of an AegisFS appliance, a client of aegisd's control API.
//!
//! `main` owns the terminal and the event loop: it reads keys, mouse and resizes from the
//! terminal (polled with a short timeout) and the API worker's messages from a channel, hands
//! each to `update::update`, sends the commands that returns to the worker, and redraws when
//! something changed. The terminal is restored on every exit, a panic included.

mod api;
#[cfg(test)]
mod fixture;
mod format;
mod state;
mod ui;
mod update;
mod wire;

use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use ratatui::crossterm::event::{self, DisableMouseCapture, EnableMouseCapture, MouseEventKind};
use ratatui::crossterm::execute;
use ratatui::DefaultTerminal;
use tui::cli::Args;

use crate::state::{App, HitAreas};
use crate::update::{update, Command, Msg};

/// How long the loop waits for terminal input before looking at the channel again.
const INPUT_POLL: Duration = Duration::from_millis(50);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(socket) = args.socket {
        appliance::client::choose_daemon_socket(socket);
    }
    let socket = appliance::client::daemon_socket();
    let color = !args.no_color && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let utc_offset = chrono::Local::now().offset().local_minus_utc();
    let mut app = App::new(
        socket.display().to_string(),
        args.pool.clone(),
        color,
        unix_now(),
        utc_offset,
    );
    let (messages, inbox) = mpsc::channel();
    let worker = api::Worker::start(socket, args.pool, &messages);

    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    // ratatui's hook restores the terminal on panic; mouse reporting is ours to turn off.
    let restore_terminal = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let _ = execute!(std::io::stdout(), DisableMouseCapture);
        restore_terminal(info);
    }));
    let result = execute!(std::io::stdout(), EnableMouseCapture)
        .context("cannot turn on mouse reporting")
        .and_then(|()| run(&mut terminal, &mut app, &inbox, &worker));
    let _ = execute!(std::io::stdout(), DisableMouseCapture);
    ratatui::restore();
    result
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Applies one message and passes on its commands.
fn dispatch(app: &mut App, worker: &api::Worker, msg: Msg) {
    for command in update(app, msg) {
        worker.send(command);
    }
}

fn run(
    terminal: &mut DefaultTerminal,
    app: &mut App,
    inbox: &Receiver<Msg>,
    worker: &api::Worker,
) -> anyhow::Result<()> {
    worker.send(Command::SelectPool(app.pool.clone()));
    let mut dirty = true;
    let mut last_tick = Instant::now();
    loop {
        if dirty {
            let mut hits = HitAreas::default();
            terminal.draw(|frame| hits = ui::render(frame, app))?;
            app.hit_areas = hits;
            dirty = false;
        }
        if app.quit {
            return Ok(());
        }
        let mut timeout = INPUT_POLL;
        while event::poll(timeout)? {
            timeout = Duration::ZERO;
            let msg = match event::read()? {
                event::Event::Key(key) => Msg::Key(key),
                event::Event::Mouse(mouse) if mouse.kind != MouseEventKind::Moved => {
                    Msg::Mouse(mouse)
                }
                event::Event::Resize(..) => Msg::Resize,
                _ => continue,
            };
            dispatch(app, worker, msg);
            dirty = true;
        }
        while let Ok(msg) = inbox.try_recv() {
            dispatch(app, worker, msg);
            dirty = true;
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            dispatch(app, worker, Msg::Tick { now: unix_now() });
            dirty = true;
        }
    }
}

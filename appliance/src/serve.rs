//! The standalone serving process of `aegis mount`: mounts one pool, answers its control
//! socket (`$AEGIS_RUN_DIR/<pool uuid>.sock`) and unmounts cleanly on SIGTERM/SIGINT/SIGHUP.
//! `aegis mount` runs it detached; `aegis mount --foreground` runs it attached.

use std::io::Write;
use std::sync::Arc;

use crate::http::{read_body, respond, Workers};
use crate::service::{route, MountRequest, MountedPool};

/// Threads answering the control socket.
const API_THREADS: usize = 4;

/// Mounts the pool and serves it until it is unmounted (by a signal or `umount`).
pub fn serve(request: MountRequest<'_>, announce_ready: bool) -> anyhow::Result<()> {
    let pool = Arc::new(MountedPool::mount(request)?);
    let service = Arc::clone(&pool.service);
    let socket = crate::client::run_dir().join(format!("{}.sock", service.fs.status().pool_uuid));
    let workers = match crate::http::bind_socket(&socket, None) {
        Ok(server) => Workers::spawn(
            server,
            API_THREADS,
            "aegis-api",
            Arc::new(move |mut request: tiny_http::Request| {
                let response = read_body(&mut request)
                    .and_then(|body| route(request.method(), request.url(), &body, &service))
                    .unwrap_or_else(|f| f.response());
                respond(request, response);
            }),
        ),
        Err(err) => Err(err),
    };
    let workers = match workers {
        Ok(workers) => workers,
        Err(err) => {
            pool.request_unmount()?;
            pool.wait()?;
            return Err(err.context("this pool is already being served"));
        }
    };

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])?;
    let signal_handle = signals.handle();
    let signal_pool = Arc::clone(&pool);
    let signal_thread = std::thread::Builder::new()
        .name("aegis-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                tracing::info!(signal, "unmounting on signal");
                if let Err(err) = signal_pool.request_unmount() {
                    tracing::error!(error = %err, "unmount on signal failed");
                }
            }
        })?;

    tracing::info!(pool = %pool.service.name, mountpoint = %pool.service.mountpoint, socket = %socket.display(), "serving");
    if announce_ready {
        let mut stdout = std::io::stdout();
        writeln!(stdout, "READY {}", socket.display())?;
        stdout.flush()?;
    }
    while !pool.is_unmounted() {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    signal_handle.close();
    let _ = signal_thread.join();
    workers.stop();
    let _ = std::fs::remove_file(&socket);
    pool.wait()
}

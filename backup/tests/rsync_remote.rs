//! rsync to `host:path` destinations. A fake remote shell (`RSYNC_RSH`, set for this test
//! binary only) runs the remote side locally, so versions, `latest` and pruning go through
//! the same remote code path as over ssh; then real ssh to a closed loopback port.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::AtomicBool;

use backup::{Outcome, Remotes};
use common::*;

#[test]
fn versions_over_a_remote_shell_and_unreachable_host() {
    let tmp = tempfile::tempdir().unwrap();
    let rsh = tmp.path().join("fake-ssh");
    std::fs::write(
        &rsh,
        "#!/bin/sh\n# Drop the host name, run the command here.\nshift\nexec \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&rsh, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Only this test runs in this binary, so changing the environment is safe.
    std::env::set_var("RSYNC_RSH", &rsh);

    let (src, dest) = (tmp.path().join("src"), tmp.path().join("dest"));
    let job = job(
        "rsync",
        &format!("backuphost:{}", dest.display()),
        "keep_versions = 2",
    );
    write(&src, "same.bin", noise(200_000));
    for (second, content) in [(1, "one"), (2, "two!"), (3, "three")] {
        write(&src, "a.txt", content);
        let report = run_ok(&request(job.clone(), &src, Remotes::default(), second));
        assert_eq!(report.files, if second == 1 { 2 } else { 1 }, "{report:#?}");
    }
    let mut names: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["2026-01-01T00-00-02", "2026-01-01T00-00-03", "latest"]
    );
    assert_eq!(read(&dest, "latest/a.txt"), b"three");
    assert_eq!(read(&dest, "2026-01-01T00-00-02/a.txt"), b"two!");
    let inode = |v: &str| {
        std::fs::metadata(dest.join(v).join("same.bin"))
            .unwrap()
            .ino()
    };
    assert_eq!(inode("2026-01-01T00-00-02"), inode("2026-01-01T00-00-03"));
    let verified = backup::verify(&request(job, &src, Remotes::default(), 4)).unwrap();
    assert!(verified.identical, "{verified:?}");

    // Real ssh to a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::env::set_var("RSYNC_RSH", format!("ssh -p {port} -o BatchMode=yes"));
    let req = request(
        common::job("rsync", "127.0.0.1:/srv/backup", ""),
        &src,
        Remotes::default(),
        5,
    );
    let report = backup::run(&req, &mut |_| {}, &AtomicBool::new(false)).unwrap();
    assert_eq!(report.outcome, Outcome::RemoteUnreachable, "{report:#?}");
    // rsync exits 255 (the remote shell failed) or, when it notices the closed pipe first,
    // 12 (the protocol stream broke); both name ssh's reason.
    let message = &report.message;
    assert!(
        ["(exit 255): ", "(exit 12): "]
            .iter()
            .any(|exit| message.contains(&format!("{exit}ssh: connect to host 127.0.0.1"))),
        "{message}"
    );
}

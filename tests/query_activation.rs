//! systemd socket activation: the socket passed as fd 3 is taken over and served. Alone in its
//! own test binary so that fd 3 is free for the hand-over (a fresh process's next descriptor).

use mispd::query::{self, client, Settings};
use mispd::state::{Shared, View};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::net::UnixListener;
use std::time::Duration;

#[test]
fn a_socket_passed_by_systemd_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("activated.sock");

    // Variables meant for another process are ignored.
    std::env::set_var("LISTEN_PID", (std::process::id() + 1).to_string());
    std::env::set_var("LISTEN_FDS", "1");
    assert!(query::from_systemd().is_none());

    let listener = UnixListener::bind(&path).unwrap();
    if listener.as_raw_fd() != 3 {
        eprintln!(
            "fd 3 is already taken in this test process (got fd {}); hand-over not tested",
            listener.as_raw_fd()
        );
        return;
    }
    // Give up ownership as systemd does when it execs the service.
    let _fd = listener.into_raw_fd();
    std::env::set_var("LISTEN_PID", std::process::id().to_string());
    std::env::set_var("LISTEN_FDS", "1");
    let taken = query::from_systemd().expect("the passed socket is taken over");
    assert!(
        std::env::var("LISTEN_FDS").is_err(),
        "variables are cleared"
    );
    assert!(query::from_systemd().is_none(), "claimed once only");
    assert_eq!(
        taken.local_addr().unwrap().as_pathname(),
        Some(path.as_path())
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let shared = Shared::new(
            View {
                generation: 1,
                ..View::default()
            },
            tx,
        );
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(query::serve(taken, shared, Settings::default(), stop_rx));
        let (status, body) = client::get(&path, "/v1/health").await.unwrap();
        assert_eq!(status, 200, "{body:?}");
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    });
}

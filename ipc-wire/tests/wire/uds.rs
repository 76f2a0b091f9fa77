//! Unix sockets: private directory and file, stale-file reclaim, cleanup, foreign uids.

use crate::support::run;
use plough_ipc_wire::{AcceptError, Address, Listener, TransportError, connect};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o777
}

#[test]
fn bind_makes_a_private_dir_and_a_0600_socket_and_drop_removes_it() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run/plough");
        let addr = Address::uds_for_actor(&dir, "worker", 42).unwrap();
        let path = addr.uds_path().unwrap().to_owned();
        let listener = Listener::bind(&addr).await.unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(listener.local_addr(), &addr);
        let (accepted, connected) = tokio::join!(listener.accept(), connect(&addr));
        let (accepted, _connected) = (accepted.unwrap(), connected.unwrap());
        assert!(
            matches!(accepted.peer(), plough_ipc_wire::Peer::Uds { pid: Some(p), .. } if p as u32 == std::process::id())
        );
        drop(listener);
        assert!(!path.exists(), "the socket file is removed with the listener");
    });
}

#[test]
fn a_stale_socket_is_reclaimed_but_a_live_one_is_not() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a@1.sock");
        let addr = Address::Uds(path.clone());
        // A crashed run: std's listener leaves its file behind when dropped.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = Listener::bind(&addr).await.expect("stale file reclaimed");
        match Listener::bind(&addr).await {
            Err(TransportError::AddrInUse(p)) => assert_eq!(p, path),
            other => panic!("expected AddrInUse, got {other:?}"),
        }
        assert!(path.exists(), "a failed bind leaves the live listener's file alone");
        connect(&addr).await.expect("the live listener still answers");
        drop(live);
        assert!(!path.exists());
    });
}

#[test]
fn a_file_that_is_not_a_socket_is_never_replaced() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("precious");
        fs::write(&path, b"data").unwrap();
        assert!(matches!(
            Listener::bind(&Address::Uds(path.clone())).await,
            Err(TransportError::NotASocket(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), b"data");
    });
}

#[test]
fn dropping_a_listener_leaves_a_successors_socket_alone() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let addr = Address::Uds(tmp.path().join("x@1.sock"));
        let first = Listener::bind(&addr).await.unwrap();
        fs::remove_file(addr.uds_path().unwrap()).unwrap(); // someone's cleanup
        let second = Listener::bind(&addr).await.unwrap();
        drop(first);
        assert!(addr.uds_path().unwrap().exists(), "the successor's socket survives");
        connect(&addr).await.expect("and answers");
        drop(second);
        assert!(!addr.uds_path().unwrap().exists());
    });
}

#[test]
fn a_symlinked_or_foreign_runtime_dir_is_refused() {
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = plough_ipc_wire::runtime_dir::ensure_private_dir(&link).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    });
}

const HELPER_ENV: &str = "PLOUGH_WIRE_TEST_CONNECT_AS_NOBODY";
const NOBODY: u32 = 65534;

/// Not a test of its own: the body of the helper process that
/// `another_uid_is_refused_by_permissions_and_by_peercred` re-executes this binary as. It
/// drops to `nobody` and connects to the socket named in the environment, then reports
/// with its exit code: 0 = connected and then closed by the server without a word, 3 =
/// connect refused by file permissions, 4 = told "wrong uid" in one refusal frame, then
/// closed.
#[test]
fn helper_connect_as_nobody() {
    let Some(path) = std::env::var_os(HELPER_ENV) else { return };
    use rustix::process::{Gid, Uid};
    rustix::thread::set_thread_groups(&[]).expect("setgroups");
    rustix::thread::set_thread_gid(Gid::from_raw(NOBODY)).expect("setgid");
    rustix::thread::set_thread_uid(Uid::from_raw(NOBODY)).expect("setuid");
    let code = run(async move {
        use tokio::io::AsyncReadExt;
        match tokio::net::UnixStream::connect(&path).await {
            Ok(mut s) => {
                let mut got = Vec::new();
                // The server refuses us by closing (a bare listener), or by one refusal
                // frame and then closing (an acceptor): read to that EOF (or a reset).
                let _ = s.read_to_end(&mut got).await;
                if got.is_empty() {
                    return 0;
                }
                let mut buf = bytes::BytesMut::from(&got[..]);
                use tokio_util::codec::Decoder;
                let frame = plough_ipc_wire::FrameCodec::default().decode(&mut buf);
                match frame.ok().flatten().map(|f| f.decode()) {
                    Some(Ok(plough_ipc_wire::Msg::Error(e)))
                        if e.kind == plough_ipc_wire::ErrorKind::Refused
                            && e.message.starts_with("wrong uid: connections from uid 65534")
                            && buf.is_empty() =>
                    {
                        4
                    }
                    other => panic!("expected one refusal frame, got {other:?}"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => 3,
            Err(e) => panic!("unexpected connect error: {e}"),
        }
    });
    std::process::exit(code);
}

async fn run_helper(path: &Path) -> i32 {
    // std's Command, not tokio's: the workspace never enables tokio's `process` (or
    // `signal`) feature, whose process-global signal state breaks runtimes built in
    // forked children (feature unification would impose it on every crate's tests).
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "uds::helper_connect_as_nobody", "--nocapture", "--test-threads=1"])
        .env(HELPER_ENV, path)
        .spawn()
        .expect("spawn helper");
    let pid = child.id();
    let waiter = tokio::task::spawn_blocking(move || {
        let mut child = child;
        child.wait()
    });
    match tokio::time::timeout(Duration::from_secs(15), waiter).await {
        Ok(status) => status.unwrap().unwrap().code().expect("helper exited normally"),
        Err(_) => {
            let pid = rustix::process::Pid::from_raw(pid as i32).expect("a child pid");
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            panic!("helper did not finish in time");
        }
    }
}

#[test]
fn another_uid_is_refused_by_permissions_and_by_peercred() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to run a helper as nobody");
        return;
    }
    run(async {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("plough");
        let addr = Address::uds_for_actor(&dir, "root", std::process::id()).unwrap();
        let path = addr.uds_path().unwrap().to_owned();
        let listener = Listener::bind(&addr).await.unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();

        // As bound: the 0700 directory keeps nobody out before any byte is exchanged.
        assert_eq!(run_helper(&path).await, 3, "connect should fail with EACCES");

        // Loosen everything, as a misconfiguration would: SO_PEERCRED still refuses.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
        // (The refused connection comes back only to be told why; dropping it closes it.)
        let refused = async {
            match listener.accept().await {
                Err(AcceptError::PeerRefused { uid, ours, conn, .. }) => {
                    drop(conn);
                    (uid, ours)
                }
                other => panic!("expected PeerRefused, got {other:?}"),
            }
        };
        let (refused, code) = tokio::join!(refused, run_helper(&path));
        assert_eq!(refused, (NOBODY, 0));
        assert_eq!(code, 0, "the helper connected and was then closed on");

        // Behind an acceptor the refused peer is also told why, in one error frame.
        let creds = crate::support::creds("root");
        let mut acceptor = plough_ipc_wire::Acceptor::new(
            listener,
            creds,
            plough_ipc_wire::HandshakeConfig::default(),
        );
        let refused = async {
            match acceptor.accept_event().await {
                plough_ipc_wire::AcceptEvent::Rejected(
                    plough_ipc_wire::HandshakeError::Accept(AcceptError::PeerRefused {
                        uid, ..
                    }),
                ) => uid,
                other => panic!("expected PeerRefused, got {other:?}"),
            }
        };
        let (uid, code) = tokio::join!(refused, run_helper(&path));
        assert_eq!((uid, code), (NOBODY, 4), "told `wrong uid`, then closed");
        drop(acceptor);
        assert!(!path.exists());
    });
}

//! `plough ps`: exactly the live actors of a running tree, as a tree, and not the ones
//! that exited; a clear message when no registrar answers.

use plough_tests::{runtime, with_root};
use std::time::Duration;

const APP: &str = env!("CARGO_BIN_EXE_plough_app");
const LIMIT: Duration = Duration::from_secs(30);

/// The `plough` binary (package `plough-ps`) of this workspace build, next to this
/// test's directory.
fn plough_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|deps| deps.parent()).unwrap().join("plough");
    assert!(
        bin.exists(),
        "{} is not built: `cargo build -p plough-ps` (cargo xtask test builds every \
         workspace binary)",
        bin.display()
    );
    bin
}

fn names(entries: &[plough::ActorEntry]) -> Vec<String> {
    let mut v: Vec<String> = entries.iter().map(|e| e.aid.name.clone()).collect();
    v.sort();
    v
}

#[test]
fn ps_lists_exactly_the_live_tree() {
    with_root(runtime(APP), LIMIT, |root| async move {
        let registry = root.registry_addr().clone();
        root.nursery(|n| async move {
            let a = n.start_actor("alpha").await?;
            let b = n.start_actor("beta").await?;
            // beta starts two children of its own (grandchildren of the root).
            let b2 = b.clone();
            let sleepers =
                tokio::spawn(async move { b2.run::<_, ()>("hold_sleepers", 2u32).await });
            let _ = a.run::<_, u32>("pid", ()).await?;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let entries = loop {
                let e = plough_ps::query(&registry).await?;
                if e.len() == 5 {
                    break e;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "never saw 5 actors: {:?}",
                    names(&e)
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            assert_eq!(names(&entries), ["alpha", "beta", "root", "sleeper0", "sleeper1"]);
            let by_name = |n: &str| entries.iter().find(|e| e.aid.name == n).unwrap();
            assert_eq!(by_name("root").method, "root");
            assert!(by_name("root").parent.is_none());
            assert_eq!(by_name("alpha").parent.as_ref().unwrap().name, "root");
            assert_eq!(by_name("sleeper0").parent.as_ref().unwrap().name, "beta");
            let tree = plough_ps::render_tree(&entries, plough_ps::now_ms());
            assert!(tree.contains("\n  alpha@") && tree.contains("\n    sleeper0@"), "{tree}");

            // The CLI says the same (run off the runtime thread: the root serves it).
            let bin = plough_bin();
            let reg = registry.to_string();
            let out = tokio::task::spawn_blocking(move || {
                std::process::Command::new(bin).args(["ps", "--registry", &reg, "--json"]).output()
            })
            .await
            .unwrap()
            .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let rows: serde_json::Value =
                serde_json::from_slice(&out.stdout).expect("--json parses");
            let mut cli: Vec<String> = rows
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_owned())
                .collect();
            cli.sort();
            assert_eq!(cli, names(&entries));

            // An actor that exits is no longer shown.
            assert!(a.cancel_actor().await);
            tokio::time::timeout(Duration::from_secs(5), a.closed()).await.expect("alpha exits");
            let after = plough_ps::query(&registry).await?;
            assert!(!names(&after).contains(&"alpha".to_owned()), "{:?}", names(&after));
            assert_eq!(after.len(), 4);
            sleepers.abort();
            Ok(())
        })
        .await
    })
    .unwrap();
}

#[test]
fn ps_without_a_registrar_says_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp://{}", listener.local_addr().unwrap());
    drop(listener);
    let out = std::process::Command::new(plough_bin())
        .args(["ps", "--registry", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("no plough registrar answers at {addr}")), "{err}");
    assert!(err.contains("Connection refused"), "{err}");
}

/// On a pipe `plough ps` prints one line per actor (a long name whole, no colour), and
/// `--watch` lists again and again, each listing after a blank line, until it is stopped.
#[test]
fn ps_on_a_pipe_is_plain_and_watch_lists_again() {
    let long = "an-actor-whose-name-is-long-enough-to-break-fixed-width-columns-of-ps";
    with_root(runtime(APP), LIMIT, |root| async move {
        let registry = root.registry_addr().to_string();
        root.nursery(|n| async move {
            let a = n.start_actor(long).await?;
            let _ = a.run::<_, u32>("pid", ()).await?;
            let out = tokio::task::spawn_blocking({
                let reg = registry.clone();
                move || {
                    std::process::Command::new(plough_bin())
                        .args(["ps", "--registry", &reg])
                        .env_remove("NO_COLOR")
                        .env("COLUMNS", "60")
                        .output()
                }
            })
            .await
            .unwrap()
            .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            assert!(!text.contains('\x1b'), "colour into a pipe: {text:?}");
            let line = text.lines().find(|l| l.contains(long)).unwrap_or_else(|| panic!("{text}"));
            assert!(line.starts_with(&format!("  {long}@")), "{text}");

            // --watch: two listings on the pipe, then it is stopped (it runs until then).
            let watch = tokio::task::spawn_blocking(move || {
                let mut child = std::process::Command::new(plough_bin())
                    .args(["ps", "--registry", &registry, "--watch", "0.05"])
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                let mut lines = plough_tests::OutputLines::read(child.stdout.take().unwrap());
                let handle = plough_fork_prims::ChildHandle::from_std(child).unwrap();
                handle.set_kill_on_drop(true);
                let first = lines.expect_line("ACTOR", LIMIT).map(|_| ());
                let named = lines.expect_line(&format!("  {long}@"), LIMIT).map(|_| ());
                let second = lines.expect_line("ACTOR", LIMIT).map(|_| ());
                let running = handle.try_wait().unwrap().is_none();
                handle.kill().unwrap();
                let status = plough_tests::wait_exit(&handle, LIMIT).expect("plough ps exits");
                (first, named, second, running, status, lines.seen().to_vec())
            })
            .await
            .unwrap();
            let (first, named, second, running, status, seen) = watch;
            assert!(first.and(named).and(second).is_some(), "two listings: {seen:#?}");
            let blank = seen.iter().position(|l| l.is_empty()).expect("a blank line between");
            assert_eq!(
                seen.get(blank + 1).map(|l| l.starts_with("ACTOR")),
                Some(true),
                "{seen:#?}"
            );
            assert!(running, "--watch ended by itself: {seen:#?}");
            assert!(!status.success(), "{status}");
            assert!(seen.iter().all(|l| !l.contains('\x1b')), "{seen:#?}");
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// Opens a pseudo-terminal `cols` wide: (master, slave).
fn pty(cols: u16) -> (std::fs::File, std::fs::File) {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave =
        std::fs::OpenOptions::new().read(true).write(true).open(name.to_str().unwrap()).unwrap();
    let size = rustix::termios::Winsize { ws_row: 40, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    rustix::termios::tcsetwinsize(&slave, size).unwrap();
    (std::fs::File::from(master), slave)
}

/// `s` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// On a terminal `plough ps` fits the terminal's width (names whole, the address wrapped)
/// and colours its header, unless `NO_COLOR` is set.
#[test]
fn ps_on_a_terminal_fits_its_width_and_colours_unless_no_color() {
    let long = "an-actor-whose-name-is-long-enough-to-break-fixed-width-columns-of-ps";
    with_root(runtime(APP), LIMIT, |root| async move {
        let registry = root.registry_addr().to_string();
        root.nursery(|n| async move {
            let a = n.start_actor(long).await?;
            let _ = a.run::<_, u32>("pid", ()).await?;
            // Room for the name, method, uptime and uuid columns (each padded by 2), and
            // for ADDRESS_MIN_WIDTH + 2 of the address: less than any whole address.
            let entries = plough_ps::query(&root_registry(&registry)).await?;
            let widest = |f: &dyn Fn(&plough::ActorEntry) -> usize, header: usize| {
                entries.iter().map(f).max().unwrap_or(0).max(header) + 2
            };
            let name = widest(&|e| e.aid.to_string().len() + 2, 5);
            let method = widest(&|e| e.method.len(), 6);
            let cols = name + method + usize::from(plough_ps::ADDRESS_MIN_WIDTH) + 4 + 8 + 8;
            let shortest_addr = entries.iter().map(|e| e.addr.len()).min().unwrap();
            assert!(shortest_addr > usize::from(plough_ps::ADDRESS_MIN_WIDTH) + 2);
            let cols = u16::try_from(cols).unwrap();
            for (no_color, colour) in [(None, true), (Some("1"), false)] {
                let reg = registry.clone();
                let text = tokio::task::spawn_blocking(move || {
                    use std::io::Read as _;
                    let (mut master, slave) = pty(cols);
                    let mut cmd = std::process::Command::new(plough_bin());
                    cmd.args(["ps", "--registry", &reg])
                        .env_remove("COLUMNS")
                        .env_remove("NO_COLOR")
                        .stdin(std::process::Stdio::null())
                        .stdout(slave);
                    if let Some(v) = no_color {
                        cmd.env("NO_COLOR", v);
                    }
                    let child = cmd.spawn().unwrap();
                    drop(cmd); // the slave's last copy here: EOF (EIO) once `plough` exits
                    let handle = plough_fork_prims::ChildHandle::from_std(child).unwrap();
                    handle.set_kill_on_drop(true);
                    let mut bytes = Vec::new();
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = master.read(&mut buf) {
                        bytes.extend_from_slice(&buf[..n]);
                    }
                    let status = plough_tests::wait_exit(&handle, LIMIT).expect("plough ps exits");
                    assert!(status.success(), "{status}");
                    String::from_utf8_lossy(&bytes).into_owned()
                })
                .await
                .unwrap();
                let what = format!("NO_COLOR={no_color:?}: {text:?}");
                assert_eq!(text.contains('\x1b'), colour, "{what}");
                let plain = strip_ansi(&text);
                let widest_line =
                    plain.lines().map(|l| l.trim_end_matches('\r').chars().count()).max();
                assert!(widest_line.is_some_and(|w| w <= cols.into()), "wider than {cols}: {what}");
                assert!(plain.lines().any(|l| l.starts_with(&format!("  {long}@"))), "{what}");
                // The address did not fit: it wrapped, the header stayed whole.
                assert!(plain.lines().count() > 3, "nothing wrapped: {what}");
                assert!(plain.lines().next().is_some_and(|h| h.contains("ADDRESS")), "{what}");
            }
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// `addr` as an [`Address`](plough::Address).
fn root_registry(addr: &str) -> plough::Address {
    addr.parse().expect("the root's registry address parses")
}

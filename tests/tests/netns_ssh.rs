//! The ssh launcher against a real OpenSSH server the test starts inside a lab host: it
//! starts `plough-host` there through `ssh`, a root in another namespace runs an actor
//! on it, and ending the launcher's session stops the daemon (gracefully: its actors go
//! with it) — nothing is left on the host.
//!
//! Needs root, iproute2, `sshd`, `ssh` and `ssh-keygen` (`.ci/run` installs
//! openssh-server); elsewhere the test prints why it skips.

use plough::ActorError;
use plough::ipc_wire::BuildId;
use plough_host::ssh::SshLaunch;
use plough_tests::multi_host::configure_root;
use plough_tests::netns::{namespaces_named, skip_without_netns};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";
const STEP: Duration = Duration::from_secs(15);

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Waits (bounded) until process `pid` is gone (or a zombie).
fn gone_within(pid: u32, within: Duration, what: &str) {
    let t0 = Instant::now();
    while plough_tests::proc_state(pid).is_some_and(|s| s != 'Z') {
        assert!(t0.elapsed() < within, "{what} (pid {pid}) still alive after {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_ssh_launcher_starts_plough_host_through_sshd_and_the_session_takes_it_down() {
    if !Path::new(SSHD).exists() || Command::new("ssh-keygen").arg("-?").output().is_err() {
        eprintln!("netns_ssh: SKIPPED: no {SSHD} or ssh-keygen (install openssh-server)");
        return;
    }
    let Some(mut lab) = skip_without_netns("netns_ssh", 2) else { return };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let (host_ip, ca) = (lab.host(0).ip, t.join("ca"));
    plough_ps::ca::init(&ca).unwrap();
    plough_ps::ca::issue(&ca, "node-0", &[host_ip.into()], 1).unwrap();
    plough_ps::ca::issue(&ca, "root", &[lab.host(1).ip.into()], 1).unwrap();
    for key in ["hostkey", "userkey"] {
        let path = t.join(key);
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", ""])
            .arg("-f")
            .arg(&path));
    }
    std::fs::copy(t.join("userkey.pub"), t.join("authorized_keys")).unwrap();
    let config = format!(
        "Port 2222\nListenAddress {host_ip}\nHostKey {}\nAuthorizedKeysFile {}\nPermitRootLogin yes\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n",
        t.join("hostkey").display(),
        t.join("authorized_keys").display(),
    );
    std::fs::write(t.join("sshd_config"), config).unwrap();
    // sshd's privilege separation directory (the package's, made at boot by systemd).
    std::fs::create_dir_all("/run/sshd").unwrap();
    let cfg = t.join("sshd_config");
    let (_sshd, _out) = lab.spawn(0, SSHD, &["-D", "-e", "-f", cfg.to_str().unwrap()]).unwrap();

    let launch = SshLaunch {
        ssh: [
            "ssh",
            "-p",
            "2222",
            "-i",
            t.join("userkey").to_str().unwrap(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
        ]
        .map(str::to_owned)
        .to_vec(),
        dest: format!("root@{host_ip}"),
        daemon: env!("CARGO_BIN_EXE_host_daemon").into(),
        ca_dir: ca.clone(),
        listen: format!("tls://node-0@{host_ip}:0").parse().unwrap(),
        program: env!("CARGO_BIN_EXE_plough_app").into(),
        lease_ms: Some(1500),
    };
    let app_build = BuildId::of_file(env!("CARGO_BIN_EXE_plough_app").as_ref()).unwrap();
    let (daemon_pid, kid_pid) = lab.in_host(1, || {
        // sshd may still be starting: the launcher is retried until it answers.
        let t0 = Instant::now();
        let host = loop {
            match launch.start(STEP) {
                Ok(h) => break h,
                Err(e) if t0.elapsed() < STEP => eprintln!("netns_ssh: not yet: {e}"),
                Err(e) => panic!("{e}"),
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let (addr, daemon_pid) = (host.addr().clone(), host.pid());
        let runtime = plough::Runtime::new(plough_tests::app::registry())
            .configure(|c| configure_root(c, "ssh-root", &ca, Some(app_build)));
        let kid = runtime
            .run(|root| async move {
                let node = root.attach_host(&addr).await?;
                assert_eq!(node.name(), "node-0");
                // A daemon child that stays up while the session ends.
                let (tx, rx) = tokio::sync::oneshot::channel();
                let serve = root.nursery(|n| async move {
                    let p = n.start_actor_on(&node, "over-ssh").await?;
                    assert_eq!(p.run::<_, i64>("add", (40i64, 2i64)).await?, 42);
                    let _ = tx.send(p.aid().pid);
                    std::future::pending::<()>().await;
                    Ok::<(), ActorError>(())
                });
                tokio::pin!(serve);
                let kid = tokio::select! {
                    r = &mut serve => panic!("the nursery ended first: {r:?}"),
                    pid = rx => pid.unwrap(),
                };
                // End the session: the daemon stops, taking its actor down gracefully.
                tokio::task::spawn_blocking(move || host.stop(STEP)).await.unwrap();
                let e = tokio::time::timeout(STEP, serve)
                    .await
                    .expect("the nursery sees it")
                    .unwrap_err();
                assert!(
                    e.failures().iter().all(|f| matches!(
                        f,
                        ActorError::ActorDied { .. }
                            | ActorError::HostLost { .. }
                            | ActorError::TransportClosed { .. }
                    )),
                    "{e}"
                );
                Ok::<_, ActorError>(kid)
            })
            .unwrap();
        (daemon_pid, kid)
    });
    gone_within(daemon_pid, STEP, "plough-host after its ssh session ended");
    gone_within(kid_pid, STEP, "its actor");

    let made = lab.namespaces().to_vec();
    drop(lab);
    for ns in made {
        assert!(namespaces_named(&ns).is_empty(), "{ns} outlived its lab");
    }
}

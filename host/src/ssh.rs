//! The ssh launcher: starts `plough-host` on a host through `ssh` and takes it down with
//! the session.
//!
//! `ssh DEST -- plough-host … --stop-on-stdin-eof` runs the daemon with the session's
//! stdin; the launcher keeps that pipe open for as long as its [`SshHost`] lives. When the
//! handle is stopped or dropped — or the process holding it dies, however it dies — the
//! pipe closes, ssh ends the session, the daemon reads the end of its stdin and stops
//! gracefully (its actors down the ladder). No pty is needed, and nothing depends on
//! SIGHUP reaching the remote side. The daemon's address comes from its own `listening`
//! line, so a `:0` port works.

use plough::Address;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

/// How to start one daemon through ssh.
#[derive(Debug, Clone)]
pub struct SshLaunch {
    /// The ssh command and its options (e.g. `["ssh", "-p", "2222", "-i", "key"]`);
    /// `BatchMode=yes` is added, so a prompt fails instead of waiting.
    pub ssh: Vec<String>,
    /// Where to log in (`user@host`).
    pub dest: String,
    /// `plough-host` on that host.
    pub daemon: PathBuf,
    /// The `plough ca` directory on that host.
    pub ca_dir: PathBuf,
    /// Where the daemon listens there (`tls://host@ip:port`).
    pub listen: Address,
    /// The program it runs for roots, on that host.
    pub program: PathBuf,
    /// Its lease in milliseconds (`None`: the default).
    pub lease_ms: Option<u64>,
}

/// A daemon started through ssh; stopping or dropping it ends the session, which stops
/// the daemon.
#[derive(Debug)]
pub struct SshHost {
    addr: Address,
    pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
}

/// The launch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// ssh could not be started.
    #[error("cannot run {ssh}")]
    Spawn {
        /// The command.
        ssh: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The daemon did not say where it listens in time (ssh refused, the daemon failed).
    #[error("plough-host on {dest} did not report its address within {wait:?}: {detail}")]
    NoAddress {
        /// The host.
        dest: String,
        /// The wait.
        wait: Duration,
        /// What happened instead.
        detail: String,
    },
}

/// A word for the remote shell, quoted.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

impl SshLaunch {
    /// The remote command line.
    fn remote_command(&self) -> String {
        let mut words = vec![
            self.daemon.display().to_string(),
            "--ca-dir".into(),
            self.ca_dir.display().to_string(),
            "--listen".into(),
            self.listen.to_string(),
            "--program".into(),
            self.program.display().to_string(),
            "--stop-on-stdin-eof".into(),
        ];
        if let Some(ms) = self.lease_ms {
            words.extend(["--lease-ms".into(), ms.to_string()]);
        }
        words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
    }

    /// Starts the daemon and waits (at most `wait`) for its address.
    ///
    /// # Errors
    ///
    /// [`LaunchError`]: ssh did not start, or no address came in time (ssh's exit and
    /// the end of what the daemon printed are in the detail).
    pub fn start(&self, wait: Duration) -> Result<SshHost, LaunchError> {
        let (program, opts) =
            self.ssh.split_first().map_or(("ssh", &[][..]), |(p, o)| (p.as_str(), o));
        let mut child = Command::new(program)
            .args(opts)
            .args(["-o", "BatchMode=yes", &self.dest, "--", &self.remote_command()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| LaunchError::Spawn { ssh: program.to_owned(), source })?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take().expect("piped"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + wait;
        let mut seen = Vec::new();
        let fail = |child: &mut Child, seen: &[String], why: &str| {
            let _ = child.kill();
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            LaunchError::NoAddress {
                dest: self.dest.clone(),
                wait,
                detail: format!("{why}; ssh {status}; it printed {seen:?}"),
            }
        };
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    if let ["plough-host", "listening", addr, "build", _, "pid", pid] = words[..] {
                        let (Ok(addr), Ok(pid)) = (addr.parse(), pid.parse()) else {
                            return Err(fail(&mut child, &seen, "a malformed listening line"));
                        };
                        return Ok(SshHost { addr, pid, child, stdin });
                    }
                    seen.push(line);
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    return Err(fail(&mut child, &seen, "timed out"));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(fail(&mut child, &seen, "the session ended"));
                }
            }
        }
    }
}

impl SshHost {
    /// Where the daemon listens.
    pub fn addr(&self) -> &Address {
        &self.addr
    }

    /// The daemon's pid on its host.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Ends the session (the daemon stops gracefully) and waits at most `wait` for ssh
    /// to exit; then kills it.
    pub fn stop(mut self, wait: Duration) {
        self.end(wait);
    }

    fn end(&mut self, wait: Duration) {
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + wait;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SshHost {
    fn drop(&mut self) {
        self.end(Duration::from_secs(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_command_is_quoted_for_the_remote_shell() {
        let launch = SshLaunch {
            ssh: vec!["ssh".into()],
            dest: "root@10.0.0.7".into(),
            daemon: "/opt/plough host".into(),
            ca_dir: "/etc/it's".into(),
            listen: "tls://node-7@10.0.0.7:0".parse().unwrap(),
            program: "/opt/app".into(),
            lease_ms: Some(900),
        };
        assert_eq!(
            launch.remote_command(),
            "'/opt/plough host' '--ca-dir' '/etc/it'\\''s' '--listen' 'tls://node-7@10.0.0.7:0' \
             '--program' '/opt/app' '--stop-on-stdin-eof' '--lease-ms' '900'"
        );
    }
}

//! A child's stderr during boot: read by its parent, handed back once the child connects.
//!
//! A child that dies before it connects back is a
//! [`SpawnError::DiedDuringBoot`](crate::SpawnError::DiedDuringBoot), and what it wrote to
//! stderr meanwhile (a panic message, "cannot connect to parent …", the dynamic loader's
//! complaint) belongs in that error. So during boot a child's fd 2 is the write end of a
//! pipe its parent reads ([`Pump`]): the parent copies every byte to its own stderr as it
//! arrives (on its runtime thread, as its own log lines are written; output of children
//! booting at once may interleave at 4 KiB boundaries) and keeps the last [`TAIL_BYTES`].
//! As soon as the child has connected to its parent it moves its real stderr back onto
//! fd 2 ([`restore`]), which closes its end of the pipe; the parent's pump then ends at
//! EOF. After boot, nothing of the child's output passes
//! through its parent (an orphaned child still has a working stderr).
//!
//! How the real stderr survives boot depends on the backend:
//! * a child forked in-process (`main_thread_forkserver`) duplicates it before pointing
//!   fd 2 at the pipe ([`capture_in_forked_child`]);
//! * a child that runs the program's `main` from its start (`exec`, `zygote`) is started
//!   with the pipe on fd 2 and `/dev/null` on fds 0 and 1, and receives its real stdout
//!   and stderr with its boot ([`ChildStdio`]); the runtime's entry point puts the real
//!   stdout back at once and keeps the real stderr until the child has connected back
//!   ([`use_delivered`]). So what the program's `main` prints before it reaches
//!   `Runtime::run` — the root printed it already — is not printed again by every child,
//!   and its stderr is in the boot error if the child dies on the way.
//!
//! The saved stderr lives in a process-global slot that only a process's own boot
//! touches, before it can spawn anything: a fork never copies it locked.

use super::sync::LockExt;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How much of a child's boot output a [`Pump`] keeps for the error (the end of it).
pub(crate) const TAIL_BYTES: usize = 4096;

/// This process's real stderr while fd 2 is its boot pipe.
static REAL_STDERR: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// A close-on-exec pipe for a child's boot stderr: `(read end, write end)`, both above
/// fd 2 (were stdin, stdout or stderr closed in this process, an end numbered 0–2 would be
/// passed to children as their stdio).
///
/// # Errors
///
/// The process is out of file descriptors.
pub(crate) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let above_stdio = |fd: OwnedFd| -> std::io::Result<OwnedFd> {
        use std::os::fd::AsRawFd;
        if fd.as_raw_fd() > 2 { Ok(fd) } else { Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?) }
    };
    Ok((above_stdio(read)?, above_stdio(write)?))
}

/// A duplicate of this process's stderr (close-on-exec), to hand to an exec'd child as
/// its stdin during boot; `None` when fd 2 is not open.
pub fn dup_stderr() -> Option<OwnedFd> {
    std::io::stderr().as_fd().try_clone_to_owned().ok()
}

/// In a freshly forked child: keep the real stderr aside and make `pipe_write` fd 2.
/// On failure the child simply keeps its real stderr (nothing is captured).
pub fn capture_in_forked_child(pipe_write: OwnedFd) {
    let Some(real) = dup_stderr() else { return };
    if rustix::stdio::dup2_stderr(&pipe_write).is_ok() {
        *REAL_STDERR.locked() = Some(real);
    }
}

/// The stdio a child that runs `main` from its start is started with, and the fds it is
/// handed with its boot (see the module docs).
#[derive(Debug)]
pub struct ChildStdio {
    /// Its fd 0: `/dev/null`.
    pub stdin: OwnedFd,
    /// Its fd 1 until its runtime starts: `/dev/null`.
    pub stdout: OwnedFd,
    /// Its fd 2 until it has connected back: the boot pipe (or the real stderr when
    /// nothing is captured).
    pub stderr: OwnedFd,
    /// Handed over with the boot, in this order: the real stdout, the real stderr.
    pub deliver: [OwnedFd; 2],
}

impl ChildStdio {
    /// The stdio for a child whose boot stderr goes to `boot_stderr` (`None`: to this
    /// process's stderr). A closed stdout or stderr of ours becomes `/dev/null`.
    ///
    /// # Errors
    ///
    /// The process is out of file descriptors.
    pub fn new(boot_stderr: Option<OwnedFd>) -> std::io::Result<ChildStdio> {
        let null = |write: bool| -> std::io::Result<OwnedFd> {
            use rustix::fs::{Mode, OFlags};
            let mode = if write { OFlags::WRONLY } else { OFlags::RDONLY };
            Ok(rustix::fs::open("/dev/null", mode | OFlags::CLOEXEC, Mode::empty())?)
        };
        let real_stdout = match std::io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => fd,
            Err(_) => null(true)?,
        };
        let real_stderr = match dup_stderr() {
            Some(fd) => fd,
            None => null(true)?,
        };
        let stderr = match boot_stderr {
            Some(pipe) => pipe,
            None => real_stderr.try_clone()?,
        };
        Ok(ChildStdio {
            stdin: null(false)?,
            stdout: null(true)?,
            stderr,
            deliver: [real_stdout, real_stderr],
        })
    }
}

/// In a child started with [`ChildStdio`]: its real stdout back onto fd 1 now, its real
/// stderr kept for [`restore`]. `fds` are the delivered ones, in [`ChildStdio::deliver`]'s
/// order.
pub(crate) fn use_delivered(fds: Vec<OwnedFd>) {
    let mut fds = fds.into_iter();
    if let Some(stdout) = fds.next() {
        let _ = std::io::stdout().flush();
        let _ = rustix::stdio::dup2_stdout(&stdout);
    }
    if let Some(stderr) = fds.next() {
        *REAL_STDERR.locked() = Some(stderr);
    }
}

/// The child has connected: its real stderr goes back onto fd 2 (closing the boot pipe,
/// which ends the parent's pump). A no-op when nothing was captured.
pub(crate) fn restore() {
    let real = REAL_STDERR.locked().take();
    if let Some(real) = real {
        let _ = std::io::stderr().flush();
        let _ = rustix::stdio::dup2_stderr(&real);
    }
}

/// The parent's end of a child's boot pipe: copies the child's output to this process's
/// stderr and keeps its tail, until EOF (the child restored its stderr, or died). The
/// task is detached: dropping the `Pump` does not stop it, so nothing the child writes is
/// lost; it ends with the last holder of the write end (or with the runtime).
#[derive(Debug)]
pub(crate) struct Pump {
    tail: Arc<Mutex<Tail>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > TAIL_BYTES {
            let cut = self.bytes.len() - TAIL_BYTES;
            self.bytes.drain(..cut);
            self.truncated = true;
        }
    }

    fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let text = text.trim();
        if self.truncated { format!("…{text}") } else { text.to_owned() }
    }
}

impl Pump {
    /// Starts pumping `read` (the pipe's read end) on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// `read` is not a pipe, or cannot be registered with the reactor.
    pub(crate) fn start(read: OwnedFd) -> std::io::Result<Pump> {
        let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
        let tail = Arc::new(Mutex::new(Tail::default()));
        let sink = Arc::clone(&tail);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                if pipe.readable().await.is_err() {
                    return;
                }
                match pipe.try_read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        // Pass it on as it comes: the user sees it whether or not boot
                        // fails (errors writing our own stderr are not the child's).
                        let _ = std::io::stderr().lock().write_all(&buf[..n]);
                        sink.locked().push(&buf[..n]);
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(_) => return,
                }
            }
        });
        Ok(Pump { tail, task })
    }

    /// The end of what the child wrote, once the pipe reached EOF or `wait` passed (the
    /// child is dead, so EOF is immediate unless something else holds the write end).
    pub(crate) async fn finish(mut self, wait: Duration) -> String {
        let _ = tokio::time::timeout(wait, &mut self.task).await;
        self.tail.locked().text()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_end_and_says_it_was_cut() {
        let mut t = Tail::default();
        t.push(b"hello\n");
        assert_eq!(t.text(), "hello");
        t.push(&vec![b'x'; TAIL_BYTES]);
        t.push(b"\nlast words\n");
        let text = t.text();
        assert!(text.starts_with('…') && text.ends_with("last words"), "{text}");
        assert!(text.len() <= TAIL_BYTES + '…'.len_utf8());
    }

    #[tokio::test]
    async fn the_pump_collects_until_every_writer_is_gone() {
        let (r, w) = pipe().unwrap();
        let pump = Pump::start(r).unwrap();
        let w2 = w.try_clone().unwrap();
        rustix::io::write(&w, b"first ").unwrap();
        drop(w);
        rustix::io::write(&w2, b"second\n").unwrap();
        drop(w2);
        assert_eq!(pump.finish(Duration::from_secs(5)).await, "first second");
    }
}

//! The zygote: a small single-threaded fork-server *process* that forks children for its
//! parent, so that no fork ever happens in the parent itself.
//!
//! A program's threads (its own, tokio's workers, a logging thread) may hold the
//! allocator's, stdio's, a logger's or `std::env`'s lock at any instant; a child forked
//! from such a process inherits those locks held, by threads it does not have. The zygote
//! sidesteps the whole class: it is a fresh process (`/proc/self/exe`, started with
//! `posix_spawn`) that becomes a fork server *before `main`*, in the `startup` hook, where
//! no thread but its first one exists, no runtime was built and no lock is held. It never
//! runs the program's `main`, builds no runtime and spawns no thread.
//!
//! For each request it forks with `clone(CLONE_PARENT | CLONE_PIDFD)`: the child is a child
//! of the zygote's *parent* (the requesting process), which therefore holds a real child
//! handle — `waitid` on the pidfd, the exit status, signals, the group kill, no zombie — and
//! the pidfd travels back over the socket (`SCM_RIGHTS`). The child runs the usual prelude
//! (signals reset, own process group, parent-death signal with a `getppid()` re-check, every
//! inherited fd closed but its stdio and the fds it was sent), leaves the request's payload
//! and fds for [`take_delivery`](crate::take_delivery), and *returns* from the hook: the
//! program's `main` runs from its start, with the zygote's argv, in a pristine process. The
//! program reaches the runtime's entry point, which finds the delivery and becomes the
//! child. Forking this small process costs the same whatever the size of the parent's heap,
//! and leaves the parent without copy-on-write faults.
//!
//! The zygote lives as long as its [`Zygote`] handle: it exits when the handle closes its
//! socket, which the parent's death does too (the parent's end is close-on-exec, and no
//! fork of the parent keeps it). It writes an actor marker (name `zygote`), removed as it
//! exits, so the leak oracle and `plough-reap` know it.
//!
//! The zygote is started from the forkserver thread, which lives as long as the process:
//! the parent-death signal of the zygote and of every child it forks (their parent *thread*
//! is that one, `CLONE_PARENT` copies it) fires when the process dies, never when some
//! short-lived thread that happened to ask exits.
//!
//! # glibc
//!
//! The child of a raw `clone` keeps its thread control block's cached tid of the zygote's
//! thread; glibc 2.34 and later never use it for signals to self (`raise`, `abort`) and the
//! child is single-threaded until its `main` starts threads (which get their own).
//!
//! # Safety
//!
//! The raw `clone` syscall and `pidfd` adoption; see each block.
#![allow(unsafe_code)]

use crate::child::ChildHandle;
use crate::handoff as fdmsg;
use crate::marker::{ActorMarker, MarkerInfo};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The zygote's process name (`comm`, as `ps` and `/proc/<pid>/comm` show it).
pub const ZYGOTE_PROCESS_NAME: &str = "plough:zygote";

/// The marker name and spawn method a zygote's actor marker carries.
pub const ZYGOTE_MARKER_NAME: &str = "zygote";

/// Request message version (the first byte).
const VERSION: u8 = 1;

/// A running zygote process, child of this process.
#[derive(Debug)]
pub struct Zygote {
    sock: Option<OwnedFd>,
    process: ChildHandle,
    next_id: AtomicU64,
    #[cfg(feature = "async")]
    turn: tokio::sync::Mutex<()>,
}

/// What a child forked by a zygote is given.
#[derive(Debug)]
pub struct ZygoteRequest<'a> {
    /// Opaque bytes for the child (its boot spec), at most 60 KiB.
    pub payload: &'a [u8],
    /// The child's fds 0, 1 and 2.
    pub stdio: [BorrowedFd<'a>; 3],
    /// More fds for the child (at most 5), delivered in this order.
    pub deliver: &'a [BorrowedFd<'a>],
    /// Whether dropping the child's handle unreaped SIGKILLs its group.
    pub kill_on_drop: bool,
}

impl Zygote {
    /// Starts a zygote: `program` (e.g. `/proc/self/exe`), run with `argv0` and `args`
    /// (the argv its children's `main` will see) and this process's environment. The
    /// program must link this crate (its startup hook turns the process into the zygote
    /// before `main`).
    ///
    /// # Errors
    ///
    /// The forkserver thread or the process cannot be started.
    pub fn start(program: PathBuf, argv0: OsString, args: Vec<OsString>) -> io::Result<Zygote> {
        let (ours, theirs) = fdmsg::pair()?;
        let spawned = crate::forkserver::on_server_thread(move || {
            use std::os::unix::process::CommandExt;
            let mut cmd = std::process::Command::new(&program);
            cmd.arg0(argv0)
                .args(args)
                .env(fdmsg::BOOT_ENV, fdmsg::ZYGOTE_MODE)
                .stdin(std::process::Stdio::from(theirs))
                .stdout(std::process::Stdio::null())
                // Its own group: a terminal's Ctrl-C is for the program, which handles it;
                // the zygote goes when its socket closes.
                .process_group(0);
            cmd.spawn().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start the zygote ({}): {e}", program.display()),
                )
            })
        })??;
        let process = ChildHandle::from_std(spawned)?;
        process.set_kill_on_drop(true);
        Ok(Zygote {
            sock: Some(ours),
            process,
            next_id: AtomicU64::new(1),
            #[cfg(feature = "async")]
            turn: tokio::sync::Mutex::new(()),
        })
    }

    /// The zygote's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Whether the zygote process still runs.
    pub fn is_alive(&self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    fn sock(&self) -> BorrowedFd<'_> {
        self.sock.as_ref().expect("the socket is only taken on drop").as_fd()
    }

    fn encode<'a>(
        &self,
        req: &ZygoteRequest<'a>,
    ) -> io::Result<(u64, Vec<u8>, Vec<BorrowedFd<'a>>)> {
        if req.deliver.len() + 3 > fdmsg::MAX_FDS || req.payload.len() + 10 > fdmsg::MAX_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "zygote request too large"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut bytes = Vec::with_capacity(10 + req.payload.len());
        bytes.push(VERSION);
        bytes.push(u8::from(req.kill_on_drop));
        bytes.extend_from_slice(&id.to_le_bytes());
        bytes.extend_from_slice(req.payload);
        let fds = req.stdio.iter().chain(req.deliver).copied().collect();
        Ok((id, bytes, fds))
    }

    /// The handle for a reply, or `None` for a stale reply (a request whose caller gave
    /// up: its child is killed and reaped as the handle drops).
    ///
    /// A reply whose pidfd did not arrive (this process had no fd left for it) still names
    /// the child, a child of ours (`CLONE_PARENT`) that nothing owns: it is killed and
    /// reaped here, and the error says why (`EMFILE`).
    fn decode(&self, id: u64, reply: fdmsg::Lossy) -> io::Result<Option<ChildHandle>> {
        let Some((bytes, mut fds, cut)) = reply else { return Err(self.died()) };
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed zygote reply");
        let (tag, rest) = bytes.split_first().ok_or_else(bad)?;
        let got = u64::from_le_bytes(rest.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?);
        let rest = &rest[8..];
        let handle = match tag {
            0 => {
                let pid = u32::from_le_bytes(
                    rest.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?,
                );
                let kill_on_drop = rest.get(4).is_some_and(|b| *b == 1);
                let Some(pidfd) = fds.pop().filter(|_| !cut) else {
                    if let Some(raw) =
                        i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw)
                    {
                        crate::child::kill_and_reap(raw);
                    }
                    if !cut {
                        return Err(bad());
                    }
                    let emfile = io::Error::from_raw_os_error(libc::EMFILE);
                    return Err(io::Error::other(format!(
                        "the zygote forked pid {pid}, but its pidfd could not be received \
                         here ({emfile}): the child was killed and reaped"
                    )));
                };
                Some(ChildHandle::from_clone(pid, pidfd, kill_on_drop || got != id)?)
            }
            1 => {
                let msg = String::from_utf8_lossy(rest).into_owned();
                if got == id {
                    return Err(io::Error::other(format!("the zygote could not fork: {msg}")));
                }
                None
            }
            _ => return Err(bad()),
        };
        Ok(if got == id { handle } else { None })
    }

    fn died(&self) -> io::Error {
        let status = match self.process.try_wait() {
            Ok(Some(s)) => s.to_string(),
            _ => "closed its socket".to_owned(),
        };
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("the zygote (pid {}) is gone: {status}", self.pid()),
        )
    }

    /// Forks a child (see the module docs) and returns its handle. Blocks until the
    /// zygote answers (a fork of a small process) or `deadline` passes.
    ///
    /// # Errors
    ///
    /// The zygote is gone (`BrokenPipe`), did not answer in time (`TimedOut`: it is killed),
    /// or could not fork (`EAGAIN`, `ENOMEM`).
    pub fn spawn_blocking(
        &self,
        req: &ZygoteRequest<'_>,
        deadline: Duration,
    ) -> io::Result<ChildHandle> {
        let (id, bytes, fds) = self.encode(req)?;
        fdmsg::send(self.sock(), &bytes, &fds).map_err(|_| self.died())?;
        let until = std::time::Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(std::time::Instant::now());
            let sock = self.sock();
            let mut poll = [rustix::event::PollFd::new(&sock, rustix::event::PollFlags::IN)];
            let ts = rustix::time::Timespec::try_from(left)
                .unwrap_or(rustix::time::Timespec { tv_sec: i64::MAX, tv_nsec: 0 });
            match rustix::event::poll(&mut poll, Some(&ts)) {
                Ok(0) => return Err(self.timed_out(deadline)),
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            match fdmsg::recv_lossy(self.sock(), true) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                got => {
                    if let Some(handle) = self.decode(id, got?)? {
                        return Ok(handle);
                    }
                }
            }
        }
    }

    fn timed_out(&self, deadline: Duration) -> io::Error {
        let _ = self.process.kill();
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the zygote (pid {}) did not answer within {deadline:?}: killed", self.pid()),
        )
    }

    /// Async [`Zygote::spawn_blocking`]: requests are answered one at a time; a caller
    /// that gives up mid-request loses nothing (the child, when it comes, is killed and
    /// reaped).
    ///
    /// # Errors
    ///
    /// As [`Zygote::spawn_blocking`].
    #[cfg(feature = "async")]
    pub async fn spawn(
        &self,
        req: &ZygoteRequest<'_>,
        deadline: Duration,
    ) -> io::Result<ChildHandle> {
        use tokio::io::{Interest, unix::AsyncFd};
        let _turn = self.turn.lock().await;
        let (id, bytes, fds) = self.encode(req)?;
        // The fd to wait on first: out of fds, nothing is asked of the zygote (a request
        // sent and then not waited for would fork a child only the next request reaps).
        let dup = self.sock().try_clone_to_owned()?;
        fdmsg::send(self.sock(), &bytes, &fds).map_err(|_| self.died())?;
        drop(fds);
        // The dup shares the open file description, so this makes our end non-blocking
        // (the zygote's end is a description of its own).
        rustix::io::ioctl_fionbio(&dup, true)?;
        // SAFETY: `dup` is an `OwnedFd` we just made; the `AsyncFd` owns it and nothing else
        // closes or replaces it while registered.
        let afd = unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE)? };
        let exchange = async {
            loop {
                let mut ready = afd.readable().await?;
                match fdmsg::recv_lossy(afd.get_ref().as_fd(), true) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.clear_ready(),
                    got => {
                        if let Some(handle) = self.decode(id, got?)? {
                            return Ok(handle);
                        }
                    }
                }
            }
        };
        match tokio::time::timeout(deadline, exchange).await {
            Ok(out) => out,
            Err(_) => Err(self.timed_out(deadline)),
        }
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // The zygote leaves at the end of its requests (removing its marker). First every
        // reply still to come: a child forked for a caller that gave up mid-request has no
        // handle yet, and gets one here that kills and reaps it (it is our child: left
        // alone it would outlive us as a zombie of whoever inherits it).
        if let Some(sock) = self.sock.take() {
            let _ = rustix::net::shutdown(&sock, rustix::net::Shutdown::Write);
            let until = std::time::Instant::now() + DRAIN_ON_DROP;
            loop {
                let left = until.saturating_duration_since(std::time::Instant::now());
                let Ok(ts) = rustix::time::Timespec::try_from(left) else { break };
                let mut poll = [rustix::event::PollFd::new(&sock, rustix::event::PollFlags::IN)];
                match rustix::event::poll(&mut poll, Some(&ts)) {
                    Ok(0) => break,
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(_) => break,
                }
                match fdmsg::recv_lossy(sock.as_fd(), true) {
                    Ok(None) => break,
                    Ok(reply) => drop(self.decode(0, reply)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => break,
                }
            }
        }
        if let Some(fd) = self.process.pidfd() {
            let mut poll = [rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN)];
            let ts = rustix::time::Timespec::try_from(DRAIN_ON_DROP)
                .unwrap_or(rustix::time::Timespec { tv_sec: 1, tv_nsec: 0 });
            let _ = rustix::event::poll(&mut poll, Some(&ts));
        }
    }
}

/// How long a dropped [`Zygote`] waits for its last replies and for its exit (then the
/// process is killed).
const DRAIN_ON_DROP: Duration = Duration::from_secs(1);

/// What a forked request leaves the child with.
pub(crate) struct ForChild {
    pub(crate) payload: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// The zygote's side, in the `startup` hook: fd 0 is its socket to the parent. Returns
/// only in a forked child (with what it was sent); the zygote itself ends here.
pub(crate) fn serve_from_stdin() -> io::Result<ForChild> {
    let sock = rustix::io::fcntl_dupfd_cloexec(io::stdin().as_fd(), 3)?;
    fdmsg::null_stdin()?;
    let parent =
        rustix::process::getppid().ok_or_else(|| io::Error::other("the zygote has no parent"))?;
    let (peer_pid, peer_uid) = fdmsg::peer(&sock)?;
    if peer_pid != parent.as_raw_nonzero().get() as u32
        || peer_uid != rustix::process::geteuid().as_raw()
    {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "the zygote's socket belongs to pid {peer_pid} (uid {peer_uid}), not to its parent"
            ),
        ));
    }
    // It never outlives the parent: the parent's end of the socket is close-on-exec and
    // every fork of it scrubs its fds, so the parent's death is our end of file, and we
    // leave cleanly (marker removed). No parent-death signal, which would kill us before
    // we could.
    let comm = rustix::thread::name().ok();
    let marker = ActorMarker::create(
        &crate::marker::default_runtime_dir(),
        MarkerInfo {
            name: ZYGOTE_MARKER_NAME.to_owned(),
            uuid: random_hex(),
            parent_pid: parent.as_raw_nonzero().get() as u32,
            method: ZYGOTE_MARKER_NAME.to_owned(),
            ..MarkerInfo::default()
        },
    )
    .ok();
    crate::marker::set_process_name(ZYGOTE_PROCESS_NAME);
    loop {
        let (bytes, fds) = match fdmsg::recv(sock.as_fd(), false) {
            Ok(Some(got)) => got,
            // The parent closed its end (or the socket broke): done.
            Ok(None) | Err(_) => {
                drop(marker);
                crate::prelude::exit(0);
            }
        };
        if let Some(mut child) = fork_one(sock.as_fd(), parent, &bytes, fds) {
            // The zygote's own fds are the parent's business, not the child's: closed
            // before the scrub, so nothing of ours closes a reused number later.
            drop(sock);
            std::mem::forget(marker);
            if let Some(comm) = &comm {
                let _ = rustix::thread::set_name(comm);
            }
            child.scrub()?;
            return Ok(child.into_delivery());
        }
    }
}

/// A child mid-prelude: its stdio placed, the fds it keeps.
struct Forked {
    payload: Vec<u8>,
    keep: Vec<OwnedFd>,
}

impl Forked {
    fn scrub(&mut self) -> io::Result<()> {
        let mut keep: Vec<RawFd> = vec![0, 1, 2];
        keep.extend(self.keep.iter().map(AsRawFd::as_raw_fd));
        keep.sort_unstable();
        // SAFETY: we are the only thread of a freshly cloned child; the fds this process
        // still owns as values are all in the keep-set.
        unsafe { crate::scrub::close_inherited_fds(&keep) }.map(drop)
    }

    fn into_delivery(self) -> ForChild {
        ForChild { payload: self.payload, fds: self.keep }
    }
}

/// Handles one request: `Some` in the child, `None` in the zygote (the reply is sent).
fn fork_one(
    sock: BorrowedFd<'_>,
    parent: rustix::process::Pid,
    bytes: &[u8],
    mut fds: Vec<OwnedFd>,
) -> Option<Forked> {
    let parsed = (|| {
        let (&version, rest) = bytes.split_first()?;
        let (&kill, rest) = rest.split_first()?;
        let id = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
        (version == VERSION && fds.len() >= 3).then(|| (kill, id, rest[8..].to_vec()))
    })();
    let Some((kill, id, payload)) = parsed else {
        let _ = reply_err(sock, 0, "malformed request");
        return None;
    };
    let mut pidfd: libc::c_int = -1;
    let flags =
        (libc::CLONE_PARENT | libc::CLONE_PIDFD) as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: `clone` without CLONE_VM and with a null stack behaves like `fork`: the child
    // continues on a copy of this (single) thread's stack. The kernel writes the pidfd into
    // `pidfd` (the parent_tid slot, third on every architecture we build for).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<libc::c_void>(),
            &mut pidfd as *mut libc::c_int,
            std::ptr::null_mut::<libc::c_void>(),
            0usize,
        )
    };
    if rc == 0 {
        return Some(in_child(parent, payload, fds));
    }
    if rc < 0 {
        let err = io::Error::last_os_error();
        let _ = reply_err(sock, id, &format!("clone: {err}"));
        return None;
    }
    // SAFETY: the kernel gave us this fresh pidfd; nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let mut ok = vec![0u8];
    ok.extend_from_slice(&id.to_le_bytes());
    ok.extend_from_slice(&(rc as u32).to_le_bytes());
    ok.push(kill);
    // If the parent is gone, the child dies of its parent-death signal.
    let _ = fdmsg::send(sock, &ok, &[pidfd.as_fd()]);
    fds.clear();
    None
}

fn reply_err(sock: BorrowedFd<'_>, id: u64, msg: &str) -> io::Result<()> {
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&id.to_le_bytes());
    bytes.extend_from_slice(msg.as_bytes());
    fdmsg::send(sock, &bytes, &[])
}

/// The prelude of a zygote's child; leaves with `_exit` when it cannot be a child.
fn in_child(parent: rustix::process::Pid, payload: Vec<u8>, mut fds: Vec<OwnedFd>) -> Forked {
    let fail = |what: &str, e: io::Error| -> ! {
        use std::io::Write;
        let _ = writeln!(io::stderr(), "plough: zygote child prelude failed: {what}: {e}");
        crate::prelude::exit(crate::prelude::exit_code::PRELUDE_FAILED)
    };
    // The zygote installed no handler (it runs before `main`, where the program's
    // dispositions are exec's defaults, or those of a constructor that ran before ours and
    // belongs to this very image): only the mask needs to be clean.
    if let Err(e) = crate::signals::unblock_all() {
        fail("unblocking signals", e);
    }
    if let Err(e) = rustix::process::setpgid(None, None) {
        fail("setpgid(0, 0)", e.into());
    }
    if let Err(e) =
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
    {
        fail("prctl(PR_SET_PDEATHSIG)", e.into());
    }
    if rustix::process::getppid() != Some(parent) {
        crate::prelude::exit(crate::prelude::exit_code::PARENT_GONE);
    }
    let keep = fds.split_off(3);
    let placed = rustix::stdio::dup2_stdin(&fds[0])
        .and_then(|()| rustix::stdio::dup2_stdout(&fds[1]))
        .and_then(|()| rustix::stdio::dup2_stderr(&fds[2]));
    if let Err(e) = placed {
        fail("placing stdio", e.into());
    }
    drop(fds);
    Forked { payload, keep }
}

fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    let _ = rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

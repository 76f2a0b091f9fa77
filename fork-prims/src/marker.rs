//! Actor markers: how a plough actor process is recognised from outside.
//!
//! A forked child's `/proc/<pid>/cmdline` and `environ` are its parent's, and a process
//! *name* can be chosen by anyone, so neither proves that a process is one of our actors.
//! Each actor therefore writes a small marker file, `<runtime dir>/actors/<pid>`, in a
//! directory only its user can write (0700, not a symlink), naming the actor, its tree
//! (the root's uuid), its parent, and the process's start time. A marker counts only while
//! a process with that pid *and that start time* is alive — a recycled pid does not match.
//! The actor removes its marker when it exits; `plough-reap` sweeps the rest.
//!
//! The process name (`comm`) is also set to `plough:<name>` (truncated to 15 bytes), for
//! `ps` and `top`; it is a convenience, never evidence.

use std::fmt::Write as _;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What a marker says about one actor process.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MarkerInfo {
    /// The actor's name.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Its uuid.
    pub uuid: String,
    /// The uuid of its tree's root.
    pub tree: String,
    /// Its parent actor's pid (0 for a root).
    pub parent_pid: u32,
    /// Its start time (`/proc/<pid>/stat` field 22, clock ticks since boot).
    pub start_time: u64,
    /// Where it listens.
    pub addr: String,
    /// How it was spawned (`root`, `exec`, `main_thread_forkserver`).
    pub method: String,
}

impl MarkerInfo {
    fn render(&self) -> String {
        let mut s = String::new();
        for (k, v) in [
            ("name", self.name.clone()),
            ("pid", self.pid.to_string()),
            ("uuid", self.uuid.clone()),
            ("tree", self.tree.clone()),
            ("parent_pid", self.parent_pid.to_string()),
            ("start_time", self.start_time.to_string()),
            ("addr", self.addr.clone()),
            ("method", self.method.clone()),
        ] {
            let _ = writeln!(s, "{k}={}", v.replace('\n', " "));
        }
        s
    }

    /// Parses a marker file's text; `None` if it is not one.
    pub fn parse(text: &str) -> Option<MarkerInfo> {
        let mut m = MarkerInfo::default();
        for line in text.lines() {
            let (k, v) = line.split_once('=')?;
            match k {
                "name" => m.name = v.to_owned(),
                "pid" => m.pid = v.parse().ok()?,
                "uuid" => m.uuid = v.to_owned(),
                "tree" => m.tree = v.to_owned(),
                "parent_pid" => m.parent_pid = v.parse().ok()?,
                "start_time" => m.start_time = v.parse().ok()?,
                "addr" => m.addr = v.to_owned(),
                "method" => m.method = v.to_owned(),
                _ => {}
            }
        }
        (m.pid != 0 && m.start_time != 0).then_some(m)
    }

    /// Whether the process this marker describes is alive (same pid, same start time).
    pub fn is_live(&self) -> bool {
        process_start_time(self.pid) == Some(self.start_time)
    }
}

/// The directory plough uses for sockets and markers: `$XDG_RUNTIME_DIR/plough`, or
/// `/tmp/plough-<uid>`. Read from the environment once per process (a forked child
/// inherits the value and never reads the environment: another thread of its parent may
/// have held the environment's lock at the fork).
pub fn default_runtime_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir.join("plough"),
        _ => PathBuf::from(format!("/tmp/plough-{}", rustix::process::geteuid().as_raw())),
    })
    .clone()
}

/// Where markers live under a runtime directory.
pub fn markers_dir(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("actors")
}

/// A process's start time (field 22 of `/proc/<pid>/stat`), `None` when it is gone.
pub fn process_start_time(pid: u32) -> Option<u64> {
    start_time_at(&format!("/proc/{pid}/stat"))
}

/// This process's start time, from `/proc/self/stat`.
fn own_start_time() -> Option<u64> {
    start_time_at("/proc/self/stat")
}

/// The start time in a `stat` file: read with one `read` into a stack buffer, parsed by
/// procfs.
///
/// On the spawn path (every actor writes its marker with it; every liveness check of a
/// marker reads one), so the I/O is ours: open, one `read`, the `read` that sees EOF,
/// close. `procfs::process::Process::new(pid)?.stat()` makes 8 syscalls for the same
/// (it opens `/proc/<pid>` as a directory first, and `read_to_end` adds `statx` and
/// `lseek`): 15.2 µs against 11.3 µs a call here (`cargo bench -p plough-fork-prims
/// --bench start_time`). The parsing, the part with the subtle cases, is procfs's
/// (about 1 µs more than the hand parser this replaced).
fn start_time_at(path: &str) -> Option<u64> {
    stat_at(path).map(|s| s.starttime)
}

/// The parent pid of a process (field 4 of `/proc/<pid>/stat`), `None` when it is gone.
pub fn parent_pid(pid: u32) -> Option<u32> {
    stat_at(&format!("/proc/{pid}/stat")).and_then(|s| u32::try_from(s.ppid).ok())
}

/// A `stat` file, read as [`start_time_at`] explains.
fn stat_at(path: &str) -> Option<procfs::process::Stat> {
    use std::io::Read;
    // procfs reports size 0, so `read_to_end` would grow from 32 bytes, one syscall per
    // doubling; a stat line is ~300 bytes.
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = [0u8; 1024];
    let mut len = 0;
    while len < buf.len() {
        match f.read(&mut buf[len..]) {
            Ok(0) => return stat_from(&buf[..len]),
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    // Longer than any stat line seen: read the rest rather than parse a cut one.
    let mut long = buf.to_vec();
    f.read_to_end(&mut long).ok()?;
    stat_from(&long)
}

/// Field 22 (`starttime`) of a `/proc/<pid>/stat` line. procfs parses after the *last*
/// `)` and converts lossily: the `comm` before it may hold any bytes (spaces,
/// parentheses, a cut UTF-8 sequence).
fn stat_from(stat: &[u8]) -> Option<procfs::process::Stat> {
    use procfs::FromRead;
    procfs::process::Stat::from_read(stat).ok()
}

/// Sets this process's name (`comm`, 15 bytes at most) for `ps`.
pub fn set_process_name(name: &str) {
    // At most 15 bytes, cut on a character boundary.
    let mut bytes: Vec<u8> = Vec::with_capacity(16);
    for c in name.chars().filter(|&c| c != '\0') {
        if bytes.len() + c.len_utf8() > 15 {
            break;
        }
        let mut b = [0u8; 4];
        bytes.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    }
    bytes.push(0);
    if let Ok(c) = std::ffi::CStr::from_bytes_with_nul(&bytes) {
        let _ = rustix::thread::set_name(c);
    }
}

/// Why a directory was refused as private (see [`ensure_private_dir`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateDirError {
    /// The path is a symbolic link (someone may be redirecting our sockets and markers).
    #[error("{0} is a symlink; refusing to use it as a private directory")]
    Symlink(PathBuf),
    /// The path exists and is not a directory.
    #[error("{0} exists and is not a directory")]
    NotADirectory(PathBuf),
    /// The directory belongs to another user.
    #[error("{path} is owned by uid {owner}, not by us (uid {ours}); refusing to use it")]
    ForeignOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Our effective uid.
        ours: u32,
    },
    /// The directory is ours but others may write in it (mode `0o020` or `0o002`): they
    /// may have planted files in it already.
    #[error("{path} is writable by others (mode {mode:o}); refusing to use it")]
    WritableByOthers {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Creating, inspecting or tightening the directory failed.
    #[error("failed to prepare private directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl From<PrivateDirError> for io::Error {
    fn from(e: PrivateDirError) -> io::Error {
        let kind = match &e {
            PrivateDirError::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::PermissionDenied,
        };
        io::Error::new(kind, e)
    }
}

/// Creates `dir` (and missing parents) with mode 0700 if needed, then checks it: not a
/// symlink, a directory, owned by our effective uid, writable by nobody else. A directory
/// of ours that others may only read or search is tightened to 0700.
///
/// The check runs *after* creation, so a directory someone else created in the race
/// window is caught too. The one check of plough's private directories: the runtime
/// directory (sockets, markers), its `actors` and `dumps`, whatever the transport.
///
/// # Errors
///
/// [`PrivateDirError`] when the directory is refused or cannot be created.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PrivateDirError> {
    use std::os::unix::fs::PermissionsExt;
    let io_err = |source| PrivateDirError::Io { path: dir.to_owned(), source };
    match std::fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err)?;
        }
        Err(e) => return Err(io_err(e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io_err)?;
    if meta.file_type().is_symlink() {
        return Err(PrivateDirError::Symlink(dir.to_owned()));
    }
    if !meta.is_dir() {
        return Err(PrivateDirError::NotADirectory(dir.to_owned()));
    }
    let ours = rustix::process::geteuid().as_raw();
    if meta.uid() != ours {
        return Err(PrivateDirError::ForeignOwner {
            path: dir.to_owned(),
            owner: meta.uid(),
            ours,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(PrivateDirError::WritableByOthers { path: dir.to_owned(), mode });
    }
    if mode & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err)?;
    }
    Ok(())
}

/// This process's marker; removed when dropped (by the process that created it only).
#[derive(Debug)]
pub struct ActorMarker {
    path: PathBuf,
    owner: u32,
}

impl ActorMarker {
    /// Writes the marker of the current process under `runtime_dir` (pid and start time
    /// are filled in here) and sets the process name to `plough:<name>`.
    ///
    /// # Errors
    ///
    /// The runtime directory or the marker directory is unusable (see
    /// [`ensure_private_dir`]), or not writable.
    pub fn create(runtime_dir: &Path, mut info: MarkerInfo) -> io::Result<ActorMarker> {
        // The runtime directory first: `actors` inside a squatted one is not private.
        ensure_private_dir(runtime_dir)?;
        let dir = markers_dir(runtime_dir);
        ensure_private_dir(&dir)?;
        let pid = std::process::id();
        info.pid = pid;
        info.start_time =
            own_start_time().ok_or_else(|| io::Error::other("cannot read /proc/self/stat"))?;
        let path = dir.join(pid.to_string());
        // Named after the actor too: a process killed between the write and the rename
        // leaves a file that `clear_dead_actor` can attribute (and a recycled pid's own
        // marker in the making is never taken for it).
        let tmp = temp_path(&dir, pid, &info.uuid);
        // Whatever fails after the file exists removes it: a marker is in place whole or
        // not at all. (A process killed in between leaves the `.tmp` file, which
        // [`clear_dead_pid`], [`clear_dead_actor`] and `plough-reap --uds` remove once its
        // writer is dead: see [`half_written_is_stale`].)
        if let Err(e) =
            write_new(&tmp, info.render().as_bytes()).and_then(|()| std::fs::rename(&tmp, &path))
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        set_process_name(&format!("plough:{}", info.name));
        Ok(ActorMarker { path, owner: pid })
    }

    /// The marker file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ActorMarker {
    fn drop(&mut self) {
        if std::process::id() == self.owner {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Removes what a dead actor left behind: its marker and, if it listened on a Unix
/// socket, the socket file. Only when the marker for `pid` names `uuid` (the actor the
/// caller knows died — a recycled pid's new marker is left alone) and its process is not
/// alive. Returns whether anything was removed.
///
/// # Errors
///
/// A removal failed for a reason other than the file being gone already.
pub fn clear_dead_actor(runtime_dir: &Path, pid: u32, uuid: &str) -> io::Result<bool> {
    let dir = markers_dir(runtime_dir);
    // A marker that was being written when the actor died (never renamed into place):
    // its name carries the actor's uuid, so it is this dead actor's and nobody else's.
    let half_written = temp_path(&dir, pid, uuid);
    let had_temp = half_written.exists();
    if had_temp {
        remove_if_present(&half_written)?;
    }
    let path = dir.join(pid.to_string());
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(had_temp) };
    let Some(info) = MarkerInfo::parse(&text) else { return Ok(false) };
    if info.uuid != uuid || info.is_live() {
        return Ok(had_temp);
    }
    if let Some(sock) = info.addr.strip_prefix("uds://") {
        remove_if_present(Path::new(sock))?;
    }
    remove_if_present(&path)?;
    Ok(true)
}

/// [`clear_dead_actor`] for a pid the caller just reaped, whatever actor it was: removes
/// the marker (and socket file) of `pid` if its recorded process is not alive.
///
/// # Errors
///
/// As [`clear_dead_actor`].
///
/// Half-written markers of `pid` (`.<pid>.<uuid>.tmp`, whatever the uuid: a child killed
/// between writing its marker and the rename, before anyone learnt its uuid) are removed
/// too when their writer is dead ([`half_written_is_stale`]: a recycled pid's own marker
/// in the making stays).
pub fn clear_dead_pid(runtime_dir: &Path, pid: u32) -> io::Result<bool> {
    let mut removed = false;
    for (tmp, _) in half_written_markers(runtime_dir).into_iter().filter(|(_, p)| *p == pid) {
        if half_written_is_stale(&tmp, pid) {
            remove_if_present(&tmp)?;
            removed = true;
        }
    }
    let path = markers_dir(runtime_dir).join(pid.to_string());
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(removed) };
    let Some(info) = MarkerInfo::parse(&text) else { return Ok(removed) };
    Ok(clear_dead_actor(runtime_dir, pid, &info.uuid)? || removed)
}

/// The pid and uuid in a half-written marker's file name (`.<pid>.<uuid>.tmp`).
pub fn parse_temp_name(file_name: &str) -> Option<(u32, &str)> {
    let (pid, uuid) = file_name.strip_prefix('.')?.strip_suffix(".tmp")?.split_once('.')?;
    let pid: u32 = pid.parse().ok()?;
    (pid != 0 && !uuid.is_empty()).then_some((pid, uuid))
}

/// Every half-written marker (`.<pid>.<uuid>.tmp`) under `runtime_dir`, with the pid of
/// the process that wrote it, sorted by path. Whether its writer is alive is
/// [`half_written_is_stale`]'s question.
pub fn half_written_markers(runtime_dir: &Path) -> Vec<(PathBuf, u32)> {
    let Ok(entries) = std::fs::read_dir(markers_dir(runtime_dir)) else { return Vec::new() };
    let mut out: Vec<(PathBuf, u32)> = entries
        .flatten()
        .filter_map(|e| {
            let pid = parse_temp_name(e.file_name().to_str()?)?.0;
            Some((e.path(), pid))
        })
        .collect();
    out.sort();
    out
}

/// Whether the process that wrote the half-written marker `path` (named `.<pid>.*.tmp`)
/// is certainly gone, so that the file can never become a marker.
///
/// Only the process with that pid writes that name (in a directory only our uid can
/// write), and its uuid makes the name unique, so the question is whether the process
/// that has `pid` now (if any) is the writer:
/// * no process has `pid`: stale;
/// * the file is complete up to its `start_time=` line (the writer's start time): stale
///   exactly when the process with `pid` now started at another time (a recycled pid);
/// * the file was cut short (its writer was killed inside the write, or is writing it
///   right now): stale only when the process with `pid` now started clearly (2 s: boot
///   time is known to the second) after the file was last written, so it cannot be the
///   writer. Otherwise it is left alone — a live process's marker in the making.
pub fn half_written_is_stale(path: &Path, pid: u32) -> bool {
    let Some(now) = process_start_time(pid) else { return true };
    let Ok(bytes) = std::fs::read(path) else { return false };
    if let Some(start) = complete_start_time(&bytes) {
        return start != now;
    }
    let Ok(modified) = std::fs::symlink_metadata(path).and_then(|m| m.modified()) else {
        return false;
    };
    started_after(now, modified, std::time::Duration::from_secs(2))
}

/// The `start_time=` value of a (possibly cut) marker text, if its line is complete.
fn complete_start_time(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    // The last piece has no newline yet: a line cut in the middle is never read.
    let (complete, _) = text.rsplit_once('\n')?;
    complete.lines().find_map(|l| l.strip_prefix("start_time=")?.parse().ok())
}

/// Whether a process whose start time is `start_ticks` (clock ticks since boot) started
/// more than `margin` after the wall-clock time `t`.
fn started_after(start_ticks: u64, t: std::time::SystemTime, margin: std::time::Duration) -> bool {
    let Ok(boot) = procfs::boot_time_secs() else { return false };
    let tps = procfs::ticks_per_second();
    let started = std::time::UNIX_EPOCH
        + std::time::Duration::from_secs(boot)
        + std::time::Duration::from_secs_f64(start_ticks as f64 / tps.max(1) as f64);
    started.duration_since(t).is_ok_and(|d| d > margin)
}

/// Writes `bytes` to a new file at `path` (mode 0600), in one `write` for a marker's size.
fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// Where a marker is written before it is renamed into place: `.<pid>.<uuid>.tmp`, in
/// the markers directory itself (so a rename never crosses a file system, and
/// `plough-reap` sweeps where it is written).
fn temp_path(markers_dir: &Path, pid: u32, uuid: &str) -> PathBuf {
    let tag: String = uuid.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
    markers_dir.join(format!(".{pid}.{tag}.tmp"))
}

fn remove_if_present(p: &Path) -> io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Every marker under `runtime_dir` (live or not), with its path. Unreadable or
/// malformed files are skipped.
pub fn read_markers(runtime_dir: &Path) -> Vec<(PathBuf, MarkerInfo)> {
    let Ok(entries) = std::fs::read_dir(markers_dir(runtime_dir)) else { return Vec::new() };
    let mut out: Vec<(PathBuf, MarkerInfo)> = entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path()).ok()?;
            Some((e.path(), MarkerInfo::parse(&text)?))
        })
        .collect();
    out.sort_by_key(|(_, m)| m.pid);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_die_with_their_process() {
        let dir = std::env::temp_dir().join(format!("plough-marker-test-{}", std::process::id()));
        let info = MarkerInfo {
            name: "w1".into(),
            uuid: "u".into(),
            tree: "t".into(),
            method: "exec".into(),
            ..Default::default()
        };
        let marker = ActorMarker::create(&dir, info).unwrap();
        let all = read_markers(&dir);
        assert_eq!(all.len(), 1);
        let (path, m) = &all[0];
        assert_eq!(path, marker.path());
        assert_eq!((m.name.as_str(), m.pid, m.tree.as_str()), ("w1", std::process::id(), "t"));
        assert!(m.is_live());
        let mut stale = m.clone();
        stale.start_time += 1;
        assert!(!stale.is_live(), "a recycled pid must not match");
        drop(marker);
        assert!(read_markers(&dir).is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn start_times_parse_whatever_the_process_called_itself() {
        // A real line's fields after `comm`, behind names that would confuse a parser
        // that splits on spaces or looks for the first `)`.
        let real = std::fs::read("/proc/self/stat").unwrap();
        let tail = &real[real.iter().rposition(|&b| b == b')').unwrap()..];
        let start = own_start_time().unwrap();
        assert_eq!(stat_from(&real).map(|s| s.starttime), Some(start));
        assert_eq!(parent_pid(std::process::id()), Some(std::os::unix::process::parent_id()));
        assert_eq!(parent_pid(u32::MAX), None);
        for comm in
            [&b"plough:w1"[..], b"a) b (c", b") 1 2 3 (", b"abcdefghijklmn\xc3", b"\xff\xfe", b""]
        {
            let mut line = b"77 (".to_vec();
            line.extend_from_slice(comm);
            line.extend_from_slice(tail);
            assert_eq!(stat_from(&line).map(|s| s.starttime), Some(start), "{comm:?}");
        }
        assert_eq!(stat_from(b"77 (x) S 1").map(|s| s.starttime), None, "cut short");
        assert_eq!(stat_from(b"").map(|s| s.starttime), None);
        assert_eq!(stat_from(&real[..real.len() / 2]).map(|s| s.starttime), None, "cut in half");
    }

    #[test]
    fn start_times_of_ourselves_and_of_the_absent() {
        let me = std::process::id();
        assert_eq!(process_start_time(me), own_start_time());
        assert!(own_start_time().is_some_and(|t| t > 0));
        assert_eq!(process_start_time(0), None);
        assert_eq!(process_start_time(u32::MAX), None);
    }

    #[test]
    fn process_names_are_cut_on_a_character_boundary() {
        // On a thread of its own: the name is the calling thread's.
        let comm = std::thread::spawn(|| {
            set_process_name("plough:abcdefé-worker");
            let tid = rustix::thread::gettid().as_raw_nonzero().get();
            std::fs::read(format!("/proc/self/task/{tid}/comm")).unwrap()
        })
        .join()
        .unwrap();
        let comm = std::str::from_utf8(&comm).expect("valid UTF-8").trim_end();
        assert_eq!(comm, "plough:abcdefé");
        assert!(process_start_time(std::process::id()).is_some());
    }

    #[test]
    fn a_half_written_marker_of_a_dead_actor_is_cleared_by_its_uuid_only() {
        let dir = std::env::temp_dir().join(format!("plough-marker-tmp-{}", std::process::id()));
        let markers = markers_dir(&dir);
        ensure_private_dir(&markers).unwrap();
        // An actor (pid 4242, uuid a-1) killed between writing its marker and the rename.
        let ours = temp_path(&markers, 4242, "a-1");
        std::fs::write(&ours, "name=x\n").unwrap();
        let other = temp_path(&markers, 4242, "b-2");
        std::fs::write(&other, "name=y\n").unwrap();
        assert!(read_markers(&dir).is_empty(), "a half-written marker is not a marker");
        assert!(clear_dead_actor(&dir, 4242, "a-1").unwrap());
        assert!(!ours.exists());
        assert!(other.exists(), "another actor's file (same pid, other uuid) stays");
        assert!(!clear_dead_actor(&dir, 4242, "a-1").unwrap(), "nothing left to clear");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_marker_that_cannot_be_put_in_place_leaves_no_file() {
        let dir = std::env::temp_dir().join(format!("plough-marker-fail-{}", std::process::id()));
        let markers = markers_dir(&dir);
        ensure_private_dir(&markers).unwrap();
        // A directory where the marker goes: the rename fails after the write.
        let blocker = markers.join(std::process::id().to_string());
        std::fs::create_dir_all(blocker.join("full")).unwrap();
        let info = MarkerInfo { name: "w".into(), uuid: "u-1".into(), ..Default::default() };
        assert!(ActorMarker::create(&dir, info).is_err());
        let left: Vec<_> =
            std::fs::read_dir(&markers).unwrap().flatten().map(|e| e.path()).collect();
        assert_eq!(left, vec![blocker], "only what was there before");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn half_written_markers_are_stale_only_when_their_writer_is_gone() {
        let dir = std::env::temp_dir().join(format!("plough-marker-half-{}", std::process::id()));
        let markers = markers_dir(&dir);
        ensure_private_dir(&markers).unwrap();
        let me = std::process::id();
        let start = own_start_time().unwrap();
        let full =
            MarkerInfo { name: "w".into(), pid: me, start_time: start, ..Default::default() }
                .render();
        let write = |name: &str, text: &str| {
            let p = markers.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        // Ours, complete: a live process's marker in the making.
        let live = write(&format!(".{me}.a-1.tmp"), &full);
        assert!(!half_written_is_stale(&live, me));
        // Same pid, another start time: a previous holder of the pid wrote it.
        let recycled = write(&format!(".{me}.b-2.tmp"), &full.replace(&start.to_string(), "1"));
        assert!(half_written_is_stale(&recycled, me));
        // Cut short (no complete start_time line): kept while it may be ours...
        let cut = write(&format!(".{me}.c-3.tmp"), &full[..full.find("start_time").unwrap() + 12]);
        assert_eq!(complete_start_time(std::fs::read(&cut).unwrap().as_slice()), None);
        assert!(!half_written_is_stale(&cut, me));
        // ... stale once it is older than the process that has its pid now.
        let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        std::fs::File::options().write(true).open(&cut).unwrap().set_modified(long_ago).unwrap();
        assert!(half_written_is_stale(&cut, me));
        // Empty (killed right after the create), of a pid nobody has: stale.
        let gone = write(&format!(".{}.d-4.tmp", u32::MAX), "");
        assert!(half_written_is_stale(&gone, u32::MAX));
        // In no particular order: a directory lists in its own (hash) order.
        let mut found: Vec<u32> = half_written_markers(&dir).into_iter().map(|(_, p)| p).collect();
        found.sort_unstable();
        assert_eq!(found, vec![me, me, me, u32::MAX]);
        assert!(read_markers(&dir).is_empty());
        // clear_dead_pid removes the stale ones of that pid only.
        assert!(clear_dead_pid(&dir, me).unwrap());
        assert!(live.exists() && !recycled.exists() && !cut.exists() && gone.exists());
        assert!(clear_dead_pid(&dir, u32::MAX).unwrap());
        assert!(!gone.exists());
        assert_eq!(parse_temp_name(".12.u-1.tmp"), Some((12, "u-1")));
        for bad in ["12", ".12.tmp", ".x.u.tmp", ".0.u.tmp", "12.u.tmp", ".12.u.tmpx"] {
            assert_eq!(parse_temp_name(bad), None, "{bad}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn garbage_is_not_a_marker() {
        assert_eq!(MarkerInfo::parse("hello"), None);
        assert_eq!(MarkerInfo::parse("pid=0\nstart_time=1\n"), None);
    }
}

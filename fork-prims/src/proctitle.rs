//! A forked child's command line: what `/proc/<pid>/cmdline` (and so `ps`, `top`,
//! `pgrep -f`) shows.
//!
//! The kernel shows a process's command line straight from its memory: the bytes between
//! the `arg_start` and `arg_end` it recorded at `execve`, where the original argv strings
//! lie. A forked child has its parent's copy of them, so it shows its parent's command
//! line — not the actor it is. [`set_cmdline_title`] rewrites that area in place, as BSD's
//! `setproctitle(3)` does: the title, a NUL, and a non-NUL last byte, which tells the
//! kernel (since Linux 4.18, `get_mm_proctitle`) to read the area as one string up to its
//! first NUL. No privilege is needed (`PR_SET_MM` would need `CAP_SYS_RESOURCE`).
//!
//! The strings the program's argv pointers point at are copied first (leaked, once) and
//! the pointers moved to the copies, so `std::env::args()` — which reads the original
//! argv array lazily — keeps returning the real arguments. The argv array is found as
//! glibc hands it to `.init_array` functions: [`capture`] runs before `main` (std does
//! the same to find argv) and only records two values; nothing is rewritten unless a
//! child asks.
//!
//! Only the argv area is used (not the environment strings after it, which
//! `setproctitle` also takes): a title longer than the original command line is cut.
//!
//! # Safety
//!
//! The `.init_array` entry and the writes to the argv array and its strings. Both are the
//! process's own writable memory (the initial stack), described by the `argc`/`argv` the C
//! runtime passed; the strings are checked to be contiguous before anything is written,
//! and the rewrite is done once per process, under a lock. A thread of the program that
//! reads an argv string *while* it is rewritten could read a mix of old and new bytes:
//! the runtime calls this in a fresh child before it runs the program's code, where that
//! does not happen.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

static ARGC: AtomicUsize = AtomicUsize::new(0);
static ARGV: AtomicPtr<*mut c_char> = AtomicPtr::new(std::ptr::null_mut());

/// Whether argv's strings were moved to copies (done once).
static MOVED: Mutex<bool> = Mutex::new(false);

/// glibc calls `.init_array` functions with `(argc, argv, envp)`.
#[used]
#[unsafe(link_section = ".init_array")]
static CAPTURE: extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) = capture;

/// Records where argv is (before `main`, one thread).
extern "C" fn capture(argc: c_int, argv: *mut *mut c_char, _envp: *mut *mut c_char) {
    ARGC.store(usize::try_from(argc).unwrap_or(0), Ordering::Relaxed);
    ARGV.store(argv, Ordering::Relaxed);
}

/// Why the command line could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TitleError {
    /// argv was not handed to this library before `main` (not a glibc-style start).
    #[error("argv was not captured at startup")]
    NotCaptured,
    /// argv's strings are not one contiguous area (something moved them already).
    #[error("argv's strings are not contiguous: the command line cannot be rewritten in place")]
    NotContiguous,
}

/// Rewrites this process's command line to `title` (cut to the length of the original
/// one, on a UTF-8 boundary); `std::env::args()` keeps returning the real arguments. For a
/// forked child: never call it in a program's own root process (its command line is the
/// user's).
///
/// # Errors
///
/// [`TitleError`]: argv unknown, or not where the kernel's command line is.
///
/// # References
///
/// `proc(5)` (`/proc/pid/cmdline`), `setproctitle(3bsd)`.
pub fn set_cmdline_title(title: &str) -> Result<(), TitleError> {
    let argc = ARGC.load(Ordering::Relaxed);
    let argv = ARGV.load(Ordering::Relaxed);
    if argv.is_null() || argc == 0 {
        return Err(TitleError::NotCaptured);
    }
    let mut moved = MOVED.lock().unwrap_or_else(|p| p.into_inner());
    if !*moved {
        move_args(argv, argc)?;
        *moved = true;
    }
    let (start, len) = (AREA.load(Ordering::Relaxed), AREA_LEN.load(Ordering::Relaxed));
    if start.is_null() || len < 2 {
        return Ok(());
    }
    let mut text = title.as_bytes().to_vec();
    text.retain(|&b| b != 0);
    text.truncate(len - 1);
    while std::str::from_utf8(&text).is_err() {
        text.pop();
    }
    // SAFETY: `start..start + len` is the original argv strings' area (checked contiguous
    // by `move_args`), writable, and no longer pointed at by argv (moved to copies): only
    // the kernel reads it now. The lock above keeps a second writer out.
    let area = unsafe { std::slice::from_raw_parts_mut(start.cast::<u8>(), len) };
    area.fill(0);
    area[..text.len()].copy_from_slice(&text);
    // Non-NUL last byte: the kernel reads the area as a title up to its first NUL.
    if text.len() < len - 1 {
        area[len - 1] = b' ';
    }
    Ok(())
}

/// Checks that argv's `argc` strings lie end to end (the area the kernel shows), records
/// that area, and points argv at leaked copies of them.
fn move_args(argv: *mut *mut c_char, argc: usize) -> Result<(), TitleError> {
    let slots: Vec<*mut *mut c_char> = (0..argc)
        .map(|i| {
            // SAFETY: `i < argc`: an element of the C runtime's argv array.
            unsafe { argv.add(i) }
        })
        .collect();
    let strings: Vec<*mut c_char> = slots
        .iter()
        .map(|&slot| {
            // SAFETY: `slot` is an element of argv (above), initialised by the C runtime.
            unsafe { *slot }
        })
        .collect();
    let mut lens = Vec::with_capacity(argc);
    for &s in &strings {
        if s.is_null() {
            return Err(TitleError::NotCaptured);
        }
        // SAFETY: a non-null argv string is NUL-terminated and stays mapped.
        lens.push(unsafe { CStr::from_ptr(s) }.to_bytes_with_nul().len());
    }
    let first = strings[0] as usize;
    let mut end = first;
    for (&s, &len) in strings.iter().zip(&lens) {
        if s as usize != end {
            return Err(TitleError::NotContiguous);
        }
        end += len;
    }
    for (&slot, &s) in slots.iter().zip(&strings) {
        // SAFETY: `s` is a NUL-terminated argv string (checked above).
        let copy = CString::from(unsafe { CStr::from_ptr(s) });
        // SAFETY: `slot` is an element of argv; the copy is leaked, so it lives as long as
        // the process, as the original did.
        unsafe { *slot = copy.into_raw() };
    }
    AREA.store(strings[0], Ordering::Relaxed);
    AREA_LEN.store(end - first, Ordering::Relaxed);
    Ok(())
}

/// The original argv area, once its strings were moved.
static AREA: AtomicPtr<c_char> = AtomicPtr::new(std::ptr::null_mut());
static AREA_LEN: AtomicUsize = AtomicUsize::new(0);

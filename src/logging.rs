//! Logging: plough installs a global tracing subscriber only when it is asked to, or in a
//! child actor that has none (so that a child's errors are visible); every line of its
//! own subscriber names the actor (`name@pid`) and spawn method that wrote it.
//!
//! The global subscriber belongs to the program: if one is installed, plough installs
//! nothing, its events flow into the program's subscriber, and an ask for plough's own
//! (`PLOUGH_LOG`, [`crate::Runtime::log`]) is answered with one warning through it.
//!
//! plough's own subscriber is the default-on cargo feature `log` (`tracing-subscriber`
//! with `fmt` and `env-filter`, which brings `regex-automata`). A program that always
//! installs its own subscriber can turn it off (`default-features = false`); an ask is then
//! answered with one warning that it is not applied (on stderr if nothing listens).
//!
//! A child's spawn may choose its log level (`SpawnOptions::log_level`): plough's own
//! subscriber in that child takes it as its filter, over `PLOUGH_LOG` (which is for the
//! whole tree); a child with no subscriber at all (forked from a root that logs nothing)
//! gets plough's with that filter. A subscriber the program installed itself is never
//! touched or replaced: the level is then only information
//! (`Actor::log_level`). Caveat: the filter is swapped under a lock of
//! `tracing-subscriber`'s reload layer; a `main_thread_forkserver` child forked while
//! another thread of its parent held it for an event would wait on it (the same hazard
//! as every lock a logging call holds across a fork).
//!
//! Colour: plough's subscriber writes ANSI escape codes only when stderr is a terminal
//! and `NO_COLOR` is unset or empty (<https://no-color.org>). A log file, a pipe, a
//! journal or `2>&1 | tee` gets plain text, whichever crates of the program enable
//! `tracing-subscriber`'s `ansi` feature (its own default is colour whenever that feature
//! is on, terminal or not).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Who asked for plough's subscriber, and with which filter.
#[derive(Debug)]
struct Ask<'a> {
    /// `PLOUGH_LOG`, when set and not blank (it wins over the program's choice).
    env: Option<String>,
    /// The program's [`crate::Runtime::log`] filter.
    program: Option<&'a str>,
}

impl Ask<'_> {
    fn from_env(program: Option<&str>) -> Ask<'_> {
        let env = std::env::var(crate::LOG_ENV).ok().filter(|v| !v.trim().is_empty());
        Ask { env, program }
    }

    fn asked(&self) -> bool {
        self.env.is_some() || self.program.is_some()
    }

    /// The filter plough's subscriber uses: `PLOUGH_LOG`, else the program's, else `warn`.
    fn filter(&self) -> &str {
        self.env.as_deref().or(self.program).unwrap_or("warn")
    }
}

/// Names the ask as the user wrote it: `PLOUGH_LOG=debug`, `Runtime::log("info")`, or both.
impl fmt::Display for Ask<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.env, self.program) {
            (Some(env), Some(program)) => {
                write!(f, "{}={env} (and Runtime::log({program:?}))", crate::LOG_ENV)
            }
            (Some(env), None) => write!(f, "{}={env}", crate::LOG_ENV),
            (None, Some(program)) => write!(f, "Runtime::log({program:?})"),
            (None, None) => f.write_str("no log filter"),
        }
    }
}

/// Set once a "not applied" warning was given in this process (or the one it was forked
/// from): one is enough.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Sets up logging for this process. `program` is the program's [`crate::Runtime::log`]
/// filter; `is_child` says that this process is a child actor.
///
/// * No global subscriber is installed yet: a root installs plough's stderr subscriber
///   only if asked (`PLOUGH_LOG` or `program`); a child always does (filter `PLOUGH_LOG`,
///   else `program`, else `warn`).
/// * A global subscriber is installed already (the program's, or plough's from an earlier
///   run in this process or inherited across fork): nothing is installed. If the
///   program's own is in use and plough's was asked for, a root says once, through it,
///   that the filter is not applied; a child stays quiet (its root said it).
///
/// Calling it again is harmless.
pub(crate) fn init(program: Option<&str>, is_child: bool) {
    // A child's spawn may choose its log level (`SpawnOptions::log_level`): applied to
    // plough's own subscriber through this hook (a forked child inherits it).
    plough_actor_core::set_log_filter_hook(child_log_level);
    let ask = Ask::from_env(program);
    if !ask.asked() && !is_child {
        return;
    }
    match install(&ask) {
        Installed::Now => {
            if let (Some(env), Some(program)) = (&ask.env, program)
                && env != program
            {
                tracing::info!(env = %env, program_chose = %program, "PLOUGH_LOG overrides the log filter");
            }
        }
        Installed::Before(filter) => {
            // plough's own subscriber, from an earlier `Runtime::run` of this process.
            if !is_child && filter != ask.filter() && !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    in_use = %filter,
                    "plough's log subscriber is already installed in this process with filter \
                     `{filter}`: {ask} is not applied"
                );
            }
        }
        Installed::ProgramOwn => {
            if is_child || !ask.asked() || WARNED.swap(true, Ordering::Relaxed) {
                return;
            }
            tracing::warn!(
                "this program installed its own global tracing subscriber: plough logs \
                 through it, and {ask} is not applied (set the filter of the program's own \
                 subscriber instead)"
            );
        }
        #[cfg(not(feature = "log"))]
        Installed::NotBuilt => {
            if is_child || WARNED.swap(true, Ordering::Relaxed) {
                return;
            }
            let msg = format!(
                "plough was built without its `log` feature: {ask} is not applied (install a \
                 tracing subscriber in the program, or enable plough's `log` feature)"
            );
            if tracing::dispatcher::get_default(|d| d.is::<tracing::subscriber::NoSubscriber>()) {
                eprintln!("plough: {msg}");
            } else {
                tracing::warn!("{msg}");
            }
        }
    }
}

/// A child's log level, chosen by its spawn: plough's own subscriber takes it as its
/// filter (installed now if this child has no subscriber at all, e.g. a forked child of a
/// root that logs nothing); a subscriber of the program's own is left alone.
fn child_log_level(filter: &str) {
    #[cfg(feature = "log")]
    if let Some(reload) = RELOAD.get() {
        if let Err(e) = reload(filter) {
            tracing::warn!("bad log level `{filter}` from this actor's spawn ({e}): not applied");
        }
        return;
    }
    let ask = Ask { env: None, program: Some(filter) };
    // `ProgramOwn`: the program's own subscriber is in use; `NotBuilt`: no `log` feature.
    let _ = install(&ask);
}

/// Replaces the filter of plough's installed subscriber (set with it).
#[cfg(feature = "log")]
type Reload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

#[cfg(feature = "log")]
static RELOAD: std::sync::OnceLock<Reload> = std::sync::OnceLock::new();

/// What [`install`] found.
#[derive(Debug)]
// Without `log`, `install` only ever answers `NotBuilt`.
#[cfg_attr(not(feature = "log"), allow(dead_code))]
enum Installed {
    /// plough's subscriber is installed now.
    Now,
    /// plough's subscriber was installed before, with this filter.
    Before(&'static str),
    /// A global subscriber that is not plough's is installed.
    ProgramOwn,
    /// plough has no subscriber of its own (built without the `log` feature).
    #[cfg(not(feature = "log"))]
    NotBuilt,
}

#[cfg(not(feature = "log"))]
fn install(_ask: &Ask<'_>) -> Installed {
    Installed::NotBuilt
}

/// Installs plough's stderr subscriber with `ask`'s filter as the global default, unless
/// a global subscriber is installed already. `set_global_default` is the one exact test
/// of that (`tracing::dispatcher::has_been_set` is private API, and also true for a
/// thread's scoped default).
#[cfg(feature = "log")]
fn install(ask: &Ask<'_>) -> Installed {
    /// The filter of plough's subscriber, once it is installed in this process. (No lock
    /// around the install: a lock held by another thread at a fork would stay held in
    /// the child.)
    static OURS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

    if let Some(filter) = OURS.get() {
        return Installed::Before(filter);
    }
    let chosen = ask.filter();
    let (filter, bad) = match tracing_subscriber::EnvFilter::try_new(chosen) {
        Ok(f) => (f, None),
        Err(e) => (tracing_subscriber::EnvFilter::new("warn"), Some(e)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour_on(&std::io::stderr()))
        .fmt_fields(tracing_subscriber::fmt::format::DefaultFields::new())
        .event_format(format::Labeled(
            tracing_subscriber::fmt::format::Format::default().with_target(false),
        ))
        .with_filter_reloading();
    let handle = builder.reload_handle();
    if tracing::subscriber::set_global_default(builder.finish()).is_err() {
        // Another thread's runtime may have installed plough's own just now.
        return OURS.get().map_or(Installed::ProgramOwn, |f| Installed::Before(f));
    }
    let _ = RELOAD.set(Box::new(move |f: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(f).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    }));
    let in_use = if bad.is_some() { "warn" } else { chosen };
    let _ = OURS.set(in_use.to_owned());
    if let Some(e) = bad {
        tracing::warn!("bad log filter `{chosen}` ({e}): {ask} is not applied; using `warn`");
    }
    Installed::Now
}

/// Whether to write ANSI colour to `stream`: only to a terminal, and never when
/// `NO_COLOR` is set to something non-empty.
#[cfg(feature = "log")]
fn colour_on(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[cfg(feature = "log")]
mod format {
    use std::fmt;
    use tracing::{Event, Subscriber};
    use tracing_subscriber::fmt::format::{Format, Full, Writer};
    use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
    use tracing_subscriber::registry::LookupSpan;

    /// Prefixes the default format with the process's actor label: `[name@pid method] `
    /// (`[pid N] ` before the actor is up).
    pub(super) struct Labeled(pub(super) Format<Full>);

    impl<S, N> FormatEvent<S, N> for Labeled
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
        N: for<'a> FormatFields<'a> + 'static,
    {
        fn format_event(
            &self,
            ctx: &FmtContext<'_, S, N>,
            mut writer: Writer<'_>,
            event: &Event<'_>,
        ) -> fmt::Result {
            let label = plough_actor_core::actor_label();
            if label.is_empty() {
                write!(writer, "[pid {}] ", std::process::id())?;
            } else {
                write!(writer, "[{label}] ")?;
            }
            self.0.format_event(ctx, writer, event)
        }
    }
}

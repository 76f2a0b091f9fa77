//! What a child that runs the program's `main` from its start executes: the program and
//! the argv its `main` sees.

use std::ffi::OsString;
use std::path::PathBuf;

/// The program a child runs (`exec` executes it; `zygote` starts its zygote from it) and
/// the argv its `main` sees.
///
/// The default is this program with this process's own argv, so the program's argument
/// parser accepts it (it accepted it in the root): a child runs the root's `main` from
/// its start until `Runtime::run` (or `run_async`), where it becomes the child. A test
/// harness needs other arguments (those that select the one test: see
/// `plough::testing`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildCommand {
    /// The executable (`/proc/self/exe` by default: this program, even if its file was
    /// replaced since it started).
    pub program: PathBuf,
    /// The child's `argv[0]`.
    pub argv0: OsString,
    /// The rest of its argv.
    pub args: Vec<OsString>,
}

impl ChildCommand {
    /// This program, with this process's argv.
    pub fn this_program() -> ChildCommand {
        let mut argv = std::env::args_os();
        let argv0 = argv.next().unwrap_or_else(|| OsString::from("plough-child"));
        ChildCommand { program: PathBuf::from("/proc/self/exe"), argv0, args: argv.collect() }
    }

    /// Another program (it must link plough, build the same registry and reach
    /// `Runtime::run`), run with no arguments: this process's argv belongs to this program.
    /// Add some with [`ChildCommand::with_args`].
    pub fn program(program: impl Into<PathBuf>) -> ChildCommand {
        let program = program.into();
        ChildCommand { argv0: program.clone().into_os_string(), program, args: Vec::new() }
    }

    /// The same program with `args` instead.
    pub fn with_args<I, S>(mut self, args: I) -> ChildCommand
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }
}

impl Default for ChildCommand {
    fn default() -> Self {
        ChildCommand::this_program()
    }
}

//! Printing what a one-shot command (`check`, `authz`, `send`, `certs`) found.
//!
//! Rust ignores SIGPIPE, so a `println!` whose reader has gone (`waypoint check | head`) panics.
//! These commands gather their output in an [`Output`] and write it once at the end: a reader
//! that stopped early is no error, and any other write error is reported on stderr.

use std::fmt;
use std::io::{ErrorKind, Write};
use std::process::ExitCode;

/// The text a command will print on stdout.
#[derive(Debug, Default)]
pub(crate) struct Output(String);

/// Appends one line to an [`Output`], with `format!` arguments.
macro_rules! outln {
    ($out:expr) => { $out.line(format_args!("")) };
    ($out:expr, $($arg:tt)*) => { $out.line(format_args!($($arg)*)) };
}
pub(crate) use outln;

impl Output {
    /// Appends `text` and a newline.
    pub(crate) fn line(&mut self, text: fmt::Arguments<'_>) {
        use fmt::Write as _;
        // Writing into a String cannot fail.
        let _ = writeln!(self.0, "{text}");
    }

    /// Writes everything to stdout; false when it could not be written (said on stderr).
    pub(crate) fn print(self) -> bool {
        let mut stdout = std::io::stdout().lock();
        match stdout
            .write_all(self.0.as_bytes())
            .and_then(|()| stdout.flush())
        {
            Ok(()) => true,
            // The reader took what it wanted (`| head`): not our failure.
            Err(e) if e.kind() == ErrorKind::BrokenPipe => true,
            Err(e) => {
                eprintln!("error: cannot write to stdout: {e}");
                false
            }
        }
    }

    /// Prints, then exits with success unless the output could not be written.
    pub(crate) fn finish(self) -> ExitCode {
        if self.print() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

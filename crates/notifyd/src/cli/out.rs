//! The commands' output, which must survive a reader that goes away.
//!
//! `println!` panics when stdout is gone: `notifyd plugins | head -1` closes the pipe after one
//! line, and the next `println!` would end the command with "failed printing to stdout: Broken
//! pipe" and exit code 101. (Rust ignores SIGPIPE; restoring its default would take `unsafe`,
//! which this crate forbids.) So the commands print through `outln!` and `errln!` (defined in
//! [`super`]): when a write fails, that stream's output stops quietly, and the command
//! runs to its end and exits with its own exit code, as if its output had been read. A failure
//! other than a closed pipe (a full disk) is said once on stderr, and turns a success into exit
//! code 1 ([`exit_code`]): output was lost that someone meant to keep.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a write to stdout failed: nothing more is written there.
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
/// Set when a write to stdout failed for another reason than a closed pipe.
static STDOUT_LOST: AtomicBool = AtomicBool::new(false);
/// Set once a write to stderr failed.
static STDERR_GONE: AtomicBool = AtomicBool::new(false);

/// Writes `args` and a newline to stdout, unless stdout has failed before; see the module doc.
pub fn stdout_line(args: std::fmt::Arguments<'_>) {
    match write_line(&mut io::stdout().lock(), &STDOUT_GONE, args) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            STDOUT_LOST.store(true, Ordering::Relaxed);
            let message = format!("cannot write to stdout ({e}); the rest of the output is lost");
            super::print_error(&message, "problems", &[]);
        }
        _ => {}
    }
}

/// The exit code of a command that ended with `code`: 1 instead of 0 when its output to stdout
/// was lost for another reason than a closed pipe.
pub fn exit_code(code: ExitCode) -> ExitCode {
    if code == ExitCode::SUCCESS && STDOUT_LOST.load(Ordering::Relaxed) { ExitCode::from(1) } else { code }
}

/// Writes `args` and a newline to stderr, unless stderr has failed before.
pub fn stderr_line(args: std::fmt::Arguments<'_>) {
    // Where would a failure be reported? It only stops stderr.
    let _ = write_line(&mut io::stderr().lock(), &STDERR_GONE, args);
}

/// Writes one line to `w` and flushes it, unless `gone`; on the first failure sets `gone` and
/// returns the error.
fn write_line(w: &mut impl Write, gone: &AtomicBool, args: std::fmt::Arguments<'_>) -> io::Result<()> {
    if gone.load(Ordering::Relaxed) {
        return Ok(());
    }
    let written = w.write_fmt(args).and_then(|()| w.write_all(b"\n")).and_then(|()| w.flush());
    if written.is_err() {
        gone.store(true, Ordering::Relaxed);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::write_line;
    use std::io::{self, Write};
    use std::sync::atomic::AtomicBool;

    /// A writer whose reader has gone after `room` bytes.
    struct ClosedAfter {
        room: usize,
        written: Vec<u8>,
        attempts: usize,
    }

    impl Write for ClosedAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.attempts += 1;
            if self.written.len() + buf.len() > self.room {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn after_the_first_failed_write_nothing_more_is_written() {
        let gone = AtomicBool::new(false);
        let mut w = ClosedAfter { room: 6, written: Vec::new(), attempts: 0 };

        write_line(&mut w, &gone, format_args!("one")).expect("room for one line");
        let error = write_line(&mut w, &gone, format_args!("two")).expect_err("the pipe is closed");
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
        let attempts = w.attempts;
        write_line(&mut w, &gone, format_args!("three")).expect("stopped quietly");

        assert_eq!(w.written, b"one\n");
        assert_eq!(w.attempts, attempts, "no write after the failure");
    }
}

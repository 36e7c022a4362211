//! Messages and progress on stderr. stdout carries only results (plain or
//! JSON); everything a human reads while waiting goes through here.

use std::io::{IsTerminal, Write};
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub struct Ui {
    /// stderr is a terminal: redraw one progress line in place.
    pub tty: bool,
    pub quiet: bool,
    pub color: bool,
}

impl Ui {
    pub fn new(quiet: bool) -> Ui {
        let tty = std::io::stderr().is_terminal();
        let color = tty && crate::env::var(crate::env::NO_COLOR).is_none();
        Ui { tty, quiet, color }
    }

    /// A progress/status line (suppressed by --quiet).
    pub fn info(&self, msg: impl AsRef<str>) {
        if !self.quiet {
            self.line(msg.as_ref());
        }
    }

    /// Always shown: something the user should know about.
    pub fn warn(&self, msg: impl AsRef<str>) {
        let label = if self.color {
            "\x1b[33mwarning\x1b[0m"
        } else {
            "warning"
        };
        self.line(&format!("{label}: {}", msg.as_ref()));
    }

    fn line(&self, msg: &str) {
        let mut err = std::io::stderr().lock();
        let clear = if self.tty { "\r\x1b[K" } else { "" };
        let _ = writeln!(err, "{clear}migsnap: {msg}");
    }

    /// Redraw the single progress line (terminal only).
    pub fn progress(&self, msg: &str) {
        if self.tty && !self.quiet {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[Kmigsnap: {msg}");
            let _ = err.flush();
        }
    }

    pub fn clear_progress(&self) {
        if self.tty && !self.quiet {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

/// `1.234s`, `85ms`, `2m03s`: short and unambiguous.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.2}s", d.as_secs_f64())
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    }
}

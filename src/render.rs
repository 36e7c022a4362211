//! How the library's events reach the user: as text on stderr (a progress
//! line redrawn in place on a terminal, plain lines elsewhere), or as JSON
//! lines (`--progress json`) for programs: the pytest plugin and Django's
//! runner read those, never the wording of the text.

use migsnap::error::Label;
use migsnap::report::{Event, Events, Reporter};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `--progress`: how events are written on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Progress {
    /// For people: a live line on a terminal, plain lines elsewhere.
    #[default]
    Text,
    /// One JSON object a line (`{"event": "applying", …}`), for programs.
    Json,
}

/// Whether messages on stderr get colour: a terminal that supports it,
/// unless NO_COLOR (or CLICOLOR=0) turns it off; CLICOLOR_FORCE turns it on
/// anywhere. anstream decides, so migsnap agrees with clap, cargo and uv.
pub fn stderr_color() -> bool {
    anstream::AutoStream::choice(&std::io::stderr()) != anstream::ColorChoice::Never
}

/// The command's event handle, writing as `progress` says.
pub fn events(progress: Progress, quiet: bool) -> Events {
    match progress {
        Progress::Text => Events::new(Arc::new(Text::new(quiet))),
        Progress::Json => Events::new(Arc::new(Json {
            quiet,
            last_still: Mutex::new(None),
        })),
    }
}

/// Away from a terminal, a migration still running is said this often:
/// a log gets a heartbeat, not a line twice a second.
const PLAIN_HEARTBEAT: Duration = Duration::from_secs(10);

struct Text {
    /// stderr is a terminal: redraw one progress line in place.
    tty: bool,
    quiet: bool,
    color: bool,
    /// When a progress line was last written as a plain line.
    last_plain: Mutex<Option<Instant>>,
}

impl Text {
    fn new(quiet: bool) -> Text {
        Text {
            tty: std::io::stderr().is_terminal(),
            quiet,
            color: stderr_color(),
            last_plain: Mutex::new(None),
        }
    }

    fn line(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let clear = if self.tty { "\r\x1b[K" } else { "" };
        let _ = writeln!(err, "{clear}migsnap: {text}");
    }

    fn redraw(&self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[Kmigsnap: {text}");
        let _ = err.flush();
    }

    fn plain_progress(&self, text: &str, always: bool) {
        let mut last = self.last_plain.lock().unwrap_or_else(|e| e.into_inner());
        if always || last.is_none_or(|t| t.elapsed() >= PLAIN_HEARTBEAT) {
            *last = Some(Instant::now());
            self.line(text);
        }
    }
}

impl Reporter for Text {
    fn advise(&self, cause: &(dyn std::error::Error + 'static)) -> Option<String> {
        crate::commands::hints::of(cause)
    }

    fn report(&self, event: Event) {
        match &event {
            Event::Warning { message, hint } => {
                self.line(&format!("{} {message}", Label::Warning.prefix(self.color)));
                if let Some(hint) = hint {
                    self.line(&format!("{} {hint}", Label::Hint.prefix(self.color)));
                }
            }
            Event::Hint { message } => {
                self.line(&format!("{} {message}", Label::Hint.prefix(self.color)))
            }
            _ if self.quiet => {}
            Event::Status { message } | Event::Waiting { message } => self.line(message),
            Event::Applying { .. } | Event::StillApplying { .. } if self.tty => {
                self.redraw(&event.text().unwrap_or_default())
            }
            Event::Applying { .. } => self.plain_progress(&event.text().unwrap_or_default(), true),
            Event::StillApplying {
                migration,
                elapsed_ms,
                queries,
                ..
            } => self.plain_progress(
                &format!(
                    "still applying {migration} ({}, {queries} queries)",
                    migsnap::units::duration(Duration::from_millis(*elapsed_ms))
                ),
                false,
            ),
            Event::ProgressEnd => {
                if self.tty {
                    let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
                }
            }
            Event::Output { line } => {
                let mut err = std::io::stderr().lock();
                let clear = if self.tty { "\r\x1b[K" } else { "" };
                let _ = writeln!(err, "{clear}{line}");
            }
        }
    }
}

struct Json {
    quiet: bool,
    /// `still_applying` goes out at most once a second: a reader redraws
    /// a line with it, and a long data migration would otherwise write
    /// 7,200 lines an hour.
    last_still: Mutex<Option<Instant>>,
}

impl Reporter for Json {
    fn advise(&self, cause: &(dyn std::error::Error + 'static)) -> Option<String> {
        crate::commands::hints::of(cause)
    }

    fn report(&self, event: Event) {
        match &event {
            Event::Warning { .. } | Event::Hint { .. } => {}
            _ if self.quiet => return,
            Event::StillApplying { .. } => {
                let mut last = self.last_still.lock().unwrap_or_else(|e| e.into_inner());
                if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                    return;
                }
                *last = Some(Instant::now());
            }
            _ => {}
        }
        // Never fails: every field is a string or a number.
        let Ok(mut value) = serde_json::to_value(&event) else {
            return;
        };
        // The line a person would read, for a program that shows it:
        // what an event means is its `event` and fields, never this text.
        if let (Some(text), Some(map)) = (event.text(), value.as_object_mut()) {
            map.insert("text".into(), text.into());
        }
        let mut line = value.to_string();
        line.push('\n');
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

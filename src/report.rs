//! What the library tells whoever runs it while it works, as data: an
//! `Event` per thing worth saying, handed to a `Reporter`. The library
//! never writes to a terminal; the binary renders events as text (a
//! redrawn progress line on a terminal, plain lines elsewhere) or as JSON
//! lines (`--progress json`), which is what the pytest plugin and Django's
//! runner read, so that rewording a message cannot change what they do.
//!
//! Results are not events: they are return values, printed on stdout by
//! the command that asked for them.

use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// One thing the library says while it works. Serialized (tag `event`) as
/// the JSON lines `--progress json` writes; documented in docs/usage.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A step under way or done, for a human (a restore, a server start,
    /// a timing). Silenced by `--quiet`.
    Status { message: String },
    /// Another migsnap holds the lock and does the work; this one waits
    /// for it. Silenced by `--quiet`.
    Waiting { message: String },
    /// Migration `index` of `total` (from 1) starts.
    Applying {
        index: usize,
        total: usize,
        migration: String,
    },
    /// The migration that started last is still running: sent twice a
    /// second, for a terminal's live line; text elsewhere shows one every
    /// ten seconds.
    StillApplying {
        index: usize,
        total: usize,
        migration: String,
        elapsed_ms: u64,
        queries: u64,
    },
    /// The live progress line, if one is drawn, is over (the run ended or
    /// was interrupted).
    ProgressEnd,
    /// A line Django printed (with `--verbose`).
    Output { line: String },
    /// Something the user should know, even with `--quiet`; with how to
    /// fix it when there is a fix.
    Warning {
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        hint: Option<String>,
    },
    /// How to fix what the warning said just before it is about (when the
    /// hint comes from elsewhere than the warning).
    Hint { message: String },
}

impl Event {
    /// The line a human reads, without `migsnap: ` and without a warning's
    /// label (the renderer adds both); None for `ProgressEnd`.
    pub fn text(&self) -> Option<String> {
        Some(match self {
            Event::Status { message } | Event::Waiting { message } => message.clone(),
            Event::Applying {
                index,
                total,
                migration,
            } => format!("[{index}/{total}] applying {migration}"),
            Event::StillApplying {
                index,
                total,
                migration,
                elapsed_ms,
                queries,
            } => format!(
                "[{index}/{total}] applying {migration} ({}, {queries} queries)",
                crate::units::duration(Duration::from_millis(*elapsed_ms))
            ),
            Event::Output { line } => line.clone(),
            Event::Warning { message, .. } | Event::Hint { message } => message.clone(),
            Event::ProgressEnd => return None,
        })
    }
}

/// Where events go. Called from any thread (a blocking server start
/// reports too); an implementation must not block for long.
pub trait Reporter: Send + Sync {
    fn report(&self, event: Event);

    /// How to fix what a typed cause (a module's error enum) says, for a
    /// warning about it: the binary knows, since its advice names flags
    /// and settings; the library gives none.
    fn advise(&self, _cause: &(dyn std::error::Error + 'static)) -> Option<String> {
        None
    }
}

/// Drops every event: for library users with nothing to show, and tests.
#[derive(Debug, Default)]
pub struct Silent;

impl Reporter for Silent {
    fn report(&self, _: Event) {}
}

/// The handle library functions take: cheap to clone (threads and guards
/// keep one), with one method per kind of event.
#[derive(Clone)]
pub struct Events(Arc<dyn Reporter>);

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Events")
    }
}

impl Events {
    pub fn new(reporter: Arc<dyn Reporter>) -> Events {
        Events(reporter)
    }

    pub fn silent() -> Events {
        Events(Arc::new(Silent))
    }

    pub fn report(&self, event: Event) {
        self.0.report(event)
    }

    /// A step under way or done.
    pub fn info(&self, message: impl Into<String>) {
        self.report(Event::Status {
            message: message.into(),
        })
    }

    /// Waiting for another migsnap that holds the lock.
    pub fn waiting(&self, message: impl Into<String>) {
        self.report(Event::Waiting {
            message: message.into(),
        })
    }

    /// Something the user should know.
    pub fn warn(&self, message: impl Into<String>) {
        self.report(Event::Warning {
            message: message.into(),
            hint: None,
        })
    }

    /// A warning about a typed cause, with the reporter's advice for it.
    pub fn warn_about(
        &self,
        message: impl Into<String>,
        cause: &(dyn std::error::Error + 'static),
    ) {
        self.report(Event::Warning {
            message: message.into(),
            hint: self.0.advise(cause),
        })
    }

    /// The reporter's advice for a typed cause, after a warning about it
    /// that said more than the cause (nothing when it has none).
    pub fn advise(&self, cause: &(dyn std::error::Error + 'static)) {
        if let Some(message) = self.0.advise(cause) {
            self.report(Event::Hint { message })
        }
    }

    /// A line Django printed.
    pub fn output(&self, line: impl Into<String>) {
        self.report(Event::Output { line: line.into() })
    }

    /// The live progress line is over.
    pub fn end_progress(&self) {
        self.report(Event::ProgressEnd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_as_tagged_json_lines() {
        let json = |e: &Event| serde_json::to_string(e).expect("json");
        assert_eq!(
            json(&Event::Applying {
                index: 3,
                total: 10,
                migration: "app.0003_x".into()
            }),
            r#"{"event":"applying","index":3,"total":10,"migration":"app.0003_x"}"#
        );
        assert_eq!(
            json(&Event::Warning {
                message: "m".into(),
                hint: None
            }),
            r#"{"event":"warning","message":"m"}"#
        );
        assert_eq!(json(&Event::ProgressEnd), r#"{"event":"progress_end"}"#);
        assert_eq!(
            Event::StillApplying {
                index: 1,
                total: 2,
                migration: "a.0001".into(),
                elapsed_ms: 1500,
                queries: 7
            }
            .text()
            .as_deref(),
            Some("[1/2] applying a.0001 (1.50s, 7 queries)")
        );
    }
}

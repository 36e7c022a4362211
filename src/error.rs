//! The one error type commands return, and how it maps to exit codes.
//!
//! Each module has its own error enum with the context in its fields; this
//! type wraps them so `main` can print `error: …`, the `Caused by:` chain and a
//! `hint: …`, and pick a documented exit code.

use std::fmt;

/// Documented exit codes (docs/exit-codes.md).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// `check` found something, `lint` an error, `diff` a difference.
    pub const FINDINGS: u8 = 1;
    /// Bad input, bad configuration, or a refused (unsafe) request.
    pub const USAGE: u8 = 2;
    /// A bug or an unexpected failure inside migsnap.
    pub const INTERNAL: u8 = 3;
    /// Django failed: migrate raised, the settings could not load, …
    pub const DJANGO: u8 = 4;
    /// The PostgreSQL server failed: unreachable, authentication, privileges.
    pub const SERVER: u8 = 5;
    /// The snapshot store failed a command that needs it (`push`, `pull`,
    /// `ls --remote`, `gc --remote`): unreachable, denied, damaged.
    /// `prepare` never fails for it: it warns and builds locally.
    pub const REMOTE: u8 = 6;
    /// Stopped by Ctrl-C (SIGINT): 128 + 2, as shells report it.
    pub const INTERRUPTED: u8 = 130;
}

/// What kind of failure this is, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Usage,
    Internal,
    Django,
    Server,
    Remote,
    Interrupted,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Usage => exit::USAGE,
            Kind::Internal => exit::INTERNAL,
            Kind::Django => exit::DJANGO,
            Kind::Server => exit::SERVER,
            Kind::Remote => exit::REMOTE,
            Kind::Interrupted => exit::INTERRUPTED,
        }
    }
}

/// A user-facing error: a one-line message, optional causes, optional hint.
#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    pub hint: Option<String>,
    /// Extra text shown after the message (e.g. Django's traceback).
    pub detail: Option<String>,
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A module's own error enum: what went wrong as data (the path, the
/// database, the variable, the cause as its `#[source]`), and which kind of
/// failure each variant is. Converting one into `Error` keeps it as the
/// first cause, so the binary finds it with `Error::find` and renders its
/// hint there (src/commands/hints.rs): the library never writes advice.
pub trait Typed: std::error::Error + Send + Sync + 'static {
    /// The kind of failure, which decides the exit code.
    fn kind(&self) -> Kind;
}

impl<T: Typed> From<T> for Error {
    fn from(e: T) -> Error {
        let kind = e.kind();
        Error::typed(kind, e)
    }
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            hint: None,
            detail: None,
            source: None,
        }
    }
    /// `e` as the error, of `kind`: its message is the typed error's own
    /// text, and `e` is kept as the first cause (`find` finds it; `report`
    /// skips it for saying the message again, and goes on with its source).
    /// How every library error is made (tests/it/architecture.rs).
    pub fn typed(kind: Kind, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::new(kind, e.to_string()).source(e)
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Kind::Internal, message)
    }
    pub fn server(message: impl Into<String>) -> Self {
        Self::new(Kind::Server, message)
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    pub fn source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    pub fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }

    /// The first cause of type `T` in this error's chain: how a caller
    /// asks what went wrong as data, never from the message's wording.
    pub fn find<T: std::error::Error + 'static>(&self) -> Option<&T> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<T>() {
                return Some(found);
            }
            next = e.source();
        }
        None
    }

    /// The full report for stderr: message, causes, detail, hint; the
    /// `error:` and `hint:` prefixes in colour when `color`.
    pub fn report(&self, color: bool) -> String {
        use std::fmt::Write;
        let mut out = format!("{} {}\n", Label::Error.prefix(color), self.message);
        let mut cause: Option<&(dyn std::error::Error + 'static)> = match &self.source {
            Some(s) => Some(s.as_ref()),
            None => None,
        };
        let mut last = String::new();
        while let Some(c) = cause {
            let text = c.to_string();
            // tokio-postgres repeats its source inside Display ("db error: ERROR: x");
            // skip a cause that says nothing new.
            // tokio-postgres says just "db error" and puts the server's
            // message in its source: skip the empty step.
            let says_nothing = text.is_empty() || text == "db error";
            if !says_nothing && text != last && !self.message.contains(&text) {
                let _ = writeln!(out, "  Caused by: {text}");
            }
            last = text;
            cause = c.source();
        }
        if let Some(d) = &self.detail {
            let d = d.trim_end();
            if !d.is_empty() {
                let _ = writeln!(out, "{d}");
            }
        }
        if let Some(h) = &self.hint {
            let _ = writeln!(out, "{} {h}", Label::Hint.prefix(color));
        }
        out
    }
}

/// What a message line is, for its prefix's colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Error,
    Warning,
    Hint,
}

impl Label {
    fn style(self) -> anstyle::Style {
        let color = match self {
            Label::Error => anstyle::AnsiColor::Red,
            Label::Warning => anstyle::AnsiColor::Yellow,
            Label::Hint => anstyle::AnsiColor::Cyan,
        };
        anstyle::Style::new().bold().fg_color(Some(color.into()))
    }

    fn text(self) -> &'static str {
        match self {
            Label::Error => "error",
            Label::Warning => "warning",
            Label::Hint => "hint",
        }
    }

    /// `error:` (`warning:`, `hint:`), in its colour when `color`.
    pub fn prefix(self, color: bool) -> String {
        match color {
            true => format!("{0}{1}:{0:#}", self.style(), self.text()),
            false => format!("{}:", self.text()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.source {
            Some(s) => Some(s.as_ref()),
            None => None,
        }
    }
}

/// An error and its causes on one line (the last cause is usually the
/// system's or the library's own words), for warnings.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut why = e.to_string();
    let mut last = why.clone();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        // A typed error wrapped into `Error` is its first cause and says
        // the same words, and a message may quote its cause: say them once.
        if text != last && !why.contains(&text) {
            why.push_str(&format!(": {text}"));
        }
        last = text;
        cause = c.source();
    }
    why
}

/// Attach context to foreign errors: `fs::read(p).with_kind(Kind::Usage, || …)`.
pub trait Context<T> {
    fn with_kind(self, kind: Kind, message: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn with_kind(self, kind: Kind, message: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::new(kind, message()).source(e))
    }
}

/// Run blocking work (subprocesses, file locks) off the async runtime; a
/// panicked task becomes an internal error naming `what`.
pub async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|source| {
        Error::from(TaskFailed {
            what: what.to_string(),
            source,
        })
    })
}

/// Blocking work (`blocking`) panicked or was cancelled: `what` names it.
#[derive(Debug, thiserror::Error)]
#[error("{what} failed")]
pub struct TaskFailed {
    pub what: String,
    source: tokio::task::JoinError,
}

impl Typed for TaskFailed {
    fn kind(&self) -> Kind {
        Kind::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_says_a_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("refused snapshot abc: {0}")]
        struct Refused(#[source] std::io::Error);
        let cause = std::io::Error::other("bad signature");
        let e = Error::new(
            Kind::Remote,
            "in the store: refused snapshot abc: bad signature",
        )
        .source(Refused(cause));
        assert_eq!(
            one_line(&e),
            "in the store: refused snapshot abc: bad signature"
        );
        let e = Error::new(Kind::Remote, "cannot list").source(std::io::Error::other("timeout"));
        assert_eq!(one_line(&e), "cannot list: timeout");
    }

    #[test]
    fn prefixes_are_plain_without_colour() {
        assert_eq!(Label::Error.prefix(false), "error:");
        assert_eq!(Label::Hint.prefix(false), "hint:");
        assert_eq!(
            Label::Warning.prefix(true),
            "\x1b[1m\x1b[33mwarning:\x1b[0m"
        );
    }
}

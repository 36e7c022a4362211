//! Splits pg_dump plain-SQL output into statements, COPY data and psql meta-commands.
//!
//! Why a hand-written reader: dumps can be many gigabytes, so it streams over a
//! [`BufRead`] in windows of whole lines and keeps memory bounded by the largest
//! single statement or line instead of the file; and since migsnap restores
//! without psql, it has to recognise what psql itself would handle: `COPY ...
//! FROM stdin` data blocks (sent with the copy protocol) and backslash
//! meta-commands such as `\restrict`, `\unrestrict` and `\connect`, which the
//! server does not understand.
//!
//! Assumes `standard_conforming_strings = on` (pg_dump always sets it), so a
//! backslash is only an escape character inside `E'...'` strings.

use std::io::{BufRead, ErrorKind, Read};

/// COPY data is handed out in chunks of about this many bytes.
const COPY_CHUNK: usize = 256 * 1024;
/// Bytes read per window (then extended to the end of the line).
const WINDOW: usize = 64 * 1024;
/// A buffer that grew beyond this for one huge statement or line is released
/// afterwards so the footprint goes back down.
const KEEP_CAPACITY: usize = 1024 * 1024;
/// The longest statement a dump may hold. pg_dump writes a statement per
/// object: a table's columns, a function's body, a view's query; the
/// largest in the projects measured were tens of KiB. A longer one marks
/// the dump damaged, so memory stays bounded whatever the input (a planted
/// 256 MiB statement took migsnap to 800 MB: issue #21). PostgreSQL's
/// parser needs a few hundred bytes of memory per byte of a statement made
/// of tiny tokens, so the cap is what bounds the check's memory too.
pub const MAX_STATEMENT: usize = 1024 * 1024;
/// The longest line: one row of COPY data (a large text or bytea value) is
/// one line.
pub const MAX_LINE: usize = 32 * 1024 * 1024;

/// One unit of work for the restorer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// One complete SQL statement including its terminating `;`.
    ///
    /// Leading whitespace and comments are trimmed; comments inside the
    /// statement are kept. Text after the `;` on the same line belongs to the
    /// next item. The last statement of a dump may lack the `;` (it is then
    /// trimmed at the end too), exactly as psql would send it.
    Statement(String),
    /// A `COPY ... FROM stdin;` statement. Data follows as `CopyData` items, then `CopyEnd`.
    CopyStart(String),
    /// Raw COPY data: one or more whole lines, each ending in `\n`, never the
    /// `\.` terminator line. Chunks are bounded (~256 KiB, but a single longer
    /// line is emitted whole) so memory stays flat for huge tables.
    CopyData(Vec<u8>),
    /// The `\.` line that ends a COPY block.
    CopyEnd,
    /// A psql meta-command line at statement start, without the leading
    /// backslash and trailing newline, e.g. `restrict AbC123` or
    /// `connect -reuse-previous=on "dbname='x'"`.
    MetaCommand(String),
}

/// Why the dump could not be split.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The underlying reader failed (e.g. a zstd decoding error).
    #[error("could not read the dump")]
    Io(#[from] std::io::Error),
    /// The dump ends inside a string, identifier, comment or COPY block.
    #[error("the dump ends inside {what} that starts at line {line}")]
    Truncated { what: &'static str, line: u64 },
    /// A statement or meta-command is not valid UTF-8 (COPY data and the
    /// comments between statements are not checked).
    #[error("the dump is not UTF-8 text near line {line}")]
    NotUtf8 { line: u64 },
    /// A statement or line longer than pg_dump writes (`MAX_STATEMENT`,
    /// `MAX_LINE`).
    #[error("the dump has a {what} over {limit} bytes at line {line}")]
    TooLong {
        what: &'static str,
        limit: usize,
        line: u64,
    },
}

/// Lexer state inside SQL text; carried from one window to the next.
#[derive(Debug, Clone, Copy)]
enum Lex {
    /// Plain SQL text (or whitespace between statements).
    Normal,
    /// Inside `'...'`; `escapes` for `E'...'`, where a backslash escapes the next byte.
    Quote { escapes: bool, start: u64 },
    /// Inside a `"..."` identifier.
    Ident { start: u64 },
    /// Inside a dollar-quoted body; the closing `$tag$` is in `DumpReader::tag`.
    Dollar { start: u64 },
    /// Inside a (nested) `/* ... */` comment.
    Block { depth: u32, start: u64 },
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Sql,
    /// Reading COPY data lines; `start` is the first data line.
    Copy {
        start: u64,
    },
    /// The `\.` line (at `line`) was read after a `CopyData` item; `CopyEnd` is next.
    CopyEnd {
        line: u64,
    },
    /// End of input or an error: only `None` from now on.
    Done,
}

/// Bytes that need a closer look in plain SQL text.
const SPECIAL: [bool; 256] = {
    let mut table = [false; 256];
    table[b';' as usize] = true;
    table[b'\'' as usize] = true;
    table[b'"' as usize] = true;
    table[b'$' as usize] = true;
    table[b'-' as usize] = true;
    table[b'/' as usize] = true;
    table
};

/// Line numbers inside the window, counted lazily.
#[derive(Debug, Clone, Copy)]
struct LineCounter {
    /// Line number of the window's first byte.
    base: u64,
    /// `line` is the line number at window offset `pos`.
    pos: usize,
    line: u64,
}

impl LineCounter {
    fn new(base: u64) -> Self {
        LineCounter {
            base,
            pos: 0,
            line: base,
        }
    }

    /// Line number of offset `i` in `window`.
    fn at(&mut self, window: &[u8], i: usize) -> u64 {
        let i = i.min(window.len());
        if i < self.pos {
            *self = LineCounter::new(self.base);
        }
        self.line += count_byte(&window[self.pos..i], b'\n');
        self.pos = i;
        self.line
    }
}

/// Streaming splitter over a pg_dump plain-format dump; see [`Item`].
pub struct DumpReader<R: BufRead> {
    reader: R,
    /// Whole lines read from `reader` (ends in `\n` except at end of input), scanned from `pos`.
    window: Vec<u8>,
    pos: usize,
    lines: LineCounter,
    window_size: usize,
    /// Text of the statement being collected, from earlier windows.
    stmt: Vec<u8>,
    /// Whether a statement has started (non-space, non-comment text seen).
    in_stmt: bool,
    stmt_line: u64,
    /// Where the item last returned starts.
    item_line: u64,
    lex: Lex,
    /// Closing delimiter of the current dollar quote, e.g. `$fn$`.
    tag: Vec<u8>,
    /// SQL after `FROM stdin;` on the COPY line; psql runs it after the data.
    after_copy: Vec<u8>,
    mode: Mode,
}

impl<R: BufRead> DumpReader<R> {
    /// Reads the dump from `reader` (for a compressed dump, wrap the decoder in a `BufReader`).
    pub fn new(reader: R) -> Self {
        Self::with_window(reader, WINDOW)
    }

    fn with_window(reader: R, window_size: usize) -> Self {
        DumpReader {
            reader,
            window: Vec::new(),
            pos: 0,
            lines: LineCounter::new(1),
            window_size: window_size.max(1),
            stmt: Vec::new(),
            in_stmt: false,
            stmt_line: 1,
            item_line: 1,
            lex: Lex::Normal,
            tag: Vec::new(),
            after_copy: Vec::new(),
            mode: Mode::Sql,
        }
    }

    /// The next item, `None` at the end of the dump. After an error, only `None` follows.
    pub fn next_item(&mut self) -> Result<Option<Item>, DumpError> {
        let result = match self.mode {
            Mode::Done => return Ok(None),
            Mode::CopyEnd { line } => {
                self.mode = Mode::Sql;
                self.item_line = line;
                return Ok(Some(Item::CopyEnd));
            }
            Mode::Copy { start } => self.copy_data(start),
            Mode::Sql => self.sql_item(),
        };
        if !matches!(result, Ok(Some(_))) {
            self.mode = Mode::Done;
        }
        result
    }

    /// 1-based line where the item last returned by `next_item` starts
    /// (after leading whitespace/comments; for `CopyData`, its first line;
    /// for `CopyEnd`, the `\.` line). Use it to point at a failed statement.
    pub fn item_line(&self) -> u64 {
        self.item_line
    }

    /// 1-based line number of the current position (for error messages).
    ///
    /// Between items this is where the previous item ended (often the line
    /// of its `;`), not where the next one starts; see [`Self::item_line`].
    pub fn line(&self) -> u64 {
        let mut lines = self.lines;
        lines.at(&self.window, self.pos)
    }

    /// Replaces the consumed window with the next lines; `false` at end of input.
    fn refill(&mut self) -> Result<bool, DumpError> {
        let next_line = self.lines.at(&self.window, self.window.len());
        self.lines = LineCounter::new(next_line);
        self.pos = 0;
        if self.window.capacity() > KEEP_CAPACITY {
            self.window = Vec::new();
        } else {
            self.window.clear();
        }
        while self.window.len() < self.window_size {
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            if available.is_empty() {
                break;
            }
            let take = available.len().min(self.window_size - self.window.len());
            self.window.extend_from_slice(&available[..take]);
            self.reader.consume(take);
        }
        if self.window.last().is_some_and(|&b| b != b'\n') {
            // To the end of the line, but no further than a line may be.
            let limit = MAX_LINE as u64 + 1;
            (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.window)?;
            if self.window.len() > self.window_size + MAX_LINE {
                return Err(DumpError::TooLong {
                    what: "line",
                    limit: MAX_LINE,
                    line: self.lines.base,
                });
            }
        }
        Ok(!self.window.is_empty())
    }

    /// Collects COPY data lines up to the `\.` line, about one chunk at a time.
    fn copy_data(&mut self, start: u64) -> Result<Option<Item>, DumpError> {
        let mut chunk = Vec::new();
        loop {
            if self.pos >= self.window.len() && !self.refill()? {
                return Err(DumpError::Truncated {
                    what: "COPY data",
                    line: start,
                });
            }
            // `pos` is always at the start of a line here.
            if chunk.is_empty() {
                self.item_line = self.lines.at(&self.window, self.pos);
            }
            let data = &self.window[self.pos..];
            if let Some((line_start, line_end)) = find_copy_terminator(data) {
                let end_line = self.lines.at(&self.window, self.pos + line_start);
                let item = if line_start == 0 && chunk.is_empty() {
                    self.mode = Mode::Sql;
                    self.item_line = end_line;
                    Item::CopyEnd
                } else {
                    if chunk.is_empty() {
                        chunk = data[..line_start].to_vec();
                    } else {
                        chunk.extend_from_slice(&data[..line_start]);
                    }
                    self.mode = Mode::CopyEnd { line: end_line };
                    Item::CopyData(chunk)
                };
                self.pos += line_end;
                self.resume_after_copy();
                return Ok(Some(item));
            }
            if data.last() != Some(&b'\n') {
                return Err(DumpError::Truncated {
                    what: "COPY data",
                    line: start,
                });
            }
            if chunk.is_empty() {
                chunk.reserve(COPY_CHUNK + 2 * self.window_size);
            }
            chunk.extend_from_slice(data);
            self.pos = self.window.len();
            if chunk.len() >= COPY_CHUNK {
                return Ok(Some(Item::CopyData(chunk)));
            }
        }
    }

    /// Puts SQL that followed `FROM stdin;` on the COPY line back in front of the window.
    fn resume_after_copy(&mut self) {
        if self.after_copy.is_empty() {
            return;
        }
        // Rare (pg_dump never does this): line numbers of that text are off by
        // the number of data lines.
        let resume_line = self.lines.at(&self.window, self.pos);
        let mut spliced = std::mem::take(&mut self.after_copy);
        spliced.extend_from_slice(&self.window[self.pos..]);
        self.window = spliced;
        self.pos = 0;
        self.lines = LineCounter::new(resume_line.saturating_sub(1));
    }

    fn sql_item(&mut self) -> Result<Option<Item>, DumpError> {
        loop {
            if self.pos >= self.window.len() && !self.refill()? {
                return self.sql_eof();
            }
            if let Some(item) = self.scan()? {
                return Ok(Some(item));
            }
        }
    }

    /// Scans the window from `pos`. Returns an item if one ends in this window
    /// (leaving `pos` just after it), otherwise consumes the whole window.
    fn scan(&mut self) -> Result<Option<Item>, DumpError> {
        let buf = &self.window[..];
        let end = buf.len();
        let mut i = self.pos;
        // Start of this window's part of the current statement (valid while `in_stmt`).
        let mut seg = i;
        while i < end {
            match self.lex {
                Lex::Normal if !self.in_stmt => match buf[i] {
                    b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | b';' => i += 1,
                    b'-' if buf.get(i + 1) == Some(&b'-') => i = comment_end(buf, i),
                    b'/' if buf.get(i + 1) == Some(&b'*') => {
                        self.lex = Lex::Block {
                            depth: 1,
                            start: self.lines.at(buf, i),
                        };
                        i += 2;
                    }
                    b'\\' => {
                        let next = line_end(buf, i);
                        let text = &buf[i + 1..next];
                        let text = text.strip_suffix(b"\n").unwrap_or(text);
                        let text = text.strip_suffix(b"\r").unwrap_or(text);
                        let Ok(command) = std::str::from_utf8(text) else {
                            let line = self.lines.at(buf, i);
                            return Err(DumpError::NotUtf8 { line });
                        };
                        let command = command.to_owned();
                        self.pos = next;
                        self.item_line = self.lines.at(buf, i);
                        return Ok(Some(Item::MetaCommand(command)));
                    }
                    _ => {
                        self.in_stmt = true;
                        self.stmt_line = self.lines.at(buf, i);
                        seg = i;
                    }
                },
                Lex::Normal => {
                    let Some(offset) = buf[i..].iter().position(|&b| SPECIAL[usize::from(b)])
                    else {
                        i = end;
                        continue;
                    };
                    i += offset;
                    let next = buf.get(i + 1).copied();
                    match buf[i] {
                        b';' => return self.finish_statement(seg, i + 1).map(Some),
                        b'\'' => {
                            // E'...' (not the tail of an identifier such as `name'...'`).
                            let escapes = i >= 1
                                && buf[i - 1] | 0x20 == b'e'
                                && (i < 2 || !is_ident_byte(buf[i - 2]));
                            self.lex = Lex::Quote {
                                escapes,
                                start: self.lines.at(buf, i),
                            };
                            i += 1;
                        }
                        b'"' => {
                            self.lex = Lex::Ident {
                                start: self.lines.at(buf, i),
                            };
                            i += 1;
                        }
                        b'$' => {
                            // `foo$bar$` is an identifier, `$1` a parameter.
                            let in_word = i >= 1 && is_ident_byte(buf[i - 1]);
                            match dollar_tag_len(&buf[i..]) {
                                Some(len) if !in_word => {
                                    self.tag.clear();
                                    self.tag.extend_from_slice(&buf[i..i + len]);
                                    self.lex = Lex::Dollar {
                                        start: self.lines.at(buf, i),
                                    };
                                    i += len;
                                }
                                _ => i += 1,
                            }
                        }
                        b'-' if next == Some(b'-') => i = comment_end(buf, i),
                        b'/' if next == Some(b'*') => {
                            self.lex = Lex::Block {
                                depth: 1,
                                start: self.lines.at(buf, i),
                            };
                            i += 2;
                        }
                        _ => i += 1,
                    }
                }
                Lex::Quote { escapes, .. } => {
                    let found = if escapes {
                        buf[i..].iter().position(|&b| b == b'\'' || b == b'\\')
                    } else {
                        find_byte(&buf[i..], b'\'')
                    };
                    let Some(offset) = found else {
                        i = end;
                        continue;
                    };
                    i += offset;
                    if buf[i] == b'\\' {
                        i = (i + 2).min(end);
                    } else if buf.get(i + 1) == Some(&b'\'') {
                        i += 2;
                    } else {
                        self.lex = Lex::Normal;
                        i += 1;
                    }
                }
                Lex::Ident { .. } => {
                    let Some(offset) = find_byte(&buf[i..], b'"') else {
                        i = end;
                        continue;
                    };
                    i += offset;
                    if buf.get(i + 1) == Some(&b'"') {
                        i += 2;
                    } else {
                        self.lex = Lex::Normal;
                        i += 1;
                    }
                }
                Lex::Dollar { .. } => {
                    let tag = &self.tag[..];
                    let mut at = i;
                    loop {
                        let Some(offset) = find_byte(&buf[at..], b'$') else {
                            i = end;
                            break;
                        };
                        at += offset;
                        if buf[at..].starts_with(tag) {
                            self.lex = Lex::Normal;
                            i = at + tag.len();
                            break;
                        }
                        at += 1;
                    }
                }
                Lex::Block { depth, start } => {
                    let Some(offset) = buf[i..].iter().position(|&b| b == b'*' || b == b'/') else {
                        i = end;
                        continue;
                    };
                    i += offset;
                    let next = buf.get(i + 1).copied();
                    if buf[i] == b'/' && next == Some(b'*') {
                        self.lex = Lex::Block {
                            depth: depth.saturating_add(1),
                            start,
                        };
                        i += 2;
                    } else if buf[i] == b'*' && next == Some(b'/') {
                        self.lex = if depth <= 1 {
                            Lex::Normal
                        } else {
                            Lex::Block {
                                depth: depth - 1,
                                start,
                            }
                        };
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
            }
        }
        if self.in_stmt {
            if self.stmt.len() + (end - seg) > MAX_STATEMENT {
                return Err(DumpError::TooLong {
                    what: "statement",
                    limit: MAX_STATEMENT,
                    line: self.stmt_line,
                });
            }
            self.stmt.extend_from_slice(&buf[seg..end]);
        }
        self.pos = end;
        Ok(None)
    }

    /// The statement ends at window offset `end` (just after its `;`); its
    /// text is `stmt` followed by `window[seg..end]`.
    fn finish_statement(&mut self, seg: usize, end: usize) -> Result<Item, DumpError> {
        let tail = &self.window[seg..end];
        if self.stmt.len() + tail.len() > MAX_STATEMENT {
            return Err(DumpError::TooLong {
                what: "statement",
                limit: MAX_STATEMENT,
                line: self.stmt_line,
            });
        }
        let text = if self.stmt.is_empty() {
            statement_text(tail, self.stmt_line)?
        } else {
            self.stmt.extend_from_slice(tail);
            let text = statement_text(&self.stmt, self.stmt_line)?;
            self.clear_stmt();
            text
        };
        self.in_stmt = false;
        self.pos = end;
        self.item_line = self.stmt_line;
        if !is_copy_from_stdin(&text) {
            return Ok(Item::Statement(text));
        }
        // Data starts on the next line (as in psql); the rest of this line,
        // unless blank, is SQL that runs after the COPY.
        let next = line_end(&self.window, end);
        let rest = &self.window[end..next];
        if !rest.iter().all(u8::is_ascii_whitespace) {
            self.after_copy = rest.to_vec();
        }
        self.pos = next;
        self.mode = Mode::Copy {
            start: self.lines.at(&self.window, next),
        };
        Ok(Item::CopyStart(text))
    }

    fn clear_stmt(&mut self) {
        if self.stmt.capacity() > KEEP_CAPACITY {
            self.stmt = Vec::new();
        } else {
            self.stmt.clear();
        }
    }

    /// End of input in SQL mode: flush an unterminated statement or report what is open.
    fn sql_eof(&mut self) -> Result<Option<Item>, DumpError> {
        let (what, line) = match self.lex {
            Lex::Normal if !self.in_stmt => return Ok(None),
            Lex::Normal => {
                self.in_stmt = false;
                let mut text = statement_text(&self.stmt, self.stmt_line)?;
                self.clear_stmt();
                text.truncate(text.trim_end().len());
                if is_copy_from_stdin(&text) {
                    return Err(DumpError::Truncated {
                        what: "COPY data",
                        line: self.line(),
                    });
                }
                self.item_line = self.stmt_line;
                return Ok(Some(Item::Statement(text)));
            }
            Lex::Quote { start, .. } => ("a quoted string", start),
            Lex::Ident { start } => ("a quoted identifier", start),
            Lex::Dollar { start } => ("a dollar-quoted string", start),
            Lex::Block { start, .. } => ("a block comment", start),
        };
        Err(DumpError::Truncated { what, line })
    }
}

impl<R: BufRead> Iterator for DumpReader<R> {
    type Item = Result<Item, DumpError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().transpose()
    }
}

impl<R: BufRead> std::iter::FusedIterator for DumpReader<R> {}

/// Offset of the `\n` or `\r` that ends the `--` comment starting at `i`
/// (or the end of `buf`). PostgreSQL's scanner ends a comment at either
/// (`non_newline [^\n\r]` in scan.l): a reader that waited for `\n` would
/// take the statements after a `\r` for comment text (issue #21).
fn comment_end(buf: &[u8], i: usize) -> usize {
    buf[i..]
        .iter()
        .position(|&b| b == b'\n' || b == b'\r')
        .map_or(buf.len(), |p| i + p)
}

/// Offset just past the `\n` that ends the line containing offset `i` (or the end of `buf`).
fn line_end(buf: &[u8], i: usize) -> usize {
    buf.get(i..)
        .and_then(|rest| find_byte(rest, b'\n'))
        .map_or(buf.len(), |offset| i + offset + 1)
}

/// `bytes` as a `String`, or `NotUtf8` with the line of the first bad byte.
fn statement_text(bytes: &[u8], first_line: u64) -> Result<String, DumpError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.to_owned()),
        Err(e) => {
            let before = &bytes[..e.valid_up_to()];
            Err(DumpError::NotUtf8 {
                line: first_line + count_byte(before, b'\n'),
            })
        }
    }
}

/// Finds the `\.` line in COPY data that starts at a line start: its start and end offsets.
fn find_copy_terminator(data: &[u8]) -> Option<(usize, usize)> {
    let mut from = 0;
    loop {
        let at = from + find_byte(data.get(from..)?, b'\\')?;
        if (at == 0 || data[at - 1] == b'\n') && data.get(at + 1) == Some(&b'.') {
            let after = &data[at + 2..];
            let len = match after {
                [b'\n', ..] | [b'\r'] => Some(1),
                [b'\r', b'\n', ..] => Some(2),
                [] => Some(0),
                _ => None,
            };
            if let Some(len) = len {
                return Some((at, at + 2 + len));
            }
        }
        from = at + 1;
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// The high bit of each byte of `word` that equals `byte` (exact, word-at-a-time).
fn byte_matches(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// Offset of the first `byte` in `haystack`, eight bytes at a time.
fn find_byte(haystack: &[u8], byte: u8) -> Option<usize> {
    let mut words = haystack.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let matches = byte_matches(u64::from_le_bytes(word), byte);
        if matches != 0 {
            return Some(offset + (matches.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    let rest = haystack.get(offset..)?;
    rest.iter().position(|&b| b == byte).map(|p| offset + p)
}

/// How many times `byte` occurs in `haystack`.
fn count_byte(haystack: &[u8], byte: u8) -> u64 {
    let mut words = haystack.chunks_exact(8);
    let mut count = 0;
    for word in &mut words {
        if let Ok(word) = <[u8; 8]>::try_from(word) {
            count += u64::from(byte_matches(u64::from_le_bytes(word), byte).count_ones());
        }
    }
    let rest = words.remainder().iter().filter(|&&b| b == byte).count();
    count + rest as u64
}

/// Bytes that can continue an identifier (PostgreSQL treats all non-ASCII bytes as letters).
fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Length of the `$tag$` delimiter at the start of `s` (which starts with `$`), if it is one.
fn dollar_tag_len(s: &[u8]) -> Option<usize> {
    let rest = s.get(1..)?;
    if rest.first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let len = rest
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80))?;
    (rest[len] == b'$').then_some(len + 2)
}

/// Whether `text` (starting at its first token) is `COPY ... FROM stdin[;]`.
fn is_copy_from_stdin(text: &str) -> bool {
    let bytes = text.as_bytes();
    let starts_with_copy = bytes
        .get(..4)
        .is_some_and(|word| word.eq_ignore_ascii_case(b"copy"))
        && !bytes.get(4).is_some_and(|&b| is_ident_byte(b));
    if !starts_with_copy {
        return false;
    }
    let tail = text.trim_end();
    let tail = tail.strip_suffix(';').unwrap_or(tail).trim_end().as_bytes();
    let Some(before_stdin) = strip_suffix_ignore_case(tail, b"stdin") else {
        return false;
    };
    let trimmed = before_stdin.trim_ascii_end();
    if trimmed.len() == before_stdin.len() {
        return false;
    }
    strip_suffix_ignore_case(trimmed, b"from")
        .is_some_and(|before| before.last().is_some_and(|&b| !is_ident_byte(b)))
}

fn strip_suffix_ignore_case<'a>(s: &'a [u8], suffix: &[u8]) -> Option<&'a [u8]> {
    let cut = s.len().checked_sub(suffix.len())?;
    s[cut..].eq_ignore_ascii_case(suffix).then(|| &s[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::select;
    use std::io::BufReader;

    /// Splits `input`, checking that tiny windows (every construct crossing a
    /// window boundary) give the same result as the default one.
    fn items(input: &[u8]) -> Result<Vec<Item>, DumpError> {
        let result: Result<Vec<Item>, DumpError> = DumpReader::new(input).collect();
        for window in [1, 2, 3, 7] {
            let small: Result<Vec<Item>, DumpError> =
                DumpReader::with_window(input, window).collect();
            match (&result, small) {
                (Ok(expected), Ok(got)) => assert_eq!(merged(got), merged(expected.clone())),
                (Err(expected), Err(got)) => {
                    assert_eq!(format!("{got:?}"), format!("{expected:?}"));
                }
                (expected, got) => panic!("window {window}: {got:?} but {expected:?}"),
            }
        }
        result
    }

    /// Joins consecutive `CopyData` items (chunking depends on the window size).
    fn merged(items: Vec<Item>) -> Vec<Item> {
        let mut out: Vec<Item> = Vec::new();
        for item in items {
            match (out.last_mut(), item) {
                (Some(Item::CopyData(prev)), Item::CopyData(more)) => prev.extend_from_slice(&more),
                (_, item) => out.push(item),
            }
        }
        out
    }

    fn ok_items(input: &str) -> Vec<Item> {
        items(input.as_bytes()).expect("input should split without errors")
    }

    fn stmt(s: &str) -> Item {
        Item::Statement(s.to_owned())
    }

    fn statements(input: &str) -> Vec<String> {
        ok_items(input)
            .into_iter()
            .map(|item| match item {
                Item::Statement(s) => s,
                other => panic!("expected only statements, got {other:?}"),
            })
            .collect()
    }

    fn truncated(input: &str) -> (&'static str, u64) {
        match items(input.as_bytes()) {
            Err(DumpError::Truncated { what, line }) => (what, line),
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn splits_statements_and_keeps_same_line_tail_for_next() {
        assert_eq!(
            statements("SELECT 1; SELECT 2;\nSELECT\n  3;"),
            ["SELECT 1;", "SELECT 2;", "SELECT\n  3;"]
        );
    }

    #[test]
    fn single_quotes() {
        assert_eq!(
            statements("SELECT 'it''s; fine';SELECT ';';"),
            ["SELECT 'it''s; fine';", "SELECT ';';"]
        );
        // standard_conforming_strings: the backslash is literal and the quote ends the string.
        assert_eq!(
            statements("SELECT 'a\\'; SELECT 2;"),
            ["SELECT 'a\\';", "SELECT 2;"]
        );
        // Multi-line string.
        assert_eq!(statements("SELECT 'a;\nb;\n';"), ["SELECT 'a;\nb;\n';"]);
    }

    #[test]
    fn escape_strings() {
        assert_eq!(
            statements("SELECT E'it\\'s; x';SELECT e'\\\\';SELECT 1;"),
            ["SELECT E'it\\'s; x';", "SELECT e'\\\\';", "SELECT 1;"]
        );
        assert_eq!(statements("SELECT E'a'';b';"), ["SELECT E'a'';b';"]);
        // `namE'..'` is an identifier followed by a plain string.
        assert_eq!(
            statements("SELECT namE'a\\'; SELECT 2;"),
            ["SELECT namE'a\\';", "SELECT 2;"]
        );
        // Backslash before the line break inside E'..'.
        assert_eq!(statements("SELECT E'a\\\n;';"), ["SELECT E'a\\\n;';"]);
    }

    #[test]
    fn unicode_strings_are_plain() {
        assert_eq!(
            statements("SELECT U&'d\\0061t\\'; SELECT 2;"),
            ["SELECT U&'d\\0061t\\';", "SELECT 2;"]
        );
        assert_eq!(statements("SELECT u&'a'';';"), ["SELECT u&'a'';';"]);
    }

    #[test]
    fn quoted_identifiers() {
        assert_eq!(
            statements("CREATE TABLE \"a;\"\"b\" (\"x;\" int);SELECT 1;"),
            ["CREATE TABLE \"a;\"\"b\" (\"x;\" int);", "SELECT 1;"]
        );
        assert_eq!(statements("SELECT \"it's\";"), ["SELECT \"it's\";"]);
    }

    #[test]
    fn dollar_quotes() {
        assert_eq!(
            statements("DO $$ BEGIN; END; $$;SELECT 1;"),
            ["DO $$ BEGIN; END; $$;", "SELECT 1;"]
        );
        assert_eq!(
            statements("AS $fn$ a; $$ ; $f$ ; $fn$;\nSELECT 2;"),
            ["AS $fn$ a; $$ ; $f$ ; $fn$;", "SELECT 2;"]
        );
        assert_eq!(
            statements("AS $_$\nSELECT $1; -- x\n$_$;"),
            ["AS $_$\nSELECT $1; -- x\n$_$;"]
        );
        // Inside the body, the tag closes even right after other characters
        // or the end of a different tag (as in PostgreSQL's lexer).
        assert_eq!(statements("AS $b$ x$b$;"), ["AS $b$ x$b$;"]);
        assert_eq!(
            statements("AS $b$ $a$b$ ; SELECT 1;"),
            ["AS $b$ $a$b$ ;", "SELECT 1;"]
        );
        // Non-ASCII tag.
        assert_eq!(statements("AS $é$ ; $é$;"), ["AS $é$ ; $é$;"]);
    }

    #[test]
    fn dollar_that_is_not_a_quote() {
        // `$1` is a parameter.
        assert_eq!(
            statements("SELECT $1;SELECT $2$;"),
            ["SELECT $1;", "SELECT $2$;"]
        );
        // `$` inside identifiers.
        assert_eq!(
            statements("SELECT foo$bar$ ;SELECT x$$;"),
            ["SELECT foo$bar$ ;", "SELECT x$$;"]
        );
        // `$` followed by a non-tag character.
        assert_eq!(
            statements("SELECT $ ; SELECT $a b$;"),
            ["SELECT $ ;", "SELECT $a b$;"]
        );
    }

    #[test]
    fn comments() {
        assert_eq!(
            statements("SELECT 1 -- no; end\n, 2;\nSELECT /* a; /* b; */ c; */ 3;"),
            [
                "SELECT 1 -- no; end\n, 2;",
                "SELECT /* a; /* b; */ c; */ 3;"
            ]
        );
        // `/*/` does not close the comment it opens.
        assert_eq!(statements("SELECT /*/ ; */ 1;"), ["SELECT /*/ ; */ 1;"]);
        // Leading comments are trimmed, including ones containing `;` or quotes.
        assert_eq!(
            statements("-- a; 'b\n/* c; /* d */ 'e */ -- f\nSELECT 1;"),
            ["SELECT 1;"]
        );
    }

    #[test]
    fn no_empty_statements() {
        assert_eq!(ok_items(""), []);
        assert_eq!(ok_items("\n\n  \r\n--\n-- Name: x\n--\n\n"), []);
        assert_eq!(ok_items(";;\n ; -- x\n;"), []);
        assert_eq!(
            statements("SELECT 1;\n\n-- trailing\n/* c */\n"),
            ["SELECT 1;"]
        );
    }

    #[test]
    fn final_statement_without_semicolon() {
        assert_eq!(
            statements("SELECT 1;\nSELECT 2 \n\n"),
            ["SELECT 1;", "SELECT 2"]
        );
        assert_eq!(statements("SELECT 'a' -- c"), ["SELECT 'a' -- c"]);
    }

    #[test]
    fn unterminated_constructs_are_truncated() {
        assert_eq!(
            truncated("SELECT 1;\nSELECT 'abc;\n"),
            ("a quoted string", 2)
        );
        assert_eq!(truncated("SELECT E'abc\\';"), ("a quoted string", 1));
        assert_eq!(truncated("\n\nSELECT \"a;"), ("a quoted identifier", 3));
        assert_eq!(truncated("DO $x$ ;\n$y$;\n"), ("a dollar-quoted string", 1));
        assert_eq!(
            truncated("SELECT 1;\n/* a /* b */\n"),
            ("a block comment", 2)
        );
        assert_eq!(truncated("SELECT 1 /* x;"), ("a block comment", 1));
        let err = items(b"SELECT 'x").expect_err("unterminated");
        assert_eq!(
            err.to_string(),
            "the dump ends inside a quoted string that starts at line 1"
        );
    }

    #[test]
    fn meta_commands() {
        assert_eq!(
            ok_items(
                "\\restrict AbC123\n\\connect -reuse-previous=on \"dbname='x'\"\r\nSELECT 1; \\unrestrict AbC123"
            ),
            [
                Item::MetaCommand("restrict AbC123".into()),
                Item::MetaCommand("connect -reuse-previous=on \"dbname='x'\"".into()),
                stmt("SELECT 1;"),
                Item::MetaCommand("unrestrict AbC123".into()),
            ]
        );
        // After comments, still at statement start.
        assert_eq!(
            ok_items("-- x\n  /* y */ \\set ON_ERROR_STOP on\n"),
            [Item::MetaCommand("set ON_ERROR_STOP on".into())]
        );
        // A backslash inside a statement is just text.
        assert_eq!(statements("SELECT 1\n\\g\n;"), ["SELECT 1\n\\g\n;"]);
    }

    #[test]
    fn copy_blocks() {
        let input =
            "COPY public.t (a, b) FROM stdin;\n1\tx;y\n2\t\\\\.\n\\N\t'$$ -- /*\n\\.\nSELECT 1;\n";
        assert_eq!(
            ok_items(input),
            [
                Item::CopyStart("COPY public.t (a, b) FROM stdin;".into()),
                Item::CopyData(b"1\tx;y\n2\t\\\\.\n\\N\t'$$ -- /*\n".to_vec()),
                Item::CopyEnd,
                stmt("SELECT 1;"),
            ]
        );
    }

    #[test]
    fn empty_copy_and_case_and_whitespace() {
        assert_eq!(
            ok_items("copy t from STDIN ;\n\\.\nCOPY t\n  FROM\tstdin;\r\na\r\n\\.\r\n"),
            [
                Item::CopyStart("copy t from STDIN ;".into()),
                Item::CopyEnd,
                Item::CopyStart("COPY t\n  FROM\tstdin;".into()),
                Item::CopyData(b"a\r\n".to_vec()),
                Item::CopyEnd,
            ]
        );
    }

    #[test]
    fn other_copies_are_statements() {
        assert_eq!(
            statements("COPY t TO stdout;\nCOPY t FROM '/tmp/stdin';\nCOPYx FROM stdin;\nCOPY t FROM \"stdin\";\nCOPY t FROMstdin;"),
            [
                "COPY t TO stdout;",
                "COPY t FROM '/tmp/stdin';",
                "COPYx FROM stdin;",
                "COPY t FROM \"stdin\";",
                "COPY t FROMstdin;"
            ]
        );
    }

    #[test]
    fn copy_data_is_bytes() {
        let mut input = b"COPY t FROM stdin;\n".to_vec();
        input.extend_from_slice(b"\xff\xfe\x00\t;\n\\.\n");
        assert_eq!(
            items(&input).expect("binary data is fine"),
            [
                Item::CopyStart("COPY t FROM stdin;".into()),
                Item::CopyData(b"\xff\xfe\x00\t;\n".to_vec()),
                Item::CopyEnd,
            ]
        );
    }

    #[test]
    fn copy_truncated() {
        assert_eq!(
            truncated("SELECT 1;\nCOPY t FROM stdin;\na\nb\n"),
            ("COPY data", 3)
        );
        assert_eq!(truncated("COPY t FROM stdin;\na\n\\.x\n"), ("COPY data", 2));
        // Last line without newline is incomplete too.
        assert_eq!(truncated("COPY t FROM stdin;\na"), ("COPY data", 2));
        assert_eq!(truncated("COPY t FROM stdin"), ("COPY data", 1));
        // Terminator at EOF without newline is fine.
        assert_eq!(
            ok_items("COPY t FROM stdin;\na\n\\."),
            [
                Item::CopyStart("COPY t FROM stdin;".into()),
                Item::CopyData(b"a\n".to_vec()),
                Item::CopyEnd,
            ]
        );
    }

    #[test]
    fn copy_rest_of_line_runs_after_copy() {
        assert_eq!(
            ok_items("COPY t FROM stdin; SELECT 2;\nx\n\\.\nSELECT 3;"),
            [
                Item::CopyStart("COPY t FROM stdin;".into()),
                Item::CopyData(b"x\n".to_vec()),
                Item::CopyEnd,
                stmt("SELECT 2;"),
                stmt("SELECT 3;"),
            ]
        );
    }

    #[test]
    fn copy_chunks_are_bounded() {
        let line = format!("{}\n", "x".repeat(1000));
        let long = format!("{}\n", "y".repeat(COPY_CHUNK * 2));
        let mut input = String::from("COPY t FROM stdin;\n");
        for _ in 0..1000 {
            input.push_str(&line);
        }
        input.push_str(&long);
        input.push_str(&line);
        input.push_str("\\.\n");
        let items = ok_items(&input);
        let mut data = Vec::new();
        for item in &items[1..items.len() - 1] {
            let Item::CopyData(chunk) = item else {
                panic!("expected data, got {item:?}");
            };
            assert!(chunk.ends_with(b"\n"));
            assert!(chunk.len() <= COPY_CHUNK + WINDOW + long.len());
            assert!(chunk.len() <= COPY_CHUNK + WINDOW + line.len() || chunk.contains(&b'y'));
            data.extend_from_slice(chunk);
        }
        assert!(items.len() > 4);
        assert_eq!(items.last(), Some(&Item::CopyEnd));
        assert_eq!(data.len(), input.len() - "COPY t FROM stdin;\n\\.\n".len());
    }

    #[test]
    fn crlf_sql() {
        assert_eq!(
            ok_items("SET a = 1;\r\n--\r\n-- x\r\n--\r\n\r\nCREATE TABLE t (\r\n  a int -- c;\r\n);\r\n\\unrestrict k\r\n"),
            [
                stmt("SET a = 1;"),
                stmt("CREATE TABLE t (\r\n  a int -- c;\r\n);"),
                Item::MetaCommand("unrestrict k".into()),
            ]
        );
    }

    #[test]
    fn not_utf8() {
        match items(b"SELECT 1;\nSELECT '\xff';\n") {
            Err(DumpError::NotUtf8 { line }) => assert_eq!(line, 2),
            other => panic!("expected NotUtf8, got {other:?}"),
        }
        assert_eq!(
            statements("SELECT 'héllo; 日本';"),
            ["SELECT 'héllo; 日本';"]
        );
    }

    #[test]
    fn line_numbers_and_fused_after_error() {
        let mut reader = DumpReader::new(&b"SELECT 1; SELECT\n2;\nCOPY t FROM stdin;\na\n"[..]);
        assert_eq!(reader.line(), 1);
        assert_eq!(reader.next_item().expect("ok"), Some(stmt("SELECT 1;")));
        assert_eq!(reader.line(), 1);
        assert_eq!(reader.next_item().expect("ok"), Some(stmt("SELECT\n2;")));
        assert_eq!(reader.line(), 2);
        assert!(matches!(reader.next_item(), Ok(Some(Item::CopyStart(_)))));
        assert_eq!(reader.line(), 4);
        assert!(reader.next_item().is_err());
        assert!(matches!(reader.next_item(), Ok(None)));
        assert!(reader.next().is_none());
    }

    #[test]
    fn word_at_a_time_helpers() {
        let hay: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
        for needle in 0..=255u8 {
            for start in 0..20 {
                let slice = &hay[start..];
                assert_eq!(
                    find_byte(slice, needle),
                    slice.iter().position(|&b| b == needle)
                );
                assert_eq!(
                    count_byte(slice, needle),
                    slice.iter().filter(|&&b| b == needle).count() as u64
                );
            }
        }
        assert_eq!(find_byte(b"", b'x'), None);
        assert_eq!(find_byte(b"aaaaaaaaaaax", b'x'), Some(11));
    }

    #[test]
    fn item_lines() {
        let input = "\\restrict k\n--\n-- c\n--\n\nSET a = 1; SET b = 2;\n\nCREATE TABLE t (\n a int\n);\nCOPY t FROM stdin;\n1\n2\n\\.\nCOPY t FROM stdin;\n\\.\nSELECT 1";
        for window in [1, 5, WINDOW] {
            let mut reader = DumpReader::with_window(input.as_bytes(), window);
            let mut lines = Vec::new();
            while let Some(item) = reader.next_item().expect("ok") {
                lines.push((reader.item_line(), item));
            }
            let got: Vec<u64> = lines.iter().map(|(line, _)| *line).collect();
            assert_eq!(got, [1, 6, 6, 8, 11, 12, 14, 15, 16, 17], "{lines:?}");
        }
    }

    #[test]
    fn tiny_buffer_reader() {
        let input = "SELECT 'a;b'; DO $$;$$;\nCOPY t FROM stdin;\nx\ty\n\\.\n";
        let reader = DumpReader::new(BufReader::with_capacity(1, input.as_bytes()));
        let got: Vec<Item> = reader.collect::<Result<_, _>>().expect("ok");
        assert_eq!(got, ok_items(input));
        assert_eq!(got.len(), 5);
    }

    const PG_DUMP_15: &str = "\\restrict AbC123xyz

--
-- PostgreSQL database dump
--

-- Dumped from database version 15.14
-- Dumped by pg_dump version 15.14

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: pg_trgm; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;


--
-- Name: slugify(text); Type: FUNCTION; Schema: public; Owner: app
--

CREATE FUNCTION public.slugify(value text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    AS $_$
  SELECT regexp_replace(lower($1), '[^a-z0-9]+', '-', 'g'); -- it's; fine
$_$;


ALTER FUNCTION public.slugify(value text) OWNER TO app;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: blog_post; Type: TABLE; Schema: public; Owner: app
--

CREATE TABLE public.blog_post (
    id bigint NOT NULL,
    title character varying(200) NOT NULL,
    body text
);


ALTER TABLE public.blog_post OWNER TO app;

--
-- Data for Name: blog_post; Type: TABLE DATA; Schema: public; Owner: app
--

COPY public.blog_post (id, title, body) FROM stdin;
1\tHello; world\tIt's a \"test\" -- not a comment $$ /* not */
2\t\\\\.\tends with an escaped backslash and a dot
3\t\\N\ttab\\there; 'unbalanced
\\.


--
-- Name: blog_post_id_seq; Type: SEQUENCE SET; Schema: public; Owner: app
--

SELECT pg_catalog.setval('public.blog_post_id_seq', 3, true);


--
-- Name: blog_post_title_trgm; Type: INDEX; Schema: public; Owner: app
--

CREATE INDEX blog_post_title_trgm ON public.blog_post USING gin (title public.gin_trgm_ops);


--
-- PostgreSQL database dump complete
--

\\unrestrict AbC123xyz

";

    #[test]
    fn realistic_pg_dump_15() {
        let expected = vec![
            Item::MetaCommand("restrict AbC123xyz".into()),
            stmt("SET statement_timeout = 0;"),
            stmt("SET lock_timeout = 0;"),
            stmt("SET idle_in_transaction_session_timeout = 0;"),
            stmt("SET client_encoding = 'UTF8';"),
            stmt("SET standard_conforming_strings = on;"),
            stmt("SELECT pg_catalog.set_config('search_path', '', false);"),
            stmt("SET check_function_bodies = false;"),
            stmt("SET xmloption = content;"),
            stmt("SET client_min_messages = warning;"),
            stmt("SET row_security = off;"),
            stmt("CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;"),
            stmt("CREATE FUNCTION public.slugify(value text) RETURNS text\n    LANGUAGE sql IMMUTABLE STRICT\n    AS $_$\n  SELECT regexp_replace(lower($1), '[^a-z0-9]+', '-', 'g'); -- it's; fine\n$_$;"),
            stmt("ALTER FUNCTION public.slugify(value text) OWNER TO app;"),
            stmt("SET default_tablespace = '';"),
            stmt("SET default_table_access_method = heap;"),
            stmt("CREATE TABLE public.blog_post (\n    id bigint NOT NULL,\n    title character varying(200) NOT NULL,\n    body text\n);"),
            stmt("ALTER TABLE public.blog_post OWNER TO app;"),
            Item::CopyStart("COPY public.blog_post (id, title, body) FROM stdin;".into()),
            Item::CopyData(
                b"1\tHello; world\tIt's a \"test\" -- not a comment $$ /* not */\n2\t\\\\.\tends with an escaped backslash and a dot\n3\t\\N\ttab\\there; 'unbalanced\n".to_vec(),
            ),
            Item::CopyEnd,
            stmt("SELECT pg_catalog.setval('public.blog_post_id_seq', 3, true);"),
            stmt("CREATE INDEX blog_post_title_trgm ON public.blog_post USING gin (title public.gin_trgm_ops);"),
            Item::MetaCommand("unrestrict AbC123xyz".into()),
        ];
        assert_eq!(ok_items(PG_DUMP_15), expected);
        let crlf = PG_DUMP_15.replace('\n', "\r\n");
        let got = ok_items(&crlf);
        assert_eq!(got.len(), expected.len());
        assert_eq!(got[19], Item::CopyData(b"1\tHello; world\tIt's a \"test\" -- not a comment $$ /* not */\r\n2\t\\\\.\tends with an escaped backslash and a dot\r\n3\t\\N\ttab\\there; 'unbalanced\r\n".to_vec()));
    }

    // ---- property tests ----

    /// Strips leading whitespace and comments (as the reader does before a statement).
    fn normalise(s: &str) -> &str {
        let mut s = s;
        loop {
            let t = s.trim_start();
            if let Some(rest) = t.strip_prefix("--") {
                s = rest.find('\n').map_or("", |n| &rest[n + 1..]);
            } else if t.starts_with("/*") {
                let mut depth = 0usize;
                let mut i = 0;
                let b = t.as_bytes();
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                s = &t[i..];
            } else {
                return t;
            }
        }
    }

    #[derive(Debug, Clone, PartialEq)]
    enum Out {
        Stmt(String),
        CopyStart(String),
        Data(Vec<u8>),
        CopyEnd,
        Meta(String),
    }

    #[derive(Debug, Clone)]
    enum Gen {
        Stmt(String),
        Copy {
            header: String,
            eol: &'static str,
            lines: Vec<Vec<u8>>,
            terminator: &'static str,
        },
        Meta(&'static str, &'static str),
    }

    fn tokens(list: &[&'static str], max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(select(list.to_vec()), 0..max).prop_map(|t| t.concat())
    }

    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z_][a-z0-9_$é]{0,6}",
            (1u32..100).prop_map(|n| format!("${n}")),
            tokens(
                &["a", ";", " ", "''", "\\", "\"", "$$", "--", "/*", "\n", "é"],
                6
            )
            .prop_map(|c| format!("'{c}'")),
            (
                select(vec!["E", "e"]),
                tokens(
                    &["a", ";", "\\'", "\\\\", "''", "\"", "$$", "--", "\r\n"],
                    6
                )
            )
                .prop_map(|(p, c)| format!("{p}'{c}'")),
            tokens(&["a", ";", "\\", "''"], 6).prop_map(|c| format!("U&'{c}'")),
            tokens(&["a", ";", "\"\"", "'", " ", "$$", "--", "/*"], 6)
                .prop_map(|c| format!("\"{c}\"")),
            (
                select(vec!["", "fn", "_", "a1", "é"]),
                proptest::collection::vec(
                    select(vec![
                        ";", "'", "\"", "--", "/*", "x", "\n", "\r\n", "$1", "$x$", "E'\\'"
                    ]),
                    0..6
                )
            )
                .prop_map(|(tag, body)| format!("${tag}$ {} ${tag}$", body.join(" "))),
            select(vec![
                "/* ; /* nested; */ ' */",
                "-- comment; here\n",
                "--\r\n"
            ])
            .prop_map(String::from),
        ]
    }

    fn statement() -> impl Strategy<Value = String> {
        (
            select(vec!["SELECT", "CREATE TABLE", "ALTER", "insert into", "DO"]),
            proptest::collection::vec(
                (
                    select(vec![" ", "\n", "\r\n", "\t", " /* c; */ "]),
                    fragment(),
                ),
                0..6,
            ),
            select(vec!["", " ", "\n"]),
        )
            .prop_map(|(keyword, parts, before_semicolon)| {
                let mut s = String::from(keyword);
                for (sep, fragment) in parts {
                    s.push_str(sep);
                    s.push_str(&fragment);
                }
                s.push_str(before_semicolon);
                s.push(';');
                s
            })
    }

    fn data_line() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                any::<u8>().prop_map(|b| vec![b]),
                select(vec![
                    "\\.", "\\N", "\t", ";", "'", "$$", "--", "\\\\.", "\r", "é", "/*"
                ])
                .prop_map(|s| s.as_bytes().to_vec()),
            ],
            0..10,
        )
        .prop_map(|parts| {
            let mut line = parts.concat();
            line.retain(|&b| b != b'\n');
            line
        })
        .prop_filter("never the terminator", |l| l != b"\\." && l != b"\\.\r")
    }

    fn gen_item() -> impl Strategy<Value = Gen> {
        prop_oneof![
            6 => statement().prop_map(Gen::Stmt),
            2 => (
                select(vec![
                    "COPY public.t (a, b) FROM stdin;",
                    "copy t from STDIN ;",
                    "COPY \"we;ird\" (x) FROM\tstdin;",
                ]),
                select(vec!["\n", "\r\n"]),
                proptest::collection::vec(data_line(), 0..6),
                select(vec!["\\.\n", "\\.\r\n"]),
            )
                .prop_map(|(header, eol, lines, terminator)| Gen::Copy {
                    header: header.to_owned(),
                    eol,
                    lines,
                    terminator,
                }),
            1 => (
                select(vec!["restrict AbC", "connect -reuse-previous=on \"dbname='x;y'\"", "unrestrict AbC"]),
                select(vec!["\n", "\r\n"]),
            )
                .prop_map(|(text, eol)| Gen::Meta(text, eol)),
        ]
    }

    fn separator() -> impl Strategy<Value = &'static str> {
        select(vec![
            "",
            " ",
            "\n",
            "\r\n",
            "\n\n",
            "\n--\n-- Name: t; Type: TABLE; Schema: public\n--\n\n",
            "/* a; /* b; */ 'c */\n",
            "\t",
            ";",
            " ;\r\n",
        ])
    }

    fn build(items: &[(&str, Gen)]) -> (Vec<u8>, Vec<Out>) {
        let mut input = Vec::new();
        let mut expected = Vec::new();
        for (sep, item) in items {
            input.extend_from_slice(sep.as_bytes());
            match item {
                Gen::Stmt(s) => {
                    input.extend_from_slice(s.as_bytes());
                    expected.push(Out::Stmt(normalise(s).to_owned()));
                }
                Gen::Copy {
                    header,
                    eol,
                    lines,
                    terminator,
                } => {
                    input.extend_from_slice(header.as_bytes());
                    input.extend_from_slice(eol.as_bytes());
                    expected.push(Out::CopyStart(header.clone()));
                    let mut data = Vec::new();
                    for line in lines {
                        data.extend_from_slice(line);
                        data.push(b'\n');
                    }
                    input.extend_from_slice(&data);
                    input.extend_from_slice(terminator.as_bytes());
                    if !data.is_empty() {
                        expected.push(Out::Data(data));
                    }
                    expected.push(Out::CopyEnd);
                }
                Gen::Meta(text, eol) => {
                    input.push(b'\n');
                    input.push(b'\\');
                    input.extend_from_slice(text.as_bytes());
                    input.extend_from_slice(eol.as_bytes());
                    expected.push(Out::Meta((*text).to_owned()));
                }
            }
        }
        (input, expected)
    }

    fn collect_out<R: BufRead>(reader: DumpReader<R>) -> Vec<Out> {
        let mut out: Vec<Out> = Vec::new();
        for item in reader {
            match item.expect("generated dump should split") {
                Item::Statement(s) => out.push(Out::Stmt(normalise(&s).to_owned())),
                Item::CopyStart(s) => out.push(Out::CopyStart(s)),
                Item::CopyData(d) => {
                    assert!(!d.is_empty() && d.ends_with(b"\n"));
                    if let Some(Out::Data(prev)) = out.last_mut() {
                        prev.extend_from_slice(&d);
                    } else {
                        out.push(Out::Data(d));
                    }
                }
                Item::CopyEnd => out.push(Out::CopyEnd),
                Item::MetaCommand(m) => out.push(Out::Meta(m)),
            }
        }
        out
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            input in proptest::collection::vec(
                prop_oneof![
                    any::<u8>(),
                    select(b";'\"$-/*\\\n\rEe.\t C".to_vec()),
                ],
                0..600,
            ),
            capacity in 1usize..64,
            window in 1usize..40,
        ) {
            let reader = BufReader::with_capacity(capacity, &input[..]);
            let mut reader = DumpReader::with_window(reader, window);
            let mut steps = 0;
            while let Ok(Some(_)) = reader.next_item() {
                steps += 1;
                prop_assert!(steps <= 2 * input.len() + 2, "reader does not make progress");
                let _ = reader.line();
            }
        }

        #[test]
        fn round_trip(
            items in proptest::collection::vec((separator(), gen_item()), 0..12),
            trailer in separator(),
            capacity in 1usize..256,
            window in 1usize..40,
        ) {
            let (mut input, expected) = build(&items);
            input.extend_from_slice(trailer.as_bytes());
            let got = collect_out(DumpReader::new(BufReader::with_capacity(capacity, &input[..])));
            prop_assert_eq!(&got, &expected);
            let got = collect_out(DumpReader::with_window(&input[..], window));
            prop_assert_eq!(&got, &expected);
        }
    }
}

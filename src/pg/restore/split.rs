//! The reading side of a restore: decompress the dump, split it
//! (`dump_reader`), and decide what each connection ("lane") runs, in
//! batches.
//!
//! Most of a schema-only restore is the server executing DDL, one statement
//! after another. Three stretches of pg_dump's output are made of statements
//! that each touch a single table and depend on nothing but what came
//! before them: the data (COPY blocks, `setval`), then, opening the
//! post-data section, the PRIMARY KEY / UNIQUE / EXCLUDE constraints and the
//! plain indexes. Those are spread over the lanes, and a lane's batch stays
//! one transaction, so two lanes must never wait for each other's locks:
//! constraints take an ACCESS EXCLUSIVE lock, so every constraint of a table
//! goes to the lane that got the table's first one (the least loaded lane
//! then). Indexes do the same, although their SHARE locks would allow
//! otherwise: each index invalidates its table's cache entry in every
//! other session, and spreading one table's indexes over both lanes was
//! slower (12 restores of the 1,000-migration dump: 213 ms on average
//! against 182 ms). Data (ROW EXCLUSIVE locks) goes block by block to
//! the least loaded lane. Everything else (CREATE TABLE, foreign keys,
//! which lock two tables, triggers, comments, anything not recognised)
//! runs on lane 0 in dump order, and every change between such stretches
//! waits for all lanes to finish first (`Msg::Sync`). Session settings
//! (`SET …`, `set_config`) go to every lane before its next statement, so
//! each lane runs with what the dump set up.

use super::{allow, copy_rows, parse, DumpFault, Failure, RestoreError};
use crate::pg::dump_reader::{DumpError, DumpReader, Item};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::rc::Rc;
use tokio::sync::mpsc;

/// A batch is sent when it reaches either bound. The statement bound keeps
/// each implicit transaction's lock count well under the default lock table
/// (64 x max_connections), which a 2,000-table schema would otherwise exceed.
const BATCH_BYTES: usize = 512 * 1024;
const BATCH_STATEMENTS: usize = 200;
/// COPY blocks up to this size are sent as one INSERT inside a batch (see
/// `copy_rows`): the 1,000-migration project's django_migrations is 70 KiB.
const INSERT_MAX_BYTES: usize = 128 * 1024;

/// What the async side does, in order.
#[derive(Debug)]
pub enum Msg {
    /// Statements to run on `lane` in one round trip (one implicit transaction).
    Sql {
        lane: usize,
        text: String,
        line: u64,
        /// Sent as a message of its own just before `text` (`Splitter::pin`).
        pin: String,
    },
    CopyStart {
        lane: usize,
        stmt: String,
        line: u64,
        pin: String,
    },
    CopyData {
        lane: usize,
        data: Bytes,
    },
    CopyEnd {
        lane: usize,
    },
    /// Wait until every lane has finished all it was sent.
    Sync,
}

/// Read `path` and send what `jobs` lanes should run through `tx`.
/// Returns early (Ok) when the receiver is gone: the async side failed.
///
/// The dump is read twice from one open file: first checked whole against
/// the allow-list (`allow`), sending nothing, so that a refused dump runs
/// not even its harmless first statements; then split and sent. Holding
/// the file open keeps a dump swapped in between the two passes out.
///
/// Each pass decompresses: the dump's sha256 was checked against the
/// manifest before the restore, and the zstd frame checksums are checked as
/// it streams, so a dump that fails to decode is `Failure::Damaged`.
pub fn read(
    path: &Path,
    expected: &Expected,
    jobs: usize,
    tx: &mpsc::Sender<Result<Msg, Failure>>,
) -> Result<(), Failure> {
    // A dump that is missing (or a link, refused by O_NOFOLLOW) leaves
    // the snapshot unusable, like a damaged one: discarded and rebuilt.
    let mut file = crate::files::open_no_follow(path).map_err(|source| {
        Failure::Damaged(
            DumpFault::Open {
                path: path.to_path_buf(),
                source,
            }
            .into(),
        )
    })?;
    let bad = |source: DumpError| {
        Failure::Damaged(
            DumpFault::Unreadable {
                path: path.to_path_buf(),
                source,
            }
            .into(),
        )
    };
    // The check pass also hashes the very bytes it reads, so that what is
    // checked, what the manifest vouches for and what runs are one file:
    // nothing can be swapped in between (the second pass rereads this open
    // file, not the path).
    let seen = Rc::new(RefCell::new((Sha256::new(), 0u64)));
    let tee = || Tee {
        file: &file,
        seen: Rc::clone(&seen),
    };
    let policy = allow::Policy {
        authenticated: expected.authenticated,
        extensions: &expected.extensions,
    };
    let plan = check(path, &mut dump_reader(path, tee())?, &policy, || {
        tx.is_closed()
    })?;
    let reread = |e: std::io::Error| {
        Failure::Other(
            RestoreError::Reread {
                path: path.to_path_buf(),
                source: e,
            }
            .into(),
        )
    };
    // Whatever the decoder left unread (trailing bytes) counts too.
    std::io::copy(&mut tee(), &mut std::io::sink()).map_err(reread)?;
    let (hash, size) = seen.take();
    let sum = crate::hash::hex(&hash.finalize());
    if (sum.as_str(), size) != (expected.sha256.as_str(), expected.size) {
        return Err(Failure::Damaged(
            DumpFault::NotAsRecorded {
                path: path.to_path_buf(),
                size,
                expected: expected.size,
            }
            .into(),
        ));
    }
    file.seek(SeekFrom::Start(0)).map_err(reread)?;
    let mut reader = dump_reader(path, &file)?;
    let mut split = Splitter::new(jobs, |m| tx.blocking_send(Ok(m)).is_ok());
    split.server_major = expected.server_major;
    let mut joiner = Joiner::new(plan);
    loop {
        let item = reader.next_item().map_err(bad)?;
        let line = reader.item_line();
        let open = match item {
            None => {
                split.finish();
                return Ok(());
            }
            Some(Item::Statement(s)) => match joiner.statement(s, line) {
                Some((text, line)) => split.statement(text, line),
                None => true,
            },
            Some(Item::CopyStart(stmt)) => {
                joiner.copy_start();
                split.copy_start(stmt, line)
            }
            Some(Item::CopyData(d)) => split.copy_data(d),
            Some(Item::CopyEnd) => split.copy_end(),
            // `check` let only \restrict / \unrestrict through: a
            // psql-only guard with nothing for the server to do.
            Some(Item::MetaCommand(_)) => true,
        };
        if !open {
            return Ok(());
        }
    }
}

/// The sha256 and size a dump must have: its manifest's word for it.
pub struct Expected {
    pub sha256: String,
    pub size: u64,
    /// Major version of the server the dump goes into: session settings a
    /// newer pg_dump writes that it does not know are left out (see
    /// `SETTINGS_SINCE`).
    pub server_major: u32,
    /// Whether the snapshot is authenticated (signed by a trusted key, or
    /// built here): an unauthenticated one is held to the stricter rules
    /// (no `SECURITY DEFINER` functions, no ancestor use).
    pub authenticated: bool,
    /// The extensions the manifest records: created by migsnap before the
    /// restore; a dump naming any other is refused, and the dump's own
    /// `CREATE EXTENSION` / `COMMENT ON EXTENSION` statements never run.
    pub extensions: Vec<crate::pg::extension::Extension>,
}

/// Session settings a pg_dump writes whatever the server it dumps, with the
/// first major that knows each: pg_dump 17 and later write `SET
/// transaction_timeout = 0`, which PostgreSQL 16 and older reject, and a
/// pg_dump at least as new as the server is what PostgreSQL supports (psql
/// would report the error and go on; migsnap stops at any error).
const SETTINGS_SINCE: &[(&str, u32)] = &[("transaction_timeout", 17)];

/// Reads the dump file and hashes what it hands out.
struct Tee<'f> {
    file: &'f std::fs::File,
    seen: Rc<RefCell<(Sha256, u64)>>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        let mut seen = self.seen.borrow_mut();
        seen.0.update(&buf[..n]);
        seen.1 += n as u64;
        Ok(n)
    }
}

/// A splitter over the decompressed dump read from `file` (from where its
/// offset is; the caller rewinds it between passes).
fn dump_reader<R: Read>(
    path: &Path,
    file: R,
) -> Result<DumpReader<BufReader<zstd::Decoder<'static, BufReader<R>>>>, Failure> {
    let decoder = zstd::Decoder::new(file).map_err(|e| {
        Failure::Other(
            RestoreError::Decompress {
                path: path.to_path_buf(),
                source: e,
            }
            .into(),
        )
    })?;
    Ok(DumpReader::new(BufReader::with_capacity(1 << 20, decoder)))
}

/// What the send pass does differently from sending each statement the
/// reader hands out: keyed by the statement's ordinal (statements and COPY
/// headers, counted from 0), in order. Both passes read the same open file,
/// so the reader hands out the same items twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The grammar found this piece unfinished: join it with the next.
    Join,
    /// Allowed but never sent (`allow::Verdict::Skip`), with the pieces
    /// joined before it.
    Skip,
}

/// The send pass's side of the plan: the reader's pieces joined as the
/// check joined them, and the skipped statements left out.
struct Joiner {
    steps: std::iter::Peekable<std::vec::IntoIter<(u64, Step)>>,
    ordinal: u64,
    pending: String,
    pending_line: u64,
}

impl Joiner {
    fn new(plan: Vec<(u64, Step)>) -> Self {
        Joiner {
            steps: plan.into_iter().peekable(),
            ordinal: 0,
            pending: String::new(),
            pending_line: 0,
        }
    }

    fn step(&mut self) -> Option<Step> {
        let n = self.ordinal;
        self.ordinal += 1;
        self.steps.next_if(|(at, _)| *at == n).map(|(_, step)| step)
    }

    /// The reader's next statement piece: the statement to send now, with
    /// the line it starts on, if this piece completes one that runs.
    fn statement(&mut self, piece: String, line: u64) -> Option<(String, u64)> {
        let step = self.step();
        if self.pending.is_empty() {
            self.pending_line = line;
        } else {
            self.pending.push('\n');
        }
        match step {
            Some(Step::Join) => {
                self.pending.push_str(&piece);
                None
            }
            Some(Step::Skip) => {
                self.pending.clear();
                None
            }
            None if self.pending.is_empty() => Some((piece, line)),
            None => {
                self.pending.push_str(&piece);
                Some((std::mem::take(&mut self.pending), self.pending_line))
            }
        }
    }

    fn copy_start(&mut self) {
        self.step();
    }
}

/// The statements a restore runs for the plain SQL `sql`, in order (COPY
/// headers included, their data left out), or why it would refuse it. For
/// the tests that hold migsnap's statement boundaries against a real
/// server's.
pub fn statements(sql: &str) -> Result<Vec<String>, String> {
    let policy = allow::Policy {
        authenticated: true,
        extensions: &[],
    };
    let path = Path::new("(text)");
    let plan = check(path, &mut DumpReader::new(sql.as_bytes()), &policy, || {
        false
    })
    .map_err(|f| match f {
        Failure::Refused(e) | Failure::Damaged(e) | Failure::Other(e) => e.to_string(),
    })?;
    let mut reader = DumpReader::new(sql.as_bytes());
    let mut joiner = Joiner::new(plan);
    let mut out = Vec::new();
    while let Some(item) = reader.next_item().map_err(|e| e.to_string())? {
        match item {
            Item::Statement(s) => out.extend(joiner.statement(s, 0).map(|(text, _)| text)),
            Item::CopyStart(s) => {
                joiner.copy_start();
                out.push(s);
            }
            Item::CopyData(_) | Item::CopyEnd | Item::MetaCommand(_) => {}
        }
    }
    Ok(out)
}

/// The first pass: every statement, COPY header and meta-command of the
/// dump through PostgreSQL's grammar (`parse`) and against the allow-list;
/// COPY data is skipped unread. `Refused` names the first offender and its
/// line. `gone`: the restore was abandoned, stop early.
fn check<R: std::io::BufRead>(
    path: &Path,
    reader: &mut DumpReader<R>,
    policy: &allow::Policy,
    gone: impl Fn() -> bool,
) -> Result<Vec<(u64, Step)>, Failure> {
    let mut plan = Vec::new();
    let mut skipped = std::collections::HashSet::new();
    let mut ordinal = 0u64;
    // The pieces of a statement the grammar found unfinished so far, and
    // how much text was parsed for it.
    let mut pending = String::new();
    let mut pending_line = 0;
    let mut parsed = 0usize;
    let refuse = |line: u64, text: &str, why: &str| {
        Failure::Refused(
            DumpFault::Planted {
                path: path.to_path_buf(),
                line,
                excerpt: excerpt(text),
                why: why.to_string(),
            }
            .into(),
        )
    };
    loop {
        let item = reader.next_item().map_err(|source| {
            Failure::Damaged(
                DumpFault::Unreadable {
                    path: path.to_path_buf(),
                    source,
                }
                .into(),
            )
        })?;
        let line = reader.item_line();
        if !pending.is_empty() && !matches!(item, Some(Item::Statement(_))) {
            return Err(refuse(
                pending_line,
                &pending,
                "a statement PostgreSQL reads as unfinished",
            ));
        }
        match &item {
            None => return Ok(plan),
            Some(Item::Statement(s)) => {
                let n = ordinal;
                ordinal += 1;
                let text = if pending.is_empty() {
                    pending_line = line;
                    parsed = 0;
                    s.clone()
                } else {
                    let mut joined = std::mem::take(&mut pending);
                    joined.push('\n');
                    joined.push_str(s);
                    joined
                };
                parsed += text.len();
                if text.len() > crate::pg::dump_reader::MAX_STATEMENT {
                    // Pieces are capped by the reader; joined ones here.
                    return Err(Failure::Damaged(
                        DumpFault::TooLong {
                            path: path.to_path_buf(),
                            line: pending_line,
                            max: crate::pg::dump_reader::MAX_STATEMENT,
                        }
                        .into(),
                    ));
                }
                if parsed > parse::PARSE_BUDGET {
                    return Err(refuse(
                        pending_line,
                        &text,
                        "a statement split at more semicolons than PostgreSQL's parser is given time for",
                    ));
                }
                let node = match parse::piece(&text) {
                    Ok(parse::Piece::Complete(node)) => node,
                    Ok(parse::Piece::Unfinished) => {
                        plan.push((n, Step::Join));
                        pending = text;
                        continue;
                    }
                    Err(e) => return Err(refuse(pending_line, &text, &e.to_string())),
                };
                match allow::statement(&node, policy) {
                    Ok(allow::Verdict::Run) => {}
                    // pg_dump writes each of these once (an extension, its
                    // comment, a schema): a repeat is not its output, and
                    // the plan stays as small as the manifest's record.
                    Ok(allow::Verdict::Skip) if !skipped.insert(allow::skip_key(&node)) => {
                        return Err(refuse(
                            pending_line,
                            &text,
                            "a repeated extension statement",
                        ))
                    }
                    Ok(allow::Verdict::Skip) => plan.push((n, Step::Skip)),
                    Err(why) => return Err(refuse(pending_line, &text, why)),
                }
            }
            Some(Item::CopyStart(s)) => {
                ordinal += 1;
                let verdict = match parse::piece(s) {
                    Ok(parse::Piece::Complete(node)) => allow::copy_from_stdin(&node),
                    Ok(parse::Piece::Unfinished) => Err("an unfinished COPY statement"),
                    Err(_) => Err("a COPY statement PostgreSQL cannot parse"),
                };
                if let Err(why) = verdict {
                    return Err(refuse(line, s, why));
                }
            }
            Some(Item::MetaCommand(m)) => {
                if let Err(why) = allow::meta_command(m) {
                    return Err(refuse(line, &format!("\\{m}"), why));
                }
            }
            Some(Item::CopyData(_) | Item::CopyEnd) => {}
        }
        if ordinal.is_multiple_of(4096) && gone() {
            return Ok(plan);
        }
    }
}

/// The first line of `text`, at most 80 characters, for a one-line message.
fn excerpt(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim_end();
    let mut out: String = line.chars().take(80).collect();
    if out.len() < text.trim_end().len() {
        out.push('…');
    }
    out
}

/// Which statements may run side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    /// On lane 0, in order.
    Serial,
    /// COPY blocks and sequence values, one table each.
    Data,
    /// Index-backed constraints, one table each, all of a table on one lane.
    Constraints,
    /// CREATE INDEX, one table each, all of a table on one lane.
    Indexes,
}

struct Lane {
    batch: String,
    count: usize,
    line: u64,
    /// `Splitter::settings_version` this lane has been sent.
    settings_version: u64,
    /// Bytes sent to this lane in the current group.
    load: usize,
    /// The batch ends with session settings: the next other statement
    /// starts a new message (see `push`).
    settings_tail: bool,
    /// `Splitter::pin` as the batch started.
    pin: String,
}

/// A COPY block being read: held back until it is known to be small enough
/// for an INSERT (or empty: then nothing is sent at all).
struct PendingCopy {
    lane: usize,
    stmt: String,
    line: u64,
    held: Vec<u8>,
    streaming: bool,
}

struct Splitter<F: FnMut(Msg) -> bool> {
    emit: F,
    /// False once `emit` reported the receiver gone.
    open: bool,
    group: Group,
    lanes: Vec<Lane>,
    /// Which lane owns each table in the current group.
    owner: HashMap<String, usize>,
    /// Session settings so far, by name, in first-seen order.
    settings: Vec<(String, String)>,
    settings_version: u64,
    /// `client_encoding` is UTF8 (or SQL_ASCII, or unset): only then are COPY
    /// blocks turned into INSERTs, whose text is handled as UTF-8 here.
    utf8_client: bool,
    /// The dump's `client_encoding`, as `allow` checked it: lower case,
    /// letters and digits (a name PostgreSQL takes as it is).
    encoding: String,
    copy: Option<PendingCopy>,
    /// The target server's major version (`Expected::server_major`).
    server_major: u32,
}

impl<F: FnMut(Msg) -> bool> Splitter<F> {
    fn new(jobs: usize, emit: F) -> Self {
        Splitter {
            emit,
            open: true,
            group: Group::Serial,
            lanes: (0..jobs.max(1))
                .map(|_| Lane {
                    batch: String::new(),
                    count: 0,
                    line: 0,
                    settings_version: 0,
                    load: 0,
                    settings_tail: false,
                    pin: String::new(),
                })
                .collect(),
            owner: HashMap::new(),
            settings: vec![],
            settings_version: 0,
            utf8_client: true,
            encoding: "utf8".to_string(),
            copy: None,
            server_major: u32::MAX,
        }
    }

    fn send(&mut self, m: Msg) {
        if self.open {
            self.open = (self.emit)(m);
        }
    }

    fn statement(&mut self, s: String, line: u64) -> bool {
        let (group, table) = classify(&s);
        let setting = setting_name(&s);
        let unknown_here = |name: &str| {
            SETTINGS_SINCE
                .iter()
                .any(|(n, since)| *n == name && self.server_major < *since)
        };
        if setting.as_deref().is_some_and(unknown_here) {
            return self.open;
        }
        if let Some(name) = &setting {
            if name == "client_encoding" {
                self.encoding = encoding_of(&s);
                self.utf8_client =
                    matches!(self.encoding.as_str(), "utf8" | "unicode" | "sqlascii");
            }
            match self.settings.iter_mut().find(|(n, _)| n == name) {
                Some(entry) => entry.1 = s.clone(),
                None => self.settings.push((name.clone(), s.clone())),
            }
            self.settings_version += 1;
            // Lane 0 runs every serial statement, settings included, in order.
            self.lanes[0].settings_version = self.settings_version;
        }
        let lane = self.lane_for(group, table);
        self.push(lane, &s, line, setting.is_some());
        self.open
    }

    fn copy_start(&mut self, stmt: String, line: u64) -> bool {
        let table = copy_table(&stmt).map(str::to_string);
        let group = if table.is_some() {
            Group::Data
        } else {
            Group::Serial
        };
        let lane = self.lane_for(group, table);
        self.copy = Some(PendingCopy {
            lane,
            stmt,
            line,
            held: vec![],
            streaming: false,
        });
        self.open
    }

    fn copy_data(&mut self, data: Vec<u8>) -> bool {
        let Some(mut c) = self.copy.take() else {
            return self.open;
        };
        if !c.streaming && c.held.len() + data.len() <= INSERT_MAX_BYTES {
            c.held.extend_from_slice(&data);
        } else {
            if !c.streaming {
                self.start_copy(&mut c);
            }
            self.copy_data_to(c.lane, data);
        }
        self.copy = Some(c);
        self.open
    }

    fn copy_end(&mut self) -> bool {
        let Some(mut c) = self.copy.take() else {
            return self.open;
        };
        if c.streaming {
            self.send(Msg::CopyEnd { lane: c.lane });
        } else if !c.held.is_empty() {
            // Skipping empty blocks is safe because triggers and rules are
            // created after the data.
            let insert = if self.utf8_client {
                copy_rows::to_insert(&c.stmt, &c.held)
            } else {
                None
            };
            match insert {
                Some(insert) => self.push(c.lane, &insert, c.line, false),
                None => {
                    self.start_copy(&mut c);
                    self.send(Msg::CopyEnd { lane: c.lane });
                }
            }
        }
        self.open
    }

    fn finish(&mut self) {
        for lane in 0..self.lanes.len() {
            self.flush(lane);
        }
    }

    /// Turn `c` into a streamed COPY: send what its lane has batched, the
    /// COPY statement, then the data held back so far.
    fn start_copy(&mut self, c: &mut PendingCopy) {
        self.catch_up_settings(c.lane, c.line);
        self.flush(c.lane);
        c.streaming = true;
        let pin = self.pin();
        self.send(Msg::CopyStart {
            lane: c.lane,
            stmt: c.stmt.clone(),
            line: c.line,
            pin,
        });
        let held = std::mem::take(&mut c.held);
        if !held.is_empty() {
            self.copy_data_to(c.lane, held);
        }
    }

    fn copy_data_to(&mut self, lane: usize, data: Vec<u8>) {
        self.lanes[lane].load += data.len();
        self.send(Msg::CopyData {
            lane,
            data: Bytes::from(data),
        });
    }

    /// The lane for a statement of `group` on `table`, switching groups
    /// (flush everything, then a sync) when it changes.
    fn lane_for(&mut self, group: Group, table: Option<String>) -> usize {
        let parallel = self.lanes.len() > 1;
        if group != self.group {
            if parallel {
                for lane in 0..self.lanes.len() {
                    self.flush(lane);
                }
                self.send(Msg::Sync);
            }
            self.group = group;
            self.owner.clear();
            for l in &mut self.lanes {
                l.load = 0;
            }
        }
        match (group, table) {
            (Group::Serial, _) | (_, None) => 0,
            (_, Some(_)) if !parallel => 0,
            (Group::Data, Some(_)) => self.least_loaded(),
            (Group::Constraints | Group::Indexes, Some(t)) => match self.owner.get(&t) {
                Some(&lane) => lane,
                None => {
                    let lane = self.least_loaded();
                    self.owner.insert(t, lane);
                    lane
                }
            },
        }
    }

    fn least_loaded(&self) -> usize {
        let least = self.lanes.iter().map(|l| l.load).min().unwrap_or(0);
        self.lanes.iter().position(|l| l.load == least).unwrap_or(0)
    }

    /// Give `lane` the session settings it has not had yet (at the end of
    /// its batch; `push` then starts a new message for what follows).
    fn catch_up_settings(&mut self, lane: usize, line: u64) {
        if self.lanes[lane].settings_version == self.settings_version {
            return;
        }
        let pin = self.pin();
        let l = &mut self.lanes[lane];
        if l.batch.is_empty() {
            l.line = line;
            l.pin = pin;
        }
        for (_, stmt) in &self.settings {
            l.batch.push_str(stmt);
            l.batch.push('\n');
            l.count += 1;
        }
        l.settings_tail = true;
        l.settings_version = self.settings_version;
    }

    /// Add a statement to `lane`'s batch. A statement never shares a message
    /// with a session setting before it: the server converts a whole message
    /// from `client_encoding` and tokenises it under
    /// `standard_conforming_strings` as they are when the message arrives, so
    /// a `SET` in the same message would come too late for the rest (psql
    /// sends statements one by one and never meets this).
    fn push(&mut self, lane: usize, s: &str, line: u64, setting: bool) {
        self.catch_up_settings(lane, line);
        if !setting && self.lanes[lane].settings_tail {
            self.flush(lane);
        }
        let pin = self.pin();
        let l = &mut self.lanes[lane];
        if l.batch.is_empty() {
            l.line = line;
            l.pin = pin;
        }
        l.batch.push_str(s);
        l.batch.push('\n');
        l.count += 1;
        l.load += s.len();
        l.settings_tail = setting;
        if l.batch.len() >= BATCH_BYTES || l.count >= BATCH_STATEMENTS {
            self.flush(lane);
        }
    }

    fn flush(&mut self, lane: usize) {
        let l = &mut self.lanes[lane];
        if l.batch.is_empty() {
            return;
        }
        let text = std::mem::take(&mut l.batch);
        l.count = 0;
        l.settings_tail = false;
        let line = l.line;
        let pin = std::mem::take(&mut l.pin);
        self.send(Msg::Sql {
            lane,
            text,
            line,
            pin,
        });
    }

    /// The session settings the check parsed the dump under, said again
    /// before every message: code the restore runs (a CHECK expression, a
    /// materialized view's query) may change them with `set_config`, and
    /// the server reads a message under the settings it finds (issue #21).
    /// Its own message, so nothing in it depends on how the last one ended.
    fn pin(&self) -> String {
        format!(
            "SET standard_conforming_strings = on; SET client_encoding = '{}'",
            self.encoding
        )
    }
}

/// The group of a statement and, for the parallel groups, the table it
/// touches. Only the exact shapes pg_dump writes are recognised; anything
/// else is `Serial`, which is always safe.
fn classify(s: &str) -> (Group, Option<String>) {
    let index = s
        .strip_prefix("CREATE INDEX ")
        .or_else(|| s.strip_prefix("CREATE UNIQUE INDEX "))
        .and_then(|rest| {
            let rest = rest[name_len(rest)?..].strip_prefix(" ON ")?;
            let rest = rest.strip_prefix("ONLY ").unwrap_or(rest);
            Some(rest[..name_len(rest)?].to_string())
        });
    if let Some(table) = index {
        return (Group::Indexes, Some(table));
    }
    // ALTER TABLE ONLY t ADD CONSTRAINT c PRIMARY KEY | UNIQUE | EXCLUDE:
    // ONLY, so that it never recurses into partitions (other tables).
    let constraint = s.strip_prefix("ALTER TABLE ONLY ").and_then(|rest| {
        let table = &rest[..name_len(rest)?];
        let after = rest[table.len()..]
            .trim_start()
            .strip_prefix("ADD CONSTRAINT ")?;
        let kind = after[name_len(after)?..].trim_start();
        ["PRIMARY KEY ", "UNIQUE ", "EXCLUDE "]
            .iter()
            .any(|k| kind.starts_with(k))
            .then(|| table.to_string())
    });
    if let Some(table) = constraint {
        return (Group::Constraints, Some(table));
    }
    // SELECT pg_catalog.setval('seq', n, b): one sequence each.
    if let Some(rest) = s.strip_prefix("SELECT pg_catalog.setval(") {
        if let Some(end) = rest.find(',') {
            return (Group::Data, Some(rest[..end].to_string()));
        }
    }
    (Group::Serial, None)
}

/// The table of `COPY t (a, b) FROM stdin;`.
fn copy_table(stmt: &str) -> Option<&str> {
    let rest = stmt.strip_prefix("COPY ")?;
    Some(&rest[..name_len(rest)?])
}

/// The name a session setting statement sets (`SET x = …`, `SET x TO …`,
/// `SELECT pg_catalog.set_config('x', …)`), or None for other statements.
fn setting_name(s: &str) -> Option<String> {
    let head = s.get(..4).filter(|h| h.eq_ignore_ascii_case("SET "));
    if let Some(rest) = head.map(|h| &s[h.len()..]) {
        let name: String = rest
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '=')
            .collect();
        return Some(name.to_ascii_lowercase());
    }
    let rest = s.strip_prefix("SELECT pg_catalog.set_config('")?;
    Some(rest[..rest.find('\'')?].to_ascii_lowercase())
}

/// The encoding `SET client_encoding = …` names, as PostgreSQL cleans a
/// name (letters and digits, lower case): the allow-list let only server
/// encodings through, so it is one of those.
fn encoding_of(set: &str) -> String {
    let value = set
        .split_once('=')
        .or_else(|| {
            set.to_ascii_uppercase()
                .find(" TO ")
                .map(|i| (&set[..i], &set[i + 4..]))
        })
        .map_or("", |(_, v)| v);
    value
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Length in bytes of the (possibly schema-qualified) name that starts `s`:
/// `"public"."t"`, `public.t`, `"a""b"`; None if `s` does not start with one.
fn name_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        if b.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match b.get(i)? {
                    b'"' if b.get(i + 1) == Some(&b'"') => i += 2,
                    b'"' => break,
                    _ => i += 1,
                }
            }
            i += 1;
        } else {
            let start = i;
            while b.get(i).is_some_and(|c| {
                c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$' || *c >= 0x80
            }) {
                i += 1;
            }
            if i == start {
                return None;
            }
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
        } else {
            return Some(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the splitter sends for `sql` with `jobs` lanes, as short strings.
    pub(super) fn messages(sql: &str, jobs: usize) -> Vec<String> {
        messages_on(sql, jobs, 18)
    }

    /// `messages`, for a server of major version `server_major`.
    fn messages_on(sql: &str, jobs: usize, server_major: u32) -> Vec<String> {
        outcome(sql, jobs, server_major, true, vec![]).expect("the test dump is unreadable")
    }

    /// What the splitter sends for `sql`, or why the dump is refused.
    fn outcome(
        sql: &str,
        jobs: usize,
        server_major: u32,
        authenticated: bool,
        extensions: Vec<crate::pg::extension::Extension>,
    ) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("dump.sql.zst");
        let compressed = zstd::encode_all(sql.as_bytes(), 3).expect("compress");
        std::fs::write(&path, &compressed).expect("write dump");
        let expected = Expected {
            sha256: crate::hash::hex(&Sha256::digest(&compressed)),
            size: compressed.len() as u64,
            server_major,
            authenticated,
            extensions,
        };
        let (tx, mut rx) = mpsc::channel(1 << 16);
        // On a stack like the restore's reader thread.
        let read_on_stack = || {
            std::thread::Builder::new()
                .stack_size(super::super::READER_STACK)
                .spawn(move || {
                    let r = read(&path, &expected, jobs, &tx);
                    drop(dir);
                    r
                })
                .expect("thread")
                .join()
                .expect("the reader panicked")
        };
        match read_on_stack() {
            Ok(()) => {}
            Err(Failure::Refused(e)) => return Err(format!("refused: {e}")),
            Err(Failure::Damaged(e)) => {
                return Err(format!(
                    "damaged: {e} ({:?})",
                    std::error::Error::source(&e).map(ToString::to_string)
                ))
            }
            Err(Failure::Other(e)) => return Err(format!("other: {e}")),
        }
        let mut out = vec![];
        while let Ok(msg) = rx.try_recv() {
            out.push(match msg.expect("message") {
                Msg::Sql { lane, text, .. } => format!("{lane}: {}", text.trim_end()),
                Msg::CopyStart { lane, stmt, .. } => format!("{lane}: copy {stmt}"),
                Msg::CopyData { lane, data } => {
                    format!("{lane}: data {}", String::from_utf8_lossy(&data).len())
                }
                Msg::CopyEnd { lane } => format!("{lane}: end"),
                Msg::Sync => "sync".to_string(),
            });
        }
        Ok(out)
    }

    #[test]
    fn names_are_measured_with_quotes_and_schemas() {
        assert_eq!(name_len(r#""public"."t x" rest"#), Some(14));
        assert_eq!(name_len(r#""a""b".c("#), Some(8));
        assert_eq!(name_len("public.t_1$ ON"), Some(11));
        assert_eq!(name_len(" t"), None);
        assert_eq!(name_len(r#""unterminated"#), None);
    }

    #[test]
    fn a_newer_pg_dumps_settings_are_left_out_for_an_older_server() {
        let dump =
            "SET statement_timeout = 0;\nSET transaction_timeout = 0;\nCREATE TABLE t (x int);\n";
        let on = |major| messages_on(dump, 1, major).join("\n");
        assert!(on(17).contains("transaction_timeout"), "{}", on(17));
        assert!(!on(16).contains("transaction_timeout"), "{}", on(16));
        assert!(on(16).contains("statement_timeout") && on(16).contains("CREATE TABLE"));
    }

    #[test]
    fn statements_are_classified_by_the_table_they_touch() {
        let idx = |s: &str| classify(s);
        assert_eq!(
            idx(r#"CREATE INDEX "i" ON "public"."t" USING "btree" ("a");"#),
            (Group::Indexes, Some(r#""public"."t""#.into()))
        );
        assert_eq!(
            idx("CREATE UNIQUE INDEX i ON ONLY public.p USING btree (a);"),
            (Group::Indexes, Some("public.p".into()))
        );
        assert_eq!(
            idx("ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);"),
            (Group::Constraints, Some("public.t".into()))
        );
        assert_eq!(
            idx("ALTER TABLE ONLY public.t\n    ADD CONSTRAINT u UNIQUE (a, b);"),
            (Group::Constraints, Some("public.t".into()))
        );
        // Two tables, or possibly several (no ONLY): serial.
        for serial in [
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES public.u(id);",
            "ALTER TABLE public.p\n    ADD CONSTRAINT p_pkey PRIMARY KEY (id);",
            "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT c CHECK ((a > 0)) NOT VALID;",
            "ALTER INDEX public.p_pkey ATTACH PARTITION public.c_pkey;",
            "CREATE TABLE public.t (a integer);",
            "COMMENT ON INDEX public.i IS 'x';",
        ] {
            assert_eq!(idx(serial), (Group::Serial, None), "{serial}");
        }
        assert_eq!(
            idx("SELECT pg_catalog.setval('public.t_id_seq', 3, true);"),
            (Group::Data, Some("'public.t_id_seq'".into()))
        );
        assert_eq!(
            setting_name("SET search_path = x;").as_deref(),
            Some("search_path")
        );
        assert_eq!(
            setting_name("SELECT pg_catalog.set_config('search_path', '', false);").as_deref(),
            Some("search_path")
        );
        assert_eq!(setting_name("SELECT 1;"), None);
    }

    const DUMP: &str = "SET statement_timeout = 0;\n\
        SELECT pg_catalog.set_config('search_path', '', false);\n\
        CREATE TABLE public.a (x integer);\n\
        CREATE TABLE public.b (x integer);\n\
        CREATE TABLE public.c (x integer);\n\
        COPY public.a (x) FROM stdin;\n\\.\n\
        COPY public.b (x) FROM stdin;\n1\n2\n\\.\n\
        COPY public.c (x) FROM stdin;\n\\N\n\\.\n\
        SELECT pg_catalog.setval('public.s', 1, false);\n\
        ALTER TABLE ONLY public.a\n    ADD CONSTRAINT a_pkey PRIMARY KEY (x);\n\
        CREATE INDEX ai ON public.a USING btree (x);\n\
        CREATE INDEX bi ON public.b USING btree (x);\n\
        ALTER TABLE ONLY public.b\n    ADD CONSTRAINT f FOREIGN KEY (x) REFERENCES public.a(x);\n";

    /// `messages`, with each batch reduced to the first two words of each
    /// statement (and INSERTs to their table).
    fn heads(sql: &str, jobs: usize) -> Vec<String> {
        messages(sql, jobs)
            .into_iter()
            .map(|m| {
                let Some((lane, text)) = m.split_once(": ") else {
                    return m;
                };
                let statements: Vec<String> = text
                    .split(";\n")
                    .map(|st| {
                        let words: Vec<&str> = st.split_whitespace().take(3).collect();
                        match words.as_slice() {
                            ["INSERT", "INTO", t] => format!("INSERT {t}"),
                            ["SELECT", f, ..] => f.split('(').next().unwrap_or(f).to_string(),
                            [a, b, ..] => format!("{a} {b}"),
                            _ => st.to_string(),
                        }
                    })
                    .collect();
                format!("{lane}: {}", statements.join(", "))
            })
            .collect()
    }

    #[test]
    fn one_lane_keeps_dump_order_and_sends_small_copies_as_inserts() {
        assert_eq!(
            heads(DUMP, 1),
            [
                "0: SET statement_timeout, pg_catalog.set_config",
                "0: CREATE TABLE, CREATE TABLE, CREATE TABLE, INSERT public.b, INSERT public.c, \
                 pg_catalog.setval, ALTER TABLE, CREATE INDEX, CREATE INDEX, ALTER TABLE"
            ]
        );
        let text = &messages(DUMP, 1)[1];
        assert!(
            text.contains(
                "INSERT INTO public.b (x) OVERRIDING SYSTEM VALUE VALUES\n(E'1'),\n(E'2');"
            ),
            "{text}"
        );
    }

    #[test]
    fn two_lanes_share_data_and_indexes_and_sync_between_stretches() {
        assert_eq!(
            heads(DUMP, 2),
            [
                "0: SET statement_timeout, pg_catalog.set_config",
                "0: CREATE TABLE, CREATE TABLE, CREATE TABLE",
                "sync",
                // Each block goes to the least loaded lane: a is empty (nothing
                // sent), so b goes to lane 0 too; c and the setval to lane 1,
                // which first gets the session settings, in a message of their own.
                "1: SET statement_timeout, pg_catalog.set_config",
                "0: INSERT public.b",
                "1: INSERT public.c, pg_catalog.setval",
                "sync",
                "0: ALTER TABLE",
                "sync",
                // a's index goes where a's constraint went; b's to the other lane.
                "0: CREATE INDEX",
                "1: CREATE INDEX",
                "sync",
                // The foreign key locks two tables: serial, on lane 0.
                "0: ALTER TABLE",
            ]
        );
    }

    #[test]
    fn no_statement_shares_a_message_with_a_setting_before_it() {
        // The server reads a whole message under the client_encoding and
        // standard_conforming_strings it has when the message arrives.
        let sql = "SET client_encoding = 'UTF8';\nCREATE TABLE public.a (x text);\n\
                   CREATE TABLE public.b (x text);\n\
                   COPY public.a (x) FROM stdin;\ncaf\u{e9}\n\\.\n\
                   SET lock_timeout = 0;\n\
                   COPY public.b (x) FROM stdin;\nx\n\\.\n\
                   CREATE INDEX i ON public.a USING btree (regexp_replace(x, '\\s', ''));\n";
        for jobs in [1, 2] {
            let got = messages(sql, jobs);
            assert!(got.len() >= 3, "{got:?}");
            for m in got {
                let text = m.split_once(": ").map_or(m.as_str(), |(_, t)| t);
                let is_setting: Vec<bool> = text
                    .split_inclusive(";\n")
                    .map(|st| setting_name(st).is_some())
                    .collect();
                // Settings may only come last in a message.
                let first_setting = is_setting.iter().position(|&b| b);
                if let Some(i) = first_setting {
                    assert!(is_setting[i..].iter().all(|&b| b), "jobs {jobs}: {m:?}");
                }
            }
        }
    }

    #[test]
    fn copies_stay_copy_unless_the_client_encoding_is_utf8() {
        let sql = |enc: &str| {
            format!(
                "SET client_encoding = '{enc}';\nCREATE TABLE public.a (x text);\n\
                 COPY public.a (x) FROM stdin;\nabc\n\\.\n"
            )
        };
        assert!(messages(&sql("UTF8"), 1)
            .iter()
            .any(|m| m.contains("INSERT INTO")));
        for enc in ["LATIN1", "EUC_JP"] {
            let got = messages(&sql(enc), 1);
            assert!(
                got.iter().all(|m| !m.contains("INSERT INTO")),
                "{enc}: {got:?}"
            );
            assert!(
                got.iter().any(|m| m.starts_with("0: copy COPY public.a")),
                "{enc}"
            );
        }
        assert_eq!(encoding_of("SET client_encoding = 'utf-8';"), "utf8");
        assert_eq!(
            encoding_of("set client_encoding to 'SQL_ASCII';"),
            "sqlascii"
        );
        assert_eq!(encoding_of("SET client_encoding = 'WIN1252';"), "win1252");
    }

    #[test]
    fn constraints_of_one_table_stay_on_one_lane() {
        let pk = |t: &str, c: &str| {
            format!("ALTER TABLE ONLY public.{t}\n    ADD CONSTRAINT {c} UNIQUE (x);\n")
        };
        let sql = [
            pk("a", "a1"),
            pk("b", "b1"),
            pk("a", "a2"),
            pk("c", "c1"),
            pk("b", "b2"),
        ]
        .concat();
        let lanes: Vec<String> = messages(&sql, 2)
            .iter()
            .map(|m| {
                let Some((lane, text)) = m.split_once(": ") else {
                    return m.clone();
                };
                let names: Vec<&str> = text
                    .split("ADD CONSTRAINT ")
                    .skip(1)
                    .filter_map(|rest| rest.split(' ').next())
                    .collect();
                format!("{lane}: {}", names.join(" "))
            })
            .collect();
        // c goes to the lane with fewer bytes so far.
        assert_eq!(lanes, ["sync", "0: a1 a2", "1: b1 c1 b2"]);
    }

    #[test]
    fn big_copies_stay_copy_and_stream_in_chunks() {
        let rows: String = (0..30_000).map(|i| format!("{i}\tsome text\n")).collect();
        let sql = format!(
            "CREATE TABLE public.a (x integer, y text);\n\
             COPY public.a (x, y) FROM stdin;\n{rows}\\.\n\
             CREATE INDEX ai ON public.a USING btree (x);\n"
        );
        let got = messages(&sql, 2);
        assert_eq!(got[0], "0: CREATE TABLE public.a (x integer, y text);");
        assert_eq!(got[1], "sync");
        assert_eq!(got[2], "0: copy COPY public.a (x, y) FROM stdin;");
        let data: usize = got
            .iter()
            .filter_map(|m| m.strip_prefix("0: data "))
            .map(|n| n.parse::<usize>().expect("length"))
            .sum();
        assert_eq!(data, rows.len());
        assert_eq!(
            got[got.len() - 3..],
            [
                "0: end",
                "sync",
                "0: CREATE INDEX ai ON public.a USING btree (x);"
            ]
        );
    }

    /// The head of a pg_dump 15 script, so the pieces below sit where a
    /// planted statement would.
    const HEAD: &str = "SET statement_timeout = 0;\nSET standard_conforming_strings = on;\nSELECT pg_catalog.set_config('search_path', '', false);\n";

    #[test]
    fn a_carriage_return_cannot_hide_statements_in_a_comment() {
        // Issue #21, finding 1, as it was planted before `\unrestrict`.
        let planted = format!(
            "{HEAD}COMMENT ON EXTENSION \"plpgsql\" IS 'x' --x\r; COPY (SELECT 1) TO PROGRAM 'id > /tmp/m'; CREATE ROLE evil SUPERUSER LOGIN; --\n;\n"
        );
        let plpgsql = crate::pg::extension::Extension::new("plpgsql", "pg_catalog", "1.0");
        let got = outcome(&planted, 2, 18, true, vec![plpgsql]);
        let why = got.expect_err("the planted dump must be refused");
        assert!(
            why.starts_with("refused:") && why.contains("PROGRAM"),
            "{why}"
        );
    }

    #[test]
    fn a_begin_atomic_body_is_one_statement_and_what_follows_is_checked() {
        let body = "CREATE FUNCTION \"public\".\"f\"() RETURNS integer\n    LANGUAGE \"sql\"\n    BEGIN ATOMIC\n SELECT 1 AS \"case\";\n SELECT 2;\nEND;\n";
        let sent = outcome(&format!("{HEAD}{body}"), 1, 18, true, vec![]).expect("allowed");
        let all = sent.join("\n");
        // The pieces joined as the grammar read them (the reader drops the
        // blanks between pieces: they separate tokens, nothing more).
        assert!(
            all.contains("BEGIN ATOMIC\n SELECT 1 AS \"case\";\nSELECT 2;\nEND;"),
            "{all}"
        );
        // Finding 2: a DO block after the body is a statement of its own.
        let planted = format!("{HEAD}{body}DO $$ BEGIN PERFORM 1; END $$;\n");
        let why = outcome(&planted, 1, 18, true, vec![]).expect_err("refused");
        assert!(why.contains("DO block"), "{why}");
        // A body that never ends is not a statement.
        let open =
            format!("{HEAD}CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1;\n");
        let why = outcome(&open, 1, 18, true, vec![]).expect_err("refused");
        assert!(why.contains("unfinished"), "{why}");
    }

    #[test]
    fn recorded_extensions_are_skipped_and_others_refused() {
        let trgm = crate::pg::extension::Extension::new("pg_trgm", "public", "1.6");
        let dump = format!(
            "{HEAD}CREATE EXTENSION IF NOT EXISTS \"pg_trgm\" WITH SCHEMA \"public\";\nCOMMENT ON EXTENSION \"pg_trgm\" IS 'text similarity';\nCREATE TABLE \"public\".\"t\" (\"x\" integer);\n"
        );
        let sent = outcome(&dump, 1, 18, true, vec![trgm])
            .expect("allowed")
            .join("\n");
        assert!(!sent.contains("EXTENSION"), "{sent}");
        assert!(sent.contains("CREATE TABLE"), "{sent}");
        let why = outcome(&dump, 1, 18, true, vec![]).expect_err("not recorded");
        assert!(why.contains("does not record"), "{why}");
        let dblink =
            format!("{HEAD}CREATE EXTENSION IF NOT EXISTS \"dblink\" WITH SCHEMA \"public\";\n");
        assert!(outcome(&dblink, 1, 18, true, vec![]).is_err());
    }

    #[test]
    fn a_statement_longer_than_the_cap_marks_the_dump_damaged() {
        // Finding 7: memory followed the longest statement.
        let huge = format!(
            "{HEAD}COMMENT ON TABLE \"public\".\"t\" IS '{}';\n",
            "x".repeat(crate::pg::dump_reader::MAX_STATEMENT + 1)
        );
        let why = outcome(&huge, 1, 18, true, vec![]).expect_err("damaged");
        assert!(why.starts_with("damaged:"), "{why}");
        let one_line = format!(
            "{HEAD}COMMENT ON TABLE \"public\".\"t\" IS '{}\n';\n",
            "y".repeat(crate::pg::dump_reader::MAX_LINE + 1)
        );
        let why = outcome(&one_line, 1, 18, true, vec![]).expect_err("damaged");
        assert!(why.starts_with("damaged:"), "{why}");
    }

    #[test]
    fn deeply_nested_expressions_of_an_honest_dump_are_allowed() {
        // pg_dump writes a view concatenating many columns as nested `||`;
        // prost's default limit refused 48 levels.
        let deep = |n: usize| {
            let mut e = "'a'::text".to_string();
            for _ in 0..n {
                e = format!("({e} || 'b'::text)");
            }
            format!("{HEAD}CREATE VIEW \"public\".\"v\" AS\n SELECT {e} AS \"x\";\n")
        };
        assert!(outcome(&deep(300), 1, 18, true, vec![]).is_ok());
        // Deeper than PostgreSQL itself goes: refused, not a crash.
        let why = outcome(&deep(20_000), 1, 18, true, vec![]).expect_err("too deep");
        assert!(why.contains("refused") || why.contains("damaged"), "{why}");
    }
}

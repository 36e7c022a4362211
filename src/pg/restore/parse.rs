//! Where a statement of a dump ends and what it is, as PostgreSQL decides:
//! libpg_query (the `pg_query` crate) is the server's own lexer and grammar
//! built as a library.
//!
//! The streaming reader (`dump_reader`) proposes pieces ending at a `;`
//! outside quotes and comments; a piece is accepted only when the grammar
//! reads it as exactly one complete statement. A piece the grammar finds
//! unfinished (a `BEGIN ATOMIC` body holds `;`s) is joined with the next;
//! a piece it reads as several statements, or cannot read, means the reader
//! and the server disagree, and the dump is refused. So the reader's lexer
//! only decides where to look: what runs is always exactly the text the
//! grammar read as one statement.

use pg_query::NodeEnum;

/// What the grammar makes of one piece.
#[derive(Debug)]
pub enum Piece {
    /// Exactly one complete statement.
    Complete(Box<NodeEnum>),
    /// The start of a statement that goes on (the grammar reached the end
    /// of the text wanting more).
    Unfinished,
}

/// Why a piece is not a statement of a dump.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("PostgreSQL reads it as {0} statements")]
    Several(usize),
    #[error("PostgreSQL reads no statement in it")]
    Empty,
    #[error("PostgreSQL cannot parse it: {0}")]
    Invalid(String),
}

/// The longest text (all pieces of one statement together, counting each
/// attempt) parsed for one statement: a body split at many `;`s is parsed
/// again at each, so this bounds the work a hostile dump can ask for.
pub const PARSE_BUDGET: usize = 8 * crate::pg::dump_reader::MAX_STATEMENT;

/// Parse `text` (one piece, or pieces joined) with PostgreSQL's grammar,
/// under the settings the restore enforces (`standard_conforming_strings`
/// on, the default).
pub fn piece(text: &str) -> Result<Piece, ParseError> {
    match pg_query::parse(text, pg_query::ParserOptions::DEFAULT) {
        Ok(parsed) => {
            let mut stmts = parsed.protobuf.stmts;
            match stmts.len() {
                1 => stmts
                    .pop()
                    .and_then(|s| s.stmt)
                    .and_then(|n| n.node)
                    .map(|n| Piece::Complete(Box::new(n)))
                    .ok_or(ParseError::Empty),
                0 => Err(ParseError::Empty),
                n => Err(ParseError::Several(n)),
            }
        }
        Err(pg_query::Error::Parse(message)) if message.ends_with("at end of input") => {
            Ok(Piece::Unfinished)
        }
        Err(e) => Err(ParseError::Invalid(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> String {
        match piece(text) {
            Ok(Piece::Complete(n)) => format!("{n:?}").chars().take_while(|c| *c != '(').collect(),
            Ok(Piece::Unfinished) => "unfinished".into(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn a_carriage_return_ends_a_comment_as_it_does_for_the_server() {
        // Issue #21, finding 1: one piece for a lexer that ends `--` only
        // at `\n`, three statements for PostgreSQL.
        let planted = "COMMENT ON EXTENSION \"plpgsql\" IS 'x' --x\r; COPY (SELECT 1) TO PROGRAM 'id > /tmp/m'; CREATE ROLE evil SUPERUSER LOGIN; --\n;";
        assert!(kind(planted).contains("3 statements"), "{}", kind(planted));
    }

    #[test]
    fn a_begin_atomic_body_is_one_statement_across_its_semicolons() {
        let head =
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1 AS \"case\";";
        assert_eq!(kind(head), "unfinished");
        let whole = format!("{head}\nEND;");
        assert_eq!(kind(&whole), "CreateFunctionStmt");
        // Finding 2: what follows the body is a statement of its own.
        let with_do = format!("{whole}\nDO $$ BEGIN END $$;");
        assert!(kind(&with_do).contains("2 statements"));
    }

    #[test]
    fn garbage_and_nul_bytes_are_errors_not_unfinished() {
        assert!(kind("CREATE TABLE t (x int) garbage;").starts_with("error"));
        assert!(kind("SELECT 1\0;").starts_with("error"));
        assert!(kind("-- only a comment\n;").starts_with("error"));
        assert!(kind("SELECT 'unterminated;").starts_with("error"));
    }
}

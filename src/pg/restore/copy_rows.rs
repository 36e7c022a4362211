//! Turning a small COPY block into one `INSERT … VALUES` statement.
//!
//! Why: with tokio-postgres every COPY costs three round trips (prepare,
//! the copy-in response, the final CommandComplete), while an INSERT rides
//! in a statement batch with up to 200 others for one round trip. A
//! migrated schema has dozens of small COPY blocks (django_migrations,
//! content types, permissions, rows from data migrations); over a link with
//! 2 ms of latency their round trips were most of what the link added to a
//! restore. Big blocks stay COPY, which is cheaper for the server per row.
//!
//! Each field of pg_dump's COPY text format is decoded to its bytes and
//! written as an `E'…'` literal, which the server reads the same way
//! whatever `standard_conforming_strings` says. In `INSERT … VALUES` an
//! untyped literal takes the type of its target column and goes through
//! that type's input function, exactly as a COPY field does; `OVERRIDING
//! SYSTEM VALUE` lets the dumped value into a `GENERATED ALWAYS` identity
//! column, which COPY also allows. Anything this cannot express faithfully
//! (a NUL byte, bytes that are not UTF-8, a row whose field count is off, a
//! table without columns) makes [`to_insert`] return `None`, and the block
//! goes to the server as COPY, unchanged.

/// `INSERT` for the COPY statement `copy` (`COPY t (a, b) FROM stdin;`) and
/// its data (whole lines, each ending in `\n`, without the `\.` line), or
/// `None` when the block must stay a COPY.
pub fn to_insert(copy: &str, data: &[u8]) -> Option<String> {
    let target = copy
        .strip_prefix("COPY ")?
        .strip_suffix(" FROM stdin;")?
        .trim_end();
    // pg_dump always writes the column list; without one (a table with no
    // columns) the rows are empty lines, which VALUES cannot express.
    let columns = target.find(" (").map(|i| &target[i..])?;
    let n_columns = count_columns(columns)?;
    let mut sql = String::with_capacity(data.len() + data.len() / 4 + copy.len() + 64);
    sql.push_str("INSERT INTO ");
    sql.push_str(target);
    sql.push_str(" OVERRIDING SYSTEM VALUE VALUES");
    let mut field = Vec::new();
    let mut first_row = true;
    for line in data.split_inclusive(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\n")?;
        sql.push_str(if first_row { "\n(" } else { ",\n(" });
        first_row = false;
        let mut n = 0;
        for raw in line.split(|&b| b == b'\t') {
            if n > 0 {
                sql.push_str(", ");
            }
            n += 1;
            if raw == b"\\N" {
                sql.push_str("NULL");
                continue;
            }
            decode_field(raw, &mut field)?;
            let text = std::str::from_utf8(&field).ok()?;
            sql.push_str("E'");
            for c in text.chars() {
                match c {
                    '\'' => sql.push_str("''"),
                    '\\' => sql.push_str("\\\\"),
                    c => sql.push(c),
                }
            }
            sql.push('\'');
        }
        if n != n_columns {
            return None;
        }
        sql.push(')');
    }
    if first_row {
        return None;
    }
    sql.push(';');
    Some(sql)
}

/// Columns in `(a, "b, c", d)`: commas outside double quotes, plus one.
fn count_columns(list: &str) -> Option<usize> {
    let inner = list.trim().strip_prefix('(')?.strip_suffix(')')?;
    if inner.trim().is_empty() {
        return None;
    }
    let mut quoted = false;
    let mut n = 1;
    for c in inner.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => n += 1,
            _ => {}
        }
    }
    Some(n)
}

/// Decode one field of COPY's text format into `out` (cleared first).
/// `None` for a NUL byte, which no text literal can carry.
fn decode_field(raw: &[u8], out: &mut Vec<u8>) -> Option<()> {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b == b'\r' {
            // pg_dump writes a carriage return as `\r`; a raw one is something
            // COPY reads as a line end or rejects.
            return None;
        }
        if b != b'\\' {
            out.push(b);
            continue;
        }
        // A backslash before the tab or newline that ends the field: COPY
        // takes the delimiter as data and joins fields or lines, which the
        // split on tabs and newlines here cannot follow. pg_dump never
        // writes it; leave such a block to COPY.
        let c = *raw.get(i)?;
        i += 1;
        let byte = match c {
            b'\r' => return None,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                (v & 0xff) as u8
            }
            b'x' if raw.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                let mut v = 0u8;
                for _ in 0..2 {
                    match raw.get(i).and_then(|&d| (d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d as u8;
                            i += 1;
                        }
                        None => break,
                    }
                }
                v
            }
            other => other,
        };
        out.push(byte);
    }
    if out.contains(&0) {
        return None;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(raw: &str) -> Option<Vec<u8>> {
        let mut out = vec![];
        decode_field(raw.as_bytes(), &mut out).map(|()| out)
    }

    fn ok(raw: &str) -> Vec<u8> {
        decoded(raw).expect("decodes")
    }

    #[test]
    fn copy_escapes_decode_like_the_server_does() {
        assert_eq!(ok(r"a\tb\nc\\d"), b"a\tb\nc\\d");
        assert_eq!(ok(r"\b\f\r\v"), b"\x08\x0c\r\x0b");
        assert_eq!(ok(r"\101\x42\x4g\7"), b"AB\x04g\x07");
        // Any other escaped character stands for itself (including `\u`).
        assert_eq!(ok(r"\u\q\'"), b"uq'");
        assert_eq!(ok(r"\xg"), b"xg");
        assert_eq!(decoded(r"\000"), None);
        assert_eq!(decoded("a\\"), None, "backslash before the delimiter");
        assert_eq!(decoded("a\rb"), None, "raw carriage return");
        assert_eq!(decoded("a\\\rb"), None, "escaped raw carriage return");
        assert_eq!(decoded(r"\x0"), None);
    }

    #[test]
    fn rows_become_one_insert() {
        let sql = to_insert(
            r#"COPY "public"."t" ("id", "name, odd", "note") FROM stdin;"#,
            b"1\tit's\t\\N\n2\ta\\\\b\\tc\tE'x'\n",
        )
        .expect("an insert");
        assert_eq!(
            sql,
            "INSERT INTO \"public\".\"t\" (\"id\", \"name, odd\", \"note\") OVERRIDING SYSTEM VALUE VALUES\n\
             (E'1', E'it''s', NULL),\n(E'2', E'a\\\\b\tc', E'E''x''');"
        );
    }

    #[test]
    fn what_values_cannot_say_stays_copy() {
        let copy = "COPY public.t (a, b) FROM stdin;";
        assert!(to_insert(copy, b"1\t2\n").is_some());
        assert_eq!(to_insert(copy, b"1\n"), None, "too few fields");
        assert_eq!(to_insert(copy, b"1\t2\t3\n"), None, "too many fields");
        assert_eq!(to_insert(copy, b"1\t\\000\n"), None, "NUL");
        assert_eq!(to_insert(copy, b"1\t\\xff\n"), None, "not UTF-8");
        assert_eq!(to_insert(copy, b"1\t2"), None, "no final newline");
        assert_eq!(to_insert(copy, b""), None, "no rows");
        assert_eq!(to_insert("COPY public.t  FROM stdin;", b"\n"), None);
        assert_eq!(to_insert("COPY public.t (a) TO stdout;", b"1\n"), None);
    }
}

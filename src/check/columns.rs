//! Which migration operation made each column: `CreateModel`'s field,
//! `AddField`, `AlterField`, `RenameField`, and which `RemoveField` dropped
//! one, read from the migration files' text (no Python), for `diff`.
//!
//! Django writes its operations as calls with literal arguments
//! (`migrations.AddField(model_name="product", name="price",
//! field=models.DecimalField(…))`), so a small reader of Python's bracket,
//! string and keyword syntax finds them; the table and column follow
//! Django's rules: `app_model` unless `db_table` says otherwise
//! (`CreateModel(options=…)`, `AlterModelTable`), the field's name, with
//! `_id` for a `ForeignKey` or `OneToOneField`, unless `db_column` says
//! otherwise. What it cannot see: a field class defined in the project that
//! sets its own column, an app whose label differs from its directory name,
//! operations built by code rather than written out. There the column is
//! left unattributed, never attributed to the wrong line.

use super::{MigrationRef, MigrationSource};
use std::collections::HashMap;

/// Where a column came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnOrigin {
    /// The operation that made the column under its current name
    /// (`CreateModel`'s field line, `AddField`, `RenameField`).
    pub made: MigrationRef,
    /// The last operation that defined it (`AlterField`, else `made`):
    /// the one that explains its type, nullability and default.
    pub defined: MigrationRef,
}

/// Every column the migrations make, by `(table, column)`, and the
/// `RemoveField` (or `DeleteModel`) that dropped the ones they no longer
/// have.
#[derive(Debug, Default)]
pub struct ColumnOrigins {
    pub columns: HashMap<(String, String), ColumnOrigin>,
    pub removed: HashMap<(String, String), MigrationRef>,
}

/// Read the operations of `sources`, in their order (a migration's
/// operations after those of the migrations before it in the same app).
pub fn origins(sources: &[MigrationSource]) -> ColumnOrigins {
    let mut apps: HashMap<&str, HashMap<String, Model>> = HashMap::new();
    let mut removed = HashMap::new();
    for src in sources {
        let models = apps.entry(src.app.as_str()).or_default();
        let tokens = tokenize(&src.text);
        let Some(ops) = operations(&tokens) else {
            continue;
        };
        let at = |line: usize| MigrationRef {
            app: src.app.clone(),
            name: src.name.clone(),
            path: src.path.clone(),
            line,
        };
        let mut state = AppState {
            app: &src.app,
            models,
            removed: &mut removed,
        };
        for op in &ops {
            state.apply(op, &at);
        }
    }
    let mut columns = HashMap::new();
    for (app, models) in apps {
        for (model, m) in models {
            let table = m.table(app, &model);
            for f in m.fields.into_values() {
                columns.insert((table.clone(), f.column), f.origin);
            }
        }
    }
    removed.retain(|k, _| !columns.contains_key(k));
    ColumnOrigins { columns, removed }
}

#[derive(Debug, Default)]
struct Model {
    /// `db_table`, when set.
    db_table: Option<String>,
    fields: HashMap<String, Field>,
}

impl Model {
    fn table(&self, app: &str, model: &str) -> String {
        self.db_table
            .clone()
            .unwrap_or_else(|| format!("{app}_{model}"))
    }
}

#[derive(Debug)]
struct Field {
    column: String,
    /// `db_column` was given: a rename keeps the column.
    explicit: bool,
    origin: ColumnOrigin,
}

struct AppState<'a> {
    app: &'a str,
    models: &'a mut HashMap<String, Model>,
    removed: &'a mut HashMap<(String, String), MigrationRef>,
}

impl AppState<'_> {
    fn apply(&mut self, op: &Expr, at: &dyn Fn(usize) -> MigrationRef) {
        let Expr::Call { name, line, .. } = op else {
            return;
        };
        let here = at(*line);
        let lower = |e: Option<&Expr>| e.and_then(Expr::str).map(str::to_ascii_lowercase);
        match last(name) {
            "CreateModel" => {
                let Some(model) = lower(op.arg(0, "name")) else {
                    return;
                };
                let mut m = Model {
                    db_table: op
                        .arg(2, "options")
                        .and_then(|o| o.get("db_table"))
                        .and_then(Expr::str)
                        .map(str::to_string),
                    ..Model::default()
                };
                for f in op.arg(1, "fields").map(Expr::items).unwrap_or_default() {
                    let items = f.items();
                    let (Some(Expr::Str(fname, fline)), Some(field)) =
                        (items.first(), items.get(1))
                    else {
                        continue;
                    };
                    if let Some((column, explicit)) = column_of(fname, field) {
                        let made = at(*fline);
                        let origin = ColumnOrigin {
                            defined: made.clone(),
                            made,
                        };
                        m.fields.insert(
                            fname.clone(),
                            Field {
                                column,
                                explicit,
                                origin,
                            },
                        );
                    }
                }
                self.models.insert(model, m);
            }
            "AddField" | "AlterField" => {
                let (Some(model), Some(fname), Some(field)) = (
                    lower(op.arg(0, "model_name")),
                    op.arg(1, "name").and_then(Expr::str),
                    op.arg(2, "field"),
                ) else {
                    return;
                };
                let m = self.models.entry(model).or_default();
                let Some((column, explicit)) = column_of(fname, field) else {
                    m.fields.remove(fname);
                    return;
                };
                let origin = match (last(name), m.fields.get(fname)) {
                    ("AlterField", Some(old)) if old.column == column => ColumnOrigin {
                        made: old.origin.made.clone(),
                        defined: here,
                    },
                    _ => ColumnOrigin {
                        made: here.clone(),
                        defined: here,
                    },
                };
                m.fields.insert(
                    fname.to_string(),
                    Field {
                        column,
                        explicit,
                        origin,
                    },
                );
            }
            "RemoveField" => {
                let (Some(model), Some(fname)) = (
                    lower(op.arg(0, "model_name")),
                    op.arg(1, "name").and_then(Expr::str),
                ) else {
                    return;
                };
                let Some(m) = self.models.get_mut(&model) else {
                    return;
                };
                if let Some(f) = m.fields.remove(fname) {
                    self.removed
                        .insert((m.table(self.app, &model), f.column), here);
                }
            }
            "RenameField" => {
                let (Some(model), Some(old), Some(new)) = (
                    lower(op.arg(0, "model_name")),
                    op.arg(1, "old_name").and_then(Expr::str),
                    op.arg(2, "new_name").and_then(Expr::str),
                ) else {
                    return;
                };
                let Some(m) = self.models.get_mut(&model) else {
                    return;
                };
                let Some(mut f) = m.fields.remove(old) else {
                    return;
                };
                if !f.explicit {
                    let suffix = f.column.strip_prefix(old).unwrap_or("");
                    f.column = format!("{new}{suffix}");
                    f.origin = ColumnOrigin {
                        made: here.clone(),
                        defined: here,
                    };
                }
                m.fields.insert(new.to_string(), f);
            }
            "RenameModel" => {
                let (Some(old), Some(new)) =
                    (lower(op.arg(0, "old_name")), lower(op.arg(1, "new_name")))
                else {
                    return;
                };
                // Django renames a table named by default to the new
                // default name, and keeps a `db_table`.
                if let Some(m) = self.models.remove(&old) {
                    self.models.insert(new, m);
                }
            }
            "AlterModelTable" => {
                let Some(model) = lower(op.arg(0, "name")) else {
                    return;
                };
                let table = op.arg(1, "table").and_then(Expr::str).map(str::to_string);
                self.models.entry(model).or_default().db_table = table;
            }
            "DeleteModel" => {
                let Some(model) = lower(op.arg(0, "name")) else {
                    return;
                };
                if let Some(m) = self.models.remove(&model) {
                    let table = m.table(self.app, &model);
                    for f in m.fields.into_values() {
                        self.removed.insert((table.clone(), f.column), here.clone());
                    }
                }
            }
            "SeparateDatabaseAndState" => {
                for inner in op
                    .arg(0, "database_operations")
                    .map(Expr::items)
                    .unwrap_or_default()
                {
                    self.apply(inner, at);
                }
            }
            _ => {}
        }
    }
}

/// `models.ForeignKey` -> `ForeignKey`.
fn last(dotted: &str) -> &str {
    dotted.rsplit('.').next().unwrap_or(dotted)
}

/// The column of the field `name` declared by the call `field`, and
/// whether `db_column` named it; `None` for a field with no column
/// (`ManyToManyField`) or anything but a call.
fn column_of(name: &str, field: &Expr) -> Option<(String, bool)> {
    let Expr::Call { name: class, .. } = field else {
        return None;
    };
    if let Some(c) = field.kwarg("db_column").and_then(Expr::str) {
        return Some((c.to_string(), true));
    }
    match last(class) {
        "ManyToManyField" | "GenericRelation" | "GenericForeignKey" => None,
        "ForeignKey" | "OneToOneField" => Some((format!("{name}_id"), false)),
        _ => Some((name.to_string(), false)),
    }
}

/// A Python token, with its 1-based line.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// An identifier or a dotted name (`migrations.AddField`), or a number.
    Name(String, usize),
    Str(String, usize),
    Open(char),
    Close,
    Comma,
    Colon,
    Assign,
    Other,
}

/// Python's tokens, enough to follow brackets, strings and keywords:
/// comments are skipped, adjacent strings joined.
fn tokenize(text: &str) -> Vec<Token> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'\n' => {
                line += 1;
                i += 1;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' | b'\'' => {
                let start_line = line;
                let triple = bytes[i..].starts_with(&[c, c, c]);
                let q = if triple { 3 } else { 1 };
                let from = i + q;
                let mut j = from;
                while j < bytes.len() {
                    if bytes[j] == b'\\' {
                        if bytes.get(j + 1) == Some(&b'\n') {
                            line += 1;
                        }
                        j += 2;
                        continue;
                    }
                    if bytes[j] == b'\n' {
                        line += 1;
                    }
                    if bytes[j] == c && (!triple || bytes[j..].starts_with(&[c, c, c])) {
                        break;
                    }
                    j += 1;
                }
                let s = text.get(from..j.min(bytes.len())).unwrap_or("").to_string();
                i = (j + q).min(bytes.len());
                match out.last_mut() {
                    Some(Token::Str(prev, _)) => prev.push_str(&s),
                    _ => out.push(Token::Str(s, start_line)),
                }
            }
            b'(' | b'[' | b'{' => {
                out.push(Token::Open(c as char));
                i += 1;
            }
            b')' | b']' | b'}' => {
                out.push(Token::Close);
                i += 1;
            }
            b',' => {
                out.push(Token::Comma);
                i += 1;
            }
            b':' => {
                out.push(Token::Colon);
                i += 1;
            }
            b'=' if bytes.get(i + 1) != Some(&b'=') => {
                out.push(Token::Assign);
                i += 1;
            }
            _ if c.is_ascii_alphanumeric() || c == b'_' || c >= 0x80 => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || bytes[i] == b'_'
                        || bytes[i] == b'.'
                        || bytes[i] >= 0x80)
                {
                    i += 1;
                }
                let word = text.get(start..i).unwrap_or("");
                // A string prefix: r"…", b'…', f"…".
                let prefix = word.len() <= 2
                    && word.chars().all(|ch| "rRbBuUfF".contains(ch))
                    && matches!(bytes.get(i), Some(b'"' | b'\''));
                if !prefix {
                    out.push(Token::Name(word.to_string(), line));
                }
            }
            b'=' => {
                out.push(Token::Other);
                i += 2;
            }
            _ => {
                if !c.is_ascii_whitespace() {
                    out.push(Token::Other);
                }
                i += 1;
            }
        }
    }
    out
}

/// What the reader keeps of an expression: calls, sequences, dicts and
/// strings; anything else is `Other`.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Call {
        name: String,
        line: usize,
        args: Vec<Expr>,
        kwargs: Vec<(String, Expr)>,
    },
    /// A list, tuple or set.
    Seq(Vec<Expr>),
    Dict(Vec<(Expr, Expr)>),
    Str(String, usize),
    Other,
}

impl Expr {
    fn str(&self) -> Option<&str> {
        match self {
            Expr::Str(s, _) => Some(s),
            _ => None,
        }
    }

    fn items(&self) -> Vec<&Expr> {
        match self {
            Expr::Seq(items) => items.iter().collect(),
            _ => vec![],
        }
    }

    fn kwarg(&self, key: &str) -> Option<&Expr> {
        match self {
            Expr::Call { kwargs, .. } => kwargs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A call's argument by keyword, else by position.
    fn arg(&self, pos: usize, key: &str) -> Option<&Expr> {
        match self {
            Expr::Call { args, .. } => self.kwarg(key).or_else(|| args.get(pos)),
            _ => None,
        }
    }

    /// A dict's value for the string key `key`.
    fn get(&self, key: &str) -> Option<&Expr> {
        match self {
            Expr::Dict(pairs) => pairs
                .iter()
                .find(|(k, _)| k.str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// The elements of the `operations = [...]` list, if the file has one.
fn operations(tokens: &[Token]) -> Option<Vec<Expr>> {
    let at = tokens.windows(3).position(|w| {
        matches!(&w[0], Token::Name(n, _) if n == "operations")
            && w[1] == Token::Assign
            && w[2] == Token::Open('[')
    })?;
    let mut p = Parser {
        tokens,
        pos: at + 2,
    };
    Some(p.expr().items().into_iter().cloned().collect())
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    /// One expression: its first atom, then whatever follows up to the
    /// next `,`, `:` or closing bracket of this level (skipped, brackets
    /// balanced).
    fn expr(&mut self) -> Expr {
        let first = self.atom();
        loop {
            match self.peek() {
                None | Some(Token::Comma | Token::Close | Token::Colon) => return first,
                Some(Token::Open(_)) => {
                    self.pos += 1;
                    self.skip_to_close();
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    fn atom(&mut self) -> Expr {
        let Some(t) = self.peek().cloned() else {
            return Expr::Other;
        };
        self.pos += 1;
        match t {
            Token::Str(s, line) => Expr::Str(s, line),
            Token::Name(name, line) => {
                if self.peek() != Some(&Token::Open('(')) {
                    return Expr::Other;
                }
                self.pos += 1;
                let (mut args, mut kwargs) = (vec![], vec![]);
                self.items(|p| match (p.peek(), p.tokens.get(p.pos + 1)) {
                    (Some(Token::Name(k, _)), Some(Token::Assign)) => {
                        let k = k.clone();
                        p.pos += 2;
                        kwargs.push((k, p.expr()));
                    }
                    _ => args.push(p.expr()),
                });
                Expr::Call {
                    name,
                    line,
                    args,
                    kwargs,
                }
            }
            Token::Open('{') => {
                let mut pairs = vec![];
                let mut set = vec![];
                self.items(|p| {
                    let k = p.expr();
                    if p.peek() == Some(&Token::Colon) {
                        p.pos += 1;
                        pairs.push((k, p.expr()));
                    } else {
                        set.push(k);
                    }
                });
                if pairs.is_empty() && !set.is_empty() {
                    Expr::Seq(set)
                } else {
                    Expr::Dict(pairs)
                }
            }
            Token::Open(_) => {
                let mut items = vec![];
                self.items(|p| items.push(p.expr()));
                Expr::Seq(items)
            }
            _ => Expr::Other,
        }
    }

    /// Comma-separated items up to the closing bracket (consumed), each
    /// read by `item`; what an item leaves unread (`lambda a, b: …`) is
    /// skipped, brackets balanced.
    fn items(&mut self, mut item: impl FnMut(&mut Self)) {
        loop {
            match self.peek() {
                None => return,
                Some(Token::Close) => {
                    self.pos += 1;
                    return;
                }
                Some(Token::Comma | Token::Colon | Token::Assign | Token::Other) => self.pos += 1,
                Some(_) => {
                    let before = self.pos;
                    item(self);
                    if self.pos == before {
                        self.pos += 1;
                    }
                }
            }
        }
    }

    /// Past the bracket closing the one just opened.
    fn skip_to_close(&mut self) {
        let mut depth = 1;
        while let Some(t) = self.tokens.get(self.pos) {
            self.pos += 1;
            match t {
                Token::Open(_) => depth += 1,
                Token::Close => {
                    depth -= 1;
                    if depth == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(app: &str, name: &str, text: &str) -> MigrationSource {
        MigrationSource {
            app: app.into(),
            name: name.into(),
            path: format!("{app}/migrations/{name}.py"),
            text: text.into(),
        }
    }

    fn at(o: &ColumnOrigins, table: &str, column: &str) -> Option<(String, usize, usize)> {
        o.columns
            .get(&(table.to_string(), column.to_string()))
            .map(|c| (c.made.name.clone(), c.made.line, c.defined.line))
    }

    #[test]
    fn columns_are_traced_through_django_operations() {
        let first = source(
            "shop",
            "0001_initial",
            r#"from django.db import migrations, models
import django.db.models.deletion


class Migration(migrations.Migration):
    operations = [
        migrations.CreateModel(
            name="Product",
            fields=[
                (
                    "id",
                    models.BigAutoField(auto_created=True, primary_key=True),
                ),
                ("name", models.CharField(max_length=200)),  # a comment, ("x", y)
                ("owner", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, to="auth.user")),
                ("tags", models.ManyToManyField(to="shop.tag")),
                ("legacy", models.IntegerField(db_column="LegacyCol")),
            ],
            options={"db_table": "products", "ordering": ["-id"]},
        ),
        migrations.CreateModel("Tag", [("label", models.CharField(max_length=9))]),
        migrations.RunPython(lambda apps, schema_editor: None, migrations.RunPython.noop),
    ]
"#,
        );
        let second = source(
            "shop",
            "0002_more",
            r#"class Migration(migrations.Migration):
    operations = [
        migrations.AddField(
            model_name="product",
            name="price",
            field=models.DecimalField(decimal_places=2, max_digits=10, default="0"),
        ),
        migrations.AlterField(
            model_name="product",
            name="name",
            field=models.CharField(max_length=300, help_text="""a
multi-line text"""),
        ),
        migrations.RenameField(model_name="tag", old_name="label", new_name="title"),
        migrations.RemoveField(model_name="product", name="legacy"),
        migrations.RenameModel(old_name="Tag", new_name="Label"),
    ]
"#,
        );
        let o = origins(&[first, second]);
        assert_eq!(
            at(&o, "products", "id"),
            Some(("0001_initial".into(), 11, 11))
        );
        assert_eq!(
            at(&o, "products", "name"),
            Some(("0001_initial".into(), 14, 8))
        );
        assert_eq!(
            o.columns[&("products".into(), "name".into())].defined.name,
            "0002_more"
        );
        assert_eq!(
            at(&o, "products", "owner_id"),
            Some(("0001_initial".into(), 15, 15))
        );
        assert_eq!(at(&o, "products", "tags"), None);
        assert_eq!(
            at(&o, "products", "price"),
            Some(("0002_more".into(), 3, 3))
        );
        assert_eq!(
            at(&o, "shop_label", "title"),
            Some(("0002_more".into(), 14, 14))
        );
        assert_eq!(at(&o, "shop_tag", "label"), None);
        let gone = &o.removed[&("products".into(), "LegacyCol".into())];
        assert_eq!((gone.name.as_str(), gone.line), ("0002_more", 15));
    }

    #[test]
    fn unreadable_text_attributes_nothing() {
        let o = origins(&[source("a", "0001", "operations = [migrations.AddField(((")]);
        assert!(o.columns.is_empty());
        let o = origins(&[source("a", "0001", "x = ]]) '''")]);
        assert!(o.columns.is_empty());
    }
}

//! The SQL both backends run for a listing, built once: the visibility rules rendered from
//! their one definition ([`Cond`]), the filters, the keyset after a marker, and the order.
//! Each backend names its [`Dialect`]; nothing else differs between them but where each keeps an
//! image's properties.
//!
//! The order is SQLite's (and Glance-on-MySQL's): NULLs first in ascending order, text in
//! byte order. PostgreSQL is told so explicitly (`NULLS FIRST`/`LAST`, `COLLATE "C"`), so a
//! page and the keyset after it mean the same on both.

use time::OffsetDateTime;

use super::{Caller, Cmp, Column, Filter, HiddenFilter, ListQuery, Scalar, SortDir};
use crate::domain::Image;
use crate::domain::policy::{self, Cond};
use crate::domain::task::{Task, TaskQuery, TaskSortKey, TaskStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound argument, in terms both backends convert to their own.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

/// Microseconds since the Unix epoch: how both backends store time.
pub fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1000) as i64
}

/// A sort key of a listing: the column as it compares ([`Sql::collated`]), its direction, and
/// the value the marker row has in it (for the keyset after the marker).
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub column: String,
    pub dir: SortDir,
    pub value: Arg,
}

/// A statement under construction: its text and positional arguments.
#[derive(Debug, Clone)]
pub struct Sql {
    pub text: String,
    pub args: Vec<Arg>,
    dialect: Dialect,
}

impl Sql {
    pub fn new(dialect: Dialect, text: impl Into<String>) -> Sql {
        Sql { text: text.into(), args: Vec::new(), dialect }
    }

    pub fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }

    /// Appends a placeholder bound to `arg`.
    pub fn arg(&mut self, arg: Arg) {
        self.args.push(arg);
        let n = self.args.len();
        match self.dialect {
            Dialect::Sqlite => self.text.push_str(&format!("?{n}")),
            Dialect::Postgres => self.text.push_str(&format!("${n}")),
        }
    }

    /// Appends a column of `images i`, as it compares and sorts (text in byte order).
    fn column(&mut self, c: Column) {
        let text = self.column_text(c);
        self.push(&text);
    }

    /// A column of `images i` as it compares and sorts.
    fn column_text(&self, c: Column) -> String {
        self.collated(column_name(c), is_text(c))
    }

    /// `column` as it compares and sorts: text in byte order.
    pub fn collated(&self, column: &str, text: bool) -> String {
        if self.dialect == Dialect::Postgres && text { format!(r#"{column} COLLATE "C""#) } else { column.to_owned() }
    }

    /// ` ORDER BY` the keys, NULLs first in ascending order (as SQLite orders them).
    pub fn order_by(&mut self, keys: &[Key]) {
        self.push(" ORDER BY ");
        for (n, key) in keys.iter().enumerate() {
            if n > 0 {
                self.push(", ");
            }
            self.push(&key.column);
            self.push(match (self.dialect, key.dir) {
                (Dialect::Sqlite, SortDir::Asc) => " ASC",
                (Dialect::Sqlite, SortDir::Desc) => " DESC",
                (Dialect::Postgres, SortDir::Asc) => " ASC NULLS FIRST",
                (Dialect::Postgres, SortDir::Desc) => " DESC NULLS LAST",
            });
        }
    }

    /// `(k1, k2, …)` strictly after the marker's values (each key's `value`), each key in its
    /// own direction, NULLs first in ascending order.
    pub fn after(&mut self, keys: &[Key]) {
        self.push("(");
        for i in 0..keys.len() {
            if i > 0 {
                self.push(" OR ");
            }
            self.push("(");
            for key in &keys[..i] {
                self.push(&key.column);
                let eq = self.null_safe_eq();
                self.push(eq);
                self.arg(key.value.clone());
                self.push(" AND ");
            }
            let key = &keys[i];
            match (&key.value, key.dir) {
                (Arg::Null, SortDir::Asc) => {
                    self.push(&key.column);
                    self.push(" IS NOT NULL");
                }
                (Arg::Null, SortDir::Desc) => self.push("1 = 0"),
                (v, SortDir::Asc) => {
                    self.push(&key.column);
                    self.push(" > ");
                    self.arg(v.clone());
                }
                (v, SortDir::Desc) => {
                    self.push("(");
                    self.push(&key.column);
                    self.push(" IS NULL OR ");
                    self.push(&key.column);
                    self.push(" < ");
                    self.arg(v.clone());
                    self.push(")");
                }
            }
            self.push(")");
        }
        self.push(")");
    }

    /// `=` that treats NULL as a value.
    fn null_safe_eq(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => " IS ",
            Dialect::Postgres => " IS NOT DISTINCT FROM ",
        }
    }

    fn null_safe_ne(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => " IS NOT ",
            Dialect::Postgres => " IS DISTINCT FROM ",
        }
    }

    fn boolean(&self, b: bool) -> &'static str {
        match (self.dialect, b) {
            (Dialect::Sqlite, true) => "1",
            (Dialect::Sqlite, false) => "0",
            (Dialect::Postgres, true) => "TRUE",
            (Dialect::Postgres, false) => "FALSE",
        }
    }

    /// Appends the SQL of `cond` on `images i`: true exactly where [`Cond::holds`] is (never
    /// NULL, so that `NOT` means the same in both).
    pub fn cond(&mut self, cond: &Cond) {
        let list = |sql: &mut Sql, items: &[Cond], op: &str| {
            if items.is_empty() {
                let empty_is_true = op == " AND ";
                sql.push(&format!("({} = 1)", if empty_is_true { 1 } else { 0 }));
                return;
            }
            sql.push("(");
            for (n, c) in items.iter().enumerate() {
                if n > 0 {
                    sql.push(op);
                }
                sql.cond(c);
            }
            sql.push(")");
        };
        match cond {
            Cond::All => self.push("(1 = 1)"),
            Cond::Not(c) => {
                self.push("NOT ");
                self.cond(c);
            }
            Cond::And(cs) => list(self, cs, " AND "),
            Cond::Or(cs) => list(self, cs, " OR "),
            Cond::OwnerIs(p) => {
                self.push("(i.owner IS NOT NULL AND i.owner = ");
                self.arg(Arg::Text(p.clone()));
                self.push(")");
            }
            Cond::OwnerIsNull => self.push("(i.owner IS NULL)"),
            Cond::VisibilityIn(vs) => {
                let names: Vec<&str> = vs.iter().map(|v| v.as_str()).collect();
                self.in_list("i.visibility", &names, false);
            }
            Cond::StatusNotIn(ss) => {
                let names: Vec<&str> = ss.iter().map(|s| s.as_str()).collect();
                self.in_list("i.status", &names, true);
            }
            Cond::Hidden(h) => self.push(&format!("(i.os_hidden = {})", self.boolean(*h))),
            Cond::MemberOf { project, status } => {
                self.push("EXISTS (SELECT 1 FROM image_members m WHERE m.image_id = i.id AND m.member = ");
                self.arg(Arg::Text(project.clone()));
                if let Some(s) = status {
                    self.push(" AND m.status = ");
                    self.arg(Arg::Text(s.as_str().into()));
                }
                self.push(")");
            }
        }
    }

    /// `column [NOT] IN (literals)` over known, constant names (no argument needed).
    fn in_list(&mut self, column: &str, names: &[&str], negated: bool) {
        if names.is_empty() {
            self.push(if negated { "(1 = 1)" } else { "(1 = 0)" });
            return;
        }
        let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
        let not = if negated { "NOT " } else { "" };
        self.push(&format!("({column} {not}IN ({}))", quoted.join(", ")));
    }
}

fn column_name(c: Column) -> &'static str {
    match c {
        Column::Id => "i.id",
        Column::Name => "i.name",
        Column::Status => "i.status",
        Column::Visibility => "i.visibility",
        Column::Owner => "i.owner",
        Column::ContainerFormat => "i.container_format",
        Column::DiskFormat => "i.disk_format",
        Column::Size => "i.size",
        Column::VirtualSize => "i.virtual_size",
        Column::MinRam => "i.min_ram",
        Column::MinDisk => "i.min_disk",
        Column::Checksum => "i.checksum",
        Column::OsHashValue => "i.os_hash_value",
        Column::Protected => "i.protected",
        Column::CreatedAt => "i.created_at",
        Column::UpdatedAt => "i.updated_at",
    }
}

fn is_text(c: Column) -> bool {
    matches!(
        c,
        Column::Id
            | Column::Name
            | Column::Status
            | Column::Visibility
            | Column::Owner
            | Column::ContainerFormat
            | Column::DiskFormat
            | Column::Checksum
            | Column::OsHashValue
    )
}

fn scalar(v: &Scalar) -> Arg {
    match v {
        Scalar::Text(s) => Arg::Text(s.clone()),
        Scalar::Int(n) => Arg::Int(*n),
        Scalar::Bool(b) => Arg::Bool(*b),
        Scalar::Time(t) => Arg::Int(micros(*t)),
    }
}

/// The value of a sort column on an image, for the keyset after a marker.
fn column_value(image: &Image, c: Column) -> Arg {
    let text = |v: &Option<String>| v.clone().map_or(Arg::Null, Arg::Text);
    let int = |v: Option<i64>| v.map_or(Arg::Null, Arg::Int);
    match c {
        Column::Id => Arg::Text(image.id.clone()),
        Column::Name => text(&image.name),
        Column::Status => Arg::Text(image.status.as_str().into()),
        Column::Visibility => Arg::Text(image.visibility.as_str().into()),
        Column::Owner => text(&image.owner),
        Column::ContainerFormat => text(&image.container_format),
        Column::DiskFormat => text(&image.disk_format),
        Column::Size => int(image.size),
        Column::VirtualSize => int(image.virtual_size),
        Column::MinRam => Arg::Int(image.min_ram),
        Column::MinDisk => Arg::Int(image.min_disk),
        Column::Checksum => text(&image.checksum),
        Column::OsHashValue => text(&image.os_hash_value),
        Column::Protected => Arg::Bool(image.protected),
        Column::CreatedAt => Arg::Int(micros(image.created_at)),
        Column::UpdatedAt => Arg::Int(micros(image.updated_at)),
    }
}

/// The rules of a listing for `caller` (none for the operator).
pub fn scope(caller: Caller<'_>, q: &ListQuery) -> Cond {
    match caller {
        Caller::Operator => Cond::All,
        Caller::User(who) => policy::listed_for(who, q.visibility, q.hidden == HiddenFilter::Only, q.member_status),
    }
}

/// The sort keys of a listing with Glance's tie-breakers: `created_at` then `id`, in the
/// direction of the last key (descending when there is none).
pub fn sort_keys(q: &ListQuery) -> Vec<(Column, SortDir)> {
    let mut keys = q.sort.clone();
    let tie_dir = keys.last().map_or(SortDir::Desc, |(_, d)| *d);
    for tie in [Column::CreatedAt, Column::Id] {
        if !keys.iter().any(|(c, _)| *c == tie) {
            keys.push((tie, tie_dir));
        }
    }
    keys
}

/// The listing statement: `columns` of `images i` in scope, filtered, after `marker` (already
/// loaded and checked by the caller), in order, at most `q.limit`.
pub fn list(dialect: Dialect, columns: &str, caller: Caller<'_>, q: &ListQuery, marker: Option<&Image>) -> Sql {
    let mut sql = Sql::new(dialect, format!("SELECT {columns} FROM images i WHERE "));
    sql.cond(&scope(caller, q));
    for f in &q.filters {
        sql.push(" AND ");
        filter(&mut sql, f);
    }
    let keys: Vec<Key> = sort_keys(q)
        .into_iter()
        .map(|(c, dir)| Key {
            column: sql.column_text(c),
            dir,
            value: marker.map_or(Arg::Null, |m| column_value(m, c)),
        })
        .collect();
    if marker.is_some() {
        sql.push(" AND ");
        sql.after(&keys);
    }
    sql.order_by(&keys);
    sql.push(" LIMIT ");
    sql.arg(Arg::Int(q.limit as i64));
    sql
}

fn filter(sql: &mut Sql, f: &Filter) {
    match f {
        Filter::Compare(c, cmp, v) => {
            sql.push("(");
            sql.column(*c);
            let op = match cmp {
                Cmp::Eq => " = ",
                Cmp::Neq => sql.null_safe_ne(),
                Cmp::Gt => " > ",
                Cmp::Gte => " >= ",
                Cmp::Lt => " < ",
                Cmp::Lte => " <= ",
            };
            sql.push(op);
            sql.arg(scalar(v));
            sql.push(")");
        }
        Filter::In(c, values) => {
            sql.push("(");
            sql.column(*c);
            sql.push(" IN (");
            for (n, v) in values.iter().enumerate() {
                if n > 0 {
                    sql.push(", ");
                }
                sql.arg(scalar(v));
            }
            sql.push("))");
        }
        Filter::Range { column, from, to, negated } => {
            sql.push(if *negated { "NOT (1 = 1" } else { "(1 = 1" });
            if let Some(v) = from {
                sql.push(" AND ");
                sql.column(*column);
                sql.push(" >= ");
                sql.arg(scalar(v));
            }
            if let Some(v) = to {
                sql.push(" AND ");
                sql.column(*column);
                sql.push(" < ");
                sql.arg(scalar(v));
            }
            sql.push(")");
        }
        Filter::Property(k, v) => {
            // SQLite keeps properties in a table of their own, PostgreSQL in the image's row
            // (a JSON array of [name, value] pairs).
            let (name_is, value_is) = match sql.dialect {
                Dialect::Sqlite => (
                    "EXISTS (SELECT 1 FROM image_properties p WHERE p.image_id = i.id AND p.name = ",
                    " AND p.value = ",
                ),
                Dialect::Postgres => {
                    ("EXISTS (SELECT 1 FROM jsonb_array_elements(i.properties) AS p WHERE p->>0 = ", " AND p->>1 = ")
                }
            };
            sql.push(name_is);
            sql.arg(Arg::Text(k.clone()));
            sql.push(value_is);
            sql.arg(Arg::Text(v.clone()));
            sql.push(")");
        }
        Filter::Tag(t) => {
            sql.push("EXISTS (SELECT 1 FROM image_tags t WHERE t.image_id = i.id AND t.tag = ");
            sql.arg(Arg::Text(t.clone()));
            sql.push(")");
        }
    }
}

// --- Tasks ----------------------------------------------------------------------------------

/// The columns of `tasks`, in the order [`TaskRow`] holds them.
pub const TASK_COLUMNS: &str = "id, type, status, owner, image_id, request_id, user_id, input, result, message, \
                                expires_at, created_at, updated_at, node";

/// A row of `tasks` as both backends read it (JSON as text, times as microseconds).
pub struct TaskRow {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub owner: String,
    pub image_id: Option<String>,
    pub request_id: Option<String>,
    pub user_id: Option<String>,
    pub input: Option<String>,
    pub result: Option<String>,
    pub message: String,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub node: Option<String>,
}

impl TaskRow {
    pub fn into_task(self) -> Result<Task, String> {
        let time = |us: i64| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).map_err(|e| format!("a task time: {e}"))
        };
        let json = |text: Option<String>| -> Result<Option<serde_json::Value>, String> {
            text.map(|t| serde_json::from_str(&t).map_err(|e| format!("a task's JSON: {e}"))).transpose()
        };
        Ok(Task {
            status: TaskStatus::parse(&self.status).ok_or_else(|| format!("a task status {:?}", self.status))?,
            input: json(self.input)?,
            result: json(self.result)?,
            expires_at: self.expires_at.map(time).transpose()?,
            created_at: time(self.created_at)?,
            updated_at: time(self.updated_at)?,
            id: self.id,
            kind: self.kind,
            owner: self.owner,
            image_id: self.image_id,
            request_id: self.request_id,
            user_id: self.user_id,
            message: self.message,
            node: self.node,
        })
    }
}

fn text_or_null(v: &Option<String>) -> Arg {
    v.clone().map_or(Arg::Null, Arg::Text)
}

/// `INSERT` of task `t` (`update`: its `UPDATE`, by id).
pub fn task_write(dialect: Dialect, t: &Task, update: bool) -> Sql {
    let json = |v: &Option<serde_json::Value>| v.as_ref().map_or(Arg::Null, |v| Arg::Text(v.to_string()));
    let values = [
        Arg::Text(t.id.clone()),
        Arg::Text(t.kind.clone()),
        Arg::Text(t.status.as_str().to_owned()),
        Arg::Text(t.owner.clone()),
        text_or_null(&t.image_id),
        text_or_null(&t.request_id),
        text_or_null(&t.user_id),
        json(&t.input),
        json(&t.result),
        Arg::Text(t.message.clone()),
        t.expires_at.map_or(Arg::Null, |e| Arg::Int(micros(e))),
        Arg::Int(micros(t.created_at)),
        Arg::Int(micros(t.updated_at)),
        text_or_null(&t.node),
    ];
    let columns: Vec<&str> = TASK_COLUMNS.split(", ").collect();
    let mut sql;
    if update {
        sql = Sql::new(dialect, "UPDATE tasks SET ");
        for (n, (column, value)) in columns.iter().zip(values).enumerate().skip(1) {
            if n > 1 {
                sql.push(", ");
            }
            sql.push(column);
            sql.push(" = ");
            sql.arg(value);
        }
        sql.push(" WHERE id = ");
        sql.arg(Arg::Text(t.id.clone()));
    } else {
        sql = Sql::new(dialect, format!("INSERT INTO tasks ({TASK_COLUMNS}) VALUES ("));
        for (n, value) in values.into_iter().enumerate() {
            if n > 0 {
                sql.push(", ");
            }
            sql.arg(value);
        }
        sql.push(")");
    }
    sql
}

/// The page of unexpired tasks `q` asks for (at `now`), after the task `marker`.
pub fn task_listing(dialect: Dialect, q: &TaskQuery, marker: Option<&Task>, now: OffsetDateTime) -> Sql {
    let mut sql =
        Sql::new(dialect, format!("SELECT {TASK_COLUMNS} FROM tasks WHERE (expires_at IS NULL OR expires_at > "));
    sql.arg(Arg::Int(micros(now)));
    sql.push(")");
    let equal = |sql: &mut Sql, column: &str, value: &Option<String>| {
        if let Some(v) = value {
            sql.push(&format!(" AND {column} = "));
            sql.arg(Arg::Text(v.clone()));
        }
    };
    equal(&mut sql, "owner", &q.owner);
    equal(&mut sql, "status", &q.status.map(|s| s.as_str().to_owned()));
    equal(&mut sql, "type", &q.kind);
    equal(&mut sql, "image_id", &q.image_id);
    let collate = |key: &str, text: bool| match (dialect, text) {
        (Dialect::Postgres, true) => format!(r#"{key} COLLATE "C""#),
        _ => key.to_owned(),
    };
    let keys = [
        (collate(q.sort_key.column(), q.sort_key.is_text()), marker.map(|m| task_sort_value(m, q.sort_key))),
        ("created_at".to_owned(), marker.map(|m| Arg::Int(micros(m.created_at)))),
        (collate("id", true), marker.map(|m| Arg::Text(m.id.clone()))),
    ];
    let op = if q.descending { " < " } else { " > " };
    if marker.is_some() {
        // (k1, k2, k3) after the marker's, in the listing's direction.
        sql.push(" AND (");
        for n in 0..keys.len() {
            if n > 0 {
                sql.push(" OR ");
            }
            sql.push("(");
            for (m, (key, value)) in keys.iter().enumerate().take(n + 1) {
                if m > 0 {
                    sql.push(" AND ");
                }
                sql.push(key);
                sql.push(if m == n { op } else { " = " });
                sql.arg(value.clone().unwrap_or(Arg::Null));
            }
            sql.push(")");
        }
        sql.push(")");
    }
    let dir = if q.descending { " DESC" } else { " ASC" };
    let order: Vec<String> = keys.iter().map(|(k, _)| format!("{k}{dir}")).collect();
    sql.push(&format!(" ORDER BY {} LIMIT ", order.join(", ")));
    sql.arg(Arg::Int(q.limit as i64));
    sql
}

/// The value task `t` sorts by under `key`, as the listing's column holds it.
fn task_sort_value(t: &Task, key: TaskSortKey) -> Arg {
    let text = |v: &Option<String>| Arg::Text(v.clone().unwrap_or_default());
    match key {
        TaskSortKey::Id => Arg::Text(t.id.clone()),
        TaskSortKey::Type => Arg::Text(t.kind.clone()),
        TaskSortKey::Status => Arg::Text(t.status.as_str().to_owned()),
        TaskSortKey::Owner => Arg::Text(t.owner.clone()),
        TaskSortKey::ExpiresAt => Arg::Int(t.expires_at.map_or(0, micros)),
        TaskSortKey::CreatedAt => Arg::Int(micros(t.created_at)),
        TaskSortKey::UpdatedAt => Arg::Int(micros(t.updated_at)),
        TaskSortKey::ImageId => text(&t.image_id),
        TaskSortKey::RequestId => text(&t.request_id),
        TaskSortKey::UserId => text(&t.user_id),
    }
}

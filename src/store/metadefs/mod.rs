//! The metadata definitions catalogue's storage: the [`MetadefStore`] trait, and its one
//! implementation for both backends.
//!
//! # Layout
//! * Each operation is one transaction, written once in [`tx`] against [`Conn`]: a statement
//!   runner both backends provide ([`sqlite`], [`postgres`]). On SQLite the transaction runs on
//!   the writer thread (writes) or a reader's snapshot (reads), where every statement completes
//!   at once, so its future is polled once to completion there; on PostgreSQL it runs on a
//!   pooled connection, a write locking its namespace's row first (`FOR UPDATE`), a read in a
//!   repeatable-read snapshot.
//! * Each transaction finds its namespace, applies Glance's visibility rule, checks the
//!   operation's policy rule ([`crate::domain::policy::metadef_refusal`]) and only then changes
//!   anything. Uniqueness is the database's: a name taken meanwhile by another transaction is a
//!   unique violation, answered as the same conflict as one found before.

mod postgres;
mod sqlite;
mod tx;

use async_trait::async_trait;

use super::StoreError;
use super::sql::{Arg, Dialect, Sql};
use crate::domain::BadText;
use crate::domain::Principal;
use crate::domain::metadefs::{
    Association, Contents, Namespace, NamespaceContents, NamespaceFields, NewNamespace, NsVisibility, Object,
    PropertyDef, ResourceType, Tag,
};
use crate::domain::policy::{MetadefRule, Refusal};

pub use super::SortDir;

/// Why a metadef operation did not happen. The API words each for the route it answers.
#[derive(Debug, Clone)]
pub enum MetadefError {
    /// No namespace of that name.
    NamespaceNotFound,
    /// A namespace the caller's project neither owns nor sees as public.
    NamespaceInvisible,
    /// The operation's policy rule refused the caller.
    Refused(MetadefRule, Refusal),
    /// A delete in (or of) a protected namespace.
    Protected,
    ObjectNotFound,
    /// No property of that name (the name looked for, its prefix taken off).
    PropertyNotFound(String),
    TagNotFound,
    /// No resource type of that name.
    ResourceTypeNotFound,
    /// The namespace has no association with that resource type.
    AssociationNotFound,
    /// A property looked up for a resource type whose association's prefix (this one, `None`
    /// when it has none) the name does not start with.
    PrefixMismatch(Option<String>),
    /// The name is taken.
    Duplicate(Duplicate),
    /// The namespace (or the catalogue, for resource types) would hold more than `max`.
    TooMany {
        what: Limited,
        attempted: usize,
        max: usize,
    },
    /// Text a field cannot hold (the field's name).
    BadText {
        field: String,
        bad: BadText,
    },
    /// A listing's marker names nothing.
    MarkerNotFound,
    /// A namespace listing's marker names a namespace the caller does not see.
    MarkerInvisible,
    Store(StoreError),
}

/// What name is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Duplicate {
    Namespace(String),
    Object(String),
    Property(String),
    Tag(String),
    Association(String),
}

/// What [`MetadefError::TooMany`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Objects,
    Properties,
    Tags,
    Associations,
    ResourceTypes,
}

impl From<StoreError> for MetadefError {
    fn from(e: StoreError) -> Self {
        MetadefError::Store(e)
    }
}

/// A namespace listing (metadefs-spec §4.1).
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceQuery {
    pub limit: usize,
    /// Start after this namespace (a name).
    pub marker: Option<String>,
    pub sort_key: NamespaceColumn,
    pub sort_dir: SortDir,
    pub visibility: Option<NsVisibility>,
    /// Only namespaces associated with any of these resource types.
    pub resource_types: Option<Vec<String>>,
}

impl Default for NamespaceQuery {
    fn default() -> Self {
        NamespaceQuery {
            limit: 25,
            marker: None,
            sort_key: NamespaceColumn::CreatedAt,
            sort_dir: SortDir::Desc,
            visibility: None,
            resource_types: None,
        }
    }
}

/// The namespace columns a listing sorts on (Glance's `metadef_namespaces` columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceColumn {
    Id,
    Namespace,
    DisplayName,
    Description,
    Visibility,
    Protected,
    Owner,
    CreatedAt,
    UpdatedAt,
}

impl NamespaceColumn {
    pub const ALL: [NamespaceColumn; 9] = [
        Self::Id,
        Self::Namespace,
        Self::DisplayName,
        Self::Description,
        Self::Visibility,
        Self::Protected,
        Self::Owner,
        Self::CreatedAt,
        Self::UpdatedAt,
    ];

    pub fn parse(s: &str) -> Option<NamespaceColumn> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::Namespace => "namespace",
            Self::DisplayName => "display_name",
            Self::Description => "description",
            Self::Visibility => "visibility",
            Self::Protected => "protected",
            Self::Owner => "owner",
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
        }
    }
}

/// A tag listing (metadefs-spec §7): no limit means all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct TagQuery {
    pub limit: Option<usize>,
    /// Start after this tag (a name).
    pub marker: Option<String>,
    pub sort_key: TagColumn,
    pub sort_dir: SortDir,
}

impl Default for TagQuery {
    fn default() -> Self {
        TagQuery { limit: None, marker: None, sort_key: TagColumn::CreatedAt, sort_dir: SortDir::Desc }
    }
}

/// The tag columns a listing sorts on (Glance's `metadef_tags` columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagColumn {
    Id,
    NamespaceId,
    Name,
    CreatedAt,
    UpdatedAt,
}

impl TagColumn {
    pub const ALL: [TagColumn; 5] = [Self::Id, Self::NamespaceId, Self::Name, Self::CreatedAt, Self::UpdatedAt];

    pub fn parse(s: &str) -> Option<TagColumn> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Id => "id",
            Self::NamespaceId => "namespace_id",
            Self::Name => "name",
            Self::CreatedAt => "created_at",
            Self::UpdatedAt => "updated_at",
        }
    }
}

/// The metadata definitions catalogue. `who` is the caller: every operation applies Glance's
/// visibility rule and checks its policy rule (named in its documentation) before anything
/// else. An operation on a namespace's contents finds the namespace first
/// ([`MetadefError::NamespaceNotFound`], [`MetadefError::NamespaceInvisible`]).
#[async_trait]
pub trait MetadefStore: Send + Sync {
    /// A page of the namespaces `who` sees, each with its resource-type associations
    /// (`get_metadef_namespaces`, `list_metadef_resource_types`).
    async fn list_namespaces(
        &self,
        who: &Principal,
        query: &NamespaceQuery,
    ) -> Result<Vec<(Namespace, Vec<Association>)>, MetadefError>;

    /// A namespace with everything in it (`get_metadef_namespace`, then the rules of each
    /// collection's listing).
    async fn namespace(&self, who: &Principal, name: &str) -> Result<NamespaceContents, MetadefError>;

    /// Creates a namespace and what it holds, all or nothing (`add_metadef_namespace`, and
    /// the rule of adding each collection given).
    async fn create_namespace(&self, who: &Principal, new: NewNamespace) -> Result<Namespace, MetadefError>;

    /// Replaces a namespace's own fields, possibly renaming it (`modify_metadef_namespace`).
    /// Returns it with its timestamps as they were before (as Glance answers).
    async fn update_namespace(
        &self,
        who: &Principal,
        name: &str,
        fields: NamespaceFields,
    ) -> Result<Namespace, MetadefError>;

    /// Deletes an unprotected namespace and what it holds (`delete_metadef_namespace`).
    async fn delete_namespace(&self, who: &Principal, name: &str) -> Result<(), MetadefError>;

    /// Empties one collection of an unprotected namespace (`delete_metadef_namespace`, and
    /// `delete_metadef_tags` for tags).
    async fn delete_contents(&self, who: &Principal, name: &str, what: Contents) -> Result<(), MetadefError>;

    /// Every object, by name (`get_metadef_objects`).
    async fn objects(&self, who: &Principal, ns: &str) -> Result<Vec<Object>, MetadefError>;

    /// One object (`get_metadef_object`).
    async fn object(&self, who: &Principal, ns: &str, name: &str) -> Result<Object, MetadefError>;

    /// Adds an object (`add_metadef_object`); returns it with its timestamps.
    async fn create_object(&self, who: &Principal, ns: &str, object: Object) -> Result<Object, MetadefError>;

    /// Replaces (and may rename) an object (`modify_metadef_object`). Returns what was given
    /// with the timestamps as they were before.
    async fn update_object(
        &self,
        who: &Principal,
        ns: &str,
        name: &str,
        object: Object,
    ) -> Result<Object, MetadefError>;

    /// Deletes an object of an unprotected namespace (`delete_metadef_object`).
    async fn delete_object(&self, who: &Principal, ns: &str, name: &str) -> Result<(), MetadefError>;

    /// Every property, by name (`get_metadef_properties`).
    async fn properties(&self, who: &Principal, ns: &str) -> Result<Vec<(String, PropertyDef)>, MetadefError>;

    /// One property (`get_metadef_property`); for a resource type (also
    /// `get_metadef_resource_type`), `name` carries its association's prefix, which is taken
    /// off. Returns the property's own name.
    async fn property(
        &self,
        who: &Principal,
        ns: &str,
        name: &str,
        resource_type: Option<&str>,
    ) -> Result<(String, PropertyDef), MetadefError>;

    /// Adds a property (`add_metadef_property`).
    async fn create_property(
        &self,
        who: &Principal,
        ns: &str,
        name: &str,
        def: PropertyDef,
    ) -> Result<(), MetadefError>;

    /// Replaces property `name` with `new_name` and `def` (`modify_metadef_property`).
    async fn update_property(
        &self,
        who: &Principal,
        ns: &str,
        name: &str,
        new_name: &str,
        def: PropertyDef,
    ) -> Result<(), MetadefError>;

    /// Deletes a property of an unprotected namespace (`remove_metadef_property`).
    async fn delete_property(&self, who: &Principal, ns: &str, name: &str) -> Result<(), MetadefError>;

    /// A page of the tags (`get_metadef_tags`).
    async fn tags(&self, who: &Principal, ns: &str, query: &TagQuery) -> Result<Vec<Tag>, MetadefError>;

    /// One tag (`get_metadef_tag`); tag names match case-insensitively.
    async fn tag(&self, who: &Principal, ns: &str, name: &str) -> Result<Tag, MetadefError>;

    /// Adds a tag (`add_metadef_tag`).
    async fn create_tag(&self, who: &Principal, ns: &str, name: &str) -> Result<Tag, MetadefError>;

    /// Adds tags (`add_metadef_tags`), replacing all the namespace's tags unless `append`; no
    /// names changes nothing.
    async fn create_tags(
        &self,
        who: &Principal,
        ns: &str,
        names: Vec<String>,
        append: bool,
    ) -> Result<(), MetadefError>;

    /// Renames a tag (`modify_metadef_tag`); returns it with its timestamps as they were.
    async fn update_tag(&self, who: &Principal, ns: &str, name: &str, new_name: &str) -> Result<Tag, MetadefError>;

    /// Deletes a tag of an unprotected namespace (`delete_metadef_tag`).
    async fn delete_tag(&self, who: &Principal, ns: &str, name: &str) -> Result<(), MetadefError>;

    /// Every resource type, in the order they came (`list_metadef_resource_types`).
    async fn resource_types(&self, who: &Principal) -> Result<Vec<ResourceType>, MetadefError>;

    /// A namespace's associations, in the order they came (`list_metadef_resource_types`).
    async fn associations(&self, who: &Principal, ns: &str) -> Result<Vec<Association>, MetadefError>;

    /// Associates a namespace with a resource type, creating the type if it is new
    /// (`add_metadef_resource_type_association`).
    async fn create_association(
        &self,
        who: &Principal,
        ns: &str,
        association: Association,
    ) -> Result<Association, MetadefError>;

    /// Ends an association of an unprotected namespace
    /// (`remove_metadef_resource_type_association`).
    async fn delete_association(&self, who: &Principal, ns: &str, resource_type: &str) -> Result<(), MetadefError>;

    /// The operator's load of a definition file: creates the namespace as Glance's
    /// `db_load_metadefs` does (no `updated_at` anywhere, new resource types protected), or
    /// does nothing when one of that name exists. Whether it was created.
    async fn load_namespace(&self, new: NewNamespace) -> Result<bool, MetadefError>;
}

/// Runs the statements of a metadef transaction: what each backend provides.
pub(crate) trait Conn {
    fn dialect(&self) -> Dialect;

    /// The rows of a query, each column as an [`Arg`] (booleans as SQLite stores them,
    /// integers, are read either way).
    async fn query(&self, sql: Sql) -> Result<Vec<Row>, DbError>;

    /// The number of rows a statement changed.
    async fn execute(&self, sql: Sql) -> Result<u64, DbError>;
}

/// A statement's failure, as a transaction tells them apart.
#[derive(Debug, Clone)]
pub(crate) enum DbError {
    /// A unique constraint refused a row.
    Unique,
    /// A foreign key refused a row (its namespace was deleted meanwhile).
    ForeignKey,
    Store(StoreError),
}

impl From<DbError> for MetadefError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Store(e) => MetadefError::Store(e),
            // Every insert that can meet a constraint handles it where it runs.
            other => MetadefError::Store(StoreError::Internal(format!("unexpected constraint violation: {other:?}"))),
        }
    }
}

/// A row of a query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row(pub Vec<Arg>);

fn bad_row(what: &str, at: usize) -> DbError {
    DbError::Store(StoreError::Internal(format!("column {at} of a metadef row is not {what}")))
}

impl Row {
    fn get(&self, at: usize) -> &Arg {
        self.0.get(at).unwrap_or(&Arg::Null)
    }

    pub fn int(&self, at: usize) -> Result<i64, DbError> {
        self.opt_int(at)?.ok_or_else(|| bad_row("an integer", at))
    }

    pub fn opt_int(&self, at: usize) -> Result<Option<i64>, DbError> {
        match self.get(at) {
            Arg::Null => Ok(None),
            Arg::Int(n) => Ok(Some(*n)),
            _ => Err(bad_row("an integer", at)),
        }
    }

    pub fn text(&self, at: usize) -> Result<String, DbError> {
        self.opt_text(at)?.ok_or_else(|| bad_row("text", at))
    }

    pub fn opt_text(&self, at: usize) -> Result<Option<String>, DbError> {
        match self.get(at) {
            Arg::Null => Ok(None),
            Arg::Text(s) => Ok(Some(s.clone())),
            _ => Err(bad_row("text", at)),
        }
    }

    pub fn opt_bool(&self, at: usize) -> Result<Option<bool>, DbError> {
        match self.get(at) {
            Arg::Null => Ok(None),
            Arg::Bool(b) => Ok(Some(*b)),
            Arg::Int(n) => Ok(Some(*n != 0)),
            _ => Err(bad_row("a boolean", at)),
        }
    }

    pub fn time(&self, at: usize) -> Result<time::OffsetDateTime, DbError> {
        self.opt_time(at)?.ok_or_else(|| bad_row("a time", at))
    }

    pub fn opt_time(&self, at: usize) -> Result<Option<time::OffsetDateTime>, DbError> {
        match self.opt_int(at)? {
            None => Ok(None),
            Some(us) => time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
                .map(Some)
                .map_err(|_| bad_row("a time in range", at)),
        }
    }
}

/// A statement from `text` for `dialect`: each `?` becomes the next placeholder (bound to
/// the next of `args`), `@C` orders text in byte order, `@LOCK` locks the rows read for the
/// transaction. The text holds no other `?` and no `@`.
pub(crate) fn statement(dialect: Dialect, text: &str, args: Vec<Arg>) -> Sql {
    let (collate, lock) = match dialect {
        Dialect::Sqlite => ("", ""),
        Dialect::Postgres => (r#" COLLATE "C""#, " FOR UPDATE"),
    };
    let text = text.replace("@C", collate).replace("@LOCK", lock);
    let mut sql = Sql::new(dialect, "");
    let mut args = args.into_iter();
    for (n, part) in text.split('?').enumerate() {
        if n > 0 {
            sql.arg(args.next().unwrap_or(Arg::Null));
        }
        sql.push(part);
    }
    sql
}

impl From<&str> for Arg {
    fn from(s: &str) -> Arg {
        Arg::Text(s.to_owned())
    }
}

impl From<String> for Arg {
    fn from(s: String) -> Arg {
        Arg::Text(s)
    }
}

impl From<&String> for Arg {
    fn from(s: &String) -> Arg {
        Arg::Text(s.clone())
    }
}

impl From<i64> for Arg {
    fn from(n: i64) -> Arg {
        Arg::Int(n)
    }
}

impl From<bool> for Arg {
    fn from(b: bool) -> Arg {
        Arg::Bool(b)
    }
}

impl<T: Into<Arg>> From<Option<T>> for Arg {
    fn from(v: Option<T>) -> Arg {
        v.map_or(Arg::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_number_their_placeholders_per_dialect() {
        let pg = statement(
            Dialect::Postgres,
            "SELECT a FROM t WHERE b = ? AND c = ? ORDER BY a@C@LOCK",
            vec![Arg::Int(1), Arg::Text("x".into())],
        );
        assert_eq!(pg.text, r#"SELECT a FROM t WHERE b = $1 AND c = $2 ORDER BY a COLLATE "C" FOR UPDATE"#);
        assert_eq!(pg.args, vec![Arg::Int(1), Arg::Text("x".into())]);
        let lite = statement(Dialect::Sqlite, "SELECT a FROM t WHERE b = ?@LOCK", vec![Arg::Int(1)]);
        assert_eq!(lite.text, "SELECT a FROM t WHERE b = ?1");
    }
}

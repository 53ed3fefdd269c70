//! The metadef transactions on SQLite: writes on the writer thread (each in its savepoint of
//! the batch), reads in a reader's snapshot. Every statement runs to completion when it is
//! called, so a transaction's future completes the first time it is polled.

use async_trait::async_trait;
use futures_util::FutureExt;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, params_from_iter};

use super::tx::{self, Made};
use super::{Conn, DbError, MetadefError, MetadefStore, NamespaceQuery, Row, TagQuery};
use crate::domain::metadefs::{
    Association, Contents, Namespace, NamespaceContents, NamespaceFields, NewNamespace, Object, PropertyDef,
    ResourceType, Tag,
};
use crate::domain::{Principal, now};
use crate::store::StoreError;
use crate::store::sql::{Arg, Dialect, Sql};
use crate::store::sqlite::{Kind, SqliteStore, bind};

pub(crate) struct SqliteConn<'a>(&'a Connection);

fn db_error(e: rusqlite::Error) -> DbError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        match f.extended_code {
            rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                return DbError::Unique;
            }
            rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => return DbError::ForeignKey,
            _ => {}
        }
    }
    DbError::Store(StoreError::from(e))
}

impl Conn for SqliteConn<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn query(&self, sql: Sql) -> Result<Vec<Row>, DbError> {
        let mut stmt = self.0.prepare_cached(&sql.text).map_err(db_error)?;
        let columns = stmt.column_count();
        let mut rows = stmt.query(params_from_iter(sql.args.into_iter().map(bind))).map_err(db_error)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(db_error)? {
            let mut values = Vec::with_capacity(columns);
            for i in 0..columns {
                values.push(match r.get_ref(i).map_err(db_error)? {
                    ValueRef::Null => Arg::Null,
                    ValueRef::Integer(n) => Arg::Int(n),
                    ValueRef::Text(t) => Arg::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Real(_) | ValueRef::Blob(_) => {
                        return Err(DbError::Store(StoreError::Internal("a metadef column of an unknown type".into())));
                    }
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }

    async fn execute(&self, sql: Sql) -> Result<u64, DbError> {
        let mut stmt = self.0.prepare_cached(&sql.text).map_err(db_error)?;
        let n = stmt.execute(params_from_iter(sql.args.into_iter().map(bind))).map_err(db_error)?;
        Ok(n as u64)
    }
}

/// Runs a transaction's future, which completes when first polled (see the module docs).
fn run<R>(f: impl Future<Output = Result<R, MetadefError>>) -> Result<R, MetadefError> {
    f.now_or_never().unwrap_or_else(|| {
        Err(MetadefError::Store(StoreError::Internal("a SQLite metadef transaction did not complete".into())))
    })
}

impl SqliteStore {
    async fn metadef_read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&SqliteConn<'_>) -> Result<R, MetadefError> + Send + 'static,
    ) -> Result<R, MetadefError> {
        self.read(move |c| Ok(f(&SqliteConn(c)))).await?
    }

    async fn metadef_write<R: Send + 'static>(
        &self,
        kind: Kind,
        f: impl FnOnce(&SqliteConn<'_>) -> Result<R, MetadefError> + Send + 'static,
    ) -> Result<R, MetadefError> {
        let written = self
            .write_refusable(kind, move |c| match f(&SqliteConn(c)) {
                Err(MetadefError::Store(e)) => Err(e),
                other => Ok(other),
            })
            .await;
        written.map_err(MetadefError::Store)?
    }
}

#[async_trait]
impl MetadefStore for SqliteStore {
    async fn list_namespaces(
        &self,
        who: &Principal,
        query: &NamespaceQuery,
    ) -> Result<Vec<(Namespace, Vec<Association>)>, MetadefError> {
        let (who, query) = (who.clone(), query.clone());
        self.metadef_read(move |c| run(tx::list_namespaces(c, &who, &query))).await
    }

    async fn namespace(&self, who: &Principal, name: &str) -> Result<NamespaceContents, MetadefError> {
        let (who, name) = (who.clone(), name.to_owned());
        self.metadef_read(move |c| run(tx::namespace(c, &who, &name))).await
    }

    async fn create_namespace(&self, who: &Principal, new: NewNamespace) -> Result<Namespace, MetadefError> {
        let who = who.clone();
        let made = Made { at: now(), loaded: false };
        self.metadef_write(Kind::Grows, move |c| run(tx::create_namespace(c, &who, &new, made))).await
    }

    async fn update_namespace(
        &self,
        who: &Principal,
        name: &str,
        fields: NamespaceFields,
    ) -> Result<Namespace, MetadefError> {
        let (who, name) = (who.clone(), name.to_owned());
        self.metadef_write(Kind::Grows, move |c| run(tx::update_namespace(c, &who, &name, &fields, now()))).await
    }

    async fn delete_namespace(&self, who: &Principal, name: &str) -> Result<(), MetadefError> {
        let (who, name) = (who.clone(), name.to_owned());
        self.metadef_write(Kind::Frees, move |c| run(tx::delete_namespace(c, &who, &name))).await
    }

    async fn delete_contents(&self, who: &Principal, name: &str, what: Contents) -> Result<(), MetadefError> {
        let (who, name) = (who.clone(), name.to_owned());
        self.metadef_write(Kind::Frees, move |c| run(tx::delete_contents(c, &who, &name, what))).await
    }

    async fn objects(&self, who: &Principal, ns: &str) -> Result<Vec<Object>, MetadefError> {
        let (who, ns) = (who.clone(), ns.to_owned());
        self.metadef_read(move |c| run(tx::objects(c, &who, &ns))).await
    }

    async fn object(&self, who: &Principal, ns: &str, name: &str) -> Result<Object, MetadefError> {
        let (who, ns, name) = (who.clone(), ns.to_owned(), name.to_owned());
        self.metadef_read(move |c| run(tx::object(c, &who, &ns, &name))).await
    }

    async fn create_object(&self, who: &Principal, ns: &str, object: Object) -> Result<Object, MetadefError> {
        let (who, ns) = (who.clone(), ns.to_owned());
        self.metadef_write(Kind::Grows, move |c| run(tx::create_object(c, &who, &ns, &object, now()))).await
    }

    async fn update_object(
        &self,
        who: &Principal,
        ns: &str,
        name: &str,
        object: Object,
    ) -> Result<Object, MetadefError> {
        let (who, ns, name) = (who.clone(), ns.to_owned(), name.to_owned());
        self.metadef_write(Kind::Grows, move |c| run(tx::update_object(c, &who, &ns, &name, &object, now()))).await
    }

    async fn delete_object(&self, who: &Principal, ns: &str, name: &str) -> Result<(), MetadefError> {
        let (who, ns, name) = (who.clone(), ns.to_owned(), name.to_owned());
        self.metadef_write(Kind::Frees, move |c| run(tx::delete_object(c, &who, &ns, &name))).await
    }

    async fn properties(&self, who: &Principal, ns: &str) -> Result<Vec<(String, PropertyDef)>, MetadefError> {
        let (who, ns) = (who.clone(), ns.to_owned());
        self.metadef_read(move |c| run(tx::properties(c, &who, &ns))).await
    }

    async fn property(
        &self,
        who: &Principal,
        ns: &str,
        name: &str,
        resource_type: Option<&str>,
    ) -> Result<(String, PropertyDef), MetadefError> {
        let (who, ns, name, rt) = (who.clone(), ns.to_owned(), name.to_owned(), resource_type.map(str::to_owned));
        self.metadef_read(move |c| run(tx::property(c, &who, &ns, &name, rt.as_deref()))).await
    }

    async fn create_property(
        &self,
        who: &Principal,
        ns: &str,
        name: &str,
        def: PropertyDef,
    ) -> Result<(), MetadefError> {
        let (who, ns, name) = (who.clone(), ns.to_owned(), name.to_owned());
        self.metadef_write(Kind::Grows, move |c| run(tx::create_property(c, &who, &ns, &name, &def))).await
    }

    async fn update_property(
        &self,
        who: &Principal,
        ns: &str,
        name: &str,
        new_name: &str,
        def: PropertyDef,
    ) -> Result<(), MetadefError> {
        let (who, ns, name, new_name) = (who.clone(), ns.to_owned(), name.to_owned(), new_name.to_owned());
        self.metadef_write(Kind::Grows, move |c| run(tx::update_property(c, &who, &ns, &name, &new_name, &def))).await
    }

    async fn delete_property(&self, who: &Principal, ns: &str, name: &str) -> Result<(), MetadefError> {
        let (who, ns, name) = (who.clone(), ns.to_owned(), name.to_owned());
        self.metadef_write(Kind::Frees, move |c| run(tx::delete_property(c, &who, &ns, &name))).await
    }

    async fn tags(&self, who: &Principal, ns: &str, query: &TagQuery) -> Result<Vec<Tag>, MetadefError> {
        let (who, ns, query) = (who.clone(), ns.to_owned(), query.clone());
        self.metadef_read(move |c| run(tx::tags(c, &who, &ns, &query))).await
    }

    async fn tag(&self, who: &Principal, ns: &str, name: &str) -> Result<Tag, MetadefError> {
        let (who, ns, name) = (who.clone(), ns.to_owned(), name.to_owned());
        self.metadef_read(move |c| run(tx::tag(c, &who, &ns, &name))).await
    }

    async fn create_tag(&self, who: &Principal, ns: &str, name: &str) -> Result<Tag, MetadefError> {
        let (who, ns, name) = (who.clone(), ns.to_owned(), name.to_owned());
        self.metadef_write(Kind::Grows, move |c| run(tx::create_tag(c, &who, &ns, &name, now()))).await
    }

    async fn create_tags(
        &self,
        who: &Principal,
        ns: &str,
        names: Vec<String>,
        append: bool,
    ) -> Result<(), MetadefError> {
        let (who, ns) = (who.clone(), ns.to_owned());
        self.metadef_write(Kind::Grows, move |c| run(tx::create_tags(c, &who, &ns, &names, append, now()))).await
    }

    async fn update_tag(&self, who: &Principal, ns: &str, name: &str, new_name: &str) -> Result<Tag, MetadefError> {
        let (who, ns, name, new_name) = (who.clone(), ns.to_owned(), name.to_owned(), new_name.to_owned());
        self.metadef_write(Kind::Grows, move |c| run(tx::update_tag(c, &who, &ns, &name, &new_name, now()))).await
    }

    async fn delete_tag(&self, who: &Principal, ns: &str, name: &str) -> Result<(), MetadefError> {
        let (who, ns, name) = (who.clone(), ns.to_owned(), name.to_owned());
        self.metadef_write(Kind::Frees, move |c| run(tx::delete_tag(c, &who, &ns, &name))).await
    }

    async fn resource_types(&self, who: &Principal) -> Result<Vec<ResourceType>, MetadefError> {
        let who = who.clone();
        self.metadef_read(move |c| run(tx::resource_types(c, &who))).await
    }

    async fn associations(&self, who: &Principal, ns: &str) -> Result<Vec<Association>, MetadefError> {
        let (who, ns) = (who.clone(), ns.to_owned());
        self.metadef_read(move |c| run(tx::associations(c, &who, &ns))).await
    }

    async fn create_association(
        &self,
        who: &Principal,
        ns: &str,
        association: Association,
    ) -> Result<Association, MetadefError> {
        let (who, ns) = (who.clone(), ns.to_owned());
        self.metadef_write(Kind::Grows, move |c| run(tx::create_association(c, &who, &ns, &association, now()))).await
    }

    async fn delete_association(&self, who: &Principal, ns: &str, resource_type: &str) -> Result<(), MetadefError> {
        let (who, ns, rt) = (who.clone(), ns.to_owned(), resource_type.to_owned());
        self.metadef_write(Kind::Frees, move |c| run(tx::delete_association(c, &who, &ns, &rt))).await
    }

    async fn load_namespace(&self, new: NewNamespace) -> Result<bool, MetadefError> {
        let made = Made { at: now(), loaded: true };
        self.metadef_write(Kind::Grows, move |c| run(tx::load_namespace(c, &new, made))).await
    }
}

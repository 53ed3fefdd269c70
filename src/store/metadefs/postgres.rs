//! The metadef transactions on PostgreSQL, each on a pooled connection within the store's
//! operation timeout: writes under READ COMMITTED with their namespace's row locked, reads in a
//! read-only repeatable-read snapshot (a namespace and its contents as of one moment).

use async_trait::async_trait;
use tokio_postgres::IsolationLevel;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use super::tx::{self, Made};
use super::{Conn, DbError, MetadefError, MetadefStore, NamespaceQuery, Row, TagQuery};
use crate::domain::metadefs::{
    Association, Contents, Namespace, NamespaceContents, NamespaceFields, NewNamespace, Object, PropertyDef,
    ResourceType, Tag,
};
use crate::domain::{Principal, now};
use crate::store::StoreError;
use crate::store::postgres::{PgStore, bind, refs};
use crate::store::sql::{Arg, Dialect, Sql};

pub(crate) struct PgConn<'a>(&'a deadpool_postgres::Transaction<'a>);

fn db_error(e: tokio_postgres::Error) -> DbError {
    match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => DbError::Unique,
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION => DbError::ForeignKey,
        _ => DbError::Store(StoreError::from(e)),
    }
}

fn value(row: &tokio_postgres::Row, at: usize) -> Result<Arg, DbError> {
    let ty = row.columns()[at].type_().clone();
    let got = match ty {
        Type::BOOL => row.try_get::<_, Option<bool>>(at).map(|v| v.map_or(Arg::Null, Arg::Bool)),
        Type::INT8 => row.try_get::<_, Option<i64>>(at).map(|v| v.map_or(Arg::Null, Arg::Int)),
        Type::INT4 => row.try_get::<_, Option<i32>>(at).map(|v| v.map_or(Arg::Null, |n| Arg::Int(n.into()))),
        Type::TEXT | Type::VARCHAR => row.try_get::<_, Option<String>>(at).map(|v| v.map_or(Arg::Null, Arg::Text)),
        other => {
            return Err(DbError::Store(StoreError::Internal(format!("a metadef column of type {other}"))));
        }
    };
    got.map_err(db_error)
}

impl Conn for PgConn<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn query(&self, sql: Sql) -> Result<Vec<Row>, DbError> {
        let stmt = self.0.prepare_cached(&sql.text).await.map_err(db_error)?;
        let args = bind(sql.args);
        let found = self.0.query(&stmt, &refs(&args)).await.map_err(db_error)?;
        found.iter().map(|r| Ok(Row((0..r.len()).map(|i| value(r, i)).collect::<Result<_, _>>()?))).collect()
    }

    async fn execute(&self, sql: Sql) -> Result<u64, DbError> {
        let stmt = self.0.prepare_cached(&sql.text).await.map_err(db_error)?;
        let args = bind(sql.args);
        self.0.execute(&stmt, &refs(&args)).await.map_err(db_error)
    }
}

/// A metadef transaction's outcome inside [`PgStore::with`], which discards a connection only
/// on its own failures: those go out as its error, refusals inside.
fn split<R>(r: Result<R, MetadefError>) -> Result<Result<R, MetadefError>, StoreError> {
    match r {
        Err(MetadefError::Store(e)) => Err(e),
        other => Ok(other),
    }
}

impl PgStore {
    async fn metadef_read<R>(
        &self,
        f: impl AsyncFnOnce(&PgConn<'_>) -> Result<R, MetadefError>,
    ) -> Result<R, MetadefError> {
        self.with(async |c| {
            let tx =
                c.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start().await?;
            let result = f(&PgConn(&tx)).await;
            let _ = tx.commit().await;
            split(result)
        })
        .await?
    }

    async fn metadef_write<R>(
        &self,
        f: impl AsyncFnOnce(&PgConn<'_>) -> Result<R, MetadefError>,
    ) -> Result<R, MetadefError> {
        self.with(async |c| {
            let tx = c.transaction().await?;
            let result = f(&PgConn(&tx)).await;
            match result {
                Ok(r) => {
                    tx.commit().await?;
                    Ok(Ok(r))
                }
                Err(e) => {
                    tx.rollback().await?;
                    split(Err(e))
                }
            }
        })
        .await?
    }
}

#[async_trait]
impl MetadefStore for PgStore {
    async fn list_namespaces(
        &self,
        who: &Principal,
        query: &NamespaceQuery,
    ) -> Result<Vec<(Namespace, Vec<Association>)>, MetadefError> {
        self.metadef_read(async |c| tx::list_namespaces(c, who, query).await).await
    }

    async fn namespace(&self, who: &Principal, name: &str) -> Result<NamespaceContents, MetadefError> {
        self.metadef_read(async |c| tx::namespace(c, who, name).await).await
    }

    async fn create_namespace(&self, who: &Principal, new: NewNamespace) -> Result<Namespace, MetadefError> {
        let made = Made { at: now(), loaded: false };
        self.metadef_write(async |c| tx::create_namespace(c, who, &new, made).await).await
    }

    async fn update_namespace(
        &self,
        who: &Principal,
        name: &str,
        fields: NamespaceFields,
    ) -> Result<Namespace, MetadefError> {
        self.metadef_write(async |c| tx::update_namespace(c, who, name, &fields, now()).await).await
    }

    async fn delete_namespace(&self, who: &Principal, name: &str) -> Result<(), MetadefError> {
        self.metadef_write(async |c| tx::delete_namespace(c, who, name).await).await
    }

    async fn delete_contents(&self, who: &Principal, name: &str, what: Contents) -> Result<(), MetadefError> {
        self.metadef_write(async |c| tx::delete_contents(c, who, name, what).await).await
    }

    async fn objects(&self, who: &Principal, ns: &str) -> Result<Vec<Object>, MetadefError> {
        self.metadef_read(async |c| tx::objects(c, who, ns).await).await
    }

    async fn object(&self, who: &Principal, ns: &str, name: &str) -> Result<Object, MetadefError> {
        self.metadef_read(async |c| tx::object(c, who, ns, name).await).await
    }

    async fn create_object(&self, who: &Principal, ns: &str, object: Object) -> Result<Object, MetadefError> {
        self.metadef_write(async |c| tx::create_object(c, who, ns, &object, now()).await).await
    }

    async fn update_object(
        &self,
        who: &Principal,
        ns: &str,
        name: &str,
        object: Object,
    ) -> Result<Object, MetadefError> {
        self.metadef_write(async |c| tx::update_object(c, who, ns, name, &object, now()).await).await
    }

    async fn delete_object(&self, who: &Principal, ns: &str, name: &str) -> Result<(), MetadefError> {
        self.metadef_write(async |c| tx::delete_object(c, who, ns, name).await).await
    }

    async fn properties(&self, who: &Principal, ns: &str) -> Result<Vec<(String, PropertyDef)>, MetadefError> {
        self.metadef_read(async |c| tx::properties(c, who, ns).await).await
    }

    async fn property(
        &self,
        who: &Principal,
        ns: &str,
        name: &str,
        resource_type: Option<&str>,
    ) -> Result<(String, PropertyDef), MetadefError> {
        self.metadef_read(async |c| tx::property(c, who, ns, name, resource_type).await).await
    }

    async fn create_property(
        &self,
        who: &Principal,
        ns: &str,
        name: &str,
        def: PropertyDef,
    ) -> Result<(), MetadefError> {
        self.metadef_write(async |c| tx::create_property(c, who, ns, name, &def).await).await
    }

    async fn update_property(
        &self,
        who: &Principal,
        ns: &str,
        name: &str,
        new_name: &str,
        def: PropertyDef,
    ) -> Result<(), MetadefError> {
        self.metadef_write(async |c| tx::update_property(c, who, ns, name, new_name, &def).await).await
    }

    async fn delete_property(&self, who: &Principal, ns: &str, name: &str) -> Result<(), MetadefError> {
        self.metadef_write(async |c| tx::delete_property(c, who, ns, name).await).await
    }

    async fn tags(&self, who: &Principal, ns: &str, query: &TagQuery) -> Result<Vec<Tag>, MetadefError> {
        self.metadef_read(async |c| tx::tags(c, who, ns, query).await).await
    }

    async fn tag(&self, who: &Principal, ns: &str, name: &str) -> Result<Tag, MetadefError> {
        self.metadef_read(async |c| tx::tag(c, who, ns, name).await).await
    }

    async fn create_tag(&self, who: &Principal, ns: &str, name: &str) -> Result<Tag, MetadefError> {
        self.metadef_write(async |c| tx::create_tag(c, who, ns, name, now()).await).await
    }

    async fn create_tags(
        &self,
        who: &Principal,
        ns: &str,
        names: Vec<String>,
        append: bool,
    ) -> Result<(), MetadefError> {
        self.metadef_write(async |c| tx::create_tags(c, who, ns, &names, append, now()).await).await
    }

    async fn update_tag(&self, who: &Principal, ns: &str, name: &str, new_name: &str) -> Result<Tag, MetadefError> {
        self.metadef_write(async |c| tx::update_tag(c, who, ns, name, new_name, now()).await).await
    }

    async fn delete_tag(&self, who: &Principal, ns: &str, name: &str) -> Result<(), MetadefError> {
        self.metadef_write(async |c| tx::delete_tag(c, who, ns, name).await).await
    }

    async fn resource_types(&self, who: &Principal) -> Result<Vec<ResourceType>, MetadefError> {
        self.metadef_read(async |c| tx::resource_types(c, who).await).await
    }

    async fn associations(&self, who: &Principal, ns: &str) -> Result<Vec<Association>, MetadefError> {
        self.metadef_read(async |c| tx::associations(c, who, ns).await).await
    }

    async fn create_association(
        &self,
        who: &Principal,
        ns: &str,
        association: Association,
    ) -> Result<Association, MetadefError> {
        self.metadef_write(async |c| tx::create_association(c, who, ns, &association, now()).await).await
    }

    async fn delete_association(&self, who: &Principal, ns: &str, resource_type: &str) -> Result<(), MetadefError> {
        self.metadef_write(async |c| tx::delete_association(c, who, ns, resource_type).await).await
    }

    async fn load_namespace(&self, new: NewNamespace) -> Result<bool, MetadefError> {
        let made = Made { at: now(), loaded: true };
        self.metadef_write(async |c| tx::load_namespace(c, &new, made).await).await
    }
}

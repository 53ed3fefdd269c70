//! Every metadef transaction, once for both backends (see the module's layout).

use serde_json::Value;
use time::OffsetDateTime;

use super::{
    Conn, DbError, Duplicate, Limited, MetadefError, NamespaceColumn, NamespaceQuery, Row, TagColumn, TagQuery,
    statement,
};
use crate::domain::Principal;
use crate::domain::metadefs::{
    Association, Contents, MAX_PER_NAMESPACE, MAX_RESOURCE_TYPES, Namespace, NamespaceContents, NamespaceFields,
    NewNamespace, NsVisibility, Object, PropertyDef, ResourceType, Tag, properties_from_json, properties_to_json,
    unstorable,
};
use crate::domain::policy::{self, MetadefRule, NamespaceTarget};
use crate::store::StoreError;
use crate::store::sql::{Arg, Key, Sql, micros};

type Result<T, E = MetadefError> = std::result::Result<T, E>;

macro_rules! args {
    ($($a:expr),* $(,)?) => { vec![$(Arg::from($a)),*] };
}

async fn rows<C: Conn>(c: &C, text: &str, args: Vec<Arg>) -> Result<Vec<Row>, DbError> {
    c.query(statement(c.dialect(), text, args)).await
}

async fn row<C: Conn>(c: &C, text: &str, args: Vec<Arg>) -> Result<Option<Row>, DbError> {
    Ok(rows(c, text, args).await?.into_iter().next())
}

async fn exec<C: Conn>(c: &C, text: &str, args: Vec<Arg>) -> Result<u64, DbError> {
    c.execute(statement(c.dialect(), text, args)).await
}

/// Runs an insert or update whose unique constraint means `duplicate`.
async fn exec_unique<C: Conn>(c: &C, text: &str, args: Vec<Arg>, duplicate: Duplicate) -> Result<u64> {
    match exec(c, text, args).await {
        Err(DbError::Unique) => Err(MetadefError::Duplicate(duplicate)),
        // The namespace went away under this transaction (SQLite cannot, PostgreSQL locked it).
        Err(DbError::ForeignKey) => Err(MetadefError::NamespaceNotFound),
        other => Ok(other?),
    }
}

/// Names that cannot be stored (NUL): no row has them.
fn impossible(name: &str) -> bool {
    name.contains('\0')
}

const NS_COLUMNS: &str =
    "n.id, n.namespace, n.display_name, n.description, n.visibility, n.protected, n.owner, n.created_at, n.updated_at";

/// A namespace row and its key.
struct Ns {
    id: i64,
    ns: Namespace,
}

impl Ns {
    fn target(&self) -> NamespaceTarget {
        NamespaceTarget::of(&self.ns)
    }
}

fn namespace_from(r: &Row) -> Result<Ns, DbError> {
    let visibility = match r.opt_text(4)? {
        None => None,
        Some(v) => Some(NsVisibility::parse(&v).ok_or_else(|| {
            DbError::Store(StoreError::Internal(format!("unknown namespace visibility {v:?} in the database")))
        })?),
    };
    Ok(Ns {
        id: r.int(0)?,
        ns: Namespace {
            fields: NamespaceFields {
                name: r.text(1)?,
                display_name: r.opt_text(2)?,
                description: r.opt_text(3)?,
                visibility,
                protected: r.opt_bool(5)?,
                owner: r.text(6)?,
            },
            created_at: r.time(7)?,
            updated_at: r.opt_time(8)?,
        },
    })
}

async fn find_namespace<C: Conn>(c: &C, name: &str, lock: bool) -> Result<Option<Ns>, DbError> {
    if impossible(name) {
        return Ok(None);
    }
    let lock = if lock { "@LOCK" } else { "" };
    let text = format!("SELECT {NS_COLUMNS} FROM metadef_namespaces n WHERE n.namespace = ?{lock}");
    row(c, &text, args![name]).await?.map(|r| namespace_from(&r)).transpose()
}

/// Namespace `name` as `who` may see it (locked for the transaction when `lock`: every write).
async fn visible_namespace<C: Conn>(c: &C, who: &Principal, name: &str, lock: bool) -> Result<Ns> {
    let ns = find_namespace(c, name, lock).await?.ok_or(MetadefError::NamespaceNotFound)?;
    if !policy::sees_namespace(who, &ns.ns) {
        return Err(MetadefError::NamespaceInvisible);
    }
    Ok(ns)
}

/// Refuses unless `who` may do `rule` (on `ns`).
fn check(who: &Principal, rule: MetadefRule, ns: Option<&Ns>) -> Result<()> {
    match policy::metadef_refusal(who, rule, ns.map(Ns::target).as_ref()) {
        None => Ok(()),
        Some(refusal) => Err(MetadefError::Refused(rule, refusal)),
    }
}

/// Refuses text the catalogue cannot hold: 4-byte characters where Glance refuses them
/// (`bmp_only`), NUL anywhere.
fn storable(fields: &[(&str, &str)], bmp_only: bool) -> Result<()> {
    match unstorable(fields, bmp_only) {
        Some((field, bad)) => Err(MetadefError::BadText { field: field.to_owned(), bad }),
        None => Ok(()),
    }
}

fn namespace_text(f: &NamespaceFields, bmp_only: bool) -> Result<()> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let (display_name, description) = (opt(&f.display_name), opt(&f.description));
    storable(
        &[("namespace", &f.name), ("display_name", &display_name), ("description", &description), ("owner", &f.owner)],
        bmp_only,
    )
}

fn object_text(o: &Object, bmp_only: bool) -> Result<()> {
    let description = o.description.clone().unwrap_or_default();
    storable(&[("name", &o.name), ("description", &description)], bmp_only)?;
    for r in o.required.iter().flatten() {
        storable(&[("required", r)], bmp_only)?;
    }
    Ok(())
}

fn association_text(a: &Association) -> Result<()> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let (prefix, target) = (opt(&a.prefix), opt(&a.properties_target));
    // Glance does not look for 4-byte characters here.
    storable(&[("name", &a.name), ("prefix", &prefix), ("properties_target", &target)], false)
}

/// Refuses a namespace that would hold more than its share of `what`, in `table`, with
/// `adding` more.
async fn room<C: Conn>(c: &C, ns: i64, what: Limited, table: &str, adding: usize) -> Result<()> {
    let text = format!("SELECT count(*) FROM {table} WHERE namespace_id = ?");
    let held = row(c, &text, args![ns]).await?.map_or(Ok(0), |r| r.int(0))?;
    within(what, usize::try_from(held).unwrap_or(usize::MAX).saturating_add(adding), MAX_PER_NAMESPACE)
}

fn within(what: Limited, attempted: usize, max: usize) -> Result<()> {
    if attempted > max { Err(MetadefError::TooMany { what, attempted, max }) } else { Ok(()) }
}

fn json_text(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn bad_json(what: &str) -> MetadefError {
    MetadefError::Store(StoreError::Internal(format!("a metadef {what} in the database is not valid JSON")))
}

fn stored_properties(text: &str) -> Result<Vec<(String, PropertyDef)>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => properties_from_json(&m).map_err(|_| bad_json("property")),
        _ => Err(bad_json("object")),
    }
}

fn stored_property(text: &str) -> Result<PropertyDef> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => PropertyDef::from_json(&m).map_err(|_| bad_json("property")),
        _ => Err(bad_json("property")),
    }
}

fn stored_required(text: &str) -> Result<Vec<String>> {
    serde_json::from_str(text).map_err(|_| bad_json("object's required list"))
}

/// When a row was made, and whether the operator's load made it (then it has no
/// `updated_at`, and the resource types it creates are protected).
#[derive(Debug, Clone, Copy)]
pub(super) struct Made {
    pub at: OffsetDateTime,
    pub loaded: bool,
}

impl Made {
    fn updated_at(self) -> Option<i64> {
        (!self.loaded).then(|| micros(self.at))
    }
}

// ---------------------------------------------------------------------------------------------
// Namespaces
// ---------------------------------------------------------------------------------------------

/// Appends to `sql` the query of a namespace listing's page: `select` of the namespaces `who`
/// sees, filtered, after the marker, in order, at most `limit`.
fn namespace_page(sql: &mut Sql, select: &str, who: &Principal, q: &NamespaceQuery, marker: Option<&Ns>) {
    sql.push(&format!("SELECT {select} FROM metadef_namespaces n WHERE (1 = 1)"));
    if !who.is_admin {
        sql.push(" AND (n.owner = ");
        sql.arg(Arg::Text(who.project_id.clone()));
        sql.push(" OR n.visibility = 'public')");
    }
    if let Some(v) = q.visibility {
        sql.push(" AND n.visibility = ");
        sql.arg(Arg::Text(v.as_str().into()));
    }
    if let Some(types) = &q.resource_types {
        sql.push(
            " AND EXISTS (SELECT 1 FROM metadef_namespace_resource_types a JOIN metadef_resource_types r \
             ON r.id = a.resource_type_id WHERE a.namespace_id = n.id AND r.name IN (",
        );
        for (i, t) in types.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.arg(Arg::Text(t.clone()));
        }
        sql.push("))");
    }
    let mut columns = vec![q.sort_key];
    for tie in [NamespaceColumn::CreatedAt, NamespaceColumn::Id] {
        if !columns.contains(&tie) {
            columns.push(tie);
        }
    }
    let keys: Vec<Key> = columns
        .into_iter()
        .map(|col| {
            let (name, text) = namespace_column(col);
            Key {
                column: sql.collated(name, text),
                dir: q.sort_dir,
                value: marker.map_or(Arg::Null, |m| namespace_value(m, col)),
            }
        })
        .collect();
    if marker.is_some() {
        sql.push(" AND ");
        sql.after(&keys);
    }
    sql.order_by(&keys);
    sql.push(" LIMIT ");
    sql.arg(Arg::Int(i64::try_from(q.limit).unwrap_or(i64::MAX)));
}

fn namespace_column(c: NamespaceColumn) -> (&'static str, bool) {
    match c {
        NamespaceColumn::Id => ("n.id", false),
        NamespaceColumn::Namespace => ("n.namespace", true),
        NamespaceColumn::DisplayName => ("n.display_name", true),
        NamespaceColumn::Description => ("n.description", true),
        NamespaceColumn::Visibility => ("n.visibility", true),
        NamespaceColumn::Protected => ("n.protected", false),
        NamespaceColumn::Owner => ("n.owner", true),
        NamespaceColumn::CreatedAt => ("n.created_at", false),
        NamespaceColumn::UpdatedAt => ("n.updated_at", false),
    }
}

fn namespace_value(m: &Ns, c: NamespaceColumn) -> Arg {
    let f = &m.ns.fields;
    match c {
        NamespaceColumn::Id => Arg::Int(m.id),
        NamespaceColumn::Namespace => Arg::from(&f.name),
        NamespaceColumn::DisplayName => Arg::from(f.display_name.clone()),
        NamespaceColumn::Description => Arg::from(f.description.clone()),
        NamespaceColumn::Visibility => Arg::from(f.visibility.map(|v| v.as_str())),
        NamespaceColumn::Protected => Arg::from(f.protected),
        NamespaceColumn::Owner => Arg::from(&f.owner),
        NamespaceColumn::CreatedAt => Arg::Int(micros(m.ns.created_at)),
        NamespaceColumn::UpdatedAt => Arg::from(m.ns.updated_at.map(micros)),
    }
}

const ASSOCIATION_COLUMNS: &str = "a.namespace_id, r.name, a.prefix, a.properties_target, a.created_at, a.updated_at";

fn association_from(r: &Row) -> Result<(i64, Association), DbError> {
    Ok((
        r.int(0)?,
        Association {
            name: r.text(1)?,
            prefix: r.opt_text(2)?,
            properties_target: r.opt_text(3)?,
            created_at: Some(r.time(4)?),
            updated_at: r.opt_time(5)?,
        },
    ))
}

pub(super) async fn list_namespaces<C: Conn>(
    c: &C,
    who: &Principal,
    q: &NamespaceQuery,
) -> Result<Vec<(Namespace, Vec<Association>)>> {
    check(who, MetadefRule::GetNamespaces, None)?;
    check(who, MetadefRule::ListResourceTypes, None)?;
    let marker = match &q.marker {
        None => None,
        Some(m) => {
            let ns = find_namespace(c, m, false).await?.ok_or(MetadefError::MarkerNotFound)?;
            if !policy::sees_namespace(who, &ns.ns) {
                return Err(MetadefError::MarkerInvisible);
            }
            Some(ns)
        }
    };
    let mut page = Sql::new(c.dialect(), "");
    namespace_page(&mut page, NS_COLUMNS, who, q, marker.as_ref());
    let found: Vec<Ns> = c.query(page).await?.iter().map(namespace_from).collect::<Result<_, _>>()?;
    // The page's associations, in one statement: the page again, as a subquery.
    let mut sql = Sql::new(
        c.dialect(),
        format!(
            "SELECT {ASSOCIATION_COLUMNS} FROM metadef_namespace_resource_types a \
             JOIN metadef_resource_types r ON r.id = a.resource_type_id WHERE a.namespace_id IN (SELECT p.id FROM ("
        ),
    );
    namespace_page(&mut sql, "n.id", who, q, marker.as_ref());
    sql.push(") p) ORDER BY a.id");
    let associations: Vec<(i64, Association)> =
        c.query(sql).await?.iter().map(association_from).collect::<Result<_, _>>()?;
    Ok(found
        .into_iter()
        .filter(|ns| check(who, MetadefRule::GetNamespace, Some(ns)).is_ok())
        .map(|ns| {
            let mine = associations.iter().filter(|(id, _)| *id == ns.id).map(|(_, a)| a.clone()).collect();
            (ns.ns, mine)
        })
        .collect())
}

pub(super) async fn namespace<C: Conn>(c: &C, who: &Principal, name: &str) -> Result<NamespaceContents> {
    let ns = visible_namespace(c, who, name, false).await?;
    for rule in [
        MetadefRule::GetNamespace,
        MetadefRule::ListResourceTypes,
        MetadefRule::GetObjects,
        MetadefRule::GetProperties,
        MetadefRule::GetTags,
    ] {
        check(who, rule, Some(&ns))?;
    }
    let associations = namespace_associations(c, ns.id).await?;
    let properties = namespace_properties(c, ns.id).await?;
    let objects = namespace_objects(c, ns.id).await?;
    let tags = namespace_tags(c, ns.id, &TagQuery::default(), None).await?;
    Ok(NamespaceContents { namespace: ns.ns, associations, properties, objects, tags })
}

pub(super) async fn create_namespace<C: Conn>(
    c: &C,
    who: &Principal,
    new: &NewNamespace,
    made: Made,
) -> Result<Namespace> {
    check(who, MetadefRule::AddNamespace, None)?;
    let given = |v: &Option<Vec<_>>| v.as_ref().is_some_and(|l: &Vec<_>| !l.is_empty());
    if given(&new.associations) {
        check(who, MetadefRule::AddResourceTypeAssociation, None)?;
    }
    if new.objects.as_ref().is_some_and(|o| !o.is_empty()) {
        check(who, MetadefRule::AddObject, None)?;
    }
    if new.tags.as_ref().is_some_and(|t| !t.is_empty()) {
        check(who, MetadefRule::AddTag, None)?;
    }
    if new.properties.as_ref().is_some_and(|p| !p.is_empty()) {
        check(who, MetadefRule::AddProperty, None)?;
    }
    insert_namespace(c, new, made).await
}

/// Inserts a namespace and its contents (the API's create and the operator's load).
async fn insert_namespace<C: Conn>(c: &C, new: &NewNamespace, made: Made) -> Result<Namespace> {
    let bmp_only = !made.loaded;
    let f = &new.fields;
    namespace_text(f, bmp_only)?;
    for a in new.associations.iter().flatten() {
        association_text(a)?;
    }
    for o in new.objects.iter().flatten() {
        object_text(o, bmp_only)?;
    }
    for t in new.tags.iter().flatten() {
        storable(&[("name", t)], bmp_only)?;
    }
    for (name, _) in new.properties.iter().flatten() {
        storable(&[("name", name)], bmp_only)?;
    }
    let count = |n: Option<usize>, what| within(what, n.unwrap_or(0), MAX_PER_NAMESPACE);
    count(new.associations.as_ref().map(Vec::len), Limited::Associations)?;
    count(new.objects.as_ref().map(Vec::len), Limited::Objects)?;
    count(new.tags.as_ref().map(Vec::len), Limited::Tags)?;
    count(new.properties.as_ref().map(Vec::len), Limited::Properties)?;

    let inserted = rows(
        c,
        "INSERT INTO metadef_namespaces (namespace, display_name, description, visibility, protected, owner, \
         created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        args![
            &f.name,
            f.display_name.clone(),
            f.description.clone(),
            f.visibility.map(|v| v.as_str()),
            f.protected,
            &f.owner,
            micros(made.at),
            made.updated_at()
        ],
    )
    .await;
    let id = match inserted {
        Err(DbError::Unique) => return Err(MetadefError::Duplicate(Duplicate::Namespace(f.name.clone()))),
        other => other?
            .first()
            .map(|r| r.int(0))
            .transpose()?
            .ok_or_else(|| MetadefError::Store(StoreError::Internal("a namespace insert returned no id".into())))?,
    };
    // In Glance's order: associations, objects, tags, properties.
    for a in new.associations.iter().flatten() {
        insert_association(c, id, a, made).await?;
    }
    for o in new.objects.iter().flatten() {
        insert_object(c, id, o, made).await?;
    }
    for t in new.tags.iter().flatten() {
        insert_tag(c, id, t, made).await?;
    }
    for (name, def) in new.properties.iter().flatten() {
        insert_property(c, id, name, def).await?;
    }
    Ok(Namespace { fields: f.clone(), created_at: made.at, updated_at: (!made.loaded).then_some(made.at) })
}

pub(super) async fn load_namespace<C: Conn>(c: &C, new: &NewNamespace, made: Made) -> Result<bool> {
    if find_namespace(c, &new.fields.name, false).await?.is_some() {
        return Ok(false);
    }
    insert_namespace(c, new, made).await?;
    Ok(true)
}

pub(super) async fn update_namespace<C: Conn>(
    c: &C,
    who: &Principal,
    name: &str,
    fields: &NamespaceFields,
    at: OffsetDateTime,
) -> Result<Namespace> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::ModifyNamespace, Some(&ns))?;
    namespace_text(fields, true)?;
    exec_unique(
        c,
        "UPDATE metadef_namespaces SET namespace = ?, display_name = ?, description = ?, visibility = ?, \
         protected = ?, owner = ?, updated_at = ? WHERE id = ?",
        args![
            &fields.name,
            fields.display_name.clone(),
            fields.description.clone(),
            fields.visibility.map(|v| v.as_str()),
            fields.protected,
            &fields.owner,
            micros(at),
            ns.id
        ],
        Duplicate::Namespace(fields.name.clone()),
    )
    .await?;
    Ok(Namespace { fields: fields.clone(), created_at: ns.ns.created_at, updated_at: ns.ns.updated_at })
}

pub(super) async fn delete_namespace<C: Conn>(c: &C, who: &Principal, name: &str) -> Result<()> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::DeleteNamespace, Some(&ns))?;
    if ns.ns.is_protected() {
        return Err(MetadefError::Protected);
    }
    exec(c, "DELETE FROM metadef_namespaces WHERE id = ?", args![ns.id]).await?;
    Ok(())
}

pub(super) async fn delete_contents<C: Conn>(c: &C, who: &Principal, name: &str, what: Contents) -> Result<()> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::DeleteNamespace, Some(&ns))?;
    if what == Contents::Tags {
        check(who, MetadefRule::DeleteTags, Some(&ns))?;
    }
    if ns.ns.is_protected() {
        return Err(MetadefError::Protected);
    }
    let table = match what {
        Contents::Objects => "metadef_objects",
        Contents::Properties => "metadef_properties",
        Contents::Tags => "metadef_tags",
    };
    exec(c, &format!("DELETE FROM {table} WHERE namespace_id = ?"), args![ns.id]).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Resource types and associations
// ---------------------------------------------------------------------------------------------

async fn namespace_associations<C: Conn>(c: &C, ns: i64) -> Result<Vec<Association>> {
    let text = format!(
        "SELECT {ASSOCIATION_COLUMNS} FROM metadef_namespace_resource_types a \
         JOIN metadef_resource_types r ON r.id = a.resource_type_id WHERE a.namespace_id = ? ORDER BY a.id"
    );
    Ok(rows(c, &text, args![ns])
        .await?
        .iter()
        .map(|r| association_from(r).map(|(_, a)| a))
        .collect::<Result<_, _>>()?)
}

/// The id of resource type `name`, created (protected when loaded) if it is new.
async fn resource_type_id<C: Conn>(c: &C, name: &str, made: Made) -> Result<i64> {
    let find = "SELECT id FROM metadef_resource_types WHERE name = ?";
    if let Some(r) = row(c, find, args![name]).await? {
        return Ok(r.int(0)?);
    }
    let held = row(c, "SELECT count(*) FROM metadef_resource_types", vec![]).await?.map_or(Ok(0), |r| r.int(0))?;
    within(Limited::ResourceTypes, usize::try_from(held).unwrap_or(usize::MAX).saturating_add(1), MAX_RESOURCE_TYPES)?;
    // Another transaction may create it meanwhile: then this one waits for it, and finds it.
    exec(
        c,
        "INSERT INTO metadef_resource_types (name, protected, created_at, updated_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (name) DO NOTHING",
        args![name, made.loaded, micros(made.at), made.updated_at()],
    )
    .await?;
    let found = row(c, find, args![name]).await?;
    Ok(found
        .ok_or_else(|| MetadefError::Store(StoreError::Unavailable("a resource type was created meanwhile".into())))?
        .int(0)?)
}

async fn insert_association<C: Conn>(c: &C, ns: i64, a: &Association, made: Made) -> Result<Association> {
    let rt = resource_type_id(c, &a.name, made).await?;
    exec_unique(
        c,
        "INSERT INTO metadef_namespace_resource_types (namespace_id, resource_type_id, prefix, properties_target, \
         created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
        args![ns, rt, a.prefix.clone(), a.properties_target.clone(), micros(made.at), made.updated_at()],
        Duplicate::Association(a.name.clone()),
    )
    .await?;
    Ok(Association { created_at: Some(made.at), updated_at: (!made.loaded).then_some(made.at), ..a.clone() })
}

pub(super) async fn resource_types<C: Conn>(c: &C, who: &Principal) -> Result<Vec<ResourceType>> {
    check(who, MetadefRule::ListResourceTypes, None)?;
    let found = rows(c, "SELECT name, created_at, updated_at FROM metadef_resource_types ORDER BY id", vec![]).await?;
    Ok(found
        .iter()
        .map(|r| Ok(ResourceType { name: r.text(0)?, created_at: r.time(1)?, updated_at: r.opt_time(2)? }))
        .collect::<Result<_, DbError>>()?)
}

pub(super) async fn associations<C: Conn>(c: &C, who: &Principal, name: &str) -> Result<Vec<Association>> {
    let ns = visible_namespace(c, who, name, false).await?;
    check(who, MetadefRule::ListResourceTypes, Some(&ns))?;
    let all = namespace_associations(c, ns.id).await?;
    Ok(all.into_iter().filter(|_| check(who, MetadefRule::GetResourceType, Some(&ns)).is_ok()).collect())
}

pub(super) async fn create_association<C: Conn>(
    c: &C,
    who: &Principal,
    name: &str,
    a: &Association,
    at: OffsetDateTime,
) -> Result<Association> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::AddResourceTypeAssociation, Some(&ns))?;
    association_text(a)?;
    room(c, ns.id, Limited::Associations, "metadef_namespace_resource_types", 1).await?;
    insert_association(c, ns.id, a, Made { at, loaded: false }).await
}

pub(super) async fn delete_association<C: Conn>(c: &C, who: &Principal, name: &str, rt: &str) -> Result<()> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::RemoveResourceTypeAssociation, Some(&ns))?;
    let found = if impossible(rt) {
        None
    } else {
        row(
            c,
            "SELECT a.id FROM metadef_namespace_resource_types a JOIN metadef_resource_types r \
             ON r.id = a.resource_type_id WHERE a.namespace_id = ? AND r.name = ?",
            args![ns.id, rt],
        )
        .await?
    };
    let id = found.ok_or(MetadefError::AssociationNotFound)?.int(0)?;
    if ns.ns.is_protected() {
        return Err(MetadefError::Protected);
    }
    exec(c, "DELETE FROM metadef_namespace_resource_types WHERE id = ?", args![id]).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Objects
// ---------------------------------------------------------------------------------------------

const OBJECT_COLUMNS: &str = "id, name, description, required, json_schema, created_at, updated_at";

fn object_from(r: &Row) -> Result<(i64, Object)> {
    Ok((
        r.int(0)?,
        Object {
            name: r.text(1)?,
            description: r.opt_text(2)?,
            required: Some(stored_required(&r.text(3)?)?),
            properties: Some(stored_properties(&r.text(4)?)?),
            created_at: Some(r.time(5)?),
            updated_at: r.opt_time(6)?,
        },
    ))
}

async fn namespace_objects<C: Conn>(c: &C, ns: i64) -> Result<Vec<Object>> {
    let text = format!("SELECT {OBJECT_COLUMNS} FROM metadef_objects WHERE namespace_id = ? ORDER BY name@C");
    rows(c, &text, args![ns]).await?.iter().map(|r| object_from(r).map(|(_, o)| o)).collect()
}

async fn find_object<C: Conn>(c: &C, ns: i64, name: &str) -> Result<(i64, Object)> {
    if impossible(name) {
        return Err(MetadefError::ObjectNotFound);
    }
    let text = format!("SELECT {OBJECT_COLUMNS} FROM metadef_objects WHERE namespace_id = ? AND name = ?");
    object_from(&row(c, &text, args![ns, name]).await?.ok_or(MetadefError::ObjectNotFound)?)
}

fn object_columns(o: &Object) -> (String, String) {
    let required = Value::Array(o.required.iter().flatten().cloned().map(Value::String).collect());
    let properties = o.properties.as_deref().map_or_else(|| Value::Object(Default::default()), properties_to_json);
    (json_text(&required), json_text(&properties))
}

async fn insert_object<C: Conn>(c: &C, ns: i64, o: &Object, made: Made) -> Result<()> {
    let (required, properties) = object_columns(o);
    exec_unique(
        c,
        "INSERT INTO metadef_objects (namespace_id, name, description, required, json_schema, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        args![ns, &o.name, o.description.clone(), required, properties, micros(made.at), made.updated_at()],
        Duplicate::Object(o.name.clone()),
    )
    .await?;
    Ok(())
}

pub(super) async fn objects<C: Conn>(c: &C, who: &Principal, name: &str) -> Result<Vec<Object>> {
    let ns = visible_namespace(c, who, name, false).await?;
    check(who, MetadefRule::GetObjects, Some(&ns))?;
    let all = namespace_objects(c, ns.id).await?;
    Ok(all.into_iter().filter(|_| check(who, MetadefRule::GetObject, Some(&ns)).is_ok()).collect())
}

pub(super) async fn object<C: Conn>(c: &C, who: &Principal, name: &str, object: &str) -> Result<Object> {
    let ns = visible_namespace(c, who, name, false).await?;
    check(who, MetadefRule::GetObject, Some(&ns))?;
    Ok(find_object(c, ns.id, object).await?.1)
}

pub(super) async fn create_object<C: Conn>(
    c: &C,
    who: &Principal,
    name: &str,
    o: &Object,
    at: OffsetDateTime,
) -> Result<Object> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::AddObject, Some(&ns))?;
    object_text(o, true)?;
    room(c, ns.id, Limited::Objects, "metadef_objects", 1).await?;
    insert_object(c, ns.id, o, Made { at, loaded: false }).await?;
    Ok(Object { created_at: Some(at), updated_at: Some(at), ..o.clone() })
}

pub(super) async fn update_object<C: Conn>(
    c: &C,
    who: &Principal,
    name: &str,
    object: &str,
    o: &Object,
    at: OffsetDateTime,
) -> Result<Object> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::ModifyObject, Some(&ns))?;
    let (id, before) = find_object(c, ns.id, object).await?;
    object_text(o, true)?;
    let (required, properties) = object_columns(o);
    exec_unique(
        c,
        "UPDATE metadef_objects SET name = ?, description = ?, required = ?, json_schema = ?, updated_at = ? \
         WHERE id = ?",
        args![&o.name, o.description.clone(), required, properties, micros(at), id],
        Duplicate::Object(o.name.clone()),
    )
    .await?;
    Ok(Object { created_at: before.created_at, updated_at: before.updated_at, ..o.clone() })
}

pub(super) async fn delete_object<C: Conn>(c: &C, who: &Principal, name: &str, object: &str) -> Result<()> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::DeleteObject, Some(&ns))?;
    let (id, _) = find_object(c, ns.id, object).await?;
    if ns.ns.is_protected() {
        return Err(MetadefError::Protected);
    }
    exec(c, "DELETE FROM metadef_objects WHERE id = ?", args![id]).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

async fn namespace_properties<C: Conn>(c: &C, ns: i64) -> Result<Vec<(String, PropertyDef)>> {
    let found =
        rows(c, "SELECT name, json_schema FROM metadef_properties WHERE namespace_id = ? ORDER BY name@C", args![ns])
            .await?;
    found.iter().map(|r| Ok((r.text(0)?, stored_property(&r.text(1)?)?))).collect()
}

async fn find_property<C: Conn>(c: &C, ns: i64, name: &str) -> Result<(i64, PropertyDef)> {
    if impossible(name) {
        return Err(MetadefError::PropertyNotFound(name.to_owned()));
    }
    let found =
        row(c, "SELECT id, json_schema FROM metadef_properties WHERE namespace_id = ? AND name = ?", args![ns, name])
            .await?
            .ok_or_else(|| MetadefError::PropertyNotFound(name.to_owned()))?;
    Ok((found.int(0)?, stored_property(&found.text(1)?)?))
}

async fn insert_property<C: Conn>(c: &C, ns: i64, name: &str, def: &PropertyDef) -> Result<()> {
    exec_unique(
        c,
        "INSERT INTO metadef_properties (namespace_id, name, json_schema) VALUES (?, ?, ?)",
        args![ns, name, json_text(&def.to_json())],
        Duplicate::Property(name.to_owned()),
    )
    .await?;
    Ok(())
}

pub(super) async fn properties<C: Conn>(c: &C, who: &Principal, name: &str) -> Result<Vec<(String, PropertyDef)>> {
    let ns = visible_namespace(c, who, name, false).await?;
    check(who, MetadefRule::GetProperties, Some(&ns))?;
    namespace_properties(c, ns.id).await
}

pub(super) async fn property<C: Conn>(
    c: &C,
    who: &Principal,
    name: &str,
    property: &str,
    resource_type: Option<&str>,
) -> Result<(String, PropertyDef)> {
    let ns = visible_namespace(c, who, name, false).await?;
    check(who, MetadefRule::GetProperty, Some(&ns))?;
    let mut own = property;
    if let Some(rt) = resource_type {
        check(who, MetadefRule::GetResourceType, Some(&ns))?;
        let known = !impossible(rt)
            && row(c, "SELECT 1 FROM metadef_resource_types WHERE name = ?", args![rt]).await?.is_some();
        if !known {
            return Err(MetadefError::ResourceTypeNotFound);
        }
        let association = row(
            c,
            "SELECT a.prefix FROM metadef_namespace_resource_types a JOIN metadef_resource_types r \
             ON r.id = a.resource_type_id WHERE a.namespace_id = ? AND r.name = ?",
            args![ns.id, rt],
        )
        .await?
        .ok_or(MetadefError::AssociationNotFound)?;
        let prefix = association.opt_text(0)?;
        own = match prefix.as_deref().and_then(|p| property.strip_prefix(p)) {
            Some(rest) => rest,
            None => return Err(MetadefError::PrefixMismatch(prefix)),
        };
    }
    let (_, def) = find_property(c, ns.id, own).await?;
    Ok((own.to_owned(), def))
}

pub(super) async fn create_property<C: Conn>(
    c: &C,
    who: &Principal,
    name: &str,
    property: &str,
    def: &PropertyDef,
) -> Result<()> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::AddProperty, Some(&ns))?;
    storable(&[("name", property)], true)?;
    room(c, ns.id, Limited::Properties, "metadef_properties", 1).await?;
    insert_property(c, ns.id, property, def).await
}

pub(super) async fn update_property<C: Conn>(
    c: &C,
    who: &Principal,
    name: &str,
    property: &str,
    new_name: &str,
    def: &PropertyDef,
) -> Result<()> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::ModifyProperty, Some(&ns))?;
    let (id, _) = find_property(c, ns.id, property).await?;
    storable(&[("name", new_name)], true)?;
    exec_unique(
        c,
        "UPDATE metadef_properties SET name = ?, json_schema = ? WHERE id = ?",
        args![new_name, json_text(&def.to_json()), id],
        Duplicate::Property(new_name.to_owned()),
    )
    .await?;
    Ok(())
}

pub(super) async fn delete_property<C: Conn>(c: &C, who: &Principal, name: &str, property: &str) -> Result<()> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::RemoveProperty, Some(&ns))?;
    let (id, _) = find_property(c, ns.id, property).await?;
    if ns.ns.is_protected() {
        return Err(MetadefError::Protected);
    }
    exec(c, "DELETE FROM metadef_properties WHERE id = ?", args![id]).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tags
// ---------------------------------------------------------------------------------------------

/// What tag names are unique as (and looked up as): Glance says case-insensitively.
fn folded(name: &str) -> String {
    name.to_lowercase()
}

const TAG_COLUMNS: &str = "id, namespace_id, name, created_at, updated_at";

fn tag_from(r: &Row) -> Result<(i64, i64, Tag), DbError> {
    Ok((r.int(0)?, r.int(1)?, Tag { name: r.text(2)?, created_at: r.time(3)?, updated_at: r.opt_time(4)? }))
}

fn tag_column(c: TagColumn) -> (&'static str, bool) {
    match c {
        TagColumn::Id => ("id", false),
        TagColumn::NamespaceId => ("namespace_id", false),
        TagColumn::Name => ("name", true),
        TagColumn::CreatedAt => ("created_at", false),
        TagColumn::UpdatedAt => ("updated_at", false),
    }
}

/// A page of a namespace's tags, after `marker` (its id, namespace and tag).
async fn namespace_tags<C: Conn>(c: &C, ns: i64, q: &TagQuery, marker: Option<&(i64, i64, Tag)>) -> Result<Vec<Tag>> {
    let mut sql = Sql::new(c.dialect(), format!("SELECT {TAG_COLUMNS} FROM metadef_tags WHERE namespace_id = "));
    sql.arg(Arg::Int(ns));
    let mut columns = vec![q.sort_key];
    for tie in [TagColumn::CreatedAt, TagColumn::Id] {
        if !columns.contains(&tie) {
            columns.push(tie);
        }
    }
    let keys: Vec<Key> = columns
        .into_iter()
        .map(|col| {
            let (name, text) = tag_column(col);
            let value = marker.map_or(Arg::Null, |(id, ns, t)| match col {
                TagColumn::Id => Arg::Int(*id),
                TagColumn::NamespaceId => Arg::Int(*ns),
                TagColumn::Name => Arg::from(&t.name),
                TagColumn::CreatedAt => Arg::Int(micros(t.created_at)),
                TagColumn::UpdatedAt => Arg::from(t.updated_at.map(micros)),
            });
            Key { column: sql.collated(name, text), dir: q.sort_dir, value }
        })
        .collect();
    if marker.is_some() {
        sql.push(" AND ");
        sql.after(&keys);
    }
    sql.order_by(&keys);
    let limit = q.limit.unwrap_or(MAX_PER_NAMESPACE).min(MAX_PER_NAMESPACE);
    sql.push(" LIMIT ");
    sql.arg(Arg::Int(limit as i64));
    Ok(c.query(sql).await?.iter().map(|r| tag_from(r).map(|(_, _, t)| t)).collect::<Result<_, _>>()?)
}

async fn find_tag<C: Conn>(c: &C, ns: i64, name: &str) -> Result<Option<(i64, i64, Tag)>> {
    if impossible(name) {
        return Ok(None);
    }
    let text = format!("SELECT {TAG_COLUMNS} FROM metadef_tags WHERE namespace_id = ? AND folded = ?");
    Ok(row(c, &text, args![ns, folded(name)]).await?.map(|r| tag_from(&r)).transpose()?)
}

async fn insert_tag<C: Conn>(c: &C, ns: i64, name: &str, made: Made) -> Result<Tag> {
    exec_unique(
        c,
        "INSERT INTO metadef_tags (namespace_id, name, folded, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        args![ns, name, folded(name), micros(made.at), made.updated_at()],
        Duplicate::Tag(name.to_owned()),
    )
    .await?;
    Ok(Tag { name: name.to_owned(), created_at: made.at, updated_at: (!made.loaded).then_some(made.at) })
}

pub(super) async fn tags<C: Conn>(c: &C, who: &Principal, name: &str, q: &TagQuery) -> Result<Vec<Tag>> {
    let ns = visible_namespace(c, who, name, false).await?;
    check(who, MetadefRule::GetTags, Some(&ns))?;
    let marker = match &q.marker {
        Some(m) => Some(find_tag(c, ns.id, m).await?.ok_or(MetadefError::MarkerNotFound)?),
        None => None,
    };
    namespace_tags(c, ns.id, q, marker.as_ref()).await
}

pub(super) async fn tag<C: Conn>(c: &C, who: &Principal, name: &str, tag: &str) -> Result<Tag> {
    let ns = visible_namespace(c, who, name, false).await?;
    check(who, MetadefRule::GetTag, Some(&ns))?;
    Ok(find_tag(c, ns.id, tag).await?.ok_or(MetadefError::TagNotFound)?.2)
}

pub(super) async fn create_tag<C: Conn>(
    c: &C,
    who: &Principal,
    name: &str,
    tag: &str,
    at: OffsetDateTime,
) -> Result<Tag> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::AddTag, Some(&ns))?;
    storable(&[("name", tag)], true)?;
    room(c, ns.id, Limited::Tags, "metadef_tags", 1).await?;
    insert_tag(c, ns.id, tag, Made { at, loaded: false }).await
}

pub(super) async fn create_tags<C: Conn>(
    c: &C,
    who: &Principal,
    name: &str,
    tags: &[String],
    append: bool,
    at: OffsetDateTime,
) -> Result<()> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::AddTags, Some(&ns))?;
    for t in tags {
        storable(&[("name", t)], true)?;
    }
    // Glance acts only when there are tags: an empty list replaces nothing.
    if tags.is_empty() {
        return Ok(());
    }
    if append {
        room(c, ns.id, Limited::Tags, "metadef_tags", tags.len()).await?;
    } else {
        within(Limited::Tags, tags.len(), MAX_PER_NAMESPACE)?;
        exec(c, "DELETE FROM metadef_tags WHERE namespace_id = ?", args![ns.id]).await?;
    }
    for t in tags {
        insert_tag(c, ns.id, t, Made { at, loaded: false }).await?;
    }
    Ok(())
}

pub(super) async fn update_tag<C: Conn>(
    c: &C,
    who: &Principal,
    name: &str,
    tag: &str,
    new_name: &str,
    at: OffsetDateTime,
) -> Result<Tag> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::ModifyTag, Some(&ns))?;
    let (id, _, before) = find_tag(c, ns.id, tag).await?.ok_or(MetadefError::TagNotFound)?;
    storable(&[("name", new_name)], true)?;
    exec_unique(
        c,
        "UPDATE metadef_tags SET name = ?, folded = ?, updated_at = ? WHERE id = ?",
        args![new_name, folded(new_name), micros(at), id],
        Duplicate::Tag(new_name.to_owned()),
    )
    .await?;
    Ok(Tag { name: new_name.to_owned(), ..before })
}

pub(super) async fn delete_tag<C: Conn>(c: &C, who: &Principal, name: &str, tag: &str) -> Result<()> {
    let ns = visible_namespace(c, who, name, true).await?;
    check(who, MetadefRule::DeleteTag, Some(&ns))?;
    let (id, _, _) = find_tag(c, ns.id, tag).await?.ok_or(MetadefError::TagNotFound)?;
    if ns.ns.is_protected() {
        return Err(MetadefError::Protected);
    }
    exec(c, "DELETE FROM metadef_tags WHERE id = ?", args![id]).await?;
    Ok(())
}

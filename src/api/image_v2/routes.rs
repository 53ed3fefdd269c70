//! The route table of the image API (glance-v2 §2, metadefs-spec §2): every path after `/v2`,
//! its methods and the action each one asks for, with its path parameters (percent-decoded).

use axum::http::Method;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    List,
    Create,
    Show(String),
    Update(String),
    Delete(String),
    Upload(String),
    Download(String),
    AddTag(String, String),
    DeleteTag(String, String),
    Deactivate(String),
    Reactivate(String),
    ImageSchema,
    ImagesSchema,
    ListMembers(String),
    AddMember(String),
    ShowMember(String, String),
    UpdateMember(String, String),
    DeleteMember(String, String),
    MemberSchema,
    MembersSchema,
    InfoStores,
    InfoStoresDetail,
    DeleteFromStore(String, String),
    InfoImport,
    Stage(String),
    Import(String),
    ImageTasks(String),
    ListTasks,
    CreateTask,
    ShowTask(String),
    DeleteTask(String),
    TaskSchema,
    TasksSchema,
    /// The image cache: `GET /v2/cache`, `DELETE /v2/cache`, `PUT` and `DELETE /v2/cache/{id}`.
    CacheState,
    ClearCache,
    QueueCache(String),
    DeleteCache(String),
    /// The metadata definitions API.
    Metadef(Md),
}

/// The metadata definitions routes: `/v2/metadefs/…` and `/v2/schemas/metadefs/…`. `Ns` is a
/// namespace's name; the second name is an object's, property's, tag's or resource type's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Md {
    ListNamespaces,
    CreateNamespace,
    ShowNamespace(String),
    UpdateNamespace(String),
    DeleteNamespace(String),
    ListObjects(String),
    CreateObject(String),
    DeleteObjects(String),
    ShowObject(String, String),
    UpdateObject(String, String),
    DeleteObject(String, String),
    ListProperties(String),
    CreateProperty(String),
    DeleteProperties(String),
    ShowProperty(String, String),
    UpdateProperty(String, String),
    DeleteProperty(String, String),
    ListTags(String),
    CreateTags(String),
    DeleteTags(String),
    ShowTag(String, String),
    CreateTag(String, String),
    UpdateTag(String, String),
    DeleteTag(String, String),
    ListResourceTypes,
    ListAssociations(String),
    CreateAssociation(String),
    DeleteAssociation(String, String),
    /// `/v2/schemas/metadefs/{name}`: one of [`METADEF_SCHEMAS`].
    Schema(&'static str),
}

/// The documents under `/v2/schemas/metadefs/`.
pub const METADEF_SCHEMAS: [&str; 10] = [
    "namespace",
    "namespaces",
    "object",
    "objects",
    "property",
    "properties",
    "tag",
    "tags",
    "resource_type",
    "resource_types",
];

impl Action {
    /// The route's template, for metrics (never the path itself: ids are unbounded).
    pub fn template(&self) -> &'static str {
        use Action::*;
        match self {
            List | Create => "/v2/images",
            Show(_) | Update(_) | Delete(_) => "/v2/images/{id}",
            Upload(_) | Download(_) => "/v2/images/{id}/file",
            AddTag(..) | DeleteTag(..) => "/v2/images/{id}/tags/{tag}",
            Deactivate(_) => "/v2/images/{id}/actions/deactivate",
            Reactivate(_) => "/v2/images/{id}/actions/reactivate",
            ImageSchema => "/v2/schemas/image",
            ImagesSchema => "/v2/schemas/images",
            ListMembers(_) | AddMember(_) => "/v2/images/{id}/members",
            ShowMember(..) | UpdateMember(..) | DeleteMember(..) => "/v2/images/{id}/members/{member}",
            MemberSchema => "/v2/schemas/member",
            MembersSchema => "/v2/schemas/members",
            InfoStores => "/v2/info/stores",
            InfoStoresDetail => "/v2/info/stores/detail",
            DeleteFromStore(..) => "/v2/stores/{store}/{id}",
            InfoImport => "/v2/info/import",
            Stage(_) => "/v2/images/{id}/stage",
            Import(_) => "/v2/images/{id}/import",
            ImageTasks(_) => "/v2/images/{id}/tasks",
            ListTasks | CreateTask => "/v2/tasks",
            ShowTask(_) | DeleteTask(_) => "/v2/tasks/{id}",
            TaskSchema => "/v2/schemas/task",
            TasksSchema => "/v2/schemas/tasks",
            CacheState | ClearCache => "/v2/cache",
            QueueCache(_) | DeleteCache(_) => "/v2/cache/{id}",
            Metadef(md) => md.template(),
        }
    }

    /// Glance's `body_reject` routes.
    pub fn rejects_body(&self) -> bool {
        use Action::*;
        match self {
            Metadef(md) => md.rejects_body(),
            _ => matches!(
                self,
                Show(_)
                    | Delete(_)
                    | Download(_)
                    | AddTag(..)
                    | DeleteTag(..)
                    | Deactivate(_)
                    | Reactivate(_)
                    | InfoImport
                    | ImageTasks(_)
                    | CacheState
            ),
        }
    }

    /// Image data: bounded by its inactivity timeouts, not by the request deadline.
    pub fn streams(&self) -> bool {
        matches!(self, Action::Upload(_) | Action::Stage(_))
    }
}

impl Md {
    fn template(&self) -> &'static str {
        use Md::*;
        match self {
            ListNamespaces | CreateNamespace => "/v2/metadefs/namespaces",
            ShowNamespace(_) | UpdateNamespace(_) | DeleteNamespace(_) => "/v2/metadefs/namespaces/{namespace}",
            ListObjects(_) | CreateObject(_) | DeleteObjects(_) => "/v2/metadefs/namespaces/{namespace}/objects",
            ShowObject(..) | UpdateObject(..) | DeleteObject(..) => {
                "/v2/metadefs/namespaces/{namespace}/objects/{object}"
            }
            ListProperties(_) | CreateProperty(_) | DeleteProperties(_) => {
                "/v2/metadefs/namespaces/{namespace}/properties"
            }
            ShowProperty(..) | UpdateProperty(..) | DeleteProperty(..) => {
                "/v2/metadefs/namespaces/{namespace}/properties/{property}"
            }
            ListTags(_) | CreateTags(_) | DeleteTags(_) => "/v2/metadefs/namespaces/{namespace}/tags",
            ShowTag(..) | CreateTag(..) | UpdateTag(..) | DeleteTag(..) => {
                "/v2/metadefs/namespaces/{namespace}/tags/{tag}"
            }
            ListResourceTypes => "/v2/metadefs/resource_types",
            ListAssociations(_) | CreateAssociation(_) => "/v2/metadefs/namespaces/{namespace}/resource_types",
            DeleteAssociation(..) => "/v2/metadefs/namespaces/{namespace}/resource_types/{resource_type}",
            Schema(_) => "/v2/schemas/metadefs/{schema}",
        }
    }

    fn rejects_body(&self) -> bool {
        use Md::*;
        matches!(
            self,
            ShowNamespace(_)
                | DeleteNamespace(_)
                | ShowObject(..)
                | DeleteObject(..)
                | ListProperties(_)
                | ShowTag(..)
                | CreateTag(..)
                | DeleteTag(..)
                | ListResourceTypes
                | ListAssociations(_)
                | DeleteAssociation(..)
                | Schema(_)
        )
    }
}

/// The metadefs route of `segments` (after `metadefs`).
fn metadef(method: &Method, segments: &[&str]) -> Result<Action, Option<&'static str>> {
    use Md::*;
    let (get, post, put, delete) = (Method::GET, Method::POST, Method::PUT, Method::DELETE);
    let s = |i: usize| segments[i].to_owned();
    let md = match segments {
        ["namespaces"] => pick(method, "GET, POST", &[get, post], |m| [ListNamespaces, CreateNamespace][m].clone()),
        ["namespaces", _] => pick(method, "GET, PUT, DELETE", &[get, put, delete], |m| match m {
            0 => ShowNamespace(s(1)),
            1 => UpdateNamespace(s(1)),
            _ => DeleteNamespace(s(1)),
        }),
        ["namespaces", _, "objects"] => pick(method, "GET, POST, DELETE", &[get, post, delete], |m| match m {
            0 => ListObjects(s(1)),
            1 => CreateObject(s(1)),
            _ => DeleteObjects(s(1)),
        }),
        ["namespaces", _, "objects", _] => pick(method, "GET, PUT, DELETE", &[get, put, delete], |m| match m {
            0 => ShowObject(s(1), s(3)),
            1 => UpdateObject(s(1), s(3)),
            _ => DeleteObject(s(1), s(3)),
        }),
        ["namespaces", _, "properties"] => pick(method, "GET, POST, DELETE", &[get, post, delete], |m| match m {
            0 => ListProperties(s(1)),
            1 => CreateProperty(s(1)),
            _ => DeleteProperties(s(1)),
        }),
        ["namespaces", _, "properties", _] => pick(method, "GET, PUT, DELETE", &[get, put, delete], |m| match m {
            0 => ShowProperty(s(1), s(3)),
            1 => UpdateProperty(s(1), s(3)),
            _ => DeleteProperty(s(1), s(3)),
        }),
        ["namespaces", _, "tags"] => pick(method, "GET, POST, DELETE", &[get, post, delete], |m| match m {
            0 => ListTags(s(1)),
            1 => CreateTags(s(1)),
            _ => DeleteTags(s(1)),
        }),
        ["namespaces", _, "tags", _] => {
            pick(method, "GET, POST, PUT, DELETE", &[get, post, put, delete], |m| match m {
                0 => ShowTag(s(1), s(3)),
                1 => CreateTag(s(1), s(3)),
                2 => UpdateTag(s(1), s(3)),
                _ => DeleteTag(s(1), s(3)),
            })
        }
        ["namespaces", _, "resource_types"] => pick(method, "GET, POST", &[get, post], |m| match m {
            0 => ListAssociations(s(1)),
            _ => CreateAssociation(s(1)),
        }),
        ["namespaces", _, "resource_types", _] => pick(method, "DELETE", &[delete], |_| DeleteAssociation(s(1), s(3))),
        ["resource_types"] => pick(method, "GET", &[get], |_| ListResourceTypes),
        _ => Err(None),
    }?;
    Ok(Action::Metadef(md))
}

/// Resolves the path after `/v2`: `Err(None)` is 404, `Err(Some(allow))` is 405.
pub fn resolve(method: &Method, path: &str) -> Result<Action, Option<&'static str>> {
    use Action::*;
    let rest = path.strip_prefix('/').ok_or(None)?;
    // At most four segments (images, id, members, member): anything longer is no route.
    let mut all = [""; 5];
    let mut n = 0;
    for segment in rest.split('/') {
        if n == all.len() || segment.is_empty() {
            return Err(None);
        }
        all[n] = segment;
        n += 1;
    }
    let segments = &all[..n];
    // Glance looks ids up as given, but nothing longer than 36 characters exists.
    if segments.len() > 1 && segments[0] == "images" && segments[1].len() > 36 {
        return Err(None);
    }
    let id = |i: usize| segments[i].to_owned();
    let (get, post, put, patch, delete) = (Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE);
    match segments {
        ["images"] => pick(method, "GET, POST", &[get, post], |m| [List, Create][m].clone()),
        ["images", _] => pick(method, "GET, PATCH, DELETE", &[get, patch, delete], |m| match m {
            0 => Show(id(1)),
            1 => Update(id(1)),
            _ => Delete(id(1)),
        }),
        ["images", _, "file"] => pick(method, "GET, PUT", &[get, put], |m| match m {
            0 => Download(id(1)),
            _ => Upload(id(1)),
        }),
        ["images", _, "tags", _] => pick(method, "PUT, DELETE", &[put, delete], |m| match m {
            0 => AddTag(id(1), id(3)),
            _ => DeleteTag(id(1), id(3)),
        }),
        ["images", _, "stage"] => pick(method, "PUT", &[put], |_| Stage(id(1))),
        ["images", _, "import"] => pick(method, "POST", &[post], |_| Import(id(1))),
        ["images", _, "tasks"] => pick(method, "GET", &[get], |_| ImageTasks(id(1))),
        ["tasks"] => pick(method, "GET, POST", &[get, post], |m| [ListTasks, CreateTask][m].clone()),
        ["tasks", _] => pick(method, "GET, DELETE", &[get, delete], |m| match m {
            0 => ShowTask(id(1)),
            _ => DeleteTask(id(1)),
        }),
        ["info", "import"] => pick(method, "GET", &[get], |_| InfoImport),
        ["schemas", "task"] => pick(method, "GET", &[get], |_| TaskSchema),
        ["schemas", "tasks"] => pick(method, "GET", &[get], |_| TasksSchema),
        ["cache"] => pick(method, "GET, DELETE", &[get, delete], |m| [CacheState, ClearCache][m].clone()),
        ["cache", _] => pick(method, "DELETE, PUT", &[delete, put], |m| match m {
            0 => DeleteCache(id(1)),
            _ => QueueCache(id(1)),
        }),
        ["images", _, "actions", "deactivate"] => pick(method, "POST", &[post], |_| Deactivate(id(1))),
        ["images", _, "actions", "reactivate"] => pick(method, "POST", &[post], |_| Reactivate(id(1))),
        ["images", _, "members"] => pick(method, "GET, POST", &[get, post], |m| match m {
            0 => ListMembers(id(1)),
            _ => AddMember(id(1)),
        }),
        ["images", _, "members", _] => pick(method, "GET, PUT, DELETE", &[get, put, delete], |m| match m {
            0 => ShowMember(id(1), id(3)),
            1 => UpdateMember(id(1), id(3)),
            _ => DeleteMember(id(1), id(3)),
        }),
        ["info", "stores"] => pick(method, "GET", &[get], |_| InfoStores),
        ["info", "stores", "detail"] => pick(method, "GET", &[get], |_| InfoStoresDetail),
        ["stores", _, _] => pick(method, "DELETE", &[delete], |_| DeleteFromStore(id(1), id(2))),
        ["schemas", "member"] => pick(method, "GET", &[get], |_| MemberSchema),
        ["schemas", "members"] => pick(method, "GET", &[get], |_| MembersSchema),
        ["schemas", "image"] => pick(method, "GET", &[get], |_| ImageSchema),
        ["schemas", "images"] => pick(method, "GET", &[get], |_| ImagesSchema),
        ["schemas", "metadefs", name] => match METADEF_SCHEMAS.iter().find(|s| *s == name) {
            Some(schema) => pick(method, "GET", &[get], |_| Metadef(Md::Schema(schema))),
            None => Err(None),
        },
        ["metadefs", rest @ ..] => metadef(method, rest),
        _ => Err(None),
    }
}

/// The action for `method` among a path's `methods` (`action` gets its index), or 405 with
/// the path's `Allow`.
fn pick<T>(
    method: &Method,
    allow: &'static str,
    methods: &[Method],
    action: impl FnOnce(usize) -> T,
) -> Result<T, Option<&'static str>> {
    let index = methods.iter().position(|m| m == method).ok_or(Some(allow))?;
    Ok(action(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(resolve(&Method::GET, "/images"), Ok(Action::List));
        assert_eq!(resolve(&Method::POST, "/images"), Ok(Action::Create));
        assert_eq!(resolve(&Method::PUT, "/images/x/tags/t"), Ok(Action::AddTag("x".into(), "t".into())));
        assert_eq!(resolve(&Method::DELETE, "/images/x/members/m"), Ok(Action::DeleteMember("x".into(), "m".into())));
        assert_eq!(resolve(&Method::DELETE, "/stores/s/x"), Ok(Action::DeleteFromStore("s".into(), "x".into())));
        assert_eq!(resolve(&Method::PUT, "/images/x"), Err(Some("GET, PATCH, DELETE")));
        assert_eq!(resolve(&Method::GET, "/images/"), Err(None));
        assert_eq!(resolve(&Method::GET, "/images/x/members/m/more"), Err(None));
        assert_eq!(resolve(&Method::GET, "/images/x/members/m/more/more"), Err(None));
        assert_eq!(resolve(&Method::GET, &format!("/images/{}", "a".repeat(37))), Err(None));
        assert_eq!(
            resolve(&Method::DELETE, "/metadefs/namespaces/OS::A/resource_types/OS::Nova::Flavor"),
            Ok(Action::Metadef(Md::DeleteAssociation("OS::A".into(), "OS::Nova::Flavor".into())))
        );
        assert_eq!(
            resolve(&Method::POST, "/metadefs/namespaces/n/tags/t"),
            Ok(Action::Metadef(Md::CreateTag("n".into(), "t".into())))
        );
        assert_eq!(resolve(&Method::PATCH, "/metadefs/namespaces/n/tags/t"), Err(Some("GET, POST, PUT, DELETE")));
        assert_eq!(resolve(&Method::PATCH, "/metadefs/namespaces"), Err(Some("GET, POST")));
        assert_eq!(resolve(&Method::POST, "/metadefs/resource_types"), Err(Some("GET")));
        assert_eq!(resolve(&Method::GET, "/schemas/metadefs/tags"), Ok(Action::Metadef(Md::Schema("tags"))));
        assert_eq!(resolve(&Method::GET, "/schemas/metadefs/nope"), Err(None));
        assert_eq!(resolve(&Method::GET, "/metadefs/namespaces/n/objects/o/x"), Err(None));
        assert!(Action::Metadef(Md::CreateTag("n".into(), "t".into())).rejects_body());
        assert!(!Action::Metadef(Md::ListNamespaces).rejects_body());
    }
}

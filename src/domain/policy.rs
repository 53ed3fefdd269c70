//! Who may see and change an image, and the metadata definitions catalogue: Glance's default
//! rules under secure RBAC (nova-images §9, metadefs-spec §9), as pure functions so every API
//! and every store applies the same ones.

use super::metadefs::Namespace;
use super::{Image, ImageStatus, MemberStatus, Visibility};

/// The caller, as an authenticated token describes it.
#[derive(Debug)]
pub struct Principal {
    pub user_id: String,
    pub project_id: String,
    pub roles: Vec<String>,
    /// Holds the `admin` role: sees and changes every project's images.
    pub is_admin: bool,
    /// [`visible_to`] this principal, made once: a principal outlives its request (tokens are
    /// cached), and every point read asks it.
    visible: std::sync::OnceLock<Cond>,
}

/// A clone makes its own visibility rule: a clone is how a principal is changed.
impl Clone for Principal {
    fn clone(&self) -> Principal {
        Principal::new(self.user_id.clone(), self.project_id.clone(), self.roles.clone())
    }
}

impl PartialEq for Principal {
    fn eq(&self, other: &Principal) -> bool {
        (&self.user_id, &self.project_id, &self.roles) == (&other.user_id, &other.project_id, &other.roles)
    }
}

impl Eq for Principal {}

impl Principal {
    pub fn new(user_id: String, project_id: String, roles: Vec<String>) -> Principal {
        let is_admin = roles.iter().any(|r| r == "admin");
        Principal { user_id, project_id, roles, is_admin, visible: std::sync::OnceLock::new() }
    }

    /// imagemeta itself, acting for no user (recovering a dead node's uploads): an admin.
    pub fn system() -> Principal {
        Principal::new("imagemeta".into(), String::new(), vec!["admin".into()])
    }

    /// Writes need the `member` role (or the pre-RBAC `_member_`), or admin; a token that is
    /// only a `reader` may read.
    pub fn may_write(&self) -> bool {
        self.is_admin || self.roles.iter().any(|r| r == "member" || r == "_member_")
    }

    /// Holds the `reader` role: what Glance's metadef read rules ask for (`role:reader`). A
    /// Keystone token lists the roles its roles imply (`member` implies `reader`); a static
    /// token must name it.
    pub fn reads(&self) -> bool {
        self.roles.iter().any(|r| r == "reader")
    }

    fn owns(&self, image: &Image) -> bool {
        image.owner.as_deref() == Some(self.project_id.as_str())
    }
}

/// A condition on an image: how the visibility rules are written, once. [`Cond::holds`]
/// evaluates one on an image in memory; each store renders the same value as SQL
/// (`store::sql`), and a property test checks that the two always agree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    All,
    Not(Box<Cond>),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    /// Owned by this project (an ownerless image is owned by none).
    OwnerIs(String),
    OwnerIsNull,
    VisibilityIn(Vec<Visibility>),
    StatusNotIn(Vec<ImageStatus>),
    Hidden(bool),
    /// Shared with this project, in this member status (any when `None`).
    MemberOf {
        project: String,
        status: Option<MemberStatus>,
    },
}

impl Cond {
    pub fn holds(&self, image: &Image) -> bool {
        match self {
            Cond::All => true,
            Cond::Not(c) => !c.holds(image),
            Cond::And(cs) => cs.iter().all(|c| c.holds(image)),
            Cond::Or(cs) => cs.iter().any(|c| c.holds(image)),
            Cond::OwnerIs(p) => image.owner.as_deref() == Some(p.as_str()),
            Cond::OwnerIsNull => image.owner.is_none(),
            Cond::VisibilityIn(vs) => vs.contains(&image.visibility),
            Cond::StatusNotIn(ss) => !ss.contains(&image.status),
            Cond::Hidden(h) => image.os_hidden == *h,
            Cond::MemberOf { project, status } => {
                image.members.iter().any(|m| m.project == *project && status.is_none_or(|s| m.status == s))
            }
        }
    }
}

/// Which images exist for `who` at all (the others are answered as not found). Glance's
/// `is_image_visible`: admins see all; others the images they own, public and community
/// images, ownerless images, and `shared` images their project is a member of (in any
/// member status).
pub fn visible_to(who: &Principal) -> Cond {
    if who.is_admin {
        return Cond::All;
    }
    Cond::Or(vec![
        Cond::OwnerIsNull,
        Cond::OwnerIs(who.project_id.clone()),
        Cond::VisibilityIn(vec![Visibility::Public, Visibility::Community]),
        Cond::And(vec![
            Cond::VisibilityIn(vec![Visibility::Shared]),
            Cond::MemberOf { project: who.project_id.clone(), status: None },
        ]),
    ])
}

/// Which images a listing offers `who` (glance-v2 §13): never deleted or killed ones; for a
/// non-admin, public and community images, its own, and those shared with it as a member in
/// `member_status` (any when `None`); then the `visibility` and `os_hidden` filters, where
/// the default leaves out other projects' community images.
pub fn listed_for(
    who: &Principal,
    visibility: ListVisibility,
    hidden: bool,
    member_status: Option<MemberStatus>,
) -> Cond {
    let mut all = vec![Cond::StatusNotIn(vec![ImageStatus::Deleted, ImageStatus::Killed])];
    if !who.is_admin {
        all.push(Cond::Or(vec![
            Cond::VisibilityIn(vec![Visibility::Public, Visibility::Community]),
            Cond::OwnerIs(who.project_id.clone()),
            Cond::And(vec![
                Cond::VisibilityIn(vec![Visibility::Shared]),
                Cond::MemberOf { project: who.project_id.clone(), status: member_status },
            ]),
        ]));
    }
    match visibility {
        ListVisibility::Default => all.push(Cond::Or(vec![
            Cond::Not(Box::new(Cond::VisibilityIn(vec![Visibility::Community]))),
            Cond::OwnerIs(who.project_id.clone()),
        ])),
        ListVisibility::Only(v) => all.push(Cond::VisibilityIn(vec![v])),
        ListVisibility::All => {}
    }
    all.push(Cond::Hidden(hidden));
    Cond::And(all)
}

/// The `visibility` filter of a listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListVisibility {
    /// Public, the caller's own, and community images the caller owns.
    #[default]
    Default,
    Only(Visibility),
    /// Everything the caller may list.
    All,
}

/// Whether `image` exists for `who` at all (see [`visible_to`]).
pub fn can_see(who: &Principal, image: &Image) -> bool {
    who.is_admin || who.visible.get_or_init(|| visible_to(who)).holds(image)
}

/// What a caller asks to do, by the policy names of Glance (and Nova) under secure RBAC. Every
/// decision of who may do what is made by [`authorize`], whichever API the request comes
/// through and whichever store holds the image; the APIs only word the refusals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `add_image`: the member role, or admin.
    AddImage,
    /// `add_image` with an `owner` other than the caller's project: admins only.
    AddImageForOther,
    /// `modify_image` (and Nova's image-metadata writes): the owner project's members, admins.
    ModifyImage,
    /// `delete_image`: as `modify_image` (a protected image is refused apart).
    DeleteImage,
    /// `upload_image`: as `modify_image`.
    UploadImage,
    /// `download_image`: members and admins (a reader may not).
    DownloadImage,
    /// `download_image` of a deactivated image: admins only.
    DownloadDeactivated,
    /// `deactivate` and `reactivate`: as `modify_image`.
    Deactivate,
    /// `add_member` and `delete_member`: the owner shares, as `modify_image`.
    ShareImage,
    /// `get_members`' full list: the owner and admins (a member sees only itself).
    SeeAllMembers,
    /// `modify_member`: the member project answers for itself (with the member role), or an
    /// admin.
    ModifyMember(String),
    /// `stores_info_detail`: admins.
    StoresInfoDetail,
    /// `delete_image_location`: admins.
    DeleteImageLocation,
    /// `copy_image`: an import copying an image's data to further stores, admins.
    CopyImage,
    /// Nova's `os_compute_api:limits:other_project`: admins.
    OtherProjectLimits,
    /// `tasks_api_access`: the `/v2/tasks` API, admins.
    TasksApiAccess,
    /// `cache_list`, `cache_image` and `cache_delete`: the image cache API, admins.
    CacheList,
    CacheImage,
    CacheDelete,
    /// imagemeta's own bookkeeping: the end of an upload a request was authorized for, the
    /// recovery of a dead node's uploads, a data move. Always allowed.
    Bookkeeping,
    /// One of Glance's metadata definitions rules, on the namespace it is about (none for the
    /// listings, creates and the global resource types: the caller's own project is the
    /// target then).
    Metadef(MetadefRule, Option<NamespaceTarget>),
}

/// What a metadef rule looks at in a namespace: Glance's policy target
/// `{"project_id": owner, "visibility": …}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceTarget {
    pub owner: String,
    pub public: bool,
}

impl NamespaceTarget {
    pub fn of(ns: &Namespace) -> NamespaceTarget {
        NamespaceTarget { owner: ns.fields.owner.clone(), public: ns.is_public() }
    }
}

/// Glance's metadef policies (glance/policies/metadef.py), by their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadefRule {
    GetNamespaces,
    GetNamespace,
    AddNamespace,
    ModifyNamespace,
    DeleteNamespace,
    GetObjects,
    GetObject,
    AddObject,
    ModifyObject,
    DeleteObject,
    ListResourceTypes,
    GetResourceType,
    AddResourceTypeAssociation,
    RemoveResourceTypeAssociation,
    GetProperties,
    GetProperty,
    AddProperty,
    ModifyProperty,
    RemoveProperty,
    GetTags,
    GetTag,
    AddTag,
    AddTags,
    ModifyTag,
    DeleteTag,
    DeleteTags,
}

impl MetadefRule {
    pub fn name(self) -> &'static str {
        use MetadefRule::*;
        match self {
            GetNamespaces => "get_metadef_namespaces",
            GetNamespace => "get_metadef_namespace",
            AddNamespace => "add_metadef_namespace",
            ModifyNamespace => "modify_metadef_namespace",
            DeleteNamespace => "delete_metadef_namespace",
            GetObjects => "get_metadef_objects",
            GetObject => "get_metadef_object",
            AddObject => "add_metadef_object",
            ModifyObject => "modify_metadef_object",
            DeleteObject => "delete_metadef_object",
            ListResourceTypes => "list_metadef_resource_types",
            GetResourceType => "get_metadef_resource_type",
            AddResourceTypeAssociation => "add_metadef_resource_type_association",
            RemoveResourceTypeAssociation => "remove_metadef_resource_type_association",
            GetProperties => "get_metadef_properties",
            GetProperty => "get_metadef_property",
            AddProperty => "add_metadef_property",
            ModifyProperty => "modify_metadef_property",
            RemoveProperty => "remove_metadef_property",
            GetTags => "get_metadef_tags",
            GetTag => "get_metadef_tag",
            AddTag => "add_metadef_tag",
            AddTags => "add_metadef_tags",
            ModifyTag => "modify_metadef_tag",
            DeleteTag => "delete_metadef_tag",
            DeleteTags => "delete_metadef_tags",
        }
    }

    /// Whether `who` passes the rule's default check string on `target`: `metadef_admin`
    /// (admins) for every change; `ADMIN_OR_PROJECT_READER` for the namespace listing; and
    /// `ADMIN_OR_PROJECT_READER_GET_NAMESPACE` (a reader of the owner project, or of any
    /// project for a public namespace) for every other read.
    fn allows(self, who: &Principal, target: Option<&NamespaceTarget>) -> bool {
        use MetadefRule::*;
        // Without a namespace, the target's project is the caller's own.
        let own = target.is_none_or(|t| t.owner == who.project_id);
        let public = target.is_some_and(|t| t.public);
        match self {
            GetNamespaces => who.is_admin || (who.reads() && own),
            GetNamespace | GetObjects | GetObject | GetProperties | GetProperty | GetTags | GetTag
            | ListResourceTypes | GetResourceType => who.is_admin || (who.reads() && (own || public)),
            AddNamespace
            | ModifyNamespace
            | DeleteNamespace
            | AddObject
            | ModifyObject
            | DeleteObject
            | AddResourceTypeAssociation
            | RemoveResourceTypeAssociation
            | AddProperty
            | ModifyProperty
            | RemoveProperty
            | AddTag
            | AddTags
            | ModifyTag
            | DeleteTag
            | DeleteTags => who.is_admin,
        }
    }
}

/// How a refused metadef rule is answered (Glance's `MetadefAPIPolicy._enforce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The caller may not even read the namespace: answered as if it did not exist.
    Hidden,
    /// Answered 403, naming the rule.
    Forbidden,
}

/// Whether `who` may do metadef `rule` on `target`, and if not, how the refusal shows.
pub fn metadef_refusal(who: &Principal, rule: MetadefRule, target: Option<&NamespaceTarget>) -> Option<Refusal> {
    let allowed = |r: MetadefRule| authorize(who, &Rule::Metadef(r, target.cloned()), None);
    if allowed(rule) {
        None
    } else if rule == MetadefRule::GetNamespace || !allowed(MetadefRule::GetNamespace) {
        Some(Refusal::Hidden)
    } else {
        Some(Refusal::Forbidden)
    }
}

/// Which namespaces exist for `who` at all, before any rule (Glance's database layer): all for
/// an admin; otherwise those its project owns and the public ones. A namespace loaded without
/// a visibility is private.
pub fn sees_namespace(who: &Principal, ns: &Namespace) -> bool {
    who.is_admin || ns.fields.owner == who.project_id || ns.is_public()
}

impl Rule {
    /// The rule's policy name, as refusals quote it.
    pub fn name(&self) -> &'static str {
        match self {
            Rule::AddImage | Rule::AddImageForOther => "add_image",
            Rule::ModifyImage => "modify_image",
            Rule::DeleteImage => "delete_image",
            Rule::UploadImage => "upload_image",
            Rule::DownloadImage | Rule::DownloadDeactivated => "download_image",
            Rule::Deactivate => "deactivate",
            Rule::ShareImage => "add_member",
            Rule::SeeAllMembers => "get_members",
            Rule::ModifyMember(_) => "modify_member",
            Rule::StoresInfoDetail => "stores_info_detail",
            Rule::DeleteImageLocation => "delete_image_location",
            Rule::CopyImage => "copy_image",
            Rule::OtherProjectLimits => "os_compute_api:limits:other_project",
            Rule::TasksApiAccess => "tasks_api_access",
            Rule::CacheList => "cache_list",
            Rule::CacheImage => "cache_image",
            Rule::CacheDelete => "cache_delete",
            Rule::Bookkeeping => "bookkeeping",
            Rule::Metadef(rule, _) => rule.name(),
        }
    }
}

/// Whether `who` may do `rule`, to `image` when the rule is about one. Visibility comes first
/// and apart ([`can_see`]): an image `who` cannot see is not found, whatever the rule.
pub fn authorize(who: &Principal, rule: &Rule, image: Option<&Image>) -> bool {
    let owner = || who.is_admin || image.is_some_and(|i| who.owns(i));
    match rule {
        Rule::AddImage | Rule::DownloadImage => who.may_write(),
        Rule::ModifyImage | Rule::DeleteImage | Rule::UploadImage | Rule::Deactivate | Rule::ShareImage => {
            who.may_write() && owner()
        }
        Rule::SeeAllMembers => owner(),
        Rule::ModifyMember(project) => who.is_admin || (who.project_id == *project && who.may_write()),
        Rule::AddImageForOther
        | Rule::DownloadDeactivated
        | Rule::StoresInfoDetail
        | Rule::DeleteImageLocation
        | Rule::CopyImage
        | Rule::OtherProjectLimits
        | Rule::TasksApiAccess
        | Rule::CacheList
        | Rule::CacheImage
        | Rule::CacheDelete => who.is_admin,
        Rule::Bookkeeping => true,
        Rule::Metadef(rule, target) => rule.allows(who, target.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Image, now};

    fn image(owner: &str, visibility: Visibility) -> Image {
        let mut i = Image::new("i".into(), now());
        i.owner = Some(owner.into());
        i.visibility = visibility;
        i
    }

    fn who(project: &str, roles: &[&str]) -> Principal {
        Principal::new("u".into(), project.into(), roles.iter().map(|r| r.to_string()).collect())
    }

    #[test]
    fn visibility_matrix() {
        let member = who("p1", &["member"]);
        assert!(can_see(&member, &image("p1", Visibility::Private)));
        assert!(!can_see(&member, &image("p2", Visibility::Private)));
        assert!(!can_see(&member, &image("p2", Visibility::Shared)));
        assert!(can_see(&member, &image("p2", Visibility::Public)));
        assert!(can_see(&member, &image("p2", Visibility::Community)));
        assert!(can_see(&who("p3", &["admin"]), &image("p2", Visibility::Private)));
    }

    /// The metadef defaults (metadefs-spec §9.2): changes are the admins'; a reader reads its
    /// own project's namespaces and public ones; a token without the reader role reads nothing,
    /// and its refusals hide the namespace.
    #[test]
    fn metadef_matrix() {
        use MetadefRule::*;
        let ns = |owner: &str, public: bool| Some(NamespaceTarget { owner: owner.into(), public });
        let reader = who("p1", &["reader"]);
        let admin = who("p9", &["admin"]);
        let nobody = who("p1", &[]);
        let member = who("p1", &["member", "reader"]);
        for r in [&reader, &member] {
            assert_eq!(metadef_refusal(r, GetNamespace, ns("p1", false).as_ref()), None);
            assert_eq!(metadef_refusal(r, GetTags, ns("p2", true).as_ref()), None);
            assert_eq!(metadef_refusal(r, GetObject, ns("p2", false).as_ref()), Some(Refusal::Hidden));
            assert_eq!(metadef_refusal(r, ModifyNamespace, ns("p1", false).as_ref()), Some(Refusal::Forbidden));
            assert_eq!(metadef_refusal(r, AddNamespace, None), Some(Refusal::Forbidden));
            assert_eq!(metadef_refusal(r, GetNamespaces, None), None);
        }
        assert_eq!(metadef_refusal(&reader, DeleteNamespace, ns("p2", false).as_ref()), Some(Refusal::Hidden));
        assert_eq!(metadef_refusal(&nobody, GetNamespaces, None), Some(Refusal::Hidden));
        assert_eq!(metadef_refusal(&nobody, ListResourceTypes, None), Some(Refusal::Hidden));
        // `member` alone is not `reader` (Keystone's tokens list the implied role).
        let member_only = who("p1", &["member"]);
        assert_eq!(metadef_refusal(&member_only, GetNamespace, ns("p1", true).as_ref()), Some(Refusal::Hidden));
        for rule in [AddNamespace, DeleteTags, RemoveResourceTypeAssociation, GetNamespace] {
            assert_eq!(metadef_refusal(&admin, rule, ns("p2", false).as_ref()), None);
        }
        assert_eq!(Rule::Metadef(AddTags, None).name(), "add_metadef_tags");
    }

    #[test]
    fn write_matrix() {
        let can_modify = |w: &Principal, i: &Image| authorize(w, &Rule::ModifyImage, Some(i));
        assert!(can_modify(&who("p1", &["member"]), &image("p1", Visibility::Private)));
        assert!(!can_modify(&who("p1", &["reader"]), &image("p1", Visibility::Private)));
        assert!(!can_modify(&who("p1", &["member"]), &image("p2", Visibility::Public)));
        assert!(can_modify(&who("p9", &["admin"]), &image("p2", Visibility::Public)));
        let reader = who("p1", &["reader"]);
        assert!(!authorize(&reader, &Rule::AddImage, None));
        assert!(!authorize(&reader, &Rule::DownloadImage, None));
        assert!(authorize(&reader, &Rule::SeeAllMembers, Some(&image("p1", Visibility::Shared))));
        assert!(authorize(&who("p2", &["member"]), &Rule::ModifyMember("p2".into()), None));
        assert!(!authorize(&who("p2", &["member"]), &Rule::ModifyMember("p3".into()), None));
        assert!(!authorize(&who("p2", &["reader"]), &Rule::ModifyMember("p2".into()), None));
        for admin_only in [Rule::AddImageForOther, Rule::StoresInfoDetail, Rule::DeleteImageLocation, Rule::CopyImage] {
            assert!(!authorize(&who("p1", &["member"]), &admin_only, None));
            assert!(authorize(&who("p1", &["admin"]), &admin_only, None));
        }
    }
}

//! Who may see and change an image: Glance's default rules under secure RBAC (nova-images §9),
//! as pure functions so every API and every store applies the same ones.

use super::{Image, ImageStatus, MemberStatus, Visibility};

/// The caller, as an authenticated token describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub user_id: String,
    pub project_id: String,
    pub roles: Vec<String>,
    /// Holds the `admin` role: sees and changes every project's images.
    pub is_admin: bool,
}

impl Principal {
    pub fn new(user_id: String, project_id: String, roles: Vec<String>) -> Principal {
        let is_admin = roles.iter().any(|r| r == "admin");
        Principal { user_id, project_id, roles, is_admin }
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
    who.is_admin || visible_to(who).holds(image)
}

/// Whether `who` may create images (Glance's `add_image`: the member role, or admin).
pub fn can_create(who: &Principal) -> bool {
    who.may_write()
}

/// Whether `who` may download the data of a visible image: members and admins, not readers.
pub fn can_download(who: &Principal) -> bool {
    who.may_write()
}

/// Whether `who` may change `image` (its metadata, or delete it): the owner project's members
/// and admins.
pub fn can_modify(who: &Principal, image: &Image) -> bool {
    who.may_write() && (who.is_admin || who.owns(image))
}

/// Whether `who` may delete `image`: as [`can_modify`], and never while it is protected.
pub fn can_delete(who: &Principal, image: &Image) -> bool {
    can_modify(who, image) && !image.protected
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

    #[test]
    fn write_matrix() {
        assert!(can_modify(&who("p1", &["member"]), &image("p1", Visibility::Private)));
        assert!(!can_modify(&who("p1", &["reader"]), &image("p1", Visibility::Private)));
        assert!(!can_modify(&who("p1", &["member"]), &image("p2", Visibility::Public)));
        assert!(can_modify(&who("p9", &["admin"]), &image("p2", Visibility::Public)));
        let mut protected = image("p1", Visibility::Private);
        protected.protected = true;
        assert!(!can_delete(&who("p1", &["admin"]), &protected));
    }
}

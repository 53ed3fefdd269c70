//! Who may see and change an image: Glance's default rules under secure RBAC (nova-images §9),
//! as pure functions so every API and every store applies the same ones.

use super::{Image, Visibility};

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

/// Whether `image` exists for `who` at all: otherwise it is answered as not found. Glance's
/// `is_image_visible`: admins, the owner, public and community images, ownerless images, and
/// `shared` images the caller's project is a member of (in any member status).
pub fn can_see(who: &Principal, image: &Image) -> bool {
    who.is_admin
        || image.owner.is_none()
        || who.owns(image)
        || matches!(image.visibility, Visibility::Public | Visibility::Community)
        || (image.visibility == Visibility::Shared && image.members.iter().any(|m| m.project == who.project_id))
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

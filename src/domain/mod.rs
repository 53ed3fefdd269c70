//! The image catalogue's own model: images, their metadata, who may see and change them.
//!
//! Nothing here knows HTTP or SQL. Both APIs (Compute and, later, Glance v2) speak about the same
//! [`Image`]; the API layers translate it into their wire shapes.

pub mod import;
pub mod metadata;
pub mod metadefs;
pub mod policy;
pub mod task;
pub mod update;

use time::OffsetDateTime;

pub use metadata::{MetadataKey, MetadataValue, Properties};
pub use policy::Principal;

/// Glance's image status. Stored as its Glance name; the Compute API maps it to its own
/// status and progress (nova-images §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageStatus {
    Queued,
    Saving,
    Active,
    Killed,
    Deleted,
    PendingDelete,
    Deactivated,
    Uploading,
    Importing,
}

impl ImageStatus {
    pub const ALL: [ImageStatus; 9] = [
        Self::Queued,
        Self::Saving,
        Self::Active,
        Self::Killed,
        Self::Deleted,
        Self::PendingDelete,
        Self::Deactivated,
        Self::Uploading,
        Self::Importing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Saving => "saving",
            Self::Active => "active",
            Self::Killed => "killed",
            Self::Deleted => "deleted",
            Self::PendingDelete => "pending_delete",
            Self::Deactivated => "deactivated",
            Self::Uploading => "uploading",
            Self::Importing => "importing",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

/// Glance's visibility of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    Public,
    Private,
    Shared,
    Community,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Shared => "shared",
            Self::Community => "community",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Public, Self::Private, Self::Shared, Self::Community].into_iter().find(|v| v.as_str() == s)
    }
}

/// A project's answer to an image shared with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatus {
    Pending,
    Accepted,
    Rejected,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Accepted, Self::Rejected].into_iter().find(|m| m.as_str() == s)
    }
}

/// A project a `shared` image is shared with.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub project: String,
    pub status: MemberStatus,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// An image as the store keeps it: Glance's base attributes in typed fields, every other
/// property (what the Compute API calls metadata) in `properties`, in insertion order.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub id: String,
    pub name: Option<String>,
    pub status: ImageStatus,
    pub visibility: Visibility,
    pub owner: Option<String>,
    pub protected: bool,
    pub os_hidden: bool,
    pub size: Option<i64>,
    pub virtual_size: Option<i64>,
    pub min_disk: i64,
    pub min_ram: i64,
    pub disk_format: Option<String>,
    pub container_format: Option<String>,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub tags: Vec<String>,
    pub properties: Properties,
    /// The projects a `shared` image is shared with.
    pub members: Vec<Member>,
    /// While the image is `saving`: who holds its upload. Not part of either API's view.
    pub upload: Option<UploadLease>,
    /// The image store holding the data (`None`: the `file` store, from before stores had
    /// names), and where in it.
    pub store: Option<String>,
    pub location: Option<String>,
    /// Further copies of the data in other stores (Glance's further locations: `copy-image`,
    /// an import to several stores), in the order they were added.
    pub replicas: Vec<Replica>,
    /// What the API layer derives from this copy (see [`Memo`]).
    pub memo: Memo,
}

/// A further copy of an image's data: the store holding it, and where in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub store: String,
    pub location: String,
}

impl Replica {
    /// The database's form of a list of replicas: `None` for none, else a JSON array of
    /// `[store, location]` pairs (one definition for both backends).
    pub fn encode(replicas: &[Replica]) -> Option<String> {
        if replicas.is_empty() {
            return None;
        }
        let pairs: Vec<[&str; 2]> = replicas.iter().map(|r| [r.store.as_str(), r.location.as_str()]).collect();
        Some(serde_json::to_string(&pairs).expect("strings serialize"))
    }

    /// The replicas [`Replica::encode`] wrote; `None` for text it did not write.
    pub fn decode(text: Option<&str>) -> Option<Vec<Replica>> {
        let Some(text) = text else { return Some(Vec::new()) };
        let pairs: Vec<[String; 2]> = serde_json::from_str(text).ok()?;
        Some(pairs.into_iter().map(|[store, location]| Replica { store, location }).collect())
    }
}

impl Image {
    /// Every copy of the image's data, as (store, location): where it was first stored, then
    /// its replicas. Empty without data.
    pub fn locations(&self) -> impl Iterator<Item = (&str, &str)> {
        let first =
            self.location.as_deref().map(|l| (self.store.as_deref().unwrap_or(crate::store::data::FILE_STORE), l));
        first.into_iter().chain(self.replicas.iter().map(|r| (r.store.as_str(), r.location.as_str())))
    }

    /// Drops the copy in store `store` (the first replica takes the place of a first copy
    /// dropped). The data itself is the caller's to remove.
    pub fn drop_copy(&mut self, store: &str) {
        if self.location.is_some() && self.store.as_deref().unwrap_or(crate::store::data::FILE_STORE) == store {
            if self.replicas.is_empty() {
                self.store = None;
                self.location = None;
            } else {
                let next = self.replicas.remove(0);
                self.store = Some(next.store);
                self.location = Some(next.location);
            }
        } else {
            self.replicas.retain(|r| r.store != store);
        }
    }

    /// The image with only its copy in store `store` (its first copy when none is there):
    /// what reading or removing that one copy takes.
    pub fn only_copy_in(&self, store: &str) -> Image {
        let mut one = self.clone();
        one.replicas.clear();
        if let Some(replica) = self.replicas.iter().find(|r| r.store == store)
            && self.store.as_deref().unwrap_or(crate::store::data::FILE_STORE) != store
        {
            one.store = Some(replica.store.clone());
            one.location = Some(replica.location.clone());
        }
        one
    }

    /// Whether store `store` holds a copy of the data.
    pub fn in_store(&self, store: &str) -> bool {
        self.locations().any(|(s, _)| s == store)
    }
}

/// The hold of an upload in progress: the node (process) that receives the data, and where
/// it stages the partial data, so that when that node dies another can put the image back to
/// `queued` and remove what it left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLease {
    pub node: String,
    pub staging: String,
}

/// An imagemeta process serving the catalogue, as it registered itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub host: String,
    pub pid: u32,
    pub started_at: OffsetDateTime,
    pub heartbeat_at: OffsetDateTime,
}

impl Node {
    /// How often a node renews its lease.
    pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(10);
    /// How long a lease lasts without renewal: three missed heartbeats.
    pub const LEASE: std::time::Duration = std::time::Duration::from_secs(30);

    /// This process, as a new node.
    pub fn this_process() -> Node {
        let at = now();
        Node {
            id: uuid::Uuid::new_v4().to_string(),
            host: hostname(),
            pid: std::process::id(),
            started_at: at,
            heartbeat_at: at,
        }
    }

    /// Whether the node `id` (as registered, if it is) still holds what it holds, seen from
    /// `this` at `at`: registered, lease renewed in time, and, when it ran on this host, its
    /// process still running (a node that crashed and restarted need not wait for its old
    /// lease to run out).
    pub fn is_live(id: &str, registered: Option<&Node>, this: &Node, at: OffsetDateTime) -> bool {
        if id == this.id {
            return true;
        }
        let Some(node) = registered else { return false };
        let fresh = (at - node.heartbeat_at).whole_milliseconds() < Node::LEASE.as_millis() as i128;
        let gone = node.host == this.host && !process_exists(node.pid);
        fresh && !gone
    }
}

/// This machine's name (the kernel's, from gethostname(2): a sandbox may hide /proc/sys), or
/// `localhost`.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; the name is NUL-terminated when it fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len() - 1);
    Some(String::from_utf8_lossy(&buf[..end]).trim().to_owned())
        .filter(|h| rc == 0 && !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Whether a process `pid` runs on this machine: kill(2) with no signal, which answers for
/// processes of other users too (EPERM) and needs no /proc, which a sandbox may hide.
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return false };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A slot for what the API layer derives from one copy of an image (its rendered bodies), made
/// at most once per copy. The store's read cache hands out shared, never-mutated `Arc<Image>`s,
/// so what is kept here stays true for the copy that holds it. The domain knows nothing of what
/// is in it; a clone starts empty (a clone may be modified), and equality ignores it.
#[derive(Default)]
pub struct Memo(std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>);

impl Memo {
    /// The `T` kept here, made by `init` on first use; `None` if the slot holds another type.
    pub fn get_or_init<T: std::any::Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<&T> {
        self.0.get_or_init(|| Box::new(init())).downcast_ref::<T>()
    }
}

impl Clone for Memo {
    fn clone(&self) -> Self {
        Memo::default()
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

impl Image {
    /// A new image with Glance's defaults (`queued`, `shared`, sizes unknown).
    pub fn new(id: String, now: OffsetDateTime) -> Image {
        Image {
            id,
            name: None,
            status: ImageStatus::Queued,
            visibility: Visibility::Shared,
            owner: None,
            protected: false,
            os_hidden: false,
            size: None,
            virtual_size: None,
            min_disk: 0,
            min_ram: 0,
            disk_format: None,
            container_format: None,
            checksum: None,
            os_hash_algo: None,
            os_hash_value: None,
            created_at: now,
            updated_at: now,
            tags: Vec::new(),
            properties: Properties::default(),
            members: Vec::new(),
            upload: None,
            store: None,
            location: None,
            replicas: Vec::new(),
            memo: Memo::default(),
        }
    }
}

/// Why a change to an image was refused, in terms both APIs can map to a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectionKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// The request is malformed or names an invalid value (400).
    Invalid,
    /// The caller may not do this (403).
    Forbidden,
    /// The image is not in a state that allows it (409).
    Conflict,
    /// A quota or size limit would be exceeded (413).
    OverLimit,
    /// The uploaded data does not match the declared format (415).
    BadData,
    /// The image changed under the request (410).
    Gone,
    /// Something the request names does not exist (404).
    NotFound,
}

impl Rejection {
    pub fn new(kind: RejectionKind, message: impl Into<String>) -> Rejection {
        Rejection { kind, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Rejection {
        Rejection::new(RejectionKind::Invalid, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Rejection {
        Rejection::new(RejectionKind::Forbidden, message)
    }

    pub fn conflict(message: impl Into<String>) -> Rejection {
        Rejection::new(RejectionKind::Conflict, message)
    }

    pub fn over_limit(message: impl Into<String>) -> Rejection {
        Rejection::new(RejectionKind::OverLimit, message)
    }
}

/// What text the catalogue refuses to store, in property names and values and in tags, in
/// both APIs: NUL, which PostgreSQL cannot hold in text (and no client means), and, in the
/// image API, characters outside the Basic Multilingual Plane, which Glance's database layer
/// refuses (`no_4byte_params`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadText {
    Nul,
    FourByte,
}

/// The first reason `s` cannot be stored, if any; 4-byte characters count only when
/// `bmp_only` (the image API's rule).
pub fn bad_text(s: &str, bmp_only: bool) -> Option<BadText> {
    if s.contains('\0') {
        Some(BadText::Nul)
    } else if bmp_only && s.chars().any(|c| c.len_utf8() == 4) {
        Some(BadText::FourByte)
    } else {
        None
    }
}

/// Now, truncated to microseconds: the resolution the store keeps, so a value read back
/// equals the value written.
pub fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap_or(t)
}

#[cfg(test)]
mod replica_tests {
    use super::*;

    #[test]
    fn replicas_encode_and_decode() {
        assert_eq!(Replica::encode(&[]), None);
        let two = vec![
            Replica { store: "a,b".into(), location: "x\"y".into() },
            Replica { store: "c".into(), location: String::new() },
        ];
        assert_eq!(Replica::decode(Replica::encode(&two).as_deref()), Some(two));
        assert_eq!(Replica::decode(None), Some(Vec::new()));
        assert_eq!(Replica::decode(Some("not json")), None);
    }

    #[test]
    fn copies_are_dropped_and_picked() {
        let mut i = Image::new("i".into(), now());
        i.store = Some("a".into());
        i.location = Some("la".into());
        i.replicas = vec![Replica { store: "b".into(), location: "lb".into() }];
        assert!(i.in_store("a") && i.in_store("b") && !i.in_store("c"));
        let b = i.only_copy_in("b");
        assert_eq!((b.store.as_deref(), b.location.as_deref(), b.replicas.len()), (Some("b"), Some("lb"), 0));
        i.drop_copy("a");
        assert_eq!(i.locations().collect::<Vec<_>>(), [("b", "lb")]);
        i.drop_copy("b");
        assert_eq!(i.locations().count(), 0);
    }
}

#[cfg(test)]
mod node_tests {
    use super::*;

    #[test]
    fn this_machine_and_its_processes() {
        if let Ok(kernel) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            assert_eq!(hostname(), kernel.trim());
        }
        assert!(process_exists(std::process::id()));
        assert!(process_exists(1), "pid 1 runs, whoever owns it");
        assert!(!process_exists(0));
        assert!(!process_exists(u32::MAX));
        assert!(!process_exists(i32::MAX as u32));
    }
}

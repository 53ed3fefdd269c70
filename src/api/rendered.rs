//! Response bodies rendered from one copy of an image, kept with it (in its [`Memo`]) so that
//! a cached image is serialized once per view, not once per request.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::domain::{Image, Memo};

#[derive(Default)]
pub struct Renderings {
    /// The Compute API's `{"metadata": {...}}` body.
    pub compute_metadata: OnceLock<Bytes>,
    /// The Compute API's `{"image": {...}}` body, with the key of the links it was made with
    /// (its links depend on the request's host and URL).
    pub compute_image: OnceLock<(crate::api::compute::views::LinkKey, Bytes)>,
    /// The image API's image object.
    pub glance_image: OnceLock<Bytes>,
}

/// The renderings kept with `image` (none if its memo were ever given another type: then
/// every request renders anew).
pub fn of(image: &Image) -> Option<&Renderings> {
    let memo: &Memo = &image.memo;
    memo.get_or_init(Renderings::default)
}

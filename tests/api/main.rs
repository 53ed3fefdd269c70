//! Integration tests for `imagemeta`: every test starts the real binary on an
//! ephemeral 127.0.0.1 port and checks the exact wire output against
//! /work/shared/specs/nova-images.md (checklist numbers cite its §12).

mod helpers;

mod auth;
mod cli;
mod data_safety;
mod images;
mod limits;
mod metadata;
mod pagination;
mod protocol;
mod quota;
mod schemas;
mod versions;
mod glance_large_upload;

//! Integration tests for `imagemeta`: every test starts the real binary on an
//! ephemeral 127.0.0.1 port and checks the exact wire output against
//! /work/shared/specs/nova-images.md (checklist numbers cite its §12).

mod helpers;

mod admin;
mod auth;
mod backup;
mod cli;
mod copy;
mod data_safety;
mod fuzz;
mod glance_compute_bridge;
mod glance_create;
mod glance_data;
mod glance_errors;
mod glance_helpers;
mod glance_import;
mod glance_large_upload;
mod glance_list;
mod glance_members;
mod glance_patch;
mod glance_tags_actions;
mod glance_versions;
mod hardening;
mod image_cache;
mod images;
mod limits;
mod logging;
mod metadata;
mod metadefs;
mod object_stores;
mod pagination;
mod postgres;
mod protocol;
mod quota;
mod schemas;
mod versions;

//! imagemeta: the OpenStack Compute API image and image-metadata endpoints, served the way
//! Nova answers them, and the Glance v2 image API, from one binary over an embedded durable
//! store.
//!
//! # Layout
//! * [`cli`]: command-line parsing, and the operator commands (`image create`, `image list`).
//! * [`app`]: builds the state, binds both listeners, serves until a shutdown signal.
//! * [`admin`]: the admin listener (`/healthz`, `/readyz`, `/metrics`) and the metrics.
//! * [`api`]: HTTP only. [`api::compute`] is the Compute API: its request pipeline, route
//!   table, request schemas, views and actions. [`api::image_v2`] is the Glance v2 API in the
//!   same pattern (images, image data, members, schemas, import and tasks, and the metadata
//!   definitions in [`api::image_v2::metadefs`]). [`api::fault`] owns every error
//!   wire format; [`api::access`] what each answered request leaves: metrics, access log.
//! * [`auth`]: token validators (`static`, `noauth`, [`auth::keystone`]) behind one trait.
//! * [`domain`]: images, metadata keys and values, Glance's update rules, the quota rules and
//!   the access policy; no HTTP, no SQL.
//! * [`store`]: the async store trait, its SQLite implementation (group commit, read cache),
//!   its PostgreSQL implementation, and the image data stores ([`store::data`]: directories,
//!   S3, Swift). [`store::metadefs`] holds the metadata definitions catalogue: each of its
//!   transactions is written once, over a statement runner both backends provide.
//! * [`metadefs`]: Glance's predefined metadata definitions, built in, and their load
//!   (`imagemeta metadefs load`).
//! * [`import`]: the image import task (`glance-direct`, `web-download`), run in the
//!   background after `POST /v2/images/{id}/import`.
//! * [`cache`]: the node's image cache (`--image-cache-dir`): local copies of image data,
//!   filled by downloads and the prefetcher, bounded, checked before they are served.
//! * [`copy`]: moving a whole catalogue between backends (`imagemeta catalogue copy`).
//! * [`backup`]: the online backup of a SQLite catalogue (`imagemeta backup`).
//! * [`docs`]: man pages and the sample config file, generated from the command line.
//! * [`service`]: what spans the catalogue and the data, below both APIs: the one delete,
//!   the recovery of uploads whose node died, the sweep of data no image owns.
//! * [`server`]: the connection loop: connection cap, timeouts of every phase of a
//!   connection, the bounded drain at shutdown.

pub mod admin;
pub mod api;
pub mod app;
pub mod auth;
pub mod backup;
pub mod cache;
pub mod cli;
pub mod copy;
pub mod docs;
pub mod domain;
pub mod import;
pub mod metadefs;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;

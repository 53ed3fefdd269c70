//! imagemeta: the OpenStack Compute API image and image-metadata endpoints, served the way
//! Nova answers them, from one binary over an embedded durable store.
//!
//! # Layout
//! * [`cli`]: command-line parsing, and the operator commands (`image create`, `image list`).
//! * [`app`]: builds the state, binds the listener, serves until a shutdown signal.
//! * [`api`]: HTTP only. [`api::compute`] is the Compute API: its request pipeline, route
//!   table, request schemas, views and actions; [`api::fault`] owns every error wire format.
//! * [`auth`]: token validators (`static`, `noauth`) behind one trait.
//! * [`domain`]: images, metadata keys and values, the quota rule and the access policy; no
//!   HTTP, no SQL.
//! * [`store`]: the async store trait and its SQLite implementation with group commit.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod domain;
pub mod store;

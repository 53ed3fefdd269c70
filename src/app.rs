//! The running service: state, listener, middleware, graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::fault::{FAULT_CONTENT_TYPE, Fault, RETRY_AFTER};
use crate::api::{AppState, Settings, compute, image_v2};
use crate::auth::keystone::{Keystone, KeystoneConfig};
use crate::auth::{Authenticator, NoAuth, StaticTokens};
use crate::domain::Node;
use crate::server::{self, Limits};
use crate::service;
use crate::store::data::{DataStore, StoreSpec};
use crate::store::{self, DatabaseUrl, StoreOptions};

/// How tokens are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// A tokens file maps each token to a user, a project and roles.
    Static,
    /// `user:project` tokens taken at their word: local development only.
    Noauth,
    /// Tokens validated against a Keystone v3.
    Keystone,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub compute_listen: SocketAddr,
    pub image_listen: SocketAddr,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin_listen: SocketAddr,
    pub database: DatabaseUrl,
    /// Where image data files live (the one store unless `image_stores` names stores).
    pub image_data_dir: PathBuf,
    pub image_stores: Vec<StoreSpec>,
    pub default_image_store: Option<String>,
    /// This node's image cache: its directory and its bound in bytes.
    pub image_cache: Option<(PathBuf, u64)>,
    pub store: StoreOptions,
    pub auth: AuthMode,
    pub tokens: Option<PathBuf>,
    /// The Keystone settings of `--auth keystone`.
    pub keystone: Option<KeystoneConfig>,
    /// Allow `noauth` on a non-loopback address.
    pub force_noauth: bool,
    /// Start on a new (empty) catalogue even though the image data directory holds data.
    pub allow_new_database: bool,
    pub limits: Limits,
    pub settings: Settings,
}

/// A bound, ready-to-serve application: the Compute API and the image API over one state.
pub struct Application {
    compute: TcpListener,
    image: TcpListener,
    admin: TcpListener,
    state: AppState,
    limits: Limits,
    /// Whether this node sweeps data no image owns (not on a new catalogue started over data
    /// on purpose: that data is what the operator means to keep).
    sweep: bool,
}

impl Application {
    /// Opens the store, registers this node, recovers uploads dead nodes left, loads the
    /// authenticator and binds the listeners (port 0 picks one).
    pub async fn build(config: ServeConfig) -> anyhow::Result<Application> {
        // Before anything that counts: what records before the recorder is gone.
        crate::admin::recorder();
        crate::admin::build_info();
        let auth: Arc<dyn Authenticator> = match config.auth {
            AuthMode::Static => {
                let path = config.tokens.as_ref().context("--auth static needs --tokens FILE")?;
                Arc::new(StaticTokens::load(path)?)
            }
            AuthMode::Noauth => {
                for addr in [config.compute_listen, config.image_listen] {
                    if !addr.ip().is_loopback() && !config.force_noauth {
                        anyhow::bail!(
                            "--auth noauth accepts any token: refusing to listen on {addr} (not loopback) without --force-noauth"
                        );
                    }
                }
                Arc::new(NoAuth)
            }
            AuthMode::Keystone => {
                let config = config.keystone.clone().context("--auth keystone needs --keystone-url and credentials")?;
                Arc::new(Keystone::new(config)?)
            }
        };
        let store = store::open(&config.database, config.store)
            .await
            .with_context(|| format!("cannot open the database {}", config.database))?;
        let data = if config.image_stores.is_empty() {
            DataStore::open(&config.image_data_dir)
                .with_context(|| format!("cannot open the image data directory {}", config.image_data_dir.display()))?
        } else {
            DataStore::open_all(&config.image_stores, config.default_image_store.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!("cannot open the image stores: {e}"))?
        };
        // A new, empty catalogue over a directory of image data is a lost or misplaced
        // database, not a fresh start: starting would serve an empty catalogue, and sweep the
        // data away.
        if store.is_new() && !config.allow_new_database && data.holds_images().await.unwrap_or(true) {
            store.close().await;
            anyhow::bail!(
                "the database {} is new, but the image data directory {} holds image data: is the \
                 database missing, or the wrong one? Refusing to start; --allow-new-database starts anyway \
                 (and keeps that data)",
                config.database,
                if config.image_stores.is_empty() {
                    config.image_data_dir.display().to_string()
                } else {
                    "(an image store)".into()
                }
            );
        }
        // The first write: a catalogue this node cannot write stops it here.
        let node = Node::this_process();
        if let Err(e) = store.heartbeat(&node).await {
            store.close().await;
            anyhow::bail!("the database {} is not writable: {e}", config.database);
        }
        match service::recover_uploads(&store, &data, &node).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(recovered = n, "uploads left by stopped processes are back to queued"),
            Err(e) => tracing::warn!(error = %e, "cannot recover the uploads of stopped processes"),
        }
        match service::recover_tasks(&store, &node).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(failed = n, "tasks left by stopped processes failed"),
            Err(e) => tracing::warn!(error = %e, "cannot recover the tasks of stopped processes"),
        }
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
        };
        let compute = bind(config.compute_listen).await?;
        let image = bind(config.image_listen).await?;
        let admin = bind(config.admin_listen).await?;
        // The Compute API's `alternate` links name the image listener as bound (its real port
        // when it was 0; its address unless it listens on all of them).
        let mut settings = config.settings;
        let bound = image.local_addr()?;
        settings.image_port = bound.port();
        if settings.image_url.is_none() && !bound.ip().is_unspecified() {
            settings.image_url = Some(format!("http://{bound}"));
        }
        let cache = match &config.image_cache {
            Some((dir, max_size)) => Some(
                crate::cache::ImageCache::open(dir, *max_size)
                    .with_context(|| format!("cannot open the image cache directory {}", dir.display()))?,
            ),
            None => None,
        };
        let state = AppState::new(crate::api::Shared {
            store,
            data: Arc::new(data),
            cache,
            auth,
            settings: Arc::new(settings),
            node: Arc::new(node),
            tasks: TaskTracker::new(),
        });
        let sweep = !(state.store.is_new() && config.allow_new_database);
        Ok(Application { compute, image, admin, state, limits: config.limits, sweep })
    }

    pub fn compute_addr(&self) -> std::io::Result<SocketAddr> {
        self.compute.local_addr()
    }

    pub fn image_addr(&self) -> std::io::Result<SocketAddr> {
        self.image.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves both APIs until `shutdown` resolves; then stops accepting, lets the requests in
    /// flight finish for at most the shutdown timeout, cuts the rest, and closes the store.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let Application { compute, image, admin, state, limits, sweep } = self;
        // Each listener is one handler (it routes by itself, in Nova's and Glance's order):
        // served without a `Router`, whose path matching would only lead to the fallback.
        // Outermost: a panic anywhere becomes a 500 instead of a dropped connection.
        // Called straight from the connection loop: no router, no service layers, no boxes.
        let compute_api = {
            let state = state.clone();
            move |request| server::catch_panic(compute::handle(State(state.clone()), request), compute_panic)
        };
        let image_api = {
            let state = state.clone();
            move |request| server::catch_panic(image_v2::handle(State(state.clone()), request), image_panic)
        };
        let compute_busy: Arc<[u8]> = server::response_bytes(overloaded(true)).await.into();
        let image_busy: Arc<[u8]> = server::response_bytes(overloaded(false)).await.into();

        let (listening, stopping) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let admin_state = crate::admin::Admin {
            store: state.store.clone(),
            metrics: crate::admin::recorder(),
            listening: listening.clone(),
            stopping: stopping.clone(),
        };
        let upkeep = tokio::spawn(crate::admin::upkeep(admin_state.metrics.clone()));
        let admin_api = move |request| crate::admin::handle(State(admin_state.clone()), request);
        let admin_busy: Arc<[u8]> = server::response_bytes(
            (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, RETRY_AFTER)], "too many connections\n")
                .into_response(),
        )
        .await
        .into();

        let (stop, cut) = (server::Stop::new(stopping.clone()), CancellationToken::new());
        let connections = TaskTracker::new();
        let maintenance =
            tokio::spawn(service::maintain(state.store.clone(), state.data.clone(), Node::clone(&state.node), sweep));
        let prefetcher = state
            .cache
            .clone()
            .map(|cache| tokio::spawn(cache.run_prefetcher(state.store.clone(), state.data.clone())));
        let listeners = tokio::spawn({
            let (stop, cut, connections) = (stop.clone(), cut.clone(), connections.clone());
            async move {
                tokio::join!(
                    server::serve(
                        compute,
                        compute_api,
                        limits,
                        compute_busy,
                        stop.clone(),
                        cut.clone(),
                        connections.clone()
                    ),
                    server::serve(image, image_api, limits, image_busy, stop.clone(), cut.clone(), connections.clone()),
                    server::serve(admin, admin_api, limits, admin_busy, stop, cut, connections),
                );
            }
        });

        listening.store(true, Ordering::Release);
        shutdown.await;
        stop.stop();
        let _ = listeners.await;
        connections.close();
        state.tasks.close();
        let drained = tokio::time::timeout(limits.shutdown_timeout, async {
            connections.wait().await;
            state.tasks.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                timeout = ?limits.shutdown_timeout,
                "requests still in flight at the end of the shutdown timeout are cut"
            );
            cut.cancel();
            // A cut upload's task sees its body end and puts its image back to `queued`.
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                connections.wait().await;
                state.tasks.wait().await;
            })
            .await;
        }
        maintenance.abort();
        let _ = maintenance.await;
        upkeep.abort();
        if let Some(prefetcher) = prefetcher {
            // A copy cut here is never served: it stays under `incomplete/`, emptied at start.
            prefetcher.abort();
            let _ = prefetcher.await;
        }
        if let Err(e) = state.store.unregister_node(&state.node.id).await {
            tracing::warn!(error = %e, "cannot unregister this node");
        }
        state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// What a connection over the cap is answered, in each API's format.
fn overloaded(nova: bool) -> Response {
    let message = "Too many connections. Please retry later.";
    let status = StatusCode::SERVICE_UNAVAILABLE;
    let fault = if nova { Fault::new(status, message) } else { Fault::detailed(status, message, "") };
    fault.with_header(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER)).render(None)
}

/// Glance's answer to an unexpected error: WebOb's 500 page.
fn image_panic() -> Response {
    Fault::bare(StatusCode::INTERNAL_SERVER_ERROR).render(None)
}

/// Nova's answer to an unexpected error.
fn compute_panic() -> Response {
    let body = r#"{"computeFault": {"code": 500, "message": "Unexpected API Error. Please contact the administrator\n<class 'imagemeta.Panic'>"}}"#;
    (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, HeaderValue::from_static(FAULT_CONTENT_TYPE))], body)
        .into_response()
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

//! The running service: state, listener, middleware, graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::handler::Handler;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use crate::api::fault::FAULT_CONTENT_TYPE;
use crate::api::{AppState, Settings, compute, image_v2};
use crate::auth::keystone::{Keystone, KeystoneConfig};
use crate::auth::{Authenticator, NoAuth, StaticTokens};
use crate::store::data::DataStore;
use crate::store::{self, DatabaseUrl, Synchronous};

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
    pub database: DatabaseUrl,
    /// Where image data files live.
    pub image_data_dir: PathBuf,
    pub synchronous: Synchronous,
    pub auth: AuthMode,
    pub tokens: Option<PathBuf>,
    /// The Keystone settings of `--auth keystone`.
    pub keystone: Option<KeystoneConfig>,
    /// Allow `noauth` on a non-loopback address.
    pub force_noauth: bool,
    pub settings: Settings,
}

/// A bound, ready-to-serve application: the Compute API and the image API over one state.
pub struct Application {
    compute: TcpListener,
    image: TcpListener,
    state: AppState,
}

impl Application {
    /// Opens the store, loads the authenticator and binds the listener (port 0 picks one).
    pub async fn build(config: ServeConfig) -> anyhow::Result<Application> {
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
        let store = store::open(&config.database, config.synchronous).await.context("cannot open the database")?;
        let data = DataStore::open(&config.image_data_dir)
            .with_context(|| format!("cannot open the image data directory {}", config.image_data_dir.display()))?;
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))
        };
        let compute = bind(config.compute_listen).await?;
        let image = bind(config.image_listen).await?;
        // The Compute API's `alternate` links name the image listener as bound (its real port
        // when it was 0; its address unless it listens on all of them).
        let mut settings = config.settings;
        let bound = image.local_addr()?;
        settings.image_port = bound.port();
        if settings.image_url.is_none() && !bound.ip().is_unspecified() {
            settings.image_url = Some(format!("http://{bound}"));
        }
        let state = AppState { store, data: Arc::new(data), auth, settings: Arc::new(settings) };
        Ok(Application { compute, image, state })
    }

    pub fn compute_addr(&self) -> std::io::Result<SocketAddr> {
        self.compute.local_addr()
    }

    pub fn image_addr(&self) -> std::io::Result<SocketAddr> {
        self.image.local_addr()
    }

    /// Serves both APIs until `shutdown` resolves, then finishes the requests in flight.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        // Each listener is one handler (it routes by itself, in Nova's and Glance's order):
        // served without a `Router`, whose path matching would only lead to the fallback.
        // Outermost: a panic anywhere becomes a 500 instead of a dropped connection.
        let compute = compute::handle
            .layer(CatchPanicLayer::custom(panic_response))
            .with_state(self.state.clone())
            .into_make_service();
        let image =
            image_v2::handle.layer(CatchPanicLayer::custom(panic_response)).with_state(self.state).into_make_service();
        let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
        let stopped = |mut rx: tokio::sync::broadcast::Receiver<()>| async move {
            let _ = rx.recv().await;
        };
        let compute = axum::serve(self.compute, compute).with_graceful_shutdown(stopped(stop.subscribe()));
        let image = axum::serve(self.image, image).with_graceful_shutdown(stopped(stop.subscribe()));
        let signal = async move {
            shutdown.await;
            let _ = stop.send(());
        };
        let (a, b, ()) = tokio::join!(compute.into_future(), image.into_future(), signal);
        a.and(b)
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
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

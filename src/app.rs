//! The running service: state, listener, middleware, graceful shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use crate::api::fault::FAULT_CONTENT_TYPE;
use crate::api::{AppState, Settings, compute};
use crate::auth::{Authenticator, NoAuth, StaticTokens};
use crate::store::{self, DatabaseUrl, Synchronous};

/// How tokens are validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// A tokens file maps each token to a user, a project and roles.
    Static,
    /// `user:project` tokens taken at their word: local development only.
    Noauth,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub compute_listen: SocketAddr,
    pub database: DatabaseUrl,
    pub synchronous: Synchronous,
    pub auth: AuthMode,
    pub tokens: Option<PathBuf>,
    /// Allow `noauth` on a non-loopback address.
    pub force_noauth: bool,
    pub settings: Settings,
}

/// A bound, ready-to-serve application.
pub struct Application {
    listener: TcpListener,
    router: Router,
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
                if !config.compute_listen.ip().is_loopback() && !config.force_noauth {
                    anyhow::bail!(
                        "--auth noauth accepts any token: refusing to listen on {} (not loopback) without --force-noauth",
                        config.compute_listen
                    );
                }
                Arc::new(NoAuth)
            }
        };
        let store = store::open(&config.database, config.synchronous)
            .await
            .context("cannot open the database")?;
        let state = AppState {
            store,
            auth,
            settings: Arc::new(config.settings),
        };
        let router = Router::new()
            .fallback(compute::handle)
            .with_state(state)
            // Outermost: a panic anywhere becomes Nova's 500 instead of a dropped connection.
            .layer(CatchPanicLayer::custom(panic_response));
        let listener = TcpListener::bind(config.compute_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.compute_listen))?;
        Ok(Application { listener, router })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then finishes the requests in flight.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    let body = r#"{"computeFault": {"code": 500, "message": "Unexpected API Error. Please contact the administrator\n<class 'imagemeta.Panic'>"}}"#;
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FAULT_CONTENT_TYPE))],
        body,
    )
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

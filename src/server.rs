//! The connection loop of both listeners: how connections are admitted, how long each phase
//! of a connection may take, and how they end when the server stops.
//!
//! Every connection is bounded: a listener holds at most [`Limits::max_connections`] (one
//! over the cap gets a canned 503 and is closed at once, so descriptors never run out); a
//! connection must send its request head within [`Limits::header_timeout`] of its first byte
//! (or of being accepted), may sit idle between requests for [`Limits::keepalive_timeout`],
//! must keep a request body moving ([`Limits::body_timeout`] between bytes) and must keep
//! reading a response ([`Limits::send_timeout`] without progress). At shutdown the listeners
//! stop accepting, idle connections close, requests in flight get [`Limits::shutdown_timeout`]
//! to finish, and whatever is left is cut.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::timeout::TimeoutBody;

/// The bounds on every connection (see the module documentation). Each is a `serve` setting.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub body_timeout: Duration,
    pub send_timeout: Duration,
    pub shutdown_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 4096,
            header_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Descriptors kept back from connections: the database's connections, image data files being
/// read and written, connections to Keystone, the log.
const RESERVED_FDS: u64 = 256;

/// Raises the soft limit on open files to the hard limit, as servers do, and returns the
/// connections each of two listeners may hold within it: a connection can hold a second
/// descriptor (an image file it uploads or downloads), so each counts twice.
pub fn raise_fd_limit_and_cap(wanted: usize) -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    let soft = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            1024
        } else {
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit.rlim_cur = limit.rlim_max;
                }
            }
            limit.rlim_cur
        }
    };
    let fits = (soft.saturating_sub(RESERVED_FDS) / 4).max(1) as usize;
    if wanted > fits {
        tracing::warn!(
            wanted,
            allowed = fits,
            open_files = soft,
            "--max-connections lowered to what the open-files limit allows for two listeners"
        );
    }
    wanted.min(fits)
}

/// The signal to stop serving: a flag that every poll of a connection reads (one atomic load),
/// and a token whose cancellation wakes the connections waiting.
#[derive(Clone)]
pub struct Stop {
    flag: Arc<AtomicBool>,
    token: CancellationToken,
}

impl Stop {
    /// A signal that sets `flag` when given.
    pub fn new(flag: Arc<AtomicBool>) -> Stop {
        Stop { flag, token: CancellationToken::new() }
    }

    pub fn stop(&self) {
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }

    fn given(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

/// Serves `listener` with `app` until `stop` is given; then asks every connection to
/// finish, and cuts those still open when `cut` is cancelled. Connections are tracked by
/// `connections`.
pub async fn serve<A, F>(
    listener: TcpListener,
    app: A,
    limits: Limits,
    overload: Arc<[u8]>,
    stop: Stop,
    cut: CancellationToken,
    connections: TaskTracker,
) where
    A: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    loop {
        let accepted = tokio::select! {
            () = stop.token.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (or a connection reset before it was accepted): the
                // caps are meant to prevent the first; if it happens, wait a moment instead
                // of spinning.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the cap: a 503 in the API's own format, written without reading the
            // request (the socket's buffer takes it at once), then closed.
            let _ = stream.try_write(&overload);
            tracing::warn!(max = limits.max_connections, "connection refused: too many connections");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let (stop, cut) = (stop.clone(), cut.clone());
        connections.spawn(async move {
            connection(stream, app, limits, stop, cut).await;
            drop(slot);
        });
    }
}

async fn connection<A, F>(stream: TcpStream, app: A, limits: Limits, stop: Stop, cut: CancellationToken)
where
    A: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let phase = Arc::new(Phase::new());
    // The client's address, for the access log only (an allocation per request otherwise spared).
    let peer = crate::api::access::access_log().then(|| stream.peer_addr().ok()).flatten();
    let io = TokioIo::new(TimedIo::new(stream, phase.clone(), limits));
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        phase.set(Phase::BUSY);
        // A request without a body (most of them) needs no body timeout, nor its allocation.
        let mut request = request.map(|body| {
            if http_body::Body::is_end_stream(&body) {
                Body::empty()
            } else {
                Body::new(TimeoutBody::new(limits.body_timeout, body))
            }
        });
        if let Some(peer) = peer {
            request.extensions_mut().insert(crate::api::access::Peer(peer));
        }
        Answer { response: app(request), phase: Some(phase.clone()) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header and idle timeouts are the connection's own (TimedIo): hyper's would start
    // at the end of the previous response, and would take one value for both.
    builder.timer(TokioTimer::new()).header_read_timeout(None).keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    // Until the stop: the stop's wake-up is registered once per waker, not on every poll (a
    // lock and a waker check each), and the flag is what is read.
    let mut stopped = std::pin::pin!(stop.token.cancelled());
    let mut registered: Option<std::task::Waker> = None;
    let served = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = conn.as_mut().poll(cx) {
            return Poll::Ready(Some(result));
        }
        if stop.given() {
            return Poll::Ready(None);
        }
        if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            registered = Some(cx.waker().clone());
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
        }
        Poll::Pending
    })
    .await;
    match served {
        Some(result) => return log_end(result),
        None => conn.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        result = conn.as_mut() => log_end(result),
        () = cut.cancelled() => tracing::info!("a connection was cut at the end of the shutdown timeout"),
    }
}

fn log_end(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended");
    }
}

pin_project_lite::pin_project! {
    /// `handler`'s response, or, if it panics, `on_panic`'s (logged): the connection is answered
    /// instead of dropped. A future of its own, not an `async fn`: an `async fn` keeps the
    /// handler's future twice (its argument, and the pinned local it is polled in), and a
    /// request's future is copied whole on its way into the connection (see [`Answer`]).
    pub struct CatchPanic<F> {
        #[pin]
        handler: F,
        on_panic: fn() -> Response<Body>,
    }
}

pub fn catch_panic<F>(handler: F, on_panic: fn() -> Response<Body>) -> CatchPanic<F>
where
    F: Future<Output = Response<Body>>,
{
    CatchPanic { handler, on_panic }
}

impl<F: Future<Output = Response<Body>>> Future for CatchPanic<F> {
    type Output = Response<Body>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Body>> {
        let this = self.project();
        let handler = this.handler;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.poll(cx))) {
            Ok(polled) => polled,
            Err(_) => {
                tracing::error!("a request handler panicked");
                Poll::Ready((this.on_panic)())
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer as the connection takes it: the response, its body wrapped so that
    /// the connection stays busy until the body has been written to the end. A plain future,
    /// for the reason [`CatchPanic`] is one: hyper moves the whole future into the connection
    /// for every request, so its size is a copy per request.
    struct Answer<F> {
        #[pin]
        response: F,
        phase: Option<Arc<Phase>>,
    }
}

impl<F: Future<Output = Response<Body>>> Future for Answer<F> {
    type Output = Result<Response<Written>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.response.poll(cx));
        let phase = this.phase.take().expect("an answer is polled to the end once");
        Poll::Ready(Ok(response.map(|body| Written { body, phase })))
    }
}

/// Where a connection is in its request cycle, shared by its socket and its requests.
///
/// A phase's deadline runs from the first time its socket waits for a byte in it, not from
/// the change itself: the two are apart by no more than the poll that made the change, and
/// a request served at once (the common case) then reads the clock once, not three times.
struct Phase {
    state: AtomicU8,
    /// When the socket first waited in this state, in milliseconds since `origin`
    /// ([`Phase::UNSTAMPED`] until then).
    since: AtomicU64,
    origin: Instant,
    /// Whether `reader` holds a waker (so that a change of state takes no lock otherwise).
    parked: AtomicBool,
    /// The connection's task, parked on a read while busy: woken when the state changes, so
    /// that the idle deadline starts to run (no byte may ever come to wake it).
    reader: std::sync::Mutex<Option<std::task::Waker>>,
}

impl Phase {
    /// Between requests: waiting for the first byte of the next one.
    const IDLE: u8 = 0;
    /// Reading a request head.
    const HEAD: u8 = 1;
    /// A request is being handled and its response written.
    const BUSY: u8 = 2;
    const UNSTAMPED: u64 = u64::MAX;

    fn new() -> Phase {
        // A new connection is reading its first head: the header timeout runs from now.
        Phase {
            state: AtomicU8::new(Phase::HEAD),
            since: AtomicU64::new(0),
            origin: Instant::now(),
            parked: AtomicBool::new(false),
            reader: std::sync::Mutex::new(None),
        }
    }

    fn get(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    fn set(&self, state: u8) {
        self.since.store(Phase::UNSTAMPED, Ordering::Release);
        self.state.store(state, Ordering::Release);
        if self.parked.swap(false, Ordering::AcqRel)
            && let Some(reader) = self.reader.lock().unwrap_or_else(|p| p.into_inner()).take()
        {
            reader.wake();
        }
    }

    /// Remembers the task parked on a read while busy.
    fn park_reader(&self, waker: &std::task::Waker) {
        let mut reader = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        if !reader.as_ref().is_some_and(|r| r.will_wake(waker)) {
            *reader = Some(waker.clone());
        }
        self.parked.store(true, Ordering::Release);
    }

    /// When the socket first waited in the current state (stamped now if it had not yet).
    fn since(&self) -> Instant {
        let mut since = self.since.load(Ordering::Acquire);
        if since == Phase::UNSTAMPED {
            since = self.origin.elapsed().as_millis() as u64;
            self.since.store(since, Ordering::Release);
        }
        self.origin + Duration::from_millis(since)
    }
}

/// A response body that marks its connection idle once it has been written (or dropped).
/// Handed to hyper as it is: no box of its own.
struct Written {
    body: Body,
    phase: Arc<Phase>,
}

impl Drop for Written {
    fn drop(&mut self) {
        self.phase.set(Phase::IDLE);
    }
}

impl http_body::Body for Written {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A socket with the connection's read deadlines (idle, head) and its send-stall deadline.
struct TimedIo {
    stream: TcpStream,
    phase: Arc<Phase>,
    limits: Limits,
    read_deadline: Pin<Box<Sleep>>,
    /// Set while a write waits for the client to read.
    write_stalled: Option<Pin<Box<Sleep>>>,
}

impl TimedIo {
    fn new(stream: TcpStream, phase: Arc<Phase>, limits: Limits) -> TimedIo {
        let read_deadline = Box::pin(tokio::time::sleep(limits.header_timeout));
        TimedIo { stream, phase, limits, read_deadline, write_stalled: None }
    }

    fn timed_out(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
    }
}

impl AsyncRead for TimedIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.phase.get() == Phase::IDLE {
                    // The first byte of the next request: its head must follow in time.
                    this.phase.set(Phase::HEAD);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let (limit, what) = match this.phase.get() {
                    Phase::IDLE => (this.limits.keepalive_timeout, "keep-alive idle connection"),
                    Phase::HEAD => (this.limits.header_timeout, "reading a request head"),
                    // A body's reads are bounded by its own timeout (TimeoutBody).
                    _ => {
                        this.phase.park_reader(cx.waker());
                        return Poll::Pending;
                    }
                };
                // The timer may be armed early (for an earlier phase): when it fires before the
                // deadline it is moved on. Resetting it to every new phase's deadline would
                // cost a trip through the timer wheel per request.
                let deadline = this.phase.since() + limit;
                if this.read_deadline.deadline() > deadline {
                    this.read_deadline.as_mut().reset(deadline);
                }
                loop {
                    ready!(this.read_deadline.as_mut().poll(cx));
                    if Instant::now() >= deadline {
                        return Poll::Ready(Err(TimedIo::timed_out(what)));
                    }
                    this.read_deadline.as_mut().reset(deadline);
                }
            }
        }
    }
}

impl TimedIo {
    /// A write's outcome, with the send-stall deadline: armed when the client stops reading,
    /// disarmed when a write goes through.
    fn stalled(&mut self, cx: &mut Context<'_>, written: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match written {
            Poll::Pending => {
                let send_timeout = self.limits.send_timeout;
                let stalled = self.write_stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(send_timeout)));
                ready!(stalled.as_mut().poll(cx));
                Poll::Ready(Err(TimedIo::timed_out("sending a response")))
            }
            done => {
                self.write_stalled = None;
                done
            }
        }
    }
}

impl AsyncWrite for TimedIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.stalled(cx, written)
    }

    /// Head and body go out in one `writev`, without copying the body into hyper's buffer.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.stalled(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The bytes of a whole HTTP/1.1 response: what an over-the-cap connection is sent.
pub async fn response_bytes(response: Response<Body>) -> Vec<u8> {
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let mut out = format!("HTTP/1.1 {} {}\r\n", parts.status.as_u16(), parts.status.canonical_reason().unwrap_or(""))
        .into_bytes();
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(&body);
    out
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    fn teapot() -> Response<Body> {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::IM_A_TEAPOT;
        response
    }

    #[tokio::test]
    async fn a_handler_that_panics_is_answered_by_on_panic() {
        let answered = catch_panic(async { Response::new(Body::empty()) }, teapot).await;
        assert_eq!(answered.status(), StatusCode::OK);
        let panicking = async {
            tokio::task::yield_now().await;
            panic!("a handler's bug");
        };
        assert_eq!(catch_panic(panicking, teapot).await.status(), StatusCode::IM_A_TEAPOT);
    }
}

//! The admin listener, for the operator's tools, apart from the public APIs (whose paths stay
//! exactly as Nova and Glance answer them): `GET /healthz` (the process is alive),
//! `GET /readyz` (it can serve: the store answers, the listeners are up, it is not stopping),
//! and `GET /metrics` in Prometheus' text format.
//!
//! # Metrics
//! * `imagemeta_http_requests_total{api, route, method, status}`: requests answered, by the
//!   route's template (never the raw path) — and `imagemeta_http_request_duration_seconds`,
//!   their latency.
//! * `imagemeta_store_*`: the SQLite writer's batch sizes, queue depth and commit latency; the
//!   read cache's hits and misses; PostgreSQL's pool (`imagemeta_store_pool_connections`).
//! * `imagemeta_keystone_*`: token validations (latency) and the validation cache's hits.
//! * `imagemeta_build_info{version}`: 1.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::store::DynStore;

/// Latency buckets, in seconds: from a cache hit (tens of microseconds) to a slow upload.
const BUCKETS: [f64; 15] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Installs the process's metrics recorder (once; later calls get the same handle).
pub fn recorder() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full("imagemeta_store_write_batch_size".into()),
                        &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
                    )
                })
                .map(|b| b.install_recorder())
                .unwrap_or_else(Err);
            match handle {
                Ok(handle) => handle,
                // Installed already (by another part of this process): a handle of our own
                // renders nothing, but answers.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Drains the histograms' recorded samples into their buckets every few seconds. The recorder
/// keeps every sample until then (one per request): without this, a server that is not scraped
/// would hold them all.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(2));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        handle.run_upkeep();
    }
}

/// What the admin listener answers from.
#[derive(Clone)]
pub struct Admin {
    pub store: DynStore,
    pub metrics: PrometheusHandle,
    /// Set once both public listeners accept connections.
    pub listening: Arc<AtomicBool>,
    /// Set when the server starts to stop.
    pub stopping: Arc<AtomicBool>,
}

/// Every request of the admin listener.
pub async fn handle(
    axum::extract::State(admin): axum::extract::State<Admin>,
    request: axum::extract::Request,
) -> Response {
    let text = |status: StatusCode, body: String| {
        (status, [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))], body).into_response()
    };
    if request.method() != axum::http::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match admin.ready().await {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => {
                let mut r = text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n"));
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(crate::api::fault::RETRY_AFTER));
                r
            }
        },
        "/metrics" => {
            admin.store.observe();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))],
                {
                    let mut body = admin.metrics.render();
                    requests::render(&mut body);
                    Tally::render(&mut body);
                    body
                },
            )
                .into_response()
        }
        _ => text(StatusCode::NOT_FOUND, "/healthz, /readyz, /metrics\n".into()),
    }
}

impl Admin {
    /// Why this node cannot serve now, if it cannot.
    async fn ready(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Acquire) {
            return Err("stopping".into());
        }
        if !self.listening.load(Ordering::Acquire) {
            return Err("the listeners are not up yet".into());
        }
        match tokio::time::timeout(Duration::from_secs(3), self.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the catalogue does not answer: {e}")),
            Err(_) => Err("the catalogue does not answer within 3 s".into()),
        }
    }
}

/// One thread's part of a metric, alone on its cache lines (128 bytes: the prefetcher fetches
/// lines in pairs). Counters every request bumps are kept per thread and summed when scraped:
/// the cores serving requests side by side then never write to the same line, which would
/// otherwise move between them on every request.
#[derive(Default)]
#[repr(align(128))]
pub struct Shard<T>(T);

impl<T> std::ops::Deref for Shard<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// What a metric counted per thread adds up.
trait Counts: Default {
    /// Adds `other`'s counts to these.
    fn add(&self, other: &Self);
}

impl Counts for AtomicU64 {
    fn add(&self, other: &Self) {
        self.fetch_add(other.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

impl Counts for [AtomicU64; 4] {
    fn add(&self, other: &Self) {
        self.iter().zip(other).for_each(|(to, from)| to.add(from));
    }
}

/// A metric counted per thread: the shards of the living threads, and what the threads that
/// ended counted. A thread's shard is folded in when the thread ends, so there are never more
/// shards than threads (the runtime's blocking threads come and go).
#[derive(Default)]
struct Series<T> {
    ended: T,
    live: Vec<Arc<Shard<T>>>,
}

impl<T: Counts> Series<T> {
    /// A new shard, for the calling thread.
    fn join(&mut self) -> Arc<Shard<T>> {
        let shard: Arc<Shard<T>> = Arc::new(Shard::default());
        self.live.push(shard.clone());
        shard
    }

    /// Folds `shard` in: its thread ends.
    fn leave(&mut self, shard: &Arc<Shard<T>>) {
        self.ended.add(shard);
        self.live.retain(|s| !Arc::ptr_eq(s, shard));
    }

    /// Every thread's counts, summed.
    fn total(&self) -> T {
        let total = T::default();
        total.add(&self.ended);
        self.live.iter().for_each(|s| total.add(s));
        total
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The counters of the request path's caches, kept per thread (see [`Shard`]).
#[derive(Clone, Copy)]
pub enum Tally {
    /// `imagemeta_store_cache_hits_total`: reads the store's cache answered.
    StoreCacheHit,
    /// `imagemeta_store_cache_misses_total`: reads the store had to make.
    StoreCacheMiss,
    /// `imagemeta_keystone_cache_hits_total`: tokens known without asking Keystone.
    KeystoneCacheHit,
    /// `imagemeta_keystone_cache_misses_total`: tokens Keystone was asked about.
    KeystoneCacheMiss,
}

impl Tally {
    const ALL: [Tally; 4] =
        [Tally::StoreCacheHit, Tally::StoreCacheMiss, Tally::KeystoneCacheHit, Tally::KeystoneCacheMiss];

    fn name(self) -> &'static str {
        match self {
            Tally::StoreCacheHit => "imagemeta_store_cache_hits_total",
            Tally::StoreCacheMiss => "imagemeta_store_cache_misses_total",
            Tally::KeystoneCacheHit => "imagemeta_keystone_cache_hits_total",
            Tally::KeystoneCacheMiss => "imagemeta_keystone_cache_misses_total",
        }
    }

    /// Counts one.
    pub fn add(self) {
        let counted = tallies::MINE.try_with(|mine| mine.0[self as usize].fetch_add(1, Ordering::Relaxed));
        if counted.is_err() {
            // This thread is ending and its shard is gone: straight to what ended threads counted.
            lock(tallies::series()).ended[self as usize].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Appends every tally to `out`, in Prometheus' text format.
    fn render(out: &mut String) {
        use std::fmt::Write;
        let total = lock(tallies::series()).total();
        for tally in Tally::ALL {
            let name = tally.name();
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", total[tally as usize].load(Ordering::Relaxed));
        }
    }
}

mod tallies {
    use std::sync::atomic::AtomicU64;
    use std::sync::{Arc, Mutex, OnceLock};

    use super::{Series, Shard, Tally, lock};

    type Counts = [AtomicU64; Tally::ALL.len()];

    pub fn series() -> &'static Mutex<Series<Counts>> {
        static SERIES: OnceLock<Mutex<Series<Counts>>> = OnceLock::new();
        SERIES.get_or_init(Mutex::default)
    }

    /// A thread's shard, folded into the series when the thread ends.
    pub struct Mine(pub Arc<Shard<Counts>>);

    impl Drop for Mine {
        fn drop(&mut self) {
            lock(series()).leave(&self.0);
        }
    }

    thread_local! {
        pub static MINE: Mine = Mine(lock(series()).join());
    }
}

/// Records one answered request of `api` (`compute`, `image`) for the route template `route`.
pub fn request(
    api: &'static str,
    route: &'static str,
    method: &axum::http::Method,
    status: StatusCode,
    elapsed: Duration,
) {
    let method = method_label(method);
    // The handles of each label set, looked up once per thread: a request then costs a
    // lookup and four atomic additions, not two keys built, hashed and found in a registry.
    // The label strings are static, so their addresses are the key (a string at two addresses
    // only gets two handles to the same series).
    /// (api, route, method, status).
    type Labels = (usize, usize, usize, u16);
    thread_local! {
        static HANDLES: std::cell::RefCell<HashMap<Labels, requests::Handles, std::hash::BuildHasherDefault<Mix>>> =
            std::cell::RefCell::new(HashMap::default());
    }
    let counted = HANDLES.try_with(|cell| {
        let mut map = cell.borrow_mut();
        let key = (api.as_ptr() as usize, route.as_ptr() as usize, method.as_ptr() as usize, status.as_u16());
        let handles = map.entry(key).or_insert_with(|| requests::Handles::new(api, route, method, status));
        handles.record(elapsed);
    });
    if counted.is_err() {
        // This thread is ending: a handle of its own would be folded in at once.
        requests::Handles::new(api, route, method, status).record(elapsed);
    }
}

/// The request metrics, kept here rather than in the recorder: a request costs four relaxed
/// atomic additions (its counter, its latency's bucket, sum and count), where the recorder's
/// histogram reads a clock and queues a sample per request until its upkeep.
///
/// Each thread counts in series of its own ([`Shard`]s), summed when scraped: the two cores
/// serving requests side by side then never write to the same cache line, which would bounce
/// between them on every request.
mod requests {
    use std::collections::BTreeMap;
    use std::fmt::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use axum::http::StatusCode;

    use super::{Counts, Series, Shard, lock};

    /// (api, route, method, status).
    type CounterKey = (&'static str, &'static str, &'static str, u16);
    /// (api, route, method).
    type LatencyKey = (&'static str, &'static str, &'static str);

    /// One label set's latencies: a count per bucket of [`super::BUCKETS`] (not cumulative:
    /// the last counts those above every bound), their sum and their number.
    #[derive(Default)]
    pub struct Latency {
        buckets: [AtomicU64; super::BUCKETS.len() + 1],
        sum_nanos: AtomicU64,
        count: AtomicU64,
    }

    impl Latency {
        pub fn record(&self, elapsed: Duration) {
            let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            let bucket = bounds().iter().position(|&b| nanos <= b).unwrap_or(super::BUCKETS.len());
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
            self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl Counts for Latency {
        fn add(&self, other: &Latency) {
            self.buckets.iter().zip(&other.buckets).for_each(|(to, from)| to.add(from));
            self.sum_nanos.add(&other.sum_nanos);
            self.count.add(&other.count);
        }
    }

    /// The buckets' upper bounds in nanoseconds.
    fn bounds() -> &'static [u64; super::BUCKETS.len()] {
        static BOUNDS: OnceLock<[u64; super::BUCKETS.len()]> = OnceLock::new();
        BOUNDS.get_or_init(|| super::BUCKETS.map(|s| (s * 1e9).round() as u64))
    }

    /// Every series, by label set.
    #[derive(Default)]
    struct Registry {
        counters: Mutex<BTreeMap<CounterKey, Series<AtomicU64>>>,
        latencies: Mutex<BTreeMap<LatencyKey, Series<Latency>>>,
    }

    fn registry() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(Registry::default)
    }

    /// One thread's shards of the series of one label set (folded in when dropped, at the
    /// thread's end).
    pub struct Handles {
        counter_key: CounterKey,
        counter: Arc<Shard<AtomicU64>>,
        latency_key: LatencyKey,
        latency: Arc<Shard<Latency>>,
    }

    impl Handles {
        pub fn new(api: &'static str, route: &'static str, method: &'static str, status: StatusCode) -> Handles {
            let r = registry();
            let (counter_key, latency_key) = ((api, route, method, status.as_u16()), (api, route, method));
            let counter = lock(&r.counters).entry(counter_key).or_default().join();
            let latency = lock(&r.latencies).entry(latency_key).or_default().join();
            Handles { counter_key, counter, latency_key, latency }
        }

        pub fn record(&self, elapsed: Duration) {
            self.counter.fetch_add(1, Ordering::Relaxed);
            self.latency.record(elapsed);
        }
    }

    impl Drop for Handles {
        fn drop(&mut self) {
            let r = registry();
            if let Some(series) = lock(&r.counters).get_mut(&self.counter_key) {
                series.leave(&self.counter);
            }
            if let Some(series) = lock(&r.latencies).get_mut(&self.latency_key) {
                series.leave(&self.latency);
            }
        }
    }

    /// Appends the request metrics to `out`, in Prometheus' text format.
    pub fn render(out: &mut String) {
        let r = registry();
        let counters: Vec<(CounterKey, u64)> =
            lock(&r.counters).iter().map(|(key, series)| (*key, series.total().load(Ordering::Relaxed))).collect();
        if !counters.is_empty() {
            out.push_str("# TYPE imagemeta_http_requests_total counter\n");
        }
        for ((api, route, method, status), n) in counters {
            let labels = labels(api, route, method);
            let _ = writeln!(out, "imagemeta_http_requests_total{{{labels},status=\"{status}\"}} {n}");
        }
        let latencies: Vec<(LatencyKey, Latency)> =
            lock(&r.latencies).iter().map(|(key, series)| (*key, series.total())).collect();
        if !latencies.is_empty() {
            out.push_str("# TYPE imagemeta_http_request_duration_seconds histogram\n");
        }
        for ((api, route, method), latency) in latencies {
            let labels = labels(api, route, method);
            let name = "imagemeta_http_request_duration_seconds";
            let mut below = 0;
            for (bound, bucket) in super::BUCKETS.iter().zip(&latency.buckets) {
                below += bucket.load(Ordering::Relaxed);
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {below}");
            }
            below += latency.buckets[super::BUCKETS.len()].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {below}");
            let sum = latency.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", latency.count.load(Ordering::Relaxed));
        }
    }

    fn labels(api: &str, route: &str, method: &str) -> String {
        format!("api=\"{}\",route=\"{}\",method=\"{}\"", escape(api), escape(route), escape(method))
    }

    /// A label value as the text format wants it: backslash, double quote and newline escaped.
    fn escape(value: &str) -> String {
        value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
    }
    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn buckets_are_cumulative_and_sum_and_count_add_up_over_threads() {
            // Two threads' shards of one series, one of them ended (folded in, no longer a
            // shard): the scrape shows their sum.
            let ended = Handles::new("unit", "/unit/{id}", "GET", StatusCode::OK);
            for micros in [50, 300] {
                ended.record(Duration::from_micros(micros));
            }
            drop(ended);
            let live = Handles::new("unit", "/unit/{id}", "GET", StatusCode::OK);
            live.record(Duration::from_micros(20_000_000));
            let key = ("unit", "/unit/{id}", "GET");
            assert_eq!(lock(&registry().latencies)[&key].live.len(), 1);
            let mut out = String::new();
            render(&mut out);
            let series = r#"api="unit",route="/unit/{id}",method="GET""#;
            for line in [
                format!(r#"imagemeta_http_requests_total{{{series},status="200"}} 3"#),
                format!(r#"imagemeta_http_request_duration_seconds_bucket{{{series},le="0.0001"}} 1"#),
                format!(r#"imagemeta_http_request_duration_seconds_bucket{{{series},le="0.00025"}} 1"#),
                format!(r#"imagemeta_http_request_duration_seconds_bucket{{{series},le="0.0005"}} 2"#),
                format!(r#"imagemeta_http_request_duration_seconds_bucket{{{series},le="10"}} 2"#),
                format!(r#"imagemeta_http_request_duration_seconds_bucket{{{series},le="+Inf"}} 3"#),
                format!(r#"imagemeta_http_request_duration_seconds_sum{{{series}}} 20.00035"#),
                format!(r#"imagemeta_http_request_duration_seconds_count{{{series}}} 3"#),
            ] {
                assert!(out.lines().any(|l| l == line), "{line} not in\n{out}");
            }
            assert_eq!(escape("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
        }
    }
}

/// A multiply-rotate hash for keys this process makes itself (never a client's: no flooding to
/// fear), cheaper per request than the default SipHash.
#[derive(Default)]
struct Mix(u64);

impl std::hash::Hasher for Mix {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
}

/// A method as a label: the ones the APIs know, every other one as `other` (the label set
/// stays bounded whatever clients send).
fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        _ => "other",
    }
}

/// `imagemeta_build_info{version}`.
pub fn build_info() {
    metrics::gauge!("imagemeta_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_s_tallies_outlive_it() {
        let total = || lock(tallies::series()).total()[Tally::KeystoneCacheMiss as usize].load(Ordering::Relaxed);
        let before = total();
        std::thread::spawn(|| (0..3).for_each(|_| Tally::KeystoneCacheMiss.add())).join().unwrap();
        assert!(total() >= before + 3);
    }
}

//! `tollgate::mock` — a fast, OpenAI-compatible fake LLM provider.
//!
//! Used by tests (spawned in-process on port 0 with [`start`]), by demos (the
//! gateway's `serve` starts one for the shipped offline model) and by
//! benchmarks (`tollgate mock-upstream --port N`, see [`run`]).
//!
//! # Routes (each with and without the `/v1` prefix)
//! * `POST /v1/chat/completions`, `POST /v1/completions` — streaming or not.
//! * `POST /v1/embeddings`, `GET /v1/models`.
//! * `GET /mock/stats`, `GET|POST /mock/behaviour`, `POST /mock/reset`.
//!
//! # Deterministic answers
//! * Reply text: `"This is a mock response from tollgate."` split into
//!   `chunks` pieces (default 5). With 7 or fewer pieces the words of the
//!   sentence are spread over the pieces; with more, every piece is one word
//!   and the sentence repeats. `completion_tokens` = number of pieces sent,
//!   streaming or not. `max_tokens` / `max_completion_tokens` smaller than
//!   that cut the reply to that many pieces, with `finish_reason: "length"`.
//! * `prompt_tokens` = max(1, characters / 4), where characters is the total
//!   length of every message `content` string (or `text` of content parts;
//!   counted as written in the JSON, so an escape such as `\n` counts as 2).
//!   For `/v1/completions` the same over the prompt string(s); token-array
//!   prompts count one per token. Embeddings use the same rule per input.
//!
//! # Behaviour knobs
//! Per request, highest precedence first: headers `x-mock-latency-ms`,
//! `x-mock-status`, `x-mock-retry-after`, `x-mock-chunks`,
//! `x-mock-chunk-interval-ms`, `x-mock-fault` (`drop|hang|cut|none`); then a
//! top-level body field `"mock": {…Behaviour fields…}`; then the run-time
//! defaults ([`MockServer::set_behaviour`], `POST /mock/behaviour`). Merged
//! field by field. A 2xx `status` in a header/body patch clears an error
//! status from the defaults; `fault: "none"` clears a default fault.
//!
//! Order of effects: `latency_ms` sleep, then `hang` (never answers), `drop`
//! (response head, then the body errors so the connection breaks), `cut`
//! (streams: about half the content chunks, then the connection breaks; not
//! streaming: same as `drop`), `bad_shape` (200, JSON that is not a
//! completion), `html` (200, an HTML page), then an error `status`, then the
//! normal answer; `garbage` / `garbage_mid` put a non-JSON event first /
//! halfway into a stream.
//!
//! # Stats
//! `requests` counts every inference-route request (chat, completions,
//! embeddings, models), whatever its outcome; `chat` / `completions` /
//! `embeddings` per route. `streams_started` counts SSE bodies created,
//! `streams_completed` those that yielded `[DONE]`, `streams_cancelled` those
//! dropped before that (the client went away). A stream ended by the `cut`
//! fault counts as neither completed nor cancelled.

mod behaviour;
mod handlers;
mod stream;
#[cfg(test)]
mod tests;
mod wire;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::task::Poll;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use serde::{Deserialize, Serialize};

/// Largest request body the mock accepts (tests send big prompts).
const MAX_BODY: usize = 64 << 20;

/// How the mock server is started.
#[derive(Clone, Debug)]
pub struct MockOptions {
    /// Interface to bind; default `"127.0.0.1"`.
    pub host: String,
    /// Port; default 0 (ephemeral).
    pub port: u16,
    /// actix worker threads; default 1.
    pub workers: usize,
    /// Defaults for every request (changeable at run time).
    pub behaviour: Behaviour,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            host: "127.0.0.1".to_string(),
            port: 0,
            workers: 1,
            behaviour: Behaviour::default(),
        }
    }
}

/// What the mock does with a request. Every field has a "normal" default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct Behaviour {
    /// Delay before the response head (and so before the first chunk).
    pub latency_ms: u64,
    /// If set and not 2xx, answer with this status and an OpenAI-shaped error.
    pub status: Option<u16>,
    /// Sent verbatim as `retry-after` with an error status: seconds, an
    /// HTTP date, or garbage such as `1e20` (a number or a string in JSON).
    #[serde(deserialize_with = "behaviour::text_or_number")]
    pub retry_after: Option<String>,
    /// Sent verbatim as `retry-after-ms` with an error status.
    #[serde(deserialize_with = "behaviour::text_or_number")]
    pub retry_after_ms: Option<String>,
    /// Number of content pieces in a reply (default 5).
    pub chunks: Option<usize>,
    /// Delay before each content chunk of a stream.
    pub chunk_interval_ms: u64,
    /// Connection-level fault.
    pub fault: Option<Fault>,
}

/// Connection-level faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Send the response head, then break the connection.
    Drop,
    /// Never answer (sleeps an hour).
    Hang,
    /// Streams: send about half the chunks, then break the connection.
    Cut,
    /// 200 with valid JSON that is not a completion (`choices`/`data` not a
    /// list); for a stream request too, instead of SSE.
    BadShape,
    /// 200 with an HTML page (`text/html`), stream or not.
    Html,
    /// Streams: the first event's data is not JSON.
    Garbage,
    /// Streams: about half the chunks, then an event whose data is not JSON
    /// (the stream goes on after it).
    GarbageMid,
}

/// A copy of the mock's counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub chat: u64,
    pub completions: u64,
    pub embeddings: u64,
    pub streams_started: u64,
    pub streams_completed: u64,
    pub streams_cancelled: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) chat: AtomicU64,
    pub(crate) completions: AtomicU64,
    pub(crate) embeddings: AtomicU64,
    pub(crate) streams_started: AtomicU64,
    pub(crate) streams_completed: AtomicU64,
    pub(crate) streams_cancelled: AtomicU64,
}

/// State shared by every worker of one mock server.
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    behaviour: RwLock<Behaviour>,
    initial: Behaviour,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Shared {
    fn new(initial: Behaviour) -> Self {
        Shared {
            counters: Counters::default(),
            behaviour: RwLock::new(initial.clone()),
            initial,
        }
    }

    pub(crate) fn behaviour(&self) -> Behaviour {
        match self.behaviour.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn set_behaviour(&self, b: Behaviour) {
        match self.behaviour.write() {
            Ok(mut g) => *g = b,
            Err(poisoned) => *poisoned.into_inner() = b,
        }
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            requests: l(&c.requests),
            chat: l(&c.chat),
            completions: l(&c.completions),
            embeddings: l(&c.embeddings),
            streams_started: l(&c.streams_started),
            streams_completed: l(&c.streams_completed),
            streams_cancelled: l(&c.streams_cancelled),
        }
    }

    pub(crate) fn reset(&self) {
        let c = &self.counters;
        for a in [
            &c.requests,
            &c.chat,
            &c.completions,
            &c.embeddings,
            &c.streams_started,
            &c.streams_completed,
            &c.streams_cancelled,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        self.set_behaviour(self.initial.clone());
    }
}

/// A running mock server. Dropping it does NOT stop it (it runs until
/// [`MockServer::stop`] or until the actix System stops).
pub struct MockServer {
    /// The bound address (the real port when started on port 0).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    handle: ServerHandle,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// Base URL including `/v1`, e.g. `http://127.0.0.1:PORT/v1`. An
    /// unspecified bind address (`0.0.0.0` / `::`) is shown as loopback.
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            match addr {
                SocketAddr::V4(_) => addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into()),
                SocketAddr::V6(_) => addr.set_ip(std::net::Ipv6Addr::LOCALHOST.into()),
            }
        }
        format!("http://{addr}/v1")
    }

    /// Cheap read of the counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.snapshot()
    }

    /// Replace the run-time default behaviour.
    pub fn set_behaviour(&self, b: Behaviour) {
        self.shared.set_behaviour(b);
    }

    /// Graceful stop: stop accepting, give open connections up to 1 s.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

fn build(
    opts: &MockOptions,
    shared: Arc<Shared>,
    signals: bool,
) -> io::Result<(actix_web::dev::Server, SocketAddr)> {
    let data = web::Data::from(shared);
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY))
            .configure(handlers::routes)
    })
    .workers(opts.workers.max(1))
    .backlog(4096)
    .shutdown_timeout(1);
    if !signals {
        server = server.disable_signals();
    }
    let server = server.bind((opts.host.as_str(), opts.port))?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| io::Error::other("mock: bind produced no address"))?;
    Ok((server.run(), addr))
}

/// Binds (port 0 allowed) and starts the server on the current actix System
/// (must be called inside one, e.g. under `#[actix_rt::test]`). Returns once
/// bound and the accept loop is running.
pub async fn start(opts: MockOptions) -> io::Result<MockServer> {
    let shared = Arc::new(Shared::new(opts.behaviour.clone()));
    let (mut server, addr) = build(&opts, shared.clone(), false)?;
    let handle = server.handle();
    // Poll once so the accept thread and workers start now (the server future
    // is lazy), surfacing a start-up error here instead of in the spawned task.
    let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut server).poll(cx))).await;
    if let Poll::Ready(result) = first {
        result?;
        return Err(io::Error::other("mock: server stopped during start-up"));
    }
    actix_rt::spawn(server);
    Ok(MockServer {
        addr,
        shared,
        handle,
    })
}

/// For the CLI `tollgate mock-upstream`: start and run until ctrl-c / SIGTERM.
/// Must be called inside an actix System (e.g. `#[actix_web::main]`).
pub async fn run(opts: MockOptions) -> io::Result<()> {
    let shared = Arc::new(Shared::new(opts.behaviour.clone()));
    let (server, addr) = build(&opts, shared, true)?;
    tracing::info!(%addr, workers = opts.workers.max(1), "mock upstream listening");
    server.await
}

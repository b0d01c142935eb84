//! tollgate: an LLM gateway built as an actor system. See DESIGN.md for the
//! map; `start` wires the actors and the HTTP server.

pub mod access;
pub mod actors;
pub mod breaker;
pub mod config;
pub mod error;
pub mod http;
pub mod litellm_config;
pub mod metrics;
pub mod mock;
pub mod model_list;
pub mod observe;
pub mod pricing;
pub mod probe;
pub mod providers;
pub mod request;
pub mod routing;
pub mod shared;
pub mod shared_limits;
pub mod spool;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod topology;
pub mod window;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::{web, App, HttpServer};

use crate::actors::auth::AuthActor;
use crate::actors::auth_hub::AuthHub;
use crate::actors::budget::BudgetActor;
use crate::actors::health::HealthActor;
use crate::actors::logger::{FlushLog, LoggerActor};
use crate::actors::models::ModelsActor;
use crate::actors::provider::ProviderActor;
use crate::actors::rate_limit::RateLimitActor;
use crate::actors::router::RouterActor;
use crate::actors::spend::{self, SpendActor};
use crate::actors::spend_buffer::SpendBuffer;
use crate::actors::{supervise, Metered};
use crate::config::{Config, Provider};
use crate::metrics::Metrics;
use crate::topology::{SharedTopology, Topology};

/// Everything a handler needs, shared read-only by all workers. Mutable
/// state lives in the actors behind these addresses.
pub struct Gateway {
    pub config: Arc<Config>,
    /// The model groups and deployments now; swapped whole on a change.
    pub topology: SharedTopology,
    pub metrics: Arc<Metrics>,
    pub limiter: Metered<RateLimitActor>,
    /// Owner of deployment failure counts and cooldowns.
    pub health: Metered<HealthActor>,
    pub spend: Metered<SpendActor>,
    /// Owner of the budget ledger (spend known + reserved per entity).
    pub budget: Metered<BudgetActor>,
    pub logger: Metered<LoggerActor>,
    pub auth_hub: Metered<AuthHub>,
    /// Owner of the models added at run time (and of topology swaps).
    pub models: Metered<ModelsActor>,
    /// The key/user/team database, if configured.
    pub store: Option<store::Store>,
    pub redis: Option<shared::Redis>,
    /// False when `logging.request_log = "off"`: nothing is sent at all.
    pub request_log_enabled: bool,
    /// Log destinations (Langfuse, OTLP, webhooks); None: none configured,
    /// and requests build no log record at all.
    pub observe: Option<Arc<observe::Observer>>,
    /// Set just before the shutdown grace ends: open streams send their
    /// client an error event instead of being cut without a word.
    pub draining: tokio::sync::watch::Sender<bool>,
    /// Set by SpendActor while the spend spool is full: requests that
    /// would cost money are refused rather than served unrecorded.
    pub spool_full: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the request log: {0}")]
    RequestLog(std::io::Error),
    #[error("cannot start the built-in mock upstream: {0}")]
    Mock(std::io::Error),
    #[error("database: {0}")]
    Store(#[from] store::StoreError),
    #[error("redis: {0}")]
    Redis(String),
    #[error("spend spool: {0}")]
    Spool(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A started gateway. Dropping it does not stop it; call `stop` or `wait`.
pub struct RunningGateway {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    handle: actix_web::dev::ServerHandle,
    server: actix_rt::task::JoinHandle<std::io::Result<()>>,
    mock: Option<mock::MockServer>,
    arbiters: Vec<Arbiter>,
    /// The dependency probes, stopped with the gateway.
    probes: Vec<actix_rt::task::JoinHandle<()>>,
    /// Held for the gateway's lifetime: the spool is this process's alone.
    _spool_lock: Option<spool::SpoolLock>,
}

impl RunningGateway {
    /// Base URL for OpenAI clients, e.g. `http://127.0.0.1:4000/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The built-in mock upstream, if this config started one.
    pub fn mock(&self) -> Option<&mock::MockServer> {
        self.mock.as_ref()
    }

    /// Stop accepting, let in-flight requests and streams finish (bounded
    /// by `server.shutdown_grace_secs`), then flush every actor.
    pub async fn stop(mut self) {
        self.drain().await;
        self.finish().await;
    }

    /// Runs until SIGTERM or SIGINT (then drains as `stop` does) or until
    /// the server ends by itself; then flushes pending work and shuts the
    /// actors down.
    pub async fn wait(mut self) {
        tokio::select! {
            res = &mut self.server => {
                if let Ok(Err(e)) = res {
                    tracing::error!(error = %e, "HTTP server ended with an error");
                }
            }
            _ = shutdown_signal() => {
                tracing::info!(
                    grace_secs = self.gateway.config.server.shutdown_grace_secs,
                    "shutting down: no new connections; in-flight requests and streams may finish"
                );
                self.drain().await;
            }
        }
        self.finish().await;
    }

    /// Graceful stop within `server.shutdown_grace_secs`. Shortly before the
    /// grace ends, streams still open get an error event and end, so no
    /// client sees a stream cut without a word.
    async fn drain(&mut self) {
        let grace = Duration::from_secs(self.gateway.config.server.shutdown_grace_secs);
        let margin = (grace / 10).clamp(Duration::from_millis(200), Duration::from_secs(2));
        let gw = self.gateway.clone();
        let warn_streams = actix_rt::spawn(async move {
            actix_rt::time::sleep(grace.saturating_sub(margin)).await;
            gw.draining.send_replace(true);
        });
        self.handle.stop(true).await;
        warn_streams.abort();
        if let Ok(Err(e)) = (&mut self.server).await {
            tracing::error!(error = %e, "HTTP server ended with an error");
        }
    }

    async fn finish(self) {
        for probe in &self.probes {
            probe.abort();
        }
        // Give queued spend a few seconds to reach the database; what does
        // not stays in the spool for the next start.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while let Ok(waiting) = self.gateway.spend.addr.send(spend::Flush).await {
            if waiting == 0 || std::time::Instant::now() > deadline {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.gateway.logger.addr.send(FlushLog).await;
        if let Some(obs) = &self.gateway.observe {
            obs.drain(std::time::Instant::now() + Duration::from_secs(3))
                .await;
        }
        if let Some(mock) = self.mock {
            mock.stop().await;
        }
        for arbiter in self.arbiters {
            arbiter.stop();
        }
    }
}

/// SIGTERM or SIGINT (Ctrl-C). Never resolves if neither can be listened to.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::warn!("cannot listen for SIGTERM/SIGINT; stop the gateway another way");
            std::future::pending::<()>().await
        }
    }
}

/// The root span is at INFO: below that level it would be made and
/// thrown away on every request, naming nothing.
fn request_spans(config: &Config) -> bool {
    tracing::enabled!(tracing::Level::INFO)
        && (config.logging.request_spans || tracing::enabled!(tracing::Level::DEBUG))
}

fn uses_mock(config: &Config) -> bool {
    config
        .models
        .values()
        .flat_map(|g| g.deployments.iter())
        .any(|d| d.provider() == Provider::Mock && d.api_base.is_none())
}

/// Starts the gateway on the current actix System: actors first, then the
/// HTTP server (port 0 binds a free port; see `RunningGateway::addr`).
pub async fn start(config: Config) -> Result<RunningGateway, StartError> {
    // awc's rustls has no crypto backend of its own (CRATES.md gotcha 1).
    let _ = rustls::crypto::ring::default_provider().install_default();

    let mock = if uses_mock(&config) {
        let opts = mock::MockOptions {
            host: "127.0.0.1".into(),
            port: config.mock_upstream.port,
            workers: 1,
            behaviour: mock::Behaviour {
                latency_ms: config.mock_upstream.latency_ms,
                chunks: config.mock_upstream.chunks,
                chunk_interval_ms: config.mock_upstream.chunk_interval_ms,
                ..Default::default()
            },
        };
        Some(mock::start(opts).await.map_err(StartError::Mock)?)
    } else {
        None
    };

    let metrics = Arc::new(Metrics::new());
    let up = |dependency| {
        metrics
            .dependency_up
            .get_or_create_owned(&metrics::DependencyLabels { dependency })
    };
    let store = match &config.resolved_database_url {
        Some(url) => {
            let applied = store::Store::migrate(url.expose()).await?;
            if applied > 0 {
                tracing::info!(applied, "database migrations applied");
            }
            Some(
                store::Store::connect(
                    url.expose(),
                    config.storage.db_pool_size,
                    Duration::from_millis(config.storage.db_timeout_ms),
                    breaker::Breaker::new("database", up("database")),
                )
                .await?,
            )
        }
        None => None,
    };
    let redis = match &config.resolved_redis_url {
        Some(url) => Some(
            shared::Redis::connect(
                url.expose(),
                &config.storage.redis_prefix,
                Duration::from_millis(config.storage.redis_timeout_ms),
                breaker::Breaker::new("redis", up("redis")),
            )
            .map_err(StartError::Redis)?,
        ),
        None => None,
    };
    // Each dependency's breaker is closed again by its probe alone.
    let mut probes = Vec::new();
    if let Some(s) = &store {
        let s2 = s.clone();
        probes.push(breaker::spawn_probe(
            s.breaker().clone(),
            Duration::from_millis(config.storage.db_timeout_ms),
            move || {
                let s = s2.clone();
                async move { s.ping().await.map_err(|e| e.to_string()) }
            },
        ));
    }
    if let Some(r) = &redis {
        let r2 = r.clone();
        probes.push(breaker::spawn_probe(
            r.breaker().clone(),
            Duration::from_millis(config.storage.redis_timeout_ms.max(500)),
            move || {
                let r = r2.clone();
                async move { r.ping().await }
            },
        ));
    }

    let config = Arc::new(config);
    // Models added at run time are read before the first request, so they
    // serve from the start; a database that cannot be read now leaves the
    // config's models serving and ModelsActor tries again.
    let stored = match &store {
        Some(s) => s.list_proxy_models().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the models added at run time yet; serving the config's");
            Vec::new()
        }),
        None => Vec::new(),
    };
    let mock_url = mock.as_ref().map(|m| m.url());
    let sealer = actors::models::sealer(&config);
    let topology: SharedTopology = Arc::new(arc_swap::ArcSwap::from_pointee(Topology::assemble(
        &config,
        &actors::models::merge(&config, &stored, sealer.as_ref()),
        None,
        mock_url.as_deref(),
        Some(&metrics),
    )));

    // Control-plane actors share one arbiter (thread); the logger gets its
    // own so a slow sink never delays a routing decision. AuthActor and the
    // ProviderActors live on each HTTP worker (see the server factory).
    let control = Arbiter::new();
    let log_arbiter = Arbiter::new();

    let control_handle = control.handle();
    // Without Redis one limiter owns every counter of this (only) replica;
    // with Redis each HTTP worker has its own, a member of the fleet that
    // leases quota for itself (see the server factory).
    let limiter = {
        let meter = metrics.actor("rate_limit");
        let m = metrics.clone();
        Metered::new(
            supervise::start_in_arbiter(&control_handle, meter.clone(), move |_| {
                RateLimitActor::new(None, m)
            }),
            meter,
        )
    };
    let health = {
        let topo = topology.clone();
        let cfg = config.router.clone();
        let m = metrics.clone();
        let meter = metrics.actor("health");
        Metered::new(
            supervise::start_in_arbiter(&control_handle, meter.clone(), move |_| {
                HealthActor::new(topo, cfg, m)
            }),
            meter,
        )
    };
    // The spend spool: this process's alone (locked), replayed at start.
    let (spool_lock, spool_dir, leftover) = if store.is_some() {
        let dir = config.spend.spool_path();
        let lock = spool::lock(&dir).map_err(StartError::Spool)?;
        let mut leftover = spool::segments(&dir).map_err(StartError::Spool)?;
        // Spare segments made ahead and never written to (a crash left
        // them): nothing to replay.
        leftover.retain(|(path, _)| !spool::remove_if_unwritten(path));
        (Some(lock), Some(dir), leftover)
    } else {
        (None, None, Vec::new())
    };
    let spool_full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let budget = {
        let m = metrics.clone();
        let meter = metrics.actor("budget");
        let status = config.spend.budget_exceeded_status;
        let redis = redis.clone();
        // A shared reservation outlives its replica by at most this much.
        let lease = Duration::from_secs(config.router.request_timeout_secs + 60);
        Metered::new(
            supervise::start_in_arbiter(&control_handle, meter.clone(), move |_| {
                BudgetActor::new(status, redis, lease, m)
            }),
            meter,
        )
    };
    let models = {
        let config = config.clone();
        let store = store.clone();
        let topology = topology.clone();
        let m = metrics.clone();
        let meter = metrics.actor("models");
        let loaded = actors::models::fingerprint(&stored);
        Metered::new(
            supervise::start_in_arbiter(&control_handle, meter.clone(), move |_| {
                ModelsActor::new(
                    config.clone(),
                    store.clone(),
                    topology.clone(),
                    mock_url.clone(),
                    m.clone(),
                    loaded.clone(),
                )
            }),
            meter,
        )
    };
    let auth_hub = {
        let redis = redis.clone();
        let budget_addr = budget.addr.clone();
        let models_addr = models.addr.clone();
        let meter = metrics.actor("auth_hub");
        let m2 = meter.clone();
        Metered::new(
            supervise::start_in_arbiter(&control_handle, meter.clone(), move |_| {
                AuthHub::new(redis, Some(budget_addr), Some(models_addr), m2)
            }),
            meter,
        )
    };
    let spend = {
        let m = metrics.clone();
        let meter = metrics.actor("spend");
        let store = store.clone();
        let cfg = config.spend.clone();
        let full = spool_full.clone();
        let hub = auth_hub.addr.clone();
        Metered::new(
            supervise::start_in_arbiter(&control_handle, meter.clone(), move |_| {
                SpendActor::new(store, &cfg, leftover, full, hub, m)
            }),
            meter,
        )
    };
    let logger_actor =
        LoggerActor::new(&config.logging.request_log, &metrics).map_err(StartError::RequestLog)?;
    let logger = {
        let meter = metrics.actor("logger");
        Metered::new(
            supervise::start_in_arbiter(&log_arbiter.handle(), meter.clone(), move |_| {
                logger_actor
            }),
            meter,
        )
    };

    let observe = observe::Observer::start(&config, &metrics, &log_arbiter.handle());
    if config.logging.litellm_metrics {
        metrics.litellm.enable();
        for d in &topology.load().deployments {
            metrics.litellm.deployment_state(d, 0);
        }
    }

    let gateway = Arc::new(Gateway {
        config: config.clone(),
        topology: topology.clone(),
        metrics: metrics.clone(),
        limiter,
        health,
        spend,
        budget,
        logger,
        auth_hub,
        models,
        store,
        redis,
        request_log_enabled: !matches!(config.logging.request_log.as_str(), "off" | ""),
        observe,
        draining: tokio::sync::watch::Sender::new(false),
        spool_full,
    });

    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    // A tracing span per request (its request id on every log line) costs
    // a few µs: on by default, `logging.request_spans = false` turns it off.
    let trace_requests = request_spans(&config);
    let gw = gateway.clone();
    let server = HttpServer::new(move || {
        // Runs once per worker thread: each worker gets its own
        // ProviderActors (and so its own upstream connection pools).
        let auth_meter = gw.metrics.actor("auth");
        let auth = {
            let config = gw.config.clone();
            let metrics = gw.metrics.clone();
            let store = gw.store.clone();
            let redis = gw.redis.clone();
            let hub = gw.auth_hub.addr.clone();
            Metered::new(
                supervise::start(auth_meter.clone(), move |_| {
                    AuthActor::new(&config, store, redis, Some(hub), &metrics)
                }),
                auth_meter,
            )
        };
        let router = {
            let topology = gw.topology.clone();
            let config = gw.config.router.clone();
            let health = gw.health.addr.clone();
            let metrics = gw.metrics.clone();
            let meter = gw.metrics.actor("router");
            Metered::new(
                supervise::start(meter.clone(), move |_| {
                    RouterActor::new(
                        topology.clone(),
                        config.clone(),
                        health.clone(),
                        metrics.clone(),
                    )
                }),
                meter,
            )
        };
        let spend = SpendBuffer::start(
            spool_dir.clone(),
            Duration::from_millis(gw.config.spend.flush_interval_ms),
            gw.spend.clone(),
            gw.metrics.clone(),
        );
        let limiter = match &gw.redis {
            Some(redis) => {
                let meter = gw.metrics.actor("rate_limit");
                let metrics = gw.metrics.clone();
                let shared = Arc::new(crate::shared_limits::SharedLimits::new(redis.clone()));
                Metered::new(
                    supervise::start(meter.clone(), move |_| {
                        RateLimitActor::new(Some(shared.clone()), metrics.clone())
                    }),
                    meter,
                )
            }
            None => gw.limiter.clone(),
        };
        let providers = {
            let meter = gw.metrics.actor("provider");
            let m2 = meter.clone();
            let draining = gw.draining.subscribe();
            Metered::new(
                supervise::start(meter.clone(), move |_| {
                    ProviderActor::new(draining.clone(), m2.clone())
                }),
                meter,
            )
        };
        App::new()
            .app_data(web::Data::new(http::WorkerState {
                gw: gw.clone(),
                auth,
                router,
                spend,
                limiter,
                providers,
            }))
            .app_data(http::query_config())
            .app_data(http::path_config())
            .wrap(actix_web::middleware::Condition::new(
                trace_requests,
                tracing_actix_web::TracingLogger::<telemetry::RootSpan>::new(),
            ))
            .configure(http::routes)
            .default_service(web::to(http::not_found))
    })
    .workers(workers)
    // SIGTERM/SIGINT are ours (`RunningGateway::wait`): streams are warned
    // before the grace ends, which actix's own handling cannot do.
    .disable_signals()
    .backlog(4096)
    .max_connection_rate(4096)
    .keep_alive(Duration::from_secs(config.server.keep_alive_secs))
    .shutdown_timeout(config.server.shutdown_grace_secs);
    let bind_addr = format!("{}:{}", config.server.host, config.server.port);
    let server = server.bind(&bind_addr).map_err(|source| StartError::Bind {
        addr: bind_addr.clone(),
        source,
    })?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| StartError::Bind {
            addr: bind_addr,
            source: std::io::Error::other("no address bound"),
        })?;
    let server = server.run();
    let handle = server.handle();
    let server = actix_rt::spawn(server);

    {
        let t = topology.load();
        tracing::info!(%addr, workers, models = t.by_name.len(), deployments = t.deployments.len(), "tollgate listening");
    }
    Ok(RunningGateway {
        addr,
        gateway,
        handle,
        server,
        mock,
        arbiters: vec![control, log_arbiter],
        probes,
        _spool_lock: spool_lock,
    })
}

impl Gateway {
    /// The topology as it is now: a request takes one snapshot and keeps
    /// it to the end, so a change never moves it mid-flight.
    pub fn topology(&self) -> Arc<Topology> {
        self.topology.load_full()
    }
}

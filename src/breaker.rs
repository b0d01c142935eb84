//! A circuit breaker per dependency (database, Redis).
//!
//! While a dependency is known to be down, callers fail at once instead of
//! each waiting out a pool or I/O timeout: the hot path serves what it can
//! from memory, management calls answer 503 immediately, and readiness
//! reports the state without touching the network. A background probe
//! (`spawn_probe`) pings the dependency and closes the breaker by itself
//! when it answers again — nobody has to send a request to find out.
//!
//! The state is one atomic flag read by every worker: it is a fact about
//! the outside world, written by whoever observes it (a failed call, the
//! probe), not gateway state with an owner to ask.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

/// How often the probe pings while the dependency is down / up. Probing
/// while up is what notices a silently dead dependency with no traffic.
const PROBE_WHILE_DOWN: Duration = Duration::from_millis(500);
const PROBE_WHILE_UP: Duration = Duration::from_secs(2);

pub struct Breaker {
    name: &'static str,
    open: AtomicBool,
    /// 1 while reachable, 0 while the breaker is open.
    up: Gauge,
}

impl Breaker {
    pub fn new(name: &'static str, up: Gauge) -> Arc<Breaker> {
        up.set(1);
        Arc::new(Breaker {
            name,
            open: AtomicBool::new(false),
            up,
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// True while the dependency is known to be unreachable.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// The dependency could not be reached (refused, timed out, broken).
    /// True if this opened the breaker.
    pub fn failure(&self, why: &str) -> bool {
        let opened = !self.open.swap(true, Ordering::AcqRel);
        if opened {
            self.up.set(0);
            tracing::warn!(
                dependency = self.name,
                error = why,
                "dependency unreachable: failing fast while a background probe retries"
            );
        }
        opened
    }

    /// The dependency answered. True if this closed the breaker.
    pub fn success(&self) -> bool {
        // A load first: the common case (closed) writes nothing, so workers
        // do not bounce the cache line between cores.
        let closed = self.is_open() && self.open.swap(false, Ordering::AcqRel);
        if closed {
            self.up.set(1);
            tracing::info!(dependency = self.name, "dependency reachable again");
        }
        closed
    }
}

/// Pings the dependency for as long as the returned task lives: every
/// 500 ms while it is down, every 2 s while it is up, each ping bounded by
/// `timeout`.
pub fn spawn_probe<F, Fut>(
    breaker: Arc<Breaker>,
    timeout: Duration,
    ping: F,
) -> actix_rt::task::JoinHandle<()>
where
    F: Fn() -> Fut + 'static,
    Fut: Future<Output = Result<(), String>> + 'static,
{
    actix_rt::spawn(async move {
        loop {
            let pause = if breaker.is_open() {
                PROBE_WHILE_DOWN
            } else {
                PROBE_WHILE_UP
            };
            actix_rt::time::sleep(pause).await;
            match actix_rt::time::timeout(timeout, ping()).await {
                Ok(Ok(())) => breaker.success(),
                Ok(Err(e)) => breaker.failure(&e),
                Err(_) => breaker.failure(&format!("no answer within {timeout:?}")),
            };
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[test]
    fn opens_on_failure_and_closes_on_success() {
        let b = Breaker::new("db", Gauge::default());
        assert!(!b.is_open());
        b.failure("refused");
        assert!(b.is_open());
        assert_eq!(b.up.get(), 0);
        b.failure("still refused");
        b.success();
        assert!(!b.is_open());
        assert_eq!(b.up.get(), 1);
    }

    #[actix_rt::test]
    async fn the_probe_closes_the_breaker_once_the_dependency_answers() {
        let b = Breaker::new("db", Gauge::default());
        b.failure("refused");
        let answers = Rc::new(Cell::new(false));
        let a2 = answers.clone();
        let probe = spawn_probe(b.clone(), Duration::from_millis(100), move || {
            let ok = a2.get();
            async move {
                if ok {
                    Ok(())
                } else {
                    Err("refused".to_string())
                }
            }
        });
        actix_rt::time::sleep(Duration::from_millis(700)).await;
        assert!(b.is_open(), "still down while pings fail");
        answers.set(true);
        actix_rt::time::sleep(Duration::from_millis(700)).await;
        assert!(!b.is_open(), "closed by the probe alone");
        probe.abort();
    }
}

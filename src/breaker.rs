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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;

/// How often the probe pings while the dependency is down / up. Probing
/// while up is what notices a silently dead dependency with no traffic.
const PROBE_WHILE_DOWN: Duration = Duration::from_millis(500);
const PROBE_WHILE_UP: Duration = Duration::from_secs(2);

/// A timeout alone does not prove an outage: one call can stall on a busy
/// machine while the next answers at once. Timeouts open the breaker only
/// once they have gone on this long with no answer in between; a refused
/// or broken connection opens it at once.
const TIMEOUTS_FOR: Duration = Duration::from_millis(250);

pub struct Breaker {
    name: &'static str,
    open: AtomicBool,
    /// When the current run of timeouts began, in ms since `born` plus 1;
    /// 0 while the last call answered.
    timing_out_since: AtomicU64,
    /// The last connection a pool failed to open (ms since `born`, why):
    /// bb8 tells a caller waiting for a connection only that it timed out.
    connect_failed: Mutex<Option<(u64, String)>>,
    born: Instant,
    /// 1 while reachable, 0 while the breaker is open.
    up: Gauge,
}

impl Breaker {
    pub fn new(name: &'static str, up: Gauge) -> Arc<Breaker> {
        up.set(1);
        Arc::new(Breaker {
            name,
            open: AtomicBool::new(false),
            timing_out_since: AtomicU64::new(0),
            connect_failed: Mutex::new(None),
            born: Instant::now(),
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
        self.timing_out_since.store(0, Ordering::Relaxed);
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

    /// A call got no answer in time. Opens the breaker only when calls
    /// have been timing out for `TIMEOUTS_FOR` with none answering
    /// meanwhile. True when the caller should replace its pooled
    /// connections: as a run of timeouts begins (they may have died
    /// silently, and fresh ones tell a dead connection from a slow
    /// dependency) and when the breaker opens.
    pub fn timed_out(&self, why: &str) -> bool {
        if self.is_open() {
            return false;
        }
        let now = self.born.elapsed().as_millis() as u64 + 1;
        match self
            .timing_out_since
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => true,
            Err(since) if now.saturating_sub(since) >= TIMEOUTS_FOR.as_millis() as u64 => {
                self.failure(why)
            }
            Err(_) => false,
        }
    }

    /// Why a pool could not open a connection since `t`, if it tried and
    /// failed: a wait for a connection that ends so was refused, not slow.
    pub fn connect_failed_since(&self, t: Instant) -> Option<String> {
        let since = t.saturating_duration_since(self.born).as_millis() as u64;
        let last = self
            .connect_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .filter(|(at, _)| *at >= since)
            .map(|(_, why)| why.clone())
    }

    /// A sink for a bb8 pool's connection errors (see `connect_failed_since`).
    pub fn connect_errors<E: std::fmt::Display + 'static>(
        self: &Arc<Self>,
    ) -> Box<dyn bb8::ErrorSink<E>> {
        Box::new(ConnectErrors(self.clone()))
    }

    /// The dependency answered. True if this closed the breaker.
    pub fn success(&self) -> bool {
        // Loads first: the common case (closed, no timeouts) writes
        // nothing, so workers do not bounce the cache line between cores.
        if self.timing_out_since.load(Ordering::Relaxed) != 0 {
            self.timing_out_since.store(0, Ordering::Relaxed);
        }
        let closed = self.is_open() && self.open.swap(false, Ordering::AcqRel);
        if closed {
            self.up.set(1);
            tracing::info!(dependency = self.name, "dependency reachable again");
        }
        closed
    }
}

struct ConnectErrors(Arc<Breaker>);

impl std::fmt::Debug for ConnectErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnectErrors({})", self.0.name)
    }
}

impl<E: std::fmt::Display + 'static> bb8::ErrorSink<E> for ConnectErrors {
    fn sink(&self, error: E) {
        let b = &self.0;
        let at = b.born.elapsed().as_millis() as u64;
        *b.connect_failed.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, error.to_string()));
    }

    fn boxed_clone(&self) -> Box<dyn bb8::ErrorSink<E>> {
        Box::new(ConnectErrors(self.0.clone()))
    }
}

/// Pings the dependency for as long as the returned task lives: every
/// 500 ms while it is down, every 2 s while it is up, each ping bounded by
/// `timeout`. A ping tells the breaker of its own errors (only it knows
/// whether the dependency refused or was merely slow); the probe adds an
/// answer, and a ping that outlived `timeout`.
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
                Ok(Err(_)) => false,
                Err(_) => breaker.timed_out(&format!("no answer within {timeout:?}")),
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

    #[test]
    fn timeouts_open_it_only_when_they_go_on_with_no_answer_between() {
        let b = Breaker::new("redis", Gauge::default());
        assert!(
            b.timed_out("no answer within 100 ms"),
            "the first timeout of a run replaces the connections"
        );
        assert!(!b.timed_out("no answer within 100 ms"));
        assert!(!b.is_open(), "one stalled moment is not an outage");
        std::thread::sleep(TIMEOUTS_FOR);
        b.success();
        assert!(b.timed_out("no answer within 100 ms"));
        assert!(!b.is_open(), "an answer in between starts the run again");
        std::thread::sleep(TIMEOUTS_FOR);
        assert!(b.timed_out("no answer within 100 ms"));
        assert!(b.is_open(), "timeouts for {TIMEOUTS_FOR:?} with no answer");
        assert_eq!(b.up.get(), 0);
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

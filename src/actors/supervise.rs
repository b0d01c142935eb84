//! Supervision that survives panics.
//!
//! actix's `Supervisor` restarts an actor that *stops*, but a panic inside a
//! handler unwinds out of the actor's future: the task dies, the mailbox
//! closes, and every later message to that address fails for good (a worker
//! whose RouterActor panicked answered 503 to everything after). Here the
//! actor's context future is polled inside `catch_unwind`; a panic — or a
//! stop — restarts the same context: its mailbox and address survive, the
//! message being handled is dropped (its sender gets an error, not a hang),
//! spawned futures are cancelled, `Supervised::restarting` rebuilds the
//! actor's state and `started` runs again. Every restart is logged and
//! counted in `tollgate_actor_restarts_total`.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use actix::dev::{channel, ContextFut};
use actix::prelude::*;
use actix_rt::ArbiterHandle;

use crate::metrics::ActorMeter;

/// Mailbox capacity actix gives an actor started the usual way.
const MAILBOX: usize = 16;

/// Starts `A` on the current arbiter (thread) under panic-proof supervision.
pub fn start<A, F>(meter: ActorMeter, make: F) -> Addr<A>
where
    A: Supervised + Actor<Context = Context<A>> + Unpin,
    F: FnOnce(&mut Context<A>) -> A + 'static,
{
    let mut ctx = Context::new();
    let act = make(&mut ctx);
    let addr = ctx.address();
    actix_rt::spawn(Guarded {
        fut: ctx.into_future(act),
        meter,
    });
    addr
}

/// Starts `A` on another arbiter under panic-proof supervision.
pub fn start_in_arbiter<A, F>(arbiter: &ArbiterHandle, meter: ActorMeter, make: F) -> Addr<A>
where
    A: Supervised + Actor<Context = Context<A>> + Unpin,
    F: FnOnce(&mut Context<A>) -> A + Send + 'static,
{
    let (tx, rx) = channel::channel(MAILBOX);
    arbiter.spawn_fn(move || {
        let mut ctx = Context::with_receiver(rx);
        let act = make(&mut ctx);
        actix_rt::spawn(Guarded {
            fut: ctx.into_future(act),
            meter,
        });
    });
    Addr::new(tx)
}

struct Guarded<A>
where
    A: Supervised + Actor<Context = Context<A>> + Unpin,
{
    fut: ContextFut<A, Context<A>>,
    meter: ActorMeter,
}

impl<A> Future for Guarded<A>
where
    A: Supervised + Actor<Context = Context<A>> + Unpin,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let polled = catch_unwind(AssertUnwindSafe(|| Pin::new(&mut this.fut).poll(cx)));
            match polled {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(())) => {
                    // Stopped: restart unless nobody can reach it any more.
                    if !this.fut.restart() {
                        return Poll::Ready(());
                    }
                    tracing::warn!(actor = this.meter.name(), "actor stopped; restarted");
                }
                Err(panic) => {
                    let message = panic_message(panic.as_ref());
                    if !this.fut.restart() {
                        tracing::error!(actor = this.meter.name(), panic = %message, "actor panicked with no one left to serve; not restarted");
                        return Poll::Ready(());
                    }
                    tracing::error!(actor = this.meter.name(), panic = %message, "actor panicked; restarted with its state rebuilt");
                }
            }
            this.meter.restarted();
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Test-only fault hook: the receiving actor panics in its handler. Sent
/// only when `Config::fault_injection` is set, which no config file can do.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Crash;

/// Implements `Handler<Crash>` for actors.
macro_rules! crashable {
    ($($actor:ty),* $(,)?) => {$(
        impl actix::Handler<$crate::actors::supervise::Crash> for $actor {
            type Result = ();
            fn handle(&mut self, _: $crate::actors::supervise::Crash, _: &mut Self::Context) {
                let _t = self.meter.handling();
                panic!("fault injection: {} told to crash", stringify!($actor));
            }
        }
    )*};
}
pub(crate) use crashable;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    struct Counter {
        n: u32,
        restarts: u32,
        meter: ActorMeter,
    }

    impl Actor for Counter {
        type Context = Context<Self>;
    }

    impl Supervised for Counter {
        fn restarting(&mut self, _: &mut Context<Self>) {
            self.n = 0;
            self.restarts += 1;
        }
    }

    #[derive(Message)]
    #[rtype(result = "(u32, u32)")]
    struct Bump;

    impl Handler<Bump> for Counter {
        type Result = MessageResult<Bump>;
        fn handle(&mut self, _: Bump, _: &mut Context<Self>) -> Self::Result {
            self.n += 1;
            MessageResult((self.n, self.restarts))
        }
    }

    crashable!(Counter);

    #[actix_rt::test]
    async fn a_panicking_handler_restarts_the_actor_at_the_same_address() {
        let metrics = Metrics::new();
        let meter = metrics.actor("counter");
        let m2 = meter.clone();
        let addr = start(meter, move |_| Counter {
            n: 0,
            restarts: 0,
            meter: m2,
        });
        assert_eq!(addr.send(Bump).await.unwrap(), (1, 0));
        assert_eq!(addr.send(Bump).await.unwrap(), (2, 0));
        // The message that panicked gets an error, not silence.
        assert!(addr.send(Crash).await.is_err());
        // Same address, fresh state, restart seen by the actor and the metric.
        assert_eq!(addr.send(Bump).await.unwrap(), (1, 1));
        assert!(metrics
            .encode()
            .contains("tollgate_actor_restarts_total{actor=\"counter\"} 1"));
    }

    #[actix_rt::test]
    async fn actors_on_another_arbiter_are_supervised_too() {
        let metrics = Metrics::new();
        let meter = metrics.actor("counter");
        let m2 = meter.clone();
        let arbiter = Arbiter::new();
        let addr = start_in_arbiter(&arbiter.handle(), meter, move |_| Counter {
            n: 0,
            restarts: 0,
            meter: m2,
        });
        assert_eq!(addr.send(Bump).await.unwrap(), (1, 0));
        assert!(addr.send(Crash).await.is_err());
        assert_eq!(addr.send(Bump).await.unwrap(), (1, 1));
        arbiter.stop();
    }
}

//! The actors of DESIGN.md §1. Each owns one piece of mutable state and is
//! reached only through messages.

pub mod auth;
pub mod auth_hub;
pub mod budget;
pub mod health;
pub mod logger;
pub mod models;
pub mod provider;
pub mod rate_limit;
pub mod router;
pub mod spend;
pub mod spend_buffer;
pub mod supervise;

use actix::dev::ToEnvelope;
use actix::prelude::*;

use crate::metrics::ActorMeter;

/// An actor address that keeps the actor's mailbox-depth gauge exact: every
/// message sent through it is counted, and the actor's handler counts it out
/// with `meter.handling()`.
pub struct Metered<A: Actor> {
    pub addr: Addr<A>,
    pub meter: ActorMeter,
}

impl<A: Actor> Clone for Metered<A> {
    fn clone(&self) -> Self {
        Metered {
            addr: self.addr.clone(),
            meter: self.meter.clone(),
        }
    }
}

impl<A: Actor> Metered<A> {
    pub fn new(addr: Addr<A>, meter: ActorMeter) -> Self {
        Metered { addr, meter }
    }

    pub async fn send<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.meter.sent();
        let res = self.addr.send(msg).await;
        if res.is_err() {
            self.meter.unsent();
        }
        res
    }

    /// Fire-and-forget, ignoring the mailbox capacity: for work after the
    /// response that must not be lost (spend, outcome).
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.meter.sent();
        if !self.addr.connected() {
            self.meter.unsent();
            return;
        }
        self.addr.do_send(msg);
    }

    /// Fire-and-forget that respects the mailbox capacity; returns false if
    /// the message was dropped.
    pub fn try_send<M>(&self, msg: M) -> bool
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.meter.sent();
        match self.addr.try_send(msg) {
            Ok(()) => true,
            Err(_) => {
                self.meter.unsent();
                false
            }
        }
    }
}

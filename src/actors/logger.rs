//! LoggerActor: owns the request-log sink. Runs on its own arbiter so a slow
//! disk or pipe never blocks a request thread; its mailbox is bounded and
//! overflow is counted, not waited on.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use crate::metrics::{ActorMeter, Metrics};

/// One line of the request log. Never holds a key: only its alias or id.
#[derive(Debug, Clone, Serialize, Message)]
#[rtype(result = "()")]
pub struct RequestLog {
    pub ts: String,
    pub request_id: String,
    pub key: String,
    pub endpoint: &'static str,
    pub model: String,
    pub deployment: Option<String>,
    pub status: u16,
    pub stream: bool,
    pub attempts: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
    pub latency_ms: f64,
    pub upstream_ms: f64,
    pub overhead_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

enum Sink {
    Off,
    Stdout(BufWriter<std::io::Stdout>),
    File(BufWriter<File>),
}

pub struct LoggerActor {
    sink: Sink,
    meter: ActorMeter,
}

pub const MAILBOX_CAPACITY: usize = 16 * 1024;

impl LoggerActor {
    /// `target`: "stdout", "off", or a file path (appended to).
    pub fn new(target: &str, metrics: &Arc<Metrics>) -> std::io::Result<Self> {
        let sink = match target {
            "off" | "" => Sink::Off,
            "stdout" => Sink::Stdout(BufWriter::new(std::io::stdout())),
            path => Sink::File(BufWriter::new(
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
        };
        Ok(LoggerActor {
            sink,
            meter: metrics.actor("logger"),
        })
    }

    fn flush(&mut self) {
        let res = match &mut self.sink {
            Sink::Off => Ok(()),
            Sink::Stdout(w) => w.flush(),
            Sink::File(w) => w.flush(),
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "request log flush failed");
        }
    }
}

impl Actor for LoggerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(MAILBOX_CAPACITY);
        ctx.run_interval(Duration::from_millis(200), |act, _| act.flush());
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.flush();
    }
}

/// The sink stays open; `started` sets the mailbox bound and the flush
/// timer again.
impl Supervised for LoggerActor {}

crate::actors::supervise::crashable!(LoggerActor);

impl Handler<RequestLog> for LoggerActor {
    type Result = ();

    fn handle(&mut self, msg: RequestLog, _: &mut Context<Self>) {
        let _t = self.meter.handling();
        let res = match &mut self.sink {
            Sink::Off => return,
            Sink::Stdout(w) => serde_json::to_writer(&mut *w, &msg)
                .map_err(std::io::Error::other)
                .and_then(|_| w.write_all(b"\n")),
            Sink::File(w) => serde_json::to_writer(&mut *w, &msg)
                .map_err(std::io::Error::other)
                .and_then(|_| w.write_all(b"\n")),
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "request log write failed");
        }
    }
}

/// Write out everything buffered; answered once done.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FlushLog;

impl Handler<FlushLog> for LoggerActor {
    type Result = ();

    fn handle(&mut self, _: FlushLog, _: &mut Context<Self>) {
        let _t = self.meter.handling();
        self.flush();
    }
}

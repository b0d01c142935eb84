//! Process logging (tracing). The request log is separate: see LoggerActor.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init(level: &str) {
    let filter = EnvFilter::try_from_env("TOLLGATE_LOG")
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// The request id a request is known by everywhere (logs, spans, the
/// request log, `x-request-id`): the caller's `x-request-id` when it is
/// sane, else a new UUIDv7.
pub fn request_id_from(headers: &actix_web::http::header::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// A request's id, chosen once by the root span and kept in the request's
/// extensions so the handlers use the same one.
#[derive(Clone)]
pub struct RequestId(pub String);

/// `tracing-actix-web`'s root span, carrying our request id: every log
/// line written while a request is handled names it.
pub struct RootSpan;

impl tracing_actix_web::RootSpanBuilder for RootSpan {
    fn on_request_start(request: &actix_web::dev::ServiceRequest) -> tracing::Span {
        let id = request_id_from(request.headers());
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            method = %request.method(),
            path = %request.path(),
            status = tracing::field::Empty,
        );
        actix_web::HttpMessage::extensions_mut(request).insert(RequestId(id));
        span
    }

    fn on_request_end<B: actix_web::body::MessageBody>(
        span: tracing::Span,
        outcome: &Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>,
    ) {
        let status = match outcome {
            Ok(resp) => resp.response().status().as_u16(),
            Err(e) => e.as_response_error().status_code().as_u16(),
        };
        span.record("status", status);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use actix_web::{test, web, App, HttpMessage as _, HttpRequest, HttpResponse};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[actix_rt::test]
    async fn every_log_line_of_a_request_names_its_request_id() {
        let out = Captured::default();
        let w = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = test::init_service(
            App::new()
                .wrap(tracing_actix_web::TracingLogger::<RootSpan>::new())
                .route(
                    "/",
                    web::get().to(|req: HttpRequest| async move {
                        tracing::warn!("something worth a line");
                        let id = req.extensions().get::<RequestId>().unwrap().0.clone();
                        HttpResponse::Ok().body(id)
                    }),
                ),
        )
        .await;
        let req = test::TestRequest::get()
            .uri("/")
            .insert_header(("x-request-id", "req-abc-123"))
            .to_request();
        let body = test::call_and_read_body(&app, req).await;
        assert_eq!(&body[..], b"req-abc-123");
        // Without one, the id made up is the one the handler sees.
        let body =
            test::call_and_read_body(&app, test::TestRequest::get().uri("/").to_request()).await;
        let made = String::from_utf8(body.to_vec()).unwrap();
        assert!(uuid::Uuid::parse_str(&made).is_ok());
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<_> = text
            .lines()
            .filter(|l| l.contains("something worth a line"))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("request_id=req-abc-123"), "{text}");
        assert!(lines[1].contains(&format!("request_id={made}")), "{text}");
    }
}

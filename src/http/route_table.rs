//! Route registration that remembers what it registered, so `/routes` can
//! list the gateway's routes as LiteLLM's does — from the same calls that
//! register them, so the list cannot drift from what is served.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use actix_web::{web, FromRequest, Handler, HttpResponse, Responder};
use serde_json::json;

/// One registered route: method, path pattern, handler.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub method: &'static str,
    pub path: String,
    pub handler: &'static str,
}

/// Registers routes on an actix `ServiceConfig` and records each one.
pub struct Routes<'a> {
    cfg: &'a mut web::ServiceConfig,
    table: Vec<RouteInfo>,
}

macro_rules! verb {
    ($name:ident, $method:literal) => {
        pub fn $name<F, Args>(&mut self, path: &str, handler: F) -> &mut Self
        where
            F: Handler<Args>,
            Args: FromRequest + 'static,
            F::Output: Responder + 'static,
        {
            self.table.push(RouteInfo {
                method: $method,
                path: path.to_string(),
                handler: short_name(std::any::type_name::<F>()),
            });
            self.cfg.route(path, web::$name().to(handler));
            self
        }
    };
}

impl<'a> Routes<'a> {
    pub fn new(cfg: &'a mut web::ServiceConfig) -> Self {
        Routes {
            cfg,
            table: Vec::new(),
        }
    }

    verb!(get, "GET");
    verb!(post, "POST");
    verb!(patch, "PATCH");
    verb!(delete, "DELETE");

    /// Keeps the table for `/routes` (every worker registers the same).
    pub fn finish(self) {
        TABLE.get_or_init(|| self.table);
    }
}

static TABLE: OnceLock<Vec<RouteInfo>> = OnceLock::new();

/// `tollgate::http::keys::generate` → `keys::generate`.
fn short_name(full: &'static str) -> &'static str {
    full.strip_prefix("tollgate::http::").unwrap_or(full)
}

/// `GET /routes`: every route, its methods and handler (LiteLLM's shape).
pub async fn list(
    req: actix_web::HttpRequest,
    st: web::Data<super::WorkerState>,
) -> Result<HttpResponse, crate::error::GatewayError> {
    super::roles::caller(&st, &req).await?;
    let mut by_path: BTreeMap<&str, (Vec<&str>, &str)> = BTreeMap::new();
    for r in TABLE.get().map(Vec::as_slice).unwrap_or_default() {
        let e = by_path.entry(&r.path).or_insert((Vec::new(), r.handler));
        e.0.push(r.method);
    }
    let routes: Vec<_> = by_path
        .into_iter()
        .map(|(path, (methods, handler))| {
            json!({"path": path, "methods": methods, "name": handler, "endpoint": handler})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "routes": routes })))
}

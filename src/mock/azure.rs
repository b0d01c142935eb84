//! Azure OpenAI: `/openai/deployments/{deployment}/…` (needs `api-version`)
//! and the v1 API `/openai/v1/…`. Answers are the OpenAI routes' answers;
//! only the auth and routing rules differ. See the module docs of `mock`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::handlers::{
    chat_core, completions_core, embeddings_core, json_response, json_str, percent_decode,
    query_param,
};
use super::{bump, Shared};

#[derive(Clone, Copy)]
enum Op {
    Chat,
    Completions,
    Embeddings,
}

pub(crate) fn routes(cfg: &mut web::ServiceConfig) {
    let dep = "/openai/deployments/{deployment}";
    cfg.route(&format!("{dep}/chat/completions"), web::post().to(dep_chat))
        .route(
            &format!("{dep}/completions"),
            web::post().to(dep_completions),
        )
        .route(&format!("{dep}/embeddings"), web::post().to(dep_embeddings))
        .route("/openai/v1/chat/completions", web::post().to(v1_chat))
        .route("/openai/v1/completions", web::post().to(v1_completions))
        .route("/openai/v1/embeddings", web::post().to(v1_embeddings));
}

async fn dep_chat(r: HttpRequest, b: web::Bytes, s: web::Data<Shared>) -> HttpResponse {
    deployment(r, b, s, Op::Chat).await
}

async fn dep_completions(r: HttpRequest, b: web::Bytes, s: web::Data<Shared>) -> HttpResponse {
    deployment(r, b, s, Op::Completions).await
}

async fn dep_embeddings(r: HttpRequest, b: web::Bytes, s: web::Data<Shared>) -> HttpResponse {
    deployment(r, b, s, Op::Embeddings).await
}

async fn v1_chat(r: HttpRequest, b: web::Bytes, s: web::Data<Shared>) -> HttpResponse {
    v1(r, b, s, Op::Chat).await
}

async fn v1_completions(r: HttpRequest, b: web::Bytes, s: web::Data<Shared>) -> HttpResponse {
    v1(r, b, s, Op::Completions).await
}

async fn v1_embeddings(r: HttpRequest, b: web::Bytes, s: web::Data<Shared>) -> HttpResponse {
    v1(r, b, s, Op::Embeddings).await
}

const ACCESS_DENIED: &str = r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}"#;
const NOT_FOUND: &str = r#"{"error":{"code":"404","message":"Resource not found"}}"#;

/// `api-key`, or `Authorization: Bearer …` (Entra ID token).
fn authenticated(req: &HttpRequest) -> bool {
    let h = req.headers();
    h.get("api-key").is_some_and(|v| !v.is_empty())
        || h.get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| !t.trim().is_empty())
}

/// Captures and counts the request.
fn admit(req: &HttpRequest, body: &web::Bytes, st: &Shared, op: Op) {
    st.capture(req, body);
    bump(&st.counters.requests);
    bump(&st.counters.azure);
    bump(match op {
        Op::Chat => &st.counters.chat,
        Op::Completions => &st.counters.completions,
        Op::Embeddings => &st.counters.embeddings,
    });
}

async fn run(
    req: &HttpRequest,
    body: &web::Bytes,
    st: &web::Data<Shared>,
    op: Op,
    model: Option<&str>,
) -> HttpResponse {
    match op {
        Op::Chat => chat_core(req, body, st, model).await,
        Op::Completions => completions_core(req, body, st, model).await,
        Op::Embeddings => embeddings_core(req, body, st, model).await,
    }
}

async fn deployment(
    req: HttpRequest,
    body: web::Bytes,
    st: web::Data<Shared>,
    op: Op,
) -> HttpResponse {
    admit(&req, &body, &st, op);
    if query_param(req.query_string(), "api-version").is_none_or(str::is_empty) {
        return json_response(StatusCode::NOT_FOUND, NOT_FOUND.into());
    }
    if !authenticated(&req) {
        return json_response(StatusCode::UNAUTHORIZED, ACCESS_DENIED.into());
    }
    let name = percent_decode(req.match_info().get("deployment").unwrap_or(""));
    let model = json_str(&name);
    run(&req, &body, &st, op, Some(&model)).await
}

async fn v1(req: HttpRequest, body: web::Bytes, st: web::Data<Shared>, op: Op) -> HttpResponse {
    admit(&req, &body, &st, op);
    if !authenticated(&req) {
        return json_response(StatusCode::UNAUTHORIZED, ACCESS_DENIED.into());
    }
    run(&req, &body, &st, op, None).await
}

//! `GET /v1/models`: the model groups the caller's key may use.

use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;

use super::{authenticate, WorkerState};
use crate::error::GatewayError;

#[derive(Serialize)]
struct Model<'a> {
    id: &'a str,
    object: &'static str,
    created: i64,
    owned_by: &'static str,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<Model<'a>>,
}

fn model(id: &str) -> Model<'_> {
    Model {
        id,
        object: "model",
        created: 1_700_000_000,
        owned_by: "tollgate",
    }
}

pub async fn list(req: HttpRequest, st: web::Data<WorkerState>) -> HttpResponse {
    let key = match authenticate(&st, &req).await {
        Ok(k) => k,
        Err(e) => return e.error_response(),
    };
    let topology = st.gw.topology();
    let data = topology
        .live_groups()
        .filter(|g| key.may_use_group(g))
        .map(|g| model(&g.name))
        .collect();
    HttpResponse::Ok().json(ModelList {
        object: "list",
        data,
    })
}

pub async fn retrieve(
    req: HttpRequest,
    path: web::Path<String>,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    let key = match authenticate(&st, &req).await {
        Ok(k) => k,
        Err(e) => return e.error_response(),
    };
    let name = path.into_inner();
    match st.gw.topology().group(&name) {
        Some(g) if key.may_use_group(g) => HttpResponse::Ok().json(model(&g.name)),
        _ => GatewayError::ModelNotFound(name).error_response(),
    }
}

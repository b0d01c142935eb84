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

#[derive(serde::Deserialize)]
pub struct ListQuery {
    /// LiteLLM's `?only_model_access_groups=true`: the access groups the
    /// key may use instead of the model groups.
    #[serde(default)]
    only_model_access_groups: bool,
}

pub async fn list(
    req: HttpRequest,
    query: web::Query<ListQuery>,
    st: web::Data<WorkerState>,
) -> HttpResponse {
    let key = match authenticate(&st, &req).await {
        Ok(k) => k,
        Err(e) => return e.error_response(),
    };
    let topology = st.gw.topology();
    let groups = topology.live_groups().filter(|g| key.may_use_group(g));
    let data = if query.only_model_access_groups {
        let mut names: Vec<&str> = groups
            .flat_map(|g| g.access_groups.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        names.into_iter().map(model).collect()
    } else {
        groups.map(|g| model(&g.name)).collect()
    };
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

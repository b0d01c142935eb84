//! LiteLLM's management model: roles and self-service, team admins,
//! members by email, organizations and reusable budgets, team aliases,
//! restricted routes — over HTTP, on SQLite and on PostgreSQL.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tollgate::mock::MockServer;
use tollgate::RunningGateway;

on_both_backends!(
    roles_gate_admin_routes,
    internal_users_manage_their_own_keys,
    viewers_read_but_do_not_write,
    team_admins_manage_members_by_email,
    team_aliases_and_model_lists_apply_at_request_time,
    organizations_narrow_models_and_cap_spend,
    budget_objects_limit_customers,
    allowed_routes_restrict_a_key,
    user_list_filters,
    organization_rate_limits_hold_for_all_its_teams,
    users_join_available_teams_themselves,
    litellm_metrics_name_the_team_alias_and_what_is_left_of_model_limits,
    a_refused_team_or_organization_leaves_no_users_behind,
    concurrent_edits_of_a_team_are_never_silently_lost,
    a_budget_reset_between_a_teams_read_and_write_is_not_undone,
    concurrent_edits_of_a_key_or_user_are_never_silently_lost,
    concurrent_edits_of_an_organization_or_end_user_are_never_silently_lost,
);

async fn ok(r: Resp) -> Value {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// A user with `role` and a key of theirs.
async fn user_with_key(gw: &RunningGateway, id: &str, role: &str) -> String {
    let u = ok(post_json(
        gw,
        "/user/new",
        MASTER,
        json!({"user_id": id, "user_role": role, "user_email": format!("{id}@example.com")}),
    )
    .await)
    .await;
    u["key"].as_str().unwrap().to_string()
}

async fn chat(gw: &RunningGateway, key: &str, model: &str) -> Resp {
    post(gw, "/v1/chat/completions", Some(key), &chat_body(model)).await
}

async fn setup(backend: Backend, models: &[&str]) -> (TestDb, MockServer, RunningGateway) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let fragment: String = models.iter().map(|m| model(m, &mock)).collect();
    let gw = spawn_gateway_db(&fragment, &db, None).await;
    (db, mock, gw)
}

async fn roles_gate_admin_routes(backend: Backend) {
    let (db, _mock, gw) = setup(backend, &["m", "m2"]).await;
    let admin = user_with_key(&gw, "ada-admin", "proxy_admin").await;
    let internal = user_with_key(&gw, "ivan-internal", "internal_user").await;

    // A proxy_admin's own key is an admin: it creates users and teams.
    ok(post_json(
        &gw,
        "/user/new",
        &admin,
        json!({"user_id": "made-by-admin"}),
    )
    .await)
    .await;
    ok(post_json(&gw, "/team/new", &admin, json!({"team_id": "t-admin"})).await).await;

    // An internal user may not, with LiteLLM's status, type and wording.
    let r = post_json(&gw, "/user/new", &internal, json!({"user_id": "x"})).await;
    assert_eq!(r.status, 401, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["type"], "auth_error");
    assert_eq!(e["code"], "401");
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Authentication Error, Only proxy admin can be used"),
        "{msg}"
    );
    assert!(
        msg.contains("Route=/user/new") && msg.contains("Your role=internal_user"),
        "{msg}"
    );
    assert!(
        !msg.contains("ivan-internal"),
        "the user id is masked: {msg}"
    );
    for path in [
        "/team/new",
        "/customer/new",
        "/organization/new",
        "/budget/new",
        "/model/new",
    ] {
        let r = post_json(&gw, path, &internal, json!({})).await;
        assert_eq!(r.status, 401, "{path}: {}", r.text());
    }

    // /routes lists what is served, from the registrations themselves.
    let routes = ok(get(&gw, "/routes", Some(&internal)).await).await;
    let find = |path: &str| {
        routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == path)
            .cloned()
            .unwrap_or_else(|| panic!("{path} not listed"))
    };
    assert_eq!(find("/key/generate")["methods"], json!(["POST"]));
    assert_eq!(find("/v1/chat/completions")["methods"], json!(["POST"]));
    assert_eq!(
        find("/organization/update")["methods"],
        json!(["POST", "PATCH"])
    );
    assert_eq!(find("/routes")["name"], "route_table::list");

    // Demoting the admin takes effect on the next call (roles are never cached).
    ok(post_json(
        &gw,
        "/user/update",
        MASTER,
        json!({"user_id": "ada-admin", "user_role": "internal_user"}),
    )
    .await)
    .await;
    let r = post_json(&gw, "/user/new", &admin, json!({"user_id": "y"})).await;
    assert_eq!(r.status, 401, "{}", r.text());

    // Inference errors carry the status as a string code too, as LiteLLM's do.
    let r = post_json(&gw, "/key/generate", MASTER, json!({"models": ["m"]})).await;
    let k = r.json()["key"].as_str().unwrap().to_string();
    let r = chat(&gw, &k, "m2").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "403", "{}", r.text());
    gw.stop().await;
    db.cleanup().await;
}

async fn internal_users_manage_their_own_keys(backend: Backend) {
    let (db, _mock, gw) = setup(backend, &["m"]).await;
    let ivan = user_with_key(&gw, "ivan", "internal_user").await;
    let olga = user_with_key(&gw, "olga", "internal_user").await;

    // A key for themself: owned by them whether or not they say so.
    let mine =
        ok(post_json(&gw, "/key/generate", &ivan, json!({"key_alias": "ivan-2"})).await).await;
    assert_eq!(mine["user_id"], "ivan");
    let mine_key = mine["key"].as_str().unwrap().to_string();
    assert_eq!(chat(&gw, &mine_key, "m").await.status, 200);

    // Not for someone else.
    let r = post_json(&gw, "/key/generate", &ivan, json!({"user_id": "olga"})).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text()
            .contains("User can only create keys for themselves"),
        "{}",
        r.text()
    );
    // Nor a key in a team they are not in.
    ok(post_json(&gw, "/team/new", MASTER, json!({"team_id": "tz"})).await).await;
    let r = post_json(&gw, "/key/generate", &ivan, json!({"team_id": "tz"})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("not assigned to team=tz"), "{}", r.text());
    // Nor set their own spend.
    let r = post_json(
        &gw,
        "/key/update",
        &ivan,
        json!({"key": mine_key, "spend": 0.0}),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());

    // Their own keys: update, list, block.
    ok(post_json(
        &gw,
        "/key/update",
        &ivan,
        json!({"key": mine_key, "metadata": {"env": "dev"}}),
    )
    .await)
    .await;
    let list = ok(get(&gw, "/key/list", Some(&ivan)).await).await;
    assert_eq!(list["total_count"], 2, "{list}");
    let r = get(&gw, "/key/list?user_id=olga", Some(&ivan)).await;
    assert_eq!(r.status, 403, "{}", r.text());

    // Someone else's key: refused, whatever the verb.
    let r = post_json(
        &gw,
        "/key/update",
        &ivan,
        json!({"key": olga, "metadata": {}}),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = post_json(&gw, "/key/delete", &ivan, json!({"keys": [olga]})).await;
    assert_eq!(r.status, 403, "{}", r.text());
    let r = get(&gw, &format!("/key/info?key={olga}"), Some(&ivan)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(
        chat(&gw, &olga, "m").await.status,
        200,
        "olga's key is untouched"
    );

    // A key that does not exist: 404 first, as LiteLLM answers.
    let r = get(&gw, "/key/info?key=sk-does-not-exist", Some(&ivan)).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.text().contains("Key not found in database"),
        "{}",
        r.text()
    );

    // /key/health reports on the calling key.
    let h = ok(post_json(&gw, "/key/health", &mine_key, json!({})).await).await;
    assert_eq!(h["key"], "healthy");

    // Delete their own key: it stops working.
    ok(post_json(&gw, "/key/delete", &ivan, json!({"keys": [mine_key]})).await).await;
    assert_eq!(chat(&gw, &mine_key, "m").await.status, 401);

    // A viewer of their own data only manages nothing.
    let vic = user_with_key(&gw, "vic", "internal_user_viewer").await;
    let r = post_json(&gw, "/key/generate", &vic, json!({})).await;
    assert_eq!(r.status, 401, "{}", r.text());
    ok(get(&gw, "/user/info", Some(&vic)).await).await;
    let r = get(&gw, "/user/info?user_id=ivan", Some(&vic)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    gw.stop().await;
    db.cleanup().await;
}

async fn viewers_read_but_do_not_write(backend: Backend) {
    let (db, _mock, gw) = setup(backend, &["m"]).await;
    let viewer = user_with_key(&gw, "val", "proxy_admin_viewer").await;
    let other = user_with_key(&gw, "oscar", "internal_user").await;
    ok(get(&gw, "/user/info?user_id=oscar", Some(&viewer)).await).await;
    ok(get(&gw, &format!("/key/info?key={other}"), Some(&viewer)).await).await;
    let users = ok(get(&gw, "/user/list", Some(&viewer)).await).await;
    assert_eq!(users["total"], 2);
    ok(get(&gw, "/team/list", Some(&viewer)).await).await;
    for (path, body) in [
        ("/user/new", json!({"user_id": "z"})),
        ("/key/generate", json!({})),
        ("/team/new", json!({})),
        ("/user/delete", json!({"user_ids": ["oscar"]})),
    ] {
        let r = post_json(&gw, path, &viewer, body).await;
        assert_eq!(r.status, 401, "{path}: {}", r.text());
    }
    // Non-admins list only their own teams, and must say so.
    let r = get(&gw, "/team/list", Some(&other)).await;
    assert_eq!(r.status, 401, "{}", r.text());
    ok(get(&gw, "/team/list?user_id=oscar", Some(&other)).await).await;
    let r = get(&gw, "/user/list", Some(&other)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    gw.stop().await;
    db.cleanup().await;
}

async fn team_admins_manage_members_by_email(backend: Backend) {
    let (db, _mock, gw) = setup(backend, &["m"]).await;
    let lead = user_with_key(&gw, "lead", "internal_user").await;
    let member = user_with_key(&gw, "member", "internal_user").await;

    // Members by email only: an existing user is found, a new one created.
    let t = ok(post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "core", "members_with_roles": [
            {"user_email": "lead@example.com", "role": "admin"},
            {"user_email": "new.person@example.com", "role": "user"},
        ]}),
    )
    .await)
    .await;
    let ids: Vec<&str> = t["members_with_roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"lead"), "{t}");
    // The master key's creator is an admin member, as LiteLLM's default_user_id.
    assert!(ids.contains(&"default_user_id"), "{t}");
    assert_eq!(ids.len(), 3, "{t}");
    let created = get(&gw, "/user/list?user_email=new.person", Some(MASTER))
        .await
        .json();
    assert_eq!(created["total"], 1, "{created}");

    // The team admin adds a member by email and changes roles.
    ok(post_json(
        &gw,
        "/team/member_add",
        &lead,
        json!({"team_id": "core", "member": {"user_email": "member@example.com", "role": "user"}}),
    )
    .await)
    .await;
    let r = post_json(
        &gw,
        "/team/member_add",
        &lead,
        json!({"team_id": "core", "member": {"user_id": "member"}}),
    )
    .await;
    assert_eq!(r.status, 400, "already a member: {}", r.text());
    ok(post_json(
        &gw,
        "/team/member_update",
        &lead,
        json!({"team_id": "core", "user_email": "member@example.com", "role": "admin"}),
    )
    .await)
    .await;
    let info = ok(get(&gw, "/team/info?team_id=core", Some(&member)).await).await;
    assert!(
        info["team_info"]["admins"]
            .as_array()
            .unwrap()
            .contains(&json!("member")),
        "{info}"
    );
    ok(post_json(
        &gw,
        "/team/member_update",
        &lead,
        json!({"team_id": "core", "user_id": "member", "role": "user"}),
    )
    .await)
    .await;

    // A plain member may not manage members.
    let r = post_json(
        &gw,
        "/team/member_add",
        &member,
        json!({"team_id": "core", "member": {"user_id": "zed"}}),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text().contains("User not proxy admin OR team admin"),
        "{}",
        r.text()
    );

    // A team admin manages the team's keys; a team admin may not raise limits.
    let k = ok(post_json(&gw, "/key/generate", &member, json!({"team_id": "core"})).await).await;
    let team_key = k["key"].as_str().unwrap().to_string();
    ok(post_json(&gw, "/key/block", &lead, json!({"key": team_key})).await).await;
    assert_eq!(chat(&gw, &team_key, "m").await.status, 401);
    let r = post_json(
        &gw,
        "/team/update",
        &lead,
        json!({"team_id": "core", "max_budget": 1000.0}),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    ok(post_json(
        &gw,
        "/team/update",
        &lead,
        json!({"team_id": "core", "team_alias": "Core"}),
    )
    .await)
    .await;

    // Removing by email.
    ok(post_json(
        &gw,
        "/team/member_delete",
        &lead,
        json!({"team_id": "core", "user_email": "member@example.com"}),
    )
    .await)
    .await;
    let r = get(&gw, "/team/info?team_id=core", Some(&member)).await;
    assert_eq!(r.status, 403, "no longer a member: {}", r.text());
    gw.stop().await;
    db.cleanup().await;
}

async fn team_aliases_and_model_lists_apply_at_request_time(backend: Backend) {
    let (db, _mock, gw) = setup(backend, &["gpt-big", "gpt-small"]).await;
    ok(post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "apps", "models": ["gpt-big"], "model_aliases": {"best": "gpt-big"}}),
    )
    .await)
    .await;
    let k = ok(post_json(&gw, "/key/generate", MASTER, json!({"team_id": "apps"})).await).await;
    let key = k["key"].as_str().unwrap().to_string();
    let r = chat(&gw, &key, "best").await;
    assert_eq!(r.status, 200, "the team alias resolves: {}", r.text());
    assert_eq!(chat(&gw, &key, "gpt-small").await.status, 403);

    // /team/model/add widens it at once, /team/model/delete narrows it.
    ok(post_json(
        &gw,
        "/team/model/add",
        MASTER,
        json!({"team_id": "apps", "models": ["gpt-small"]}),
    )
    .await)
    .await;
    assert_eq!(chat(&gw, &key, "gpt-small").await.status, 200);
    ok(post_json(
        &gw,
        "/team/model/delete",
        MASTER,
        json!({"team_id": "apps", "models": ["gpt-small"]}),
    )
    .await)
    .await;
    assert_eq!(chat(&gw, &key, "gpt-small").await.status, 403);
    gw.stop().await;
    db.cleanup().await;
}

async fn organizations_narrow_models_and_cap_spend(backend: Backend) {
    let (db, _mock, gw) = setup(backend, &["m1", "m2"]).await;
    let org = ok(post_json(
        &gw,
        "/organization/new",
        MASTER,
        json!({"organization_id": "acme", "organization_alias": "Acme", "models": ["m1"], "max_budget": 1.0}),
    )
    .await)
    .await;
    assert_eq!(org["litellm_budget_table"]["max_budget"], 1.0);

    // A team of the organization may not reach past it.
    let r = post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "t-bad", "organization_id": "acme", "models": ["m2"]}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "t-big", "organization_id": "acme", "max_budget": 5.0}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "t-x", "organization_id": "nope"}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());

    // An org admin creates a team in it; the org's model list applies.
    let boss = user_with_key(&gw, "boss", "internal_user").await;
    ok(post_json(&gw, "/organization/member_add", MASTER, json!({"organization_id": "acme", "member": {"user_email": "boss@example.com", "role": "org_admin"}})).await).await;
    ok(post_json(
        &gw,
        "/team/new",
        &boss,
        json!({"team_id": "t1", "organization_id": "acme"}),
    )
    .await)
    .await;
    let r = post_json(&gw, "/team/new", &boss, json!({"team_id": "t-other"})).await;
    assert_eq!(r.status, 401, "outside the org: {}", r.text());
    let k = ok(post_json(&gw, "/key/generate", MASTER, json!({"team_id": "t1"})).await).await;
    let key = k["key"].as_str().unwrap().to_string();
    assert_eq!(chat(&gw, &key, "m1").await.status, 200);
    let r = chat(&gw, &key, "m2").await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "org_model_access_denied");

    // Spend through the team lands on the organization.
    for _ in 0..3 {
        assert_eq!(chat(&gw, &key, "m1").await.status, 200);
    }
    let mut spend = 0.0;
    for _ in 0..50 {
        let info =
            ok(get(&gw, "/organization/info?organization_id=acme", Some(MASTER)).await).await;
        spend = info["spend"].as_f64().unwrap();
        let team = ok(get(&gw, "/team/info?team_id=t1", Some(MASTER)).await).await;
        let team_spend = team["team_info"]["spend"].as_f64().unwrap();
        if spend > 0.0 && (spend - team_spend).abs() < 1e-12 && team_spend > 0.0 {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(spend > 0.0, "organization spend grows with its teams'");

    // Its budget caps every team in it.
    ok(post_json(
        &gw,
        "/organization/update",
        &boss,
        json!({"organization_id": "acme", "max_budget": spend / 2.0}),
    )
    .await)
    .await;
    let r = chat(&gw, &key, "m1").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "budget_exceeded");
    assert!(r.text().contains("Organization=acme"), "{}", r.text());

    // Members read it; others do not.
    let outsider = user_with_key(&gw, "outsider", "internal_user").await;
    let r = get(
        &gw,
        "/organization/info?organization_id=acme",
        Some(&outsider),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    let mine = ok(get(&gw, "/organization/list", Some(&boss)).await).await;
    assert_eq!(mine.as_array().unwrap().len(), 1);
    assert_eq!(
        ok(get(&gw, "/organization/list", Some(&outsider)).await).await,
        json!([])
    );

    // Deleting it frees its teams.
    ok(post_json(
        &gw,
        "/organization/delete",
        MASTER,
        json!({"organization_ids": ["acme"]}),
    )
    .await)
    .await;
    assert_eq!(chat(&gw, &key, "m2").await.status, 200);
    gw.stop().await;
    db.cleanup().await;
}

async fn budget_objects_limit_customers(backend: Backend) {
    let (db, _mock, gw) = setup(backend, &["m"]).await;
    let b = ok(post_json(
        &gw,
        "/budget/new",
        MASTER,
        json!({"budget_id": "free-tier", "max_budget": 0.0, "budget_duration": "30d"}),
    )
    .await)
    .await;
    assert_eq!(b["budget_id"], "free-tier");
    let r = post_json(
        &gw,
        "/customer/new",
        MASTER,
        json!({"user_id": "c1", "budget_id": "missing"}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let c = ok(post_json(
        &gw,
        "/customer/new",
        MASTER,
        json!({"user_id": "c1", "budget_id": "free-tier"}),
    )
    .await)
    .await;
    assert_eq!(c["budget_id"], "free-tier");
    assert!(
        !c["budget_reset_at"].is_null(),
        "the budget's period drives resets: {c}"
    );

    let k = ok(post_json(&gw, "/key/generate", MASTER, json!({})).await).await;
    let key = k["key"].as_str().unwrap().to_string();
    let mut body = chat_body("m");
    body["user"] = json!("c1");
    let r = post(&gw, "/v1/chat/completions", Some(&key), &body).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "budget_exceeded");

    // Raising the shared budget lets the customer through at once.
    ok(post_json(
        &gw,
        "/budget/update",
        MASTER,
        json!({"budget_id": "free-tier", "max_budget": 100.0}),
    )
    .await)
    .await;
    let r = post(&gw, "/v1/chat/completions", Some(&key), &body).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let info = ok(post_json(
        &gw,
        "/budget/info",
        MASTER,
        json!({"budgets": ["free-tier"]}),
    )
    .await)
    .await;
    assert_eq!(info[0]["max_budget"], 100.0);
    assert_eq!(
        ok(get(&gw, "/budget/list", Some(MASTER)).await)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    ok(post_json(&gw, "/budget/delete", MASTER, json!({"id": "free-tier"})).await).await;
    let c = ok(get(&gw, "/customer/info?end_user_id=c1", Some(MASTER)).await).await;
    assert!(c["budget_id"].is_null(), "{c}");
    gw.stop().await;
    db.cleanup().await;
}

async fn allowed_routes_restrict_a_key(backend: Backend) {
    let (db, _mock, gw) = setup(backend, &["m"]).await;
    let llm = ok(post_json(
        &gw,
        "/key/generate",
        MASTER,
        json!({"allowed_routes": ["llm_api_routes"]}),
    )
    .await)
    .await;
    let llm = llm["key"].as_str().unwrap().to_string();
    assert_eq!(chat(&gw, &llm, "m").await.status, 200);
    let r = get(&gw, "/key/info", Some(&llm)).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        r.text()
            .contains("Virtual key is not allowed to call this route"),
        "{}",
        r.text()
    );

    let ro = ok(post_json(
        &gw,
        "/key/generate",
        MASTER,
        json!({"key_type": "read_only"}),
    )
    .await)
    .await;
    assert_eq!(ro["allowed_routes"], json!(["info_routes"]));
    let ro = ro["key"].as_str().unwrap().to_string();
    assert_eq!(chat(&gw, &ro, "m").await.status, 403);
    ok(get(&gw, "/key/info", Some(&ro)).await).await;

    // A restriction never widens a role: an internal user's management key
    // still cannot reach admin routes.
    let ivan = user_with_key(&gw, "ivan", "internal_user").await;
    let mk = ok(post_json(
        &gw,
        "/key/generate",
        &ivan,
        json!({"key_type": "management"}),
    )
    .await)
    .await;
    let mk = mk["key"].as_str().unwrap().to_string();
    let r = post_json(&gw, "/user/new", &mk, json!({"user_id": "evil"})).await;
    assert_eq!(r.status, 401, "{}", r.text());
    gw.stop().await;
    db.cleanup().await;
}

async fn user_list_filters(backend: Backend) {
    let (db, _mock, gw) = setup(backend, &["m"]).await;
    for (id, role) in [
        ("amy", "internal_user"),
        ("bob", "proxy_admin_viewer"),
        ("cat", "internal_user"),
    ] {
        user_with_key(&gw, id, role).await;
    }
    ok(post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "t", "members_with_roles": [{"user_id": "amy"}]}),
    )
    .await)
    .await;
    let ids = |v: &Value| -> Vec<String> {
        v["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user_id"].as_str().unwrap().to_string())
            .collect()
    };
    let r = ok(get(
        &gw,
        "/user/list?role=internal_user&sort_by=user_id",
        Some(MASTER),
    )
    .await)
    .await;
    assert_eq!(ids(&r), ["amy", "cat"]);
    let r = ok(get(&gw, "/user/list?user_email=BOB@EXAMPLE", Some(MASTER)).await).await;
    assert_eq!(ids(&r), ["bob"]);
    // The team's members: amy, and its creator (the master key's default_user_id).
    let r = ok(get(&gw, "/user/list?team=t&sort_by=user_id", Some(MASTER)).await).await;
    assert_eq!(ids(&r), ["amy", "default_user_id"]);
    let r = ok(get(
        &gw,
        "/user/list?user_ids=cat,amy&sort_by=user_id&sort_order=desc",
        Some(MASTER),
    )
    .await)
    .await;
    assert_eq!(ids(&r), ["cat", "amy"]);
    assert_eq!(r["users"][0]["key_count"], 1);
    let r = get(&gw, "/user/list?sort_by=password", Some(MASTER)).await;
    assert_eq!(r.status, 400, "{}", r.text());
    gw.stop().await;
    db.cleanup().await;
}

async fn organization_rate_limits_hold_for_all_its_teams(backend: Backend) {
    let (db, _mock, gw) = setup(backend, &["m"]).await;
    ok(post_json(
        &gw,
        "/organization/new",
        MASTER,
        json!({"organization_id": "lim", "rpm_limit": 3}),
    )
    .await)
    .await;
    let mut keys = Vec::new();
    for t in ["a", "b"] {
        ok(post_json(
            &gw,
            "/team/new",
            MASTER,
            json!({"team_id": t, "organization_id": "lim"}),
        )
        .await)
        .await;
        let k = ok(post_json(&gw, "/key/generate", MASTER, json!({"team_id": t})).await).await;
        keys.push(k["key"].as_str().unwrap().to_string());
    }
    // Three requests a minute for the organization, whichever team sends them.
    let mut statuses = Vec::new();
    for i in 0..4 {
        statuses.push(chat(&gw, &keys[i % 2], "m").await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429], "{statuses:?}");
    let r = chat(&gw, &keys[1], "m").await;
    assert!(r.text().contains("organization lim"), "{}", r.text());
    gw.stop().await;
    db.cleanup().await;
}

async fn users_join_available_teams_themselves(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(
        &format!(
            "[auth]\navailable_teams = [\"open\"]\n{}",
            model("m", &mock)
        ),
        &db,
        None,
    )
    .await;
    ok(post_json(&gw, "/team/new", MASTER, json!({"team_id": "open"})).await).await;
    ok(post_json(&gw, "/team/new", MASTER, json!({"team_id": "closed"})).await).await;
    let uma = user_with_key(&gw, "uma", "internal_user").await;
    let listed = ok(get(&gw, "/team/available", Some(&uma)).await).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["team_id"], "open");

    ok(post_json(
        &gw,
        "/team/member_add",
        &uma,
        json!({"team_id": "open", "member": {"user_id": "uma", "role": "user"}}),
    )
    .await)
    .await;
    let info = ok(get(&gw, "/team/info?team_id=open", Some(&uma)).await).await;
    assert!(info["team_info"]["members"]
        .as_array()
        .unwrap()
        .contains(&json!("uma")));
    // Not as an admin, not someone else, not a team that is not open.
    for body in [
        json!({"team_id": "open", "member": {"user_id": "uma2", "role": "user"}}),
        json!({"team_id": "closed", "member": {"user_id": "uma", "role": "user"}}),
    ] {
        let r = post_json(&gw, "/team/member_add", &uma, body).await;
        assert_eq!(r.status, 403, "{}", r.text());
    }
    let r = post_json(
        &gw,
        "/team/member_update",
        &uma,
        json!({"team_id": "open", "user_id": "uma", "role": "admin"}),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text());
    gw.stop().await;
    db.cleanup().await;
}

async fn litellm_metrics_name_the_team_alias_and_what_is_left_of_model_limits(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mock = spawn_mock().await;
    let gw = spawn_gateway_db(
        &format!("[logging]\nlitellm_metrics = true\n{}", model("m", &mock)),
        &db,
        None,
    )
    .await;
    ok(post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "t-s", "team_alias": "Search Team", "max_budget": 10.0}),
    )
    .await)
    .await;
    let k = ok(post_json(
        &gw,
        "/key/generate",
        MASTER,
        json!({"team_id": "t-s", "key_alias": "svc", "model_rpm_limit": {"m": 10}, "model_tpm_limit": {"m": 100000}}),
    )
    .await)
    .await;
    for _ in 0..2 {
        assert_eq!(chat(&gw, k["key"].as_str().unwrap(), "m").await.status, 200);
    }
    let text = get(&gw, "/metrics", None).await.text();
    // What is left of the key's per-model limits, as LiteLLM names it.
    let gauge = |family: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with(family)
                    && l.contains("api_key_alias=\"svc\"")
                    && l.contains("model=\"m\"")
            })
            .unwrap_or_else(|| panic!("no {family} line:\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(gauge("litellm_remaining_api_key_requests_for_model{"), 8.0);
    let tokens = gauge("litellm_remaining_api_key_tokens_for_model{");
    assert!(tokens > 0.0 && tokens < 100000.0, "{tokens}");
    for family in [
        "litellm_requests_metric_total{",
        "litellm_remaining_team_budget_metric{",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(family) && l.contains("team=\"t-s\""))
            .unwrap_or_else(|| panic!("no {family} line for the team:\n{text}"));
        assert!(line.contains("team_alias=\"Search Team\""), "{line}");
    }
    gw.stop().await;
    db.cleanup().await;
}

async fn a_refused_team_or_organization_leaves_no_users_behind(backend: Backend) {
    let (db, _mock, gw) = setup(backend, &["m"]).await;
    // The first member is fine, the second is not: nothing is written.
    let bad_second = |role: &str| {
        json!([
            {"user_id": "early", "role": role},
            {"user_id": "late", "role": "owner"},
        ])
    };
    let r = post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "t", "members_with_roles": bad_second("user")}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post_json(
        &gw,
        "/organization/new",
        MASTER,
        json!({"organization_id": "o", "members": bad_second("internal_user")}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "t2", "members_with_roles": [
            {"user_id": "early", "role": "user"},
            {"role": "user"},
        ]}),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    for (path, id) in [("/team/info?team_id=", "t"), ("/team/info?team_id=", "t2")] {
        let r = get(&gw, &format!("{path}{id}"), Some(MASTER)).await;
        assert_eq!(r.status, 404, "{id}: {}", r.text());
    }

    // Adding members to a team that exists: the same.
    ok(post_json(&gw, "/team/new", MASTER, json!({"team_id": "t3"})).await).await;
    let r = post_json(
        &gw,
        "/team/member_add",
        MASTER,
        json!({"team_id": "t3", "member": bad_second("user")}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = get(&gw, "/user/info?user_id=early", Some(MASTER)).await;
    assert_eq!(
        r.status,
        404,
        "a refused request created a user: {}",
        r.text()
    );
    gw.stop().await;
    db.cleanup().await;
}

async fn concurrent_edits_of_a_team_are_never_silently_lost(backend: Backend) {
    let (db, _mock, gw) = setup(backend, &["m"]).await;
    let types = ["success", "failure", "success_and_failure"];
    let mut conflicts = 0;
    for t in 0..8 {
        let team = format!("t{t}");
        ok(post_json(&gw, "/team/new", MASTER, json!({"team_id": team})).await).await;
        // Three callbacks and a rename, all at once: each is either in
        // effect afterwards or was refused with 409, never answered 200
        // and then overwritten by another.
        let add = |kind: &'static str| {
            let (gw, path) = (&gw, format!("/team/{team}/callback"));
            async move {
                let body = json!({"callback_name": "langfuse", "callback_type": kind,
                    "callback_vars": {"langfuse_public_key": "pk", "langfuse_secret_key": "sk"}});
                (kind, post_json(gw, &path, MASTER, body).await.status)
            }
        };
        let rename = post_json(
            &gw,
            "/team/update",
            MASTER,
            json!({"team_id": team, "team_alias": "renamed"}),
        );
        let (a, b, c, r) = tokio::join!(add(types[0]), add(types[1]), add(types[2]), rename);
        let info = ok(get(&gw, &format!("/team/info?team_id={team}"), Some(MASTER)).await).await;
        let logging = info["team_info"]["metadata"]["logging"].clone();
        for (kind, status) in [a, b, c] {
            let present = logging
                .as_array()
                .is_some_and(|l| l.iter().any(|e| e["callback_type"] == kind));
            match status {
                200 => assert!(
                    present,
                    "{team}: {kind} answered 200 but was lost: {logging}"
                ),
                409 => conflicts += 1,
                other => panic!("{team}: {kind}: {other}"),
            }
        }
        match r.status {
            200 => assert_eq!(info["team_info"]["team_alias"], "renamed", "{info}"),
            409 => conflicts += 1,
            other => panic!("{team}: rename: {other} {}", r.text()),
        }
    }
    eprintln!("{backend:?}: {conflicts} of 32 edits refused as conflicts");
    gw.stop().await;
    db.cleanup().await;
}

async fn a_budget_reset_between_a_teams_read_and_write_is_not_undone(backend: Backend) {
    use tollgate::store::{now_ms, Store, StoreError};
    let (db, _mock, gw) = setup(backend, &["m"]).await;
    ok(post_json(
        &gw,
        "/team/new",
        MASTER,
        json!({"team_id": "t", "max_budget": 10.0, "budget_duration": "1h"}),
    )
    .await)
    .await;
    let store = Store::connect(
        &db.url,
        2,
        Duration::from_secs(5),
        tollgate::breaker::Breaker::new("test", Default::default()),
    )
    .await
    .unwrap();
    // A management call reads the team...
    let read = store.get_team("t").await.unwrap().unwrap();
    // ...the budget period ends and is reset (by any replica)...
    let later = now_ms() + 2 * 3_600_000;
    let reset = store
        .reset_due_budgets(later, tollgate::access::next_reset)
        .await
        .unwrap();
    assert!(!reset.is_empty(), "nothing was due");
    let after_reset = store.get_team("t").await.unwrap().unwrap();
    assert!(after_reset.budget_reset_at > read.budget_reset_at);
    // ...and the call's write of what it read is refused, not the old reset
    // time written back (which would reset the budget a second time).
    let mut changed = read.clone();
    changed.team_alias = Some("renamed".into());
    let write = store.update_team(&changed, None, read.updated_at).await;
    assert!(matches!(write, Err(StoreError::Conflict(_))), "{write:?}");
    assert_eq!(
        store.get_team("t").await.unwrap().unwrap().budget_reset_at,
        after_reset.budget_reset_at
    );
    // Over HTTP the same change is simply made, on the fresh row.
    ok(post_json(
        &gw,
        "/team/update",
        MASTER,
        json!({"team_id": "t", "team_alias": "renamed"}),
    )
    .await)
    .await;
    let now = store.get_team("t").await.unwrap().unwrap();
    assert_eq!(now.team_alias.as_deref(), Some("renamed"));
    assert_eq!(now.budget_reset_at, after_reset.budget_reset_at);
    gw.stop().await;
    db.cleanup().await;
}

async fn concurrent_edits_of_a_key_or_user_are_never_silently_lost(backend: Backend) {
    let (db, _mock, gw) = setup(backend, &["m"]).await;
    for round in 0..6 {
        let user = format!("u{round}");
        let key = ok(post_json(&gw, "/key/generate", MASTER, json!({"user_id": user})).await).await
            ["key"]
            .as_str()
            .unwrap()
            .to_string();
        // Four writes of different fields of one key, and two of its user,
        // all at once: every one answered 200 is in effect afterwards.
        let update = |path: &'static str, body: Value| {
            let gw = &gw;
            async move { post_json(gw, path, MASTER, body).await.status }
        };
        let statuses = tokio::join!(
            update(
                "/key/update",
                json!({"key": key, "key_alias": format!("alias-{round}")})
            ),
            update(
                "/key/update",
                json!({"key": key, "metadata": {"round": round}})
            ),
            update("/key/update", json!({"key": key, "max_budget": 5.0})),
            update("/key/block", json!({"key": key})),
            update("/user/update", json!({"user_id": user, "max_budget": 7.0})),
            update(
                "/user/update",
                json!({"user_id": user, "user_alias": "someone"})
            ),
        );
        assert_eq!(statuses, (200, 200, 200, 200, 200, 200), "round {round}");
        let k = ok(get(&gw, &format!("/key/info?key={key}"), Some(MASTER)).await).await;
        let k = &k["info"];
        assert_eq!(k["key_alias"], format!("alias-{round}"), "{k}");
        assert_eq!(k["metadata"]["round"], round, "{k}");
        assert_eq!(k["max_budget"], 5.0, "{k}");
        assert_eq!(k["blocked"], true, "{k}");
        let u = ok(get(&gw, &format!("/user/info?user_id={user}"), Some(MASTER)).await).await;
        assert_eq!(u["user_info"]["max_budget"], 7.0, "{u}");
        assert_eq!(u["user_info"]["user_alias"], "someone", "{u}");
    }
    gw.stop().await;
    db.cleanup().await;
}

async fn concurrent_edits_of_an_organization_or_end_user_are_never_silently_lost(backend: Backend) {
    let (db, _mock, gw) = setup(backend, &["m"]).await;
    for round in 0..6 {
        let (org, end_user) = (format!("o{round}"), format!("c{round}"));
        ok(post_json(
            &gw,
            "/organization/new",
            MASTER,
            json!({"organization_id": org}),
        )
        .await)
        .await;
        ok(post_json(&gw, "/customer/new", MASTER, json!({"user_id": end_user})).await).await;
        let update = |path: &'static str, body: Value| {
            let gw = &gw;
            async move { post_json(gw, path, MASTER, body).await.status }
        };
        let statuses = tokio::join!(
            update(
                "/organization/update",
                json!({"organization_id": org, "organization_alias": "Org"})
            ),
            update(
                "/organization/update",
                json!({"organization_id": org, "max_budget": 3.0})
            ),
            update(
                "/customer/update",
                json!({"user_id": end_user, "alias": "Someone"})
            ),
            update("/customer/block", json!({"user_ids": [end_user]})),
        );
        assert_eq!(statuses, (200, 200, 200, 200), "round {round}");
        let o = ok(get(
            &gw,
            &format!("/organization/info?organization_id={org}"),
            Some(MASTER),
        )
        .await)
        .await;
        assert_eq!(o["organization_alias"], "Org", "{o}");
        assert_eq!(o["litellm_budget_table"]["max_budget"], 3.0, "{o}");
        let c = ok(get(
            &gw,
            &format!("/customer/info?end_user_id={end_user}"),
            Some(MASTER),
        )
        .await)
        .await;
        assert_eq!(c["alias"], "Someone", "{c}");
        assert_eq!(c["blocked"], true, "{c}");
    }
    gw.stop().await;
    db.cleanup().await;
}

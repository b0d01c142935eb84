//! Who calls a management route and what LiteLLM lets their role do there.
//!
//! The gate here decides by role and route family alone; endpoints that
//! non-admins may reach then check ownership (own keys, own user, teams
//! the caller administers). A caller's role is read from the database on
//! every management call, never from a cache: a demoted admin loses the
//! role at once, on every replica, and nothing in Redis can grant one.

use std::sync::Arc;

use actix_web::HttpRequest;

use super::admin::{management_error, store, store_error};
use super::{authenticate, WorkerState};
use crate::access::KeyInfo;
use crate::error::GatewayError;
use crate::store::KeyRow;

/// LiteLLM's user roles (`LitellmUserRoles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    ProxyAdmin,
    ProxyAdminViewer,
    OrgAdmin,
    InternalUser,
    InternalUserViewer,
    /// A key with a team and no user.
    Team,
    Customer,
    /// A key with neither user nor team, or a user with no role.
    Unknown,
}

impl Role {
    pub const SETTABLE: [&'static str; 5] = [
        "proxy_admin",
        "proxy_admin_viewer",
        "org_admin",
        "internal_user",
        "internal_user_viewer",
    ];

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "proxy_admin" => Role::ProxyAdmin,
            "proxy_admin_viewer" => Role::ProxyAdminViewer,
            "org_admin" => Role::OrgAdmin,
            "internal_user" => Role::InternalUser,
            "internal_user_viewer" => Role::InternalUserViewer,
            "team" => Role::Team,
            "customer" => Role::Customer,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::ProxyAdmin => "proxy_admin",
            Role::ProxyAdminViewer => "proxy_admin_viewer",
            Role::OrgAdmin => "org_admin",
            Role::InternalUser => "internal_user",
            Role::InternalUserViewer => "internal_user_viewer",
            Role::Team => "team",
            Role::Customer => "customer",
            Role::Unknown => "unknown",
        }
    }
}

/// The route families of LiteLLM's gate for callers that are not admins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Any valid key; the endpoint narrows what it shows.
    Info,
    /// Internal users, on their own keys.
    KeyManagement,
    /// Open at the gate; the endpoint decides (team admins, org admins,
    /// a user updating themself).
    SelfManaged,
    AdminOnly,
}

fn family(path: &str) -> Family {
    match path {
        "/key/info" | "/key/list" | "/key/health" | "/user/info" | "/team/info" | "/team/list"
        | "/team/available" | "/organization/info" | "/organization/list" | "/routes"
        | "/model/info" | "/v1/model/info" | "/models" | "/v1/models" => Family::Info,
        "/key/generate" | "/key/update" | "/key/delete" | "/key/regenerate" | "/key/block"
        | "/key/unblock" => Family::KeyManagement,
        p if p.starts_with("/key/") && p.ends_with("/regenerate") => Family::KeyManagement,
        // `/team/{id}/callback[/{name}]`, `/team/{id}/disable_logging`:
        // the endpoint checks that the caller administers the team.
        p if p.starts_with("/team/")
            && (p.ends_with("/callback")
                || p.ends_with("/disable_logging")
                || p.rsplit('/').nth(1) == Some("callback")) =>
        {
            Family::SelfManaged
        }
        "/team/new"
        | "/team/update"
        | "/team/delete"
        | "/team/block"
        | "/team/unblock"
        | "/team/member_add"
        | "/team/member_delete"
        | "/team/member_update"
        | "/team/model/add"
        | "/team/model/delete"
        | "/user/update"
        | "/user/list"
        | "/organization/update"
        | "/organization/member_add"
        | "/organization/member_update"
        | "/organization/member_delete" => Family::SelfManaged,
        _ => Family::AdminOnly,
    }
}

/// Read-only routes a `proxy_admin_viewer` may call on anything.
fn is_read(req: &HttpRequest) -> bool {
    req.method() == actix_web::http::Method::GET
        || matches!(
            req.path(),
            "/budget/info" | "/organization/info" | "/customer/info" | "/end_user/info"
        )
}

/// The authenticated caller of a management route.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: Arc<KeyInfo>,
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::ProxyAdmin
    }

    /// Proxy admins and viewers read everything.
    pub fn reads_all(&self) -> bool {
        matches!(self.role, Role::ProxyAdmin | Role::ProxyAdminViewer)
    }

    pub fn user_id(&self) -> Option<&str> {
        if self.key.is_master {
            return Some(MASTER_USER_ID);
        }
        self.key.user_id.as_deref()
    }

    /// The caller's own key, or a key of the caller's user.
    pub fn owns_key(&self, row: &KeyRow) -> bool {
        row.token == self.key.id
            || (!self.key.is_master
                && self.key.user_id.is_some()
                && row.user_id == self.key.user_id)
    }

    /// LiteLLM's 401 for a route only proxy admins may call.
    pub fn admin_only(&self, route: &str) -> GatewayError {
        management_error(
            401,
            "auth_error",
            format!(
                "Authentication Error, Only proxy admin can be used to generate, delete, update info for new keys/users/teams. Route={route}. Your role={}. Your user_id={}",
                self.role.as_str(),
                self.key.user_id.as_deref().map_or("None".into(), mask),
            ),
            Some("None"),
        )
    }

    /// Refused unless a proxy admin.
    pub fn require_admin(&self, route: &str) -> Result<(), GatewayError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(self.admin_only(route))
        }
    }

    /// Refused unless a proxy admin or viewer.
    pub fn require_reader(&self, route: &str) -> Result<(), GatewayError> {
        if self.reads_all() {
            Ok(())
        } else {
            Err(self.admin_only(route))
        }
    }
}

/// The user id LiteLLM gives the master key (a team it creates lists it
/// as admin).
pub const MASTER_USER_ID: &str = "default_user_id";

/// LiteLLM shows user ids in refusals masked: first 6 and last 2 kept.
pub fn mask(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 4 {
        return "***".into();
    }
    let head = 6.min(chars.len() / 2);
    let tail = 2;
    let stars = chars.len().saturating_sub(head + tail).max(1);
    let mut out: String = chars[..head].iter().collect();
    out.push_str(&"*".repeat(stars));
    out.extend(&chars[chars.len() - tail..]);
    out
}

/// Does an `allowed_routes` entry admit `path`? Entries are paths (a
/// trailing `*` matches a prefix) or LiteLLM's family names.
pub fn route_listed(allowed: &[String], path: &str) -> bool {
    allowed.iter().any(|r| match r.as_str() {
        "llm_api_routes" | "openai_routes" => super::is_llm_route(path),
        "info_routes" => family(path) == Family::Info,
        "management_routes" => !super::is_llm_route(path),
        r => match r.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => r == path,
        },
    })
}

/// LiteLLM's refusal of a route a key's `allowed_routes` does not list.
pub fn route_refused(allowed: &[String], path: &str) -> GatewayError {
    management_error(
        403,
        "auth_error",
        format!(
            "Virtual key is not allowed to call this route. Only allowed to call routes: {allowed:?}. Tried to call route: {path}"
        ),
        Some("None"),
    )
}

/// Authenticates a management call and applies the role gate. Endpoints
/// that non-admins reach check ownership themselves.
pub async fn caller(st: &WorkerState, req: &HttpRequest) -> Result<Caller, GatewayError> {
    let key = authenticate(st, req).await?;
    let path = req.path();
    if key.is_master {
        return Ok(Caller {
            key,
            role: Role::ProxyAdmin,
        });
    }
    // A restricted key narrows what its role allows; it never widens it
    // (a self-service user must not mint a key that reaches admin routes).
    if !key.allowed_routes.is_empty() && !route_listed(&key.allowed_routes, path) {
        return Err(route_refused(&key.allowed_routes, path));
    }
    // Blocked or expired keys manage nothing either.
    key.check_active(crate::store::now_ms())?;
    let role = match &key.user_id {
        Some(u) => match st.gw.store.as_ref() {
            Some(store) => store
                .get_user(u)
                .await
                .map_err(store_error)?
                .and_then(|u| u.user_role.as_deref().and_then(Role::parse))
                .unwrap_or(Role::Unknown),
            None => Role::Unknown,
        },
        None if key.team_id.is_some() => Role::Team,
        None => Role::Unknown,
    };
    let caller = Caller { key, role };
    if caller.is_admin() {
        return Ok(caller);
    }
    if caller.role == Role::ProxyAdminViewer && is_read(req) {
        return Ok(caller);
    }
    let allowed = match family(path) {
        Family::Info | Family::SelfManaged => true,
        Family::KeyManagement => matches!(caller.role, Role::InternalUser | Role::OrgAdmin),
        Family::AdminOnly => false,
    };
    if allowed {
        Ok(caller)
    } else {
        Err(caller.admin_only(path))
    }
}

/// Is `user` an admin of `team` (member role `admin`)?
pub async fn is_team_admin(
    st: &WorkerState,
    team_id: &str,
    user_id: Option<&str>,
) -> Result<bool, GatewayError> {
    let Some(user_id) = user_id else {
        return Ok(false);
    };
    Ok(store(st)?
        .members(team_id)
        .await
        .map_err(store_error)?
        .iter()
        .any(|m| m.user_id == user_id && m.role == "admin"))
}

/// Is `user` an admin of organization `org`?
pub async fn is_org_admin(
    st: &WorkerState,
    org: &str,
    user_id: Option<&str>,
) -> Result<bool, GatewayError> {
    let Some(user_id) = user_id else {
        return Ok(false);
    };
    Ok(store(st)?
        .org_memberships_of(user_id)
        .await
        .map_err(store_error)?
        .iter()
        .any(|m| m.organization_id == org && m.user_role == "org_admin"))
}

/// Proxy admin, or an admin of the team (or of the team's organization).
pub async fn may_manage_team(
    st: &WorkerState,
    caller: &Caller,
    team_id: &str,
    team_org: Option<&str>,
) -> Result<bool, GatewayError> {
    if caller.is_admin() {
        return Ok(true);
    }
    if is_team_admin(st, team_id, caller.user_id()).await? {
        return Ok(true);
    }
    match team_org {
        Some(org) => is_org_admin(st, org, caller.user_id()).await,
        None => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_masked_as_litellm_does() {
        assert_eq!(mask("abc"), "***");
        assert_eq!(mask("internal-user-42"), "intern********42");
        assert_eq!(mask("alice1"), "ali*e1");
    }

    #[test]
    fn allowed_routes_understand_families_and_prefixes() {
        let l = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(route_listed(
            &l(&["llm_api_routes"]),
            "/v1/chat/completions"
        ));
        assert!(!route_listed(&l(&["llm_api_routes"]), "/key/generate"));
        assert!(route_listed(&l(&["info_routes"]), "/key/info"));
        assert!(!route_listed(&l(&["info_routes"]), "/key/generate"));
        assert!(route_listed(&l(&["/key/*"]), "/key/update"));
        assert!(route_listed(
            &l(&["/chat/completions"]),
            "/chat/completions"
        ));
        assert!(!route_listed(&l(&["/chat/completions"]), "/v1/embeddings"));
    }

    #[test]
    fn route_families() {
        assert_eq!(family("/key/generate"), Family::KeyManagement);
        assert_eq!(family("/key/sk-abc/regenerate"), Family::KeyManagement);
        assert_eq!(family("/user/new"), Family::AdminOnly);
        assert_eq!(family("/team/member_add"), Family::SelfManaged);
        assert_eq!(family("/team/t-1/callback"), Family::SelfManaged);
        assert_eq!(family("/team/t-1/callback/langfuse"), Family::SelfManaged);
        assert_eq!(family("/team/t-1/disable_logging"), Family::SelfManaged);
        assert_eq!(family("/key/info"), Family::Info);
        assert_eq!(family("/customer/new"), Family::AdminOnly);
    }
}

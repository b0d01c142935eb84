//! Who a caller is and what they may do: the snapshot the AuthActor caches
//! for a key (its own row plus its user's and team's), and the checks made
//! on every request. Pure: no I/O.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::error::GatewayError;
use crate::store::{KeyRow, TeamRow, UserRow};

/// Model names with a meaning of their own (LiteLLM's).
pub const ALL_TEAM_MODELS: &str = "all-team-models";
pub const ALL_PROXY_MODELS: &str = "all-proxy-models";

/// What the gateway knows about an authenticated caller.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct KeyInfo {
    /// Non-secret identifier: the SHA-256 of the key, hex (LiteLLM's `token`).
    pub id: String,
    pub key_name: Option<String>,
    pub alias: Option<String>,
    /// Allowed model groups; empty means all. `*`, `prefix/*`,
    /// `all-team-models` are understood.
    pub models: Vec<String>,
    /// Public name → model group.
    pub aliases: HashMap<String, String>,
    pub rpm_limit: Option<u64>,
    #[serde(default)]
    pub tpm_limit: Option<u64>,
    #[serde(default)]
    pub max_parallel_requests: Option<u64>,
    /// Model group → requests / tokens per minute for this key on it.
    #[serde(default)]
    pub model_rpm_limit: HashMap<String, u64>,
    #[serde(default)]
    pub model_tpm_limit: HashMap<String, u64>,
    /// Never serialized: the shared Redis copy must not be able to carry
    /// authority (whoever can write Redis could otherwise mint a master
    /// key). Only the AuthActor sets it, for the configured master key.
    #[serde(skip)]
    pub is_master: bool,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub blocked: bool,
    /// Unix ms.
    pub expires: Option<i64>,
    pub spend: f64,
    pub max_budget: Option<f64>,
    #[serde(default)]
    pub soft_budget: Option<f64>,
    /// Model group → budget in USD, against `model_spend`.
    #[serde(default)]
    pub model_max_budget: HashMap<String, f64>,
    /// Model group → this key's spend on it (loaded only when the key has
    /// per-model budgets).
    #[serde(default)]
    pub model_spend: HashMap<String, f64>,
    pub user: Option<Owner>,
    pub team: Option<Owner>,
    /// The team's organization: its models narrow the team's, its budget
    /// caps all its teams together.
    #[serde(default)]
    pub org: Option<Owner>,
    /// The only routes this key may call (LiteLLM's `allowed_routes`);
    /// empty: no restriction beyond its role.
    #[serde(default)]
    pub allowed_routes: Vec<String>,
    /// Langfuse projects named by the key's and its team's
    /// `metadata.logging` (LiteLLM's key/team-based logging).
    #[serde(default)]
    pub logging: Vec<crate::observe::keyed::KeyLogging>,
    /// The team turned logging off (`/team/{id}/disable_logging`): its
    /// requests go to no logging destination, global ones included.
    #[serde(default)]
    pub logging_off: bool,
}

/// The parts of a user or team row that bear on a request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Owner {
    pub id: String,
    /// The team's (or organization's) alias, for metrics and logs.
    #[serde(default)]
    pub alias: Option<String>,
    pub models: Vec<String>,
    pub spend: f64,
    pub max_budget: Option<f64>,
    #[serde(default)]
    pub soft_budget: Option<f64>,
    #[serde(default)]
    pub rpm_limit: Option<u64>,
    #[serde(default)]
    pub tpm_limit: Option<u64>,
    #[serde(default)]
    pub max_parallel_requests: Option<u64>,
    pub blocked: bool,
}

/// The budget in a `model_max_budget` entry: LiteLLM's
/// `{"budget_limit": x, "time_period": ..}`, `{"max_budget": x}`, or a
/// bare number; `budget_limit` may be a string holding a number.
pub fn model_budget(spec: &serde_json::Value) -> Option<f64> {
    use serde_json::Value;
    let number = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    let b = match spec {
        Value::Object(o) => o
            .get("budget_limit")
            .or_else(|| o.get("max_budget"))
            .and_then(number),
        other => number(other),
    }?;
    (b.is_finite() && b >= 0.0).then_some(b)
}

/// A stored limit as a limit: 0 or negative means none.
fn positive(n: Option<i64>) -> Option<u64> {
    n.filter(|n| *n > 0).map(|n| n as u64)
}

/// A stored `{"model": n}` map of limits.
fn limit_map(s: Option<&str>) -> HashMap<String, u64> {
    s.and_then(|s| serde_json::from_str::<HashMap<String, i64>>(s).ok())
        .map(|m| {
            m.into_iter()
                .filter_map(|(k, v)| Some((k, positive(Some(v))?)))
                .collect()
        })
        .unwrap_or_default()
}

fn json_list(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

impl KeyInfo {
    pub fn from_rows(key: &KeyRow, user: Option<&UserRow>, team: Option<&TeamRow>) -> KeyInfo {
        KeyInfo {
            id: key.token.clone(),
            key_name: Some(key.key_name.clone()),
            alias: key.key_alias.clone(),
            models: json_list(&key.models),
            aliases: {
                // The team's aliases serve every key of the team; a key's
                // own alias of the same name wins.
                let mut a: HashMap<String, String> = team
                    .and_then(|t| serde_json::from_str(&t.model_aliases).ok())
                    .unwrap_or_default();
                a.extend(
                    serde_json::from_str::<HashMap<String, String>>(&key.aliases)
                        .unwrap_or_default(),
                );
                a
            },
            rpm_limit: positive(key.rpm_limit),
            tpm_limit: positive(key.tpm_limit),
            max_parallel_requests: positive(key.max_parallel_requests),
            model_rpm_limit: limit_map(key.model_rpm_limit.as_deref()),
            model_tpm_limit: limit_map(key.model_tpm_limit.as_deref()),
            is_master: false,
            user_id: key.user_id.clone(),
            team_id: key.team_id.clone(),
            blocked: key.blocked,
            expires: key.expires,
            spend: key.spend,
            max_budget: key.max_budget,
            soft_budget: key.soft_budget,
            model_max_budget: key
                .model_max_budget
                .as_deref()
                .and_then(|s| {
                    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(s).ok()
                })
                .map(|m| {
                    m.iter()
                        .filter_map(|(model, spec)| Some((model.clone(), model_budget(spec)?)))
                        .collect()
                })
                .unwrap_or_default(),
            model_spend: HashMap::new(),
            logging_off: team.is_some_and(|t| crate::observe::keyed::logging_disabled(&t.metadata)),
            logging: {
                let mut l = crate::observe::keyed::parse(&key.metadata);
                if let Some(t) = team {
                    l.extend(crate::observe::keyed::parse(&t.metadata));
                    l.dedup();
                }
                l
            },
            user: user.map(|u| Owner {
                id: u.user_id.clone(),
                alias: u.user_alias.clone(),
                models: json_list(&u.models),
                spend: u.spend,
                max_budget: u.max_budget,
                soft_budget: u.soft_budget,
                rpm_limit: positive(u.rpm_limit),
                tpm_limit: positive(u.tpm_limit),
                max_parallel_requests: positive(u.max_parallel_requests),
                blocked: false,
            }),
            team: team.map(|t| Owner {
                id: t.team_id.clone(),
                alias: t.team_alias.clone(),
                models: json_list(&t.models),
                spend: t.spend,
                max_budget: t.max_budget,
                soft_budget: t.soft_budget,
                rpm_limit: positive(t.rpm_limit),
                tpm_limit: positive(t.tpm_limit),
                max_parallel_requests: positive(t.max_parallel_requests),
                blocked: t.blocked,
            }),
            org: None,
            allowed_routes: json_list(&key.allowed_routes),
        }
    }

    /// Name to show in logs: the alias, or the non-secret key name / id.
    pub fn display_name(&self) -> &str {
        self.alias
            .as_deref()
            .or(self.key_name.as_deref())
            .unwrap_or(&self.id)
    }

    /// The model group a requested name means for this key (its aliases first).
    pub fn resolve_model<'a>(&'a self, requested: &'a str) -> &'a str {
        self.aliases
            .get(requested)
            .map(String::as_str)
            .unwrap_or(requested)
    }

    /// Blocked or expired: refused whatever the model. (Budgets are the
    /// BudgetActor's: they need spend fresher than this snapshot.)
    pub fn check_active(&self, now_ms: i64) -> Result<(), GatewayError> {
        if self.is_master {
            return Ok(());
        }
        if self.blocked {
            return Err(GatewayError::KeyBlocked);
        }
        if let Some(team) = &self.team {
            if team.blocked {
                return Err(GatewayError::TeamBlocked(team.id.clone()));
            }
        }
        if let Some(expires) = self.expires {
            if expires <= now_ms {
                return Err(GatewayError::KeyExpired {
                    expires_ms: expires,
                });
            }
        }
        Ok(())
    }

    /// May this key call model group `model`? The key's list, its team's and
    /// its user's each narrow what is allowed (an empty list allows all).
    pub fn may_use(&self, model: &str) -> bool {
        self.model_denial(model).is_none()
    }

    /// May this key call `group` (by name, or through an access group the
    /// group belongs to)?
    pub fn may_use_group(&self, group: &crate::topology::Group) -> bool {
        self.group_denial(group).is_none()
    }

    /// Which list refuses `group`, if any; a list naming one of the
    /// group's access groups allows it (LiteLLM's model access groups).
    pub fn group_denial(&self, group: &crate::topology::Group) -> Option<GatewayError> {
        self.denial(&group.name, &group.access_groups)
    }

    /// Which list refuses `model`, if any.
    pub fn model_denial(&self, model: &str) -> Option<GatewayError> {
        self.denial(model, &[])
    }

    fn denial(&self, model: &str, access_groups: &[String]) -> Option<GatewayError> {
        if self.is_master {
            return None;
        }
        let list_allows = |list: &[String], model: &str| {
            list_allows(list, model) || access_groups.iter().any(|ag| list.contains(ag))
        };
        let key_defers_to_team = self.models.iter().any(|m| m == ALL_TEAM_MODELS);
        if !key_defers_to_team && !list_allows(&self.models, model) {
            return Some(GatewayError::ModelAccessDenied {
                scope: "key",
                model: model.to_string(),
                allowed: self.models.clone(),
            });
        }
        if let Some(team) = &self.team {
            if !list_allows(&team.models, model) {
                return Some(GatewayError::ModelAccessDenied {
                    scope: "team",
                    model: model.to_string(),
                    allowed: team.models.clone(),
                });
            }
        }
        if let Some(org) = &self.org {
            if !list_allows(&org.models, model) {
                return Some(GatewayError::ModelAccessDenied {
                    scope: "org",
                    model: model.to_string(),
                    allowed: org.models.clone(),
                });
            }
        }
        if let Some(user) = &self.user {
            if !list_allows(&user.models, model) {
                return Some(GatewayError::ModelAccessDenied {
                    scope: "user",
                    model: model.to_string(),
                    allowed: user.models.clone(),
                });
            }
        }
        None
    }
}

/// Does a model list allow `model`? (Empty allows all.)
pub fn list_allows(list: &[String], model: &str) -> bool {
    list.is_empty()
        || list
            .iter()
            .any(|p| p == ALL_PROXY_MODELS || model_matches(p, model))
}

/// `*` matches everything, `openai/*` any name starting with `openai/`,
/// anything else must match exactly.
pub fn model_matches(pattern: &str, model: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => pattern == model,
    }
}

/// LiteLLM's duration strings: `30s`, `30m`, `30h`, `30d`, `2w`, `1mo`.
/// Returns milliseconds; months count as 30 days.
pub fn parse_duration_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return Err(format!(
            "invalid duration `{s}`: expected e.g. 30s, 30m, 30h, 30d, 1mo"
        ));
    }
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("invalid duration `{s}`: number too large"))?;
    let unit = &s[digits.len()..];
    let secs: i64 = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        "mo" => 30 * 86_400,
        _ => {
            return Err(format!(
                "invalid duration `{s}`: the unit must be one of s, m, h, d, w, mo"
            ))
        }
    };
    n.checked_mul(secs)
        .and_then(|v| v.checked_mul(1000))
        .ok_or_else(|| format!("invalid duration `{s}`: too long"))
}

/// When a budget period that starts now ends, as LiteLLM computes
/// `budget_reset_at`: snapped to calendar boundaries in UTC — `1d` next
/// midnight, `7d`/`1w` next Monday, `30d`/`1mo` the 1st of next month,
/// `Nh`/`Nm`/`Ns` the next multiple of N within the day/hour/minute, other
/// `Nd` midnight plus N days. Unix ms; `None` for a duration that does not
/// parse.
pub fn next_reset(duration: &str, now_ms: i64) -> Option<i64> {
    use chrono::{Datelike, Duration as D, NaiveDate, TimeZone, Utc};
    let s = duration.trim();
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    let n: i64 = digits.parse().ok().filter(|n| *n > 0)?;
    let unit = &s[digits.len()..];
    let now = Utc.timestamp_millis_opt(now_ms).single()?;
    let midnight = now.date_naive().and_hms_opt(0, 0, 0)?.and_utc();
    let first_of_next_month = |months: i64| -> Option<i64> {
        let (y, m) = (now.year() as i64, now.month() as i64 - 1 + months);
        let date = NaiveDate::from_ymd_opt(
            (y + m.div_euclid(12)) as i32,
            (m.rem_euclid(12) + 1) as u32,
            1,
        )?;
        Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
    };
    let next_monday = || {
        let days = 7 - now.weekday().num_days_from_monday() as i64;
        (midnight + D::days(days)).timestamp_millis()
    };
    // The next multiple of `step` ms after now, counted from `base`, within
    // one `span` (else the next span's start).
    let within = |base: i64, step: i64, span: i64| {
        let t = base + ((now_ms - base) / step + 1) * step;
        t.min(base + span)
    };
    let day_ms = 86_400_000;
    Some(match unit {
        "s" => {
            let minute = now_ms - now_ms.rem_euclid(60_000);
            within(minute, n.checked_mul(1_000)?, 60_000)
        }
        "m" | "min" => {
            let hour = now_ms - now_ms.rem_euclid(3_600_000);
            within(hour, n.checked_mul(60_000)?, 3_600_000)
        }
        "h" => within(
            midnight.timestamp_millis(),
            n.checked_mul(3_600_000)?,
            day_ms,
        ),
        "d" if n == 1 => (midnight + D::days(1)).timestamp_millis(),
        "d" if n == 7 => next_monday(),
        "d" if n == 30 => first_of_next_month(1)?,
        "d" => (midnight + D::days(n.min(36_500))).timestamp_millis(),
        "w" if n == 1 => next_monday(),
        "w" => (midnight + D::days(7 * n.min(5_200))).timestamp_millis(),
        "mo" => first_of_next_month(n.min(1_200))?,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(models: &[&str]) -> KeyInfo {
        KeyInfo {
            id: "h".into(),
            models: models.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn wildcards() {
        assert!(model_matches("*", "anything"));
        assert!(model_matches("openai/*", "openai/gpt-4o"));
        assert!(!model_matches("openai/*", "anthropic/claude"));
        assert!(!model_matches("gpt-4o", "gpt-4o-mini"));
    }

    #[test]
    fn team_and_user_lists_narrow_the_keys() {
        let mut k = key(&[]);
        assert!(k.may_use("m"));
        k.team = Some(Owner {
            id: "t".into(),
            models: vec!["a".into(), "b".into()],
            ..Default::default()
        });
        assert!(k.may_use("a"));
        assert!(!k.may_use("m"));
        k.models = vec![ALL_TEAM_MODELS.into()];
        assert!(k.may_use("b"));
        k.models = vec!["b".into()];
        assert!(!k.may_use("a"), "the key's own list still applies");
        k.user = Some(Owner {
            id: "u".into(),
            models: vec!["c".into()],
            ..Default::default()
        });
        assert!(!k.may_use("b"));
        k.is_master = true;
        assert!(k.may_use("zzz"));
    }

    #[test]
    fn blocked_expired_and_budgets() {
        let mut k = key(&[]);
        assert!(k.check_active(1000).is_ok());
        k.expires = Some(1000);
        assert!(matches!(
            k.check_active(1000),
            Err(GatewayError::KeyExpired { .. })
        ));
        k.expires = None;
        k.team = Some(Owner {
            id: "t".into(),
            ..Default::default()
        });
        k.team.as_mut().unwrap().blocked = true;
        assert!(matches!(
            k.check_active(0),
            Err(GatewayError::TeamBlocked(_))
        ));
        k.blocked = true;
        assert!(matches!(k.check_active(0), Err(GatewayError::KeyBlocked)));
    }

    #[test]
    fn aliases_map_to_groups() {
        let mut k = key(&[]);
        k.aliases.insert("my-gpt".into(), "gpt-4o".into());
        assert_eq!(k.resolve_model("my-gpt"), "gpt-4o");
        assert_eq!(k.resolve_model("other"), "other");
    }

    #[test]
    fn budget_periods_end_on_calendar_boundaries() {
        use chrono::{TimeZone, Utc};
        let at = |y, mo, d, h, mi, s| {
            Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
                .unwrap()
                .timestamp_millis()
        };
        // Wednesday 2026-11-25 13:20:07 UTC.
        let now = at(2026, 11, 25, 13, 20, 7);
        assert_eq!(next_reset("1d", now), Some(at(2026, 11, 26, 0, 0, 0)));
        assert_eq!(next_reset("7d", now), Some(at(2026, 11, 30, 0, 0, 0)));
        assert_eq!(next_reset("1w", now), Some(at(2026, 11, 30, 0, 0, 0)));
        assert_eq!(next_reset("30d", now), Some(at(2026, 12, 1, 0, 0, 0)));
        assert_eq!(
            next_reset("1mo", at(2026, 12, 31, 23, 0, 0)),
            Some(at(2027, 1, 1, 0, 0, 0))
        );
        assert_eq!(next_reset("1h", now), Some(at(2026, 11, 25, 14, 0, 0)));
        assert_eq!(next_reset("5h", now), Some(at(2026, 11, 25, 15, 0, 0)));
        assert_eq!(next_reset("10m", now), Some(at(2026, 11, 25, 13, 30, 0)));
        assert_eq!(next_reset("2s", now), Some(at(2026, 11, 25, 13, 20, 8)));
        assert_eq!(next_reset("3d", now), Some(at(2026, 11, 28, 0, 0, 0)));
        assert_eq!(next_reset("soon", now), None);
        assert_eq!(next_reset("0d", now), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("30d"), Ok(30 * 86_400_000));
        assert_eq!(parse_duration_ms("1mo"), Ok(30 * 86_400_000));
        assert!(parse_duration_ms("30").is_err());
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("99999999999999999999d").is_err());
    }
}

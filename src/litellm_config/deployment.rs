//! `model_list`: LiteLLM's flat list of deployments, grouped by
//! `model_name` in order.

use serde_norway::Value;
use toml::Table;

use super::{child, entries, invalid, mapping, toml_int, Ignored, ImportError, Translator};
use super::{infer_provider, kind, param_reason};
use crate::providers::catalog::{split_model, Provider};

impl Translator<'_> {
    // ---- model_list ------------------------------------------------------

    pub(super) fn model_list(&mut self, v: &Value) -> Result<(), ImportError> {
        let items = match v {
            Value::Null => return Ok(()),
            Value::Sequence(items) => items,
            other => {
                return Err(invalid(
                    "model_list",
                    format!("must be a list of deployments, not {}", kind(other)),
                ))
            }
        };
        for (i, item) in items.iter().enumerate() {
            let path = format!("model_list[{i}]");
            if let Some((group, d)) = self.deployment(&path, item)? {
                match self.groups.iter_mut().find(|(n, _, _)| *n == group) {
                    Some((_, deps, _)) => deps.push(d),
                    None => self.groups.push((group, vec![d], None)),
                }
            }
        }
        Ok(())
    }

    /// One LiteLLM deployment: its group and tollgate deployment, or
    /// `None` when tollgate cannot serve it (reported).
    fn deployment(
        &mut self,
        path: &str,
        item: &Value,
    ) -> Result<Option<(String, Table)>, ImportError> {
        let Some(m) = mapping(path, item)? else {
            return Err(invalid(path, "a deployment must not be empty"));
        };
        let name_path = child(path, "model_name");
        let group = match m.get("model_name") {
            Some(v) => self.text(&name_path, v)?,
            None => return Err(invalid(name_path, "is required")),
        };
        if group.trim().is_empty() {
            return Err(invalid(name_path, "must not be empty"));
        }
        let params_path = child(path, "litellm_params");
        let params = match m.get("litellm_params") {
            Some(v) => mapping(&params_path, v)?,
            None => None,
        };
        let Some(params) = params else {
            return Err(invalid(params_path, "is required"));
        };
        let model_path = child(&params_path, "model");
        let model = match params.get("model") {
            Some(v) => self.text(&model_path, v)?,
            None => return Err(invalid(model_path, "is required")),
        };

        // Which provider, and the model name it knows.
        let custom = match params.get("custom_llm_provider") {
            Some(v) if !v.is_null() => {
                Some(self.text(&child(&params_path, "custom_llm_provider"), v)?)
            }
            _ => None,
        };
        let resolved = match &custom {
            Some(p) => Provider::from_prefix(p)
                .map(|prov| {
                    let rest = model
                        .strip_prefix(&format!("{p}/"))
                        .unwrap_or(&model)
                        .to_string();
                    (prov, rest)
                })
                .ok_or_else(|| format!("provider `{p}` is not one tollgate speaks")),
            None => match split_model(&model) {
                Some((p, rest)) => Ok((p, rest.to_string())),
                None => match model.split_once('/') {
                    Some((prefix, _)) => Err(format!(
                        "provider `{prefix}` (from `{model}`) is not one tollgate speaks"
                    )),
                    None => infer_provider(&model)
                        .map(|p| (p, model.clone()))
                        .ok_or_else(|| {
                            format!(
                                "no provider for `{model}`: write it as provider/model, e.g. openai/{model}"
                            )
                        }),
                },
            },
        };
        let wildcard = model.contains('*') || group.contains('*');
        let (provider, upstream_model) = match resolved {
            Ok(ok) if !wildcard => ok,
            other => {
                let reason = match other {
                    Err(e) => e,
                    Ok(_) => "wildcard routing (`*`) is not supported: list each model".to_string(),
                };
                self.ignored.push(Ignored {
                    path: path.to_string(),
                    reason: format!("deployment of `{group}` left out: {reason}"),
                });
                return Ok(None);
            }
        };

        let mut d = Table::new();
        d.insert("provider".into(), provider.name().into());
        d.insert("model".into(), upstream_model.into());

        // Entries beside litellm_params.
        for (key, p, v) in entries(path, m)? {
            match key.as_str() {
                "model_name" | "litellm_params" | "model_info" => {}
                "rpm" => {
                    let n = self.uint32(&p, v)?;
                    d.insert("rpm".into(), toml::Value::Integer(n.into()));
                }
                "tpm" => {
                    let n = self.uint(&p, v)?;
                    d.insert("tpm".into(), toml_int(&p, n)?);
                }
                _ => self.ignore(&p, v, "no tollgate equivalent"),
            }
        }

        // model_info first: litellm_params wins where both set a price.
        if let Some(v) = m.get("model_info") {
            let info_path = child(path, "model_info");
            if let Some(info) = mapping(&info_path, v)? {
                for (key, p, v) in entries(&info_path, info)? {
                    if v.is_null() {
                        continue;
                    }
                    match key.as_str() {
                        "id" => {
                            let id = self.text(&p, v)?;
                            d.insert("id".into(), id.into());
                        }
                        "mode" => {
                            let mode = self.text(&p, v)?;
                            if matches!(mode.as_str(), "chat" | "completion" | "embedding") {
                                d.insert("mode".into(), mode.into());
                            } else {
                                self.ignore(
                                    &p,
                                    v,
                                    "tollgate serves chat, completion and embedding deployments only",
                                );
                            }
                        }
                        "access_groups" => {
                            let groups = self.names(&p, v)?;
                            d.insert("access_groups".into(), groups.into());
                        }
                        "max_input_tokens" => {
                            let n = self.uint(&p, v)?;
                            d.insert(key, toml_int(&p, n)?);
                        }
                        "input_cost_per_token"
                        | "output_cost_per_token"
                        | "cache_read_input_token_cost"
                        | "cache_creation_input_token_cost" => {
                            let f = self.float(&p, v)?;
                            d.insert(key, f.into());
                        }
                        "base_model" => self.ignore(
                            &p,
                            v,
                            "prices come from the deployment's own model name: set input_cost_per_token / output_cost_per_token",
                        ),
                        _ => self.ignore(&p, v, "model information tollgate does not use"),
                    }
                }
            }
        }

        for (key, p, v) in entries(&params_path, params)? {
            if v.is_null() {
                continue;
            }
            match key.as_str() {
                "model" | "custom_llm_provider" => {}
                "api_base" | "base_url" => {
                    let mut base = self.text(&p, v)?;
                    if provider == Provider::Ollama && !base.trim_end_matches('/').ends_with("/v1")
                    {
                        base = format!("{}/v1", base.trim_end_matches('/'));
                        self.note(format!(
                            "{p}: tollgate speaks to Ollama over its OpenAI-compatible API, so /v1 was added ({base})"
                        ));
                    }
                    d.insert("api_base".into(), base.into());
                }
                "aws_bedrock_runtime_endpoint" => {
                    if !params.contains_key("api_base") {
                        let base = self.text(&p, v)?;
                        d.insert("api_base".into(), base.into());
                    } else {
                        self.ignore(&p, v, "api_base is set too, and wins");
                    }
                }
                "api_key"
                | "azure_ad_token"
                | "aws_access_key_id"
                | "aws_secret_access_key"
                | "aws_session_token" => {
                    let s = self.secret(&p, v)?;
                    d.insert(key, s.into());
                }
                "aws_region_name" | "aws_region" => {
                    let s = self.secret(&p, v)?;
                    d.insert("aws_region".into(), s.into());
                }
                "api_version" => {
                    let s = self.text(&p, v)?;
                    d.insert(key, s.into());
                }
                "rpm" => {
                    let n = self.uint32(&p, v)?;
                    d.insert(key, toml::Value::Integer(n.into()));
                }
                "tpm" | "max_input_tokens" => {
                    let n = self.uint(&p, v)?;
                    d.insert(key, toml_int(&p, n)?);
                }
                "order" => {
                    let n = self.uint32(&p, v)?;
                    d.insert(key, toml::Value::Integer(n.into()));
                }
                "timeout" => {
                    let n = self.seconds(&p, v)?;
                    d.insert("timeout_secs".into(), toml_int(&p, n)?);
                }
                "weight"
                | "input_cost_per_token"
                | "output_cost_per_token"
                | "cache_read_input_token_cost"
                | "cache_creation_input_token_cost" => {
                    let f = self.float(&p, v)?;
                    d.insert(key, f.into());
                }
                "tags" => {
                    let tags = self.names(&p, v)?;
                    self.any_tags |= !tags.is_empty();
                    d.insert(key, tags.into());
                }
                "drop_params" => {
                    let b = self.boolean(&p, v)?;
                    d.insert(key, b.into());
                }
                "extra_headers" => {
                    let Some(h) = mapping(&p, v)? else { continue };
                    let mut headers = Table::new();
                    for (name, hp, hv) in entries(&p, h)? {
                        let value = self.text(&hp, hv)?;
                        headers.insert(name, value.into());
                    }
                    d.insert(key, toml::Value::Table(headers));
                }
                other => {
                    let reason = param_reason(other);
                    self.ignore(&p, v, reason);
                }
            }
        }
        Ok(Some((group, d)))
    }
}

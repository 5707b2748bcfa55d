//! Least-privilege policy: ordered rules, compiled at load, deny by default.
//!
//! A rule matches when every condition it names holds (a condition left out matches anything,
//! except that a rule without `classes` never matches the `unknown` class): issuers, groups,
//! subjects, clients (any of), scopes (all of), routes, endpoint classes, methods, models (any
//! of; `prefix*` globs). The first matching rule decides `allow`, `deny` or `hold`; when none
//! matches, the request is denied by `default-deny`. When the request's model could not be read,
//! an `allow` rule that names models does not match and a `deny` or `hold` rule that names
//! models does: "allow model A" cannot be stretched to a body we could not read, and "deny
//! model B" cannot be dodged by hiding the model.

pub mod classes;
pub mod grpc_model;
pub mod model;

use std::sync::Arc;

use serde::Deserialize;

use crate::config::KeyError;
use crate::identity::Identity;

/// The built-in endpoint classes rules may name (routes may add their own with `class`).
pub const CLASSES: &[&str] = &[
    classes::INFERENCE,
    classes::METADATA,
    classes::MANAGEMENT,
    classes::UNKNOWN,
];

/// The rule id reported when no rule matched.
pub const DEFAULT_DENY: &str = "default-deny";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// Largest JSON request-body prefix read to find the `model` field.
    pub model_lookahead_bytes: usize,
    pub rule: Vec<RuleSection>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    pub id: String,
    pub effect: Effect,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub subjects: Vec<String>,
    #[serde(default)]
    pub clients: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub classes: Vec<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub models: Vec<String>,
    /// Identity sources: issuer URLs, or `mtls` for client certificates.
    #[serde(default)]
    pub issuers: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
    /// Held for a human approver (the approvals stage); until it exists, refused.
    Hold,
}

/// The compiled rules.
#[derive(Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    pub model_lookahead_bytes: usize,
    /// Some rule names models, so requests' bodies are read for one.
    pub wants_model: bool,
}

#[derive(Debug)]
struct Rule {
    id: Arc<str>,
    effect: Effect,
    groups: Vec<String>,
    subjects: Vec<String>,
    clients: Vec<String>,
    scopes: Vec<String>,
    routes: Vec<String>,
    classes: Vec<String>,
    methods: Vec<String>,
    models: Vec<String>,
    issuers: Vec<String>,
}

/// What the policy sees of a request.
pub struct Request<'a> {
    pub identity: &'a Identity,
    pub route: &'a str,
    pub class: &'a str,
    pub method: &'a str,
    pub model: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    pub rule: Arc<str>,
}

impl Policy {
    /// Compiles `[policy]`; `routes` and `classes` are the names rules may refer to.
    pub fn compile(
        s: &PolicySection,
        routes: &[&str],
        classes: &[&str],
    ) -> Result<Policy, KeyError> {
        let mut rules: Vec<Rule> = Vec::new();
        for (i, r) in s.rule.iter().enumerate() {
            let key = |k: &str| format!("policy.rule[{i}].{k}");
            if r.id.is_empty() || rules.iter().any(|x| *x.id == *r.id) || r.id == DEFAULT_DENY {
                return Err(KeyError::new(
                    &key("id"),
                    &format!("rule id {:?} is empty, reserved or used twice", r.id),
                    "give every [[policy.rule]] a unique id; it is what logs and 403s name",
                ));
            }
            if let Some(bad) = r.routes.iter().find(|x| !routes.contains(&x.as_str())) {
                return Err(KeyError::new(
                    &key("routes"),
                    &format!("unknown route {bad:?}"),
                    &format!("use route ids from [[route]]: {}", routes.join(", ")),
                ));
            }
            if let Some(bad) = r.classes.iter().find(|x| !classes.contains(&x.as_str())) {
                return Err(KeyError::new(
                    &key("classes"),
                    &format!("unknown endpoint class {bad:?}"),
                    &format!("use one of: {}", classes.join(", ")),
                ));
            }
            let methods: Vec<String> = r.methods.iter().map(|m| m.to_ascii_uppercase()).collect();
            rules.push(Rule {
                id: r.id.as_str().into(),
                effect: r.effect,
                groups: r.groups.clone(),
                subjects: r.subjects.clone(),
                clients: r.clients.clone(),
                scopes: r.scopes.clone(),
                routes: r.routes.clone(),
                classes: r.classes.clone(),
                methods,
                models: r.models.clone(),
                issuers: r.issuers.clone(),
            });
        }
        Ok(Policy {
            wants_model: rules.iter().any(|r| !r.models.is_empty()),
            rules,
            model_lookahead_bytes: match s.model_lookahead_bytes {
                0 => 64 * 1024,
                n => n,
            },
        })
    }

    pub fn decide(&self, req: &Request<'_>) -> Decision {
        self.rules.iter().find(|r| r.matches(req)).map_or_else(
            || Decision {
                effect: Effect::Deny,
                rule: DEFAULT_DENY.into(),
            },
            |r| Decision {
                effect: r.effect,
                rule: r.id.clone(),
            },
        )
    }
}

impl Rule {
    fn matches(&self, req: &Request<'_>) -> bool {
        let who = req.identity;
        let any = |list: &[String], f: &dyn Fn(&str) -> bool| {
            list.is_empty() || list.iter().any(|x| f(x))
        };
        any(&self.groups, &|g| who.groups.iter().any(|x| x == g))
            && any(&self.subjects, &|s| who.subject == s)
            && any(&self.clients, &|c| who.client_id.as_deref() == Some(c))
            && self
                .scopes
                .iter()
                .all(|s| who.scopes.iter().any(|x| x == s))
            && any(&self.routes, &|r| req.route == r)
            // No `classes`: every class the tables know, never `unknown` (deny by default).
            && match self.classes.is_empty() {
                true => req.class != classes::UNKNOWN,
                false => self.classes.iter().any(|c| req.class == c),
            }
            && any(&self.methods, &|m| req.method == m)
            && (self.models.is_empty()
                || match req.model {
                    Some(m) => self.models.iter().any(|p| glob(p, m)),
                    // An unreadable model never earns an allow, and never escapes a deny or a
                    // hold: fail closed both ways.
                    None => self.effect != Effect::Allow,
                })
            && (self.issuers.is_empty() || self.issuers.contains(&who.issuer))
    }
}

/// `*` alone matches any model; `prefix*` matches by prefix; anything else exactly.
fn glob(pattern: &str, model: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => pattern == model,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml_rules: &str) -> Policy {
        let s: PolicySection = toml::from_str(toml_rules).unwrap();
        Policy::compile(
            &s,
            &["vllm", "triton"],
            &["inference", "management", "metadata"],
        )
        .unwrap()
    }

    fn who(groups: &[&str], scopes: &[&str]) -> Identity {
        Identity {
            subject: "alice".into(),
            issuer: "https://idp".into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            client_id: Some("app".into()),
        }
    }

    fn decide(p: &Policy, id: &Identity, class: &str, model: Option<&str>) -> (Effect, String) {
        let d = p.decide(&Request {
            identity: id,
            route: "vllm",
            class,
            method: "POST",
            model,
        });
        (d.effect, d.rule.to_string())
    }

    const RULES: &str = r#"
        [[rule]]
        id = "ml-llama"
        effect = "allow"
        groups = ["ml"]
        classes = ["inference"]
        models = ["llama-*"]
        [[rule]]
        id = "ops-load"
        effect = "hold"
        groups = ["ops"]
        classes = ["management"]
        [[rule]]
        id = "svc-infer"
        effect = "allow"
        scopes = ["models:infer", "models:read"]
        classes = ["inference"]
    "#;

    #[test]
    fn first_matching_rule_decides_and_nothing_matching_is_denied() {
        let p = policy(RULES);
        let ml = who(&["ml"], &[]);
        assert_eq!(
            decide(&p, &ml, "inference", Some("llama-3")),
            (Effect::Allow, "ml-llama".into())
        );
        assert_eq!(
            decide(&p, &ml, "inference", Some("qwen")),
            (Effect::Deny, DEFAULT_DENY.into())
        );
        // A rule naming models does not match a request whose model could not be read.
        assert_eq!(decide(&p, &ml, "inference", None).0, Effect::Deny);
        assert_eq!(
            decide(&p, &ml, "management", Some("llama-3")).0,
            Effect::Deny
        );
        let ops = who(&["ops"], &[]);
        assert_eq!(
            decide(&p, &ops, "management", None),
            (Effect::Hold, "ops-load".into())
        );
    }

    #[test]
    fn unknown_models_fail_closed_and_unknown_classes_need_naming() {
        let p = policy(
            r#"
            [[rule]]
            id = "no-expensive"
            effect = "deny"
            models = ["gpt-huge*"]
            [[rule]]
            id = "ml-any"
            effect = "allow"
            groups = ["ml"]
            [[rule]]
            id = "partner"
            effect = "allow"
            issuers = ["https://partner"]
        "#,
        );
        let ml = who(&["ml"], &[]);
        // The model could not be read: the deny rule naming models still applies.
        assert_eq!(decide(&p, &ml, "inference", None).1, "no-expensive");
        assert_eq!(decide(&p, &ml, "inference", Some("llama")).1, "ml-any");
        // A rule without classes does not grant endpoints the tables do not know.
        assert_eq!(decide(&p, &ml, "unknown", Some("llama")).1, DEFAULT_DENY);
        // Issuer binding: the same subject from another IdP is another principal.
        let mut partner = who(&[], &[]);
        assert_eq!(decide(&p, &partner, "inference", Some("x")).1, DEFAULT_DENY);
        partner.issuer = "https://partner".into();
        assert_eq!(decide(&p, &partner, "inference", Some("x")).1, "partner");
    }

    #[test]
    fn scopes_are_all_required() {
        let p = policy(RULES);
        let one = who(&[], &["models:infer"]);
        assert_eq!(decide(&p, &one, "inference", None).0, Effect::Deny);
        let both = who(&[], &["models:read", "models:infer"]);
        assert_eq!(
            decide(&p, &both, "inference", None),
            (Effect::Allow, "svc-infer".into())
        );
    }

    #[test]
    fn references_to_unknown_routes_and_classes_are_config_errors() {
        let s: PolicySection =
            toml::from_str("[[rule]]\nid = \"x\"\neffect = \"allow\"\nroutes = [\"nope\"]")
                .unwrap();
        let e = Policy::compile(&s, &["vllm"], &["inference"]).unwrap_err();
        assert_eq!(e.key, "policy.rule[0].routes");
        assert!(e.fix.contains("vllm"));
        let s: PolicySection =
            toml::from_str("[[rule]]\nid = \"x\"\neffect = \"allow\"\nclasses = [\"inferense\"]")
                .unwrap();
        assert_eq!(
            Policy::compile(&s, &[], &["inference"]).unwrap_err().key,
            "policy.rule[0].classes"
        );
        let s: PolicySection =
            toml::from_str("[[rule]]\nid = \"default-deny\"\neffect = \"allow\"").unwrap();
        assert!(Policy::compile(&s, &[], &[]).is_err());
    }
}

//! Policy: a pure decision over a principal, a tool and the request context, in Cedar.
//!
//! Decisions are allow, deny (with the operator-readable reasons of the `forbid` policies
//! that matched, via their `@reason("...")` annotation; agents only ever see a generic
//! denial), or require-approval (an allowing `permit` annotated `@approval("required")`).
//!
//! Invariants:
//! - Deny by default: an empty policy set denies everything; `forbid` beats `permit` (Cedar).
//! - Policies are validated against the schema (`SCHEMA`) in strict mode when applied; a set
//!   that does not validate is refused whole.
//! - Fail closed: a policy that errors while evaluating is skipped by Cedar, which would make
//!   an erroring `forbid` fail open, so any evaluation error of a `forbid` turns the decision
//!   into a deny.
//! - No I/O: the caller supplies everything the decision depends on.
//!
//! Threat: over-broad access to tools, and policy mistakes that silently allow.
//!
//! Not yet: rules over the call's arguments (a per-tool Cedar type generated from the tool's
//! input schema, see `docs/design/identity-policy-audit.md`) and the rate context.

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, PolicyId, PolicySet, Request, RestrictedExpression, Schema,
    ValidationMode, Validator,
};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;

/// The Cedar schema every policy set is validated against.
pub const SCHEMA: &str = r#"
namespace Warden {
  entity Group;
  entity Agent in [Group] = {
    tenant: String,
    workspace: String,
    environment: String,
    name: String,
  };
  entity Tool = {
    namespace: String,
    skill: String,
    name: String,
    publisher: String,
    readOnly: Bool,
    destructive: Bool,
    idempotent: Bool,
    openWorld: Bool,
  };
  action call appliesTo {
    principal: Agent,
    resource: Tool,
    context: {
      now: __cedar::datetime,
      clientIp: __cedar::ipaddr,
    }
  };
}
"#;

/// Why a policy set could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The built-in schema is broken (a bug).
    #[error("policy schema: {0}")]
    Schema(String),
    /// The policy text does not parse.
    #[error("policies do not parse: {0}")]
    Parse(String),
    /// The policies do not validate against the schema.
    #[error("policies do not validate against the schema:\n{0}")]
    Invalid(String),
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    /// Tenant.
    pub tenant: String,
    /// Workspace.
    pub workspace: String,
    /// Environment (e.g. dev, prod).
    pub environment: String,
    /// Agent name.
    pub agent: String,
    /// Groups the agent belongs to.
    pub groups: Vec<String>,
}

/// Which tool is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The exposed (namespaced) tool name; the Cedar entity id.
    pub exposed: String,
    /// Namespace.
    pub namespace: String,
    /// Skill.
    pub skill: String,
    /// Local tool name.
    pub tool: String,
    /// The skill's publisher ("" when unsigned).
    pub publisher: String,
    /// MCP annotations (false when absent).
    pub read_only: bool,
    /// Destructive hint.
    pub destructive: bool,
    /// Idempotent hint.
    pub idempotent: bool,
    /// Open-world hint.
    pub open_world: bool,
}

/// Request context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Circumstances {
    /// Current time, RFC 3339 (UTC).
    pub now: String,
    /// The client's IP address.
    pub client_ip: IpAddr,
}

/// The outcome of a policy check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by these policies.
    Allow {
        /// Deciding policy ids.
        policies: Vec<String>,
    },
    /// Allowed only with a human's approval.
    RequireApproval {
        /// Deciding policy ids.
        policies: Vec<String>,
    },
    /// Denied.
    Deny {
        /// Operator-readable reasons (`@reason` of the matching forbids, or why by default).
        reasons: Vec<String>,
        /// Deciding policy ids (empty for the default deny).
        policies: Vec<String>,
    },
}

/// A validated policy set, ready to decide.
pub struct PolicyEngine {
    set: PolicySet,
    authorizer: Authorizer,
    action: EntityUid,
    types: EntityTypes,
}

/// The schema's entity type names, parsed once.
struct EntityTypes {
    agent: EntityTypeName,
    tool: EntityTypeName,
    group: EntityTypeName,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("policies", &self.set.policies().count())
            .finish_non_exhaustive()
    }
}

fn type_name(name: &str) -> Result<EntityTypeName, PolicyError> {
    EntityTypeName::from_str(name).map_err(|e| PolicyError::Schema(e.to_string()))
}

fn schema() -> Result<Schema, PolicyError> {
    Schema::from_cedarschema_str(SCHEMA)
        .map(|(schema, _warnings)| schema)
        .map_err(|e| PolicyError::Schema(e.to_string()))
}

impl PolicyEngine {
    /// Parses and validates a policy set (Cedar text; `@id("...")` names a policy).
    pub fn new(text: &str) -> Result<Self, PolicyError> {
        let schema = schema()?;
        let parsed = PolicySet::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        // Honour @id annotations as policy ids (unique), like the Cedar CLI does.
        let mut set = PolicySet::new();
        for policy in parsed.policies() {
            let policy = match policy.annotation("id") {
                Some(id) => policy.new_id(PolicyId::new(id)),
                None => policy.clone(),
            };
            set.add(policy)
                .map_err(|e| PolicyError::Parse(e.to_string()))?;
        }
        let result = Validator::new(schema).validate(&set, ValidationMode::Strict);
        if !result.validation_passed() {
            let errors: Vec<String> = result
                .validation_errors()
                .map(|e| format!("  {}: {e}", e.policy_id()))
                .collect();
            return Err(PolicyError::Invalid(errors.join("\n")));
        }
        let action = EntityUid::from_str(r#"Warden::Action::"call""#)
            .map_err(|e| PolicyError::Schema(e.to_string()))?;
        let types = EntityTypes {
            agent: type_name("Warden::Agent")?,
            tool: type_name("Warden::Tool")?,
            group: type_name("Warden::Group")?,
        };
        Ok(Self {
            set,
            authorizer: Authorizer::new(),
            action,
            types,
        })
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.set.policies().count()
    }

    /// Whether the set is empty (and so denies everything).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides one call. Never fails: anything that cannot be evaluated is a deny.
    pub fn decide(
        &self,
        subject: &Subject,
        target: &Target,
        circumstances: &Circumstances,
    ) -> Decision {
        match self.evaluate(subject, target, circumstances) {
            Ok(decision) => decision,
            Err(why) => Decision::Deny {
                reasons: vec![format!("request could not be evaluated: {why}")],
                policies: Vec::new(),
            },
        }
    }

    fn evaluate(&self, s: &Subject, t: &Target, c: &Circumstances) -> Result<Decision, String> {
        // Entities and context are built with Cedar's typed API (no JSON round trip): the
        // policies were validated against the schema when applied, and these values are
        // constructed here to the schema's shape.
        let uid = |ty: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
        };
        let string = |v: &str| RestrictedExpression::new_string(v.to_owned());
        let agent_id = format!("{}/{}/{}/{}", s.tenant, s.workspace, s.environment, s.agent);
        let principal = uid(&self.types.agent, &agent_id);
        let resource = uid(&self.types.tool, &t.exposed);
        let agent = Entity::new(
            principal.clone(),
            HashMap::from([
                ("tenant".to_owned(), string(&s.tenant)),
                ("workspace".to_owned(), string(&s.workspace)),
                ("environment".to_owned(), string(&s.environment)),
                ("name".to_owned(), string(&s.agent)),
            ]),
            s.groups.iter().map(|g| uid(&self.types.group, g)).collect(),
        )
        .map_err(|e| e.to_string())?;
        let tool = Entity::new(
            resource.clone(),
            HashMap::from([
                ("namespace".to_owned(), string(&t.namespace)),
                ("skill".to_owned(), string(&t.skill)),
                ("name".to_owned(), string(&t.tool)),
                ("publisher".to_owned(), string(&t.publisher)),
                (
                    "readOnly".to_owned(),
                    RestrictedExpression::new_bool(t.read_only),
                ),
                (
                    "destructive".to_owned(),
                    RestrictedExpression::new_bool(t.destructive),
                ),
                (
                    "idempotent".to_owned(),
                    RestrictedExpression::new_bool(t.idempotent),
                ),
                (
                    "openWorld".to_owned(),
                    RestrictedExpression::new_bool(t.open_world),
                ),
            ]),
            HashSet::new(),
        )
        .map_err(|e| e.to_string())?;
        let entities = Entities::from_entities([agent, tool], None).map_err(|e| e.to_string())?;
        let context = Context::from_pairs([
            ("now".to_owned(), RestrictedExpression::new_datetime(&c.now)),
            (
                "clientIp".to_owned(),
                RestrictedExpression::new_ip(c.client_ip.to_string()),
            ),
        ])
        .map_err(|e| e.to_string())?;
        let request = Request::new(principal, self.action.clone(), resource, context, None)
            .map_err(|e| e.to_string())?;
        let response = self
            .authorizer
            .is_authorized(&request, &self.set, &entities);

        // Fail closed: an erroring forbid must not let the call through.
        let errored_forbids: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| match e {
                cedar_policy::AuthorizationError::PolicyEvaluationError(pe) => {
                    pe.policy_id().clone()
                }
            })
            .filter(|id| {
                self.set
                    .policy(id)
                    .is_some_and(|p| p.effect() == Effect::Forbid)
            })
            .map(|id| id.to_string())
            .collect();
        if !errored_forbids.is_empty() {
            return Ok(Decision::Deny {
                reasons: vec!["a forbid policy could not be evaluated".into()],
                policies: errored_forbids,
            });
        }
        let deciding: Vec<&PolicyId> = response.diagnostics().reason().collect();
        let policies: Vec<String> = deciding.iter().map(|id| id.to_string()).collect();
        Ok(match response.decision() {
            CedarDecision::Allow => {
                let needs_approval = deciding
                    .iter()
                    .any(|id| self.set.annotation(id, "approval") == Some("required"));
                if needs_approval {
                    Decision::RequireApproval { policies }
                } else {
                    Decision::Allow { policies }
                }
            }
            CedarDecision::Deny => {
                let reasons = if deciding.is_empty() {
                    vec!["no policy permits this call".to_owned()]
                } else {
                    deciding
                        .iter()
                        .map(|id| {
                            self.set
                                .annotation(id, "reason")
                                .map_or_else(|| format!("forbidden by {id}"), str::to_owned)
                        })
                        .collect()
                };
                Decision::Deny { reasons, policies }
            }
        })
    }
}

//! Policy: a pure decision over a principal, a tool, the call's arguments and the request
//! context, in Cedar.
//!
//! Decisions are allow, deny (with the operator-readable reasons of the `forbid` policies
//! that matched, via their `@reason("...")` annotation; agents only ever see a generic
//! denial), or require-approval (an allowing `permit` annotated `@approval("required")`).
//! A deciding `permit` annotated `@audit("arguments")` lets the audit trail keep the call's
//! arguments (redacted); otherwise only their digest is kept.
//!
//! Arguments are open-ended, and Cedar records are closed, so they reach policies as entity
//! tags: `context.arguments` carries every top-level argument as a string (strings as they
//! are, anything else as compact JSON) and `context.numbers` every integer argument as a
//! Long. Strict validation makes rules guard with `hasTag` before `getTag`, so a rule can
//! never error on a missing argument.
//!
//! Invariants:
//! - Deny by default: an empty policy set denies everything; `forbid` beats `permit` (Cedar).
//! - Policies are validated against the schema (`SCHEMA`) in strict mode when applied; a set
//!   that does not validate, or holds templates, is refused whole.
//! - Fail closed: a policy that errors while evaluating is skipped by Cedar, which would make
//!   an erroring `forbid` fail open, so any evaluation error of a `forbid` turns the decision
//!   into a deny.
//! - Listing ([`PolicyEngine::may_call`]) evaluates with the arguments unknown (Cedar partial
//!   evaluation): a tool is listed unless every possible call of it is denied, so a tool
//!   that is listed may still be refused for particular arguments, and one that is hidden
//!   can never be called.
//! - Only policies whose scope can match the principal and the tool are evaluated (a slice
//!   cached per principal and tool); dropping the others cannot change a decision, since a
//!   scope that does not match makes a policy false before its conditions run.
//! - No I/O: the caller supplies everything the decision depends on.
//!
//! Threat: over-broad access to tools, and policy mistakes that silently allow.

pub use crate::identity::Subject;
use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Effect, Entities, Entity, EntityId,
    EntityTypeName, EntityUid, PolicyId, PolicySet, PrincipalConstraint, Request, RequestBuilder,
    ResourceConstraint, RestrictedExpression, Schema, ValidationMode, Validator,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, RwLock};

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
  entity Arguments tags String;
  entity Numbers tags Long;
  action call appliesTo {
    principal: Agent,
    resource: Tool,
    context: {
      now: __cedar::datetime,
      clientIp: __cedar::ipaddr,
      rate: Long,
      arguments: Arguments,
      numbers: Numbers,
    }
  };
}
"#;

/// Most slices kept before the cache is cleared (bounded memory whatever the traffic).
const SLICE_CACHE_LIMIT: usize = 4096;

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

/// Which tool is called.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    #[serde(default)]
    pub publisher: String,
    /// MCP annotations (false when absent).
    #[serde(default)]
    pub read_only: bool,
    /// Destructive hint.
    #[serde(default)]
    pub destructive: bool,
    /// Idempotent hint.
    #[serde(default)]
    pub idempotent: bool,
    /// Open-world hint.
    #[serde(default)]
    pub open_world: bool,
}

/// Request context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Circumstances {
    /// Current time, RFC 3339 (UTC).
    pub now: String,
    /// The client's IP address, when the transport knows it. Unknown stays unknown: a
    /// policy that reads `context.clientIp` then errors, so its `permit` does not match and
    /// its `forbid` denies.
    #[serde(default)]
    pub client_ip: Option<IpAddr>,
    /// The principal's calls in the current minute, this one included.
    #[serde(default)]
    pub rate: i64,
    /// The call's arguments.
    #[serde(default)]
    pub arguments: Map<String, Value>,
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
        /// What the deciding rules ask for (every one must be met).
        quorums: Vec<Quorum>,
    },
    /// Denied.
    Deny {
        /// Operator-readable reasons (`@reason` of the matching forbids, or why by default).
        reasons: Vec<String>,
        /// Deciding policy ids (empty for the default deny).
        policies: Vec<String>,
    },
}

impl Decision {
    /// The deciding policy ids.
    pub fn policies(&self) -> &[String] {
        match self {
            Self::Allow { policies }
            | Self::RequireApproval { policies, .. }
            | Self::Deny { policies, .. } => policies,
        }
    }

    /// `allow`, `require-approval` or `deny`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Allow { .. } => "allow",
            Self::RequireApproval { .. } => "require-approval",
            Self::Deny { .. } => "deny",
        }
    }

    /// The decision as JSON (`decision`, `policies`, and `reasons` for a deny).
    pub fn to_json(&self) -> Value {
        match self {
            Self::Deny { reasons, policies } => {
                serde_json::json!({"decision": self.label(), "policies": policies, "reasons": reasons})
            }
            _ => serde_json::json!({"decision": self.label(), "policies": self.policies()}),
        }
    }
}

/// A validated policy set, ready to decide.
pub struct PolicyEngine {
    set: PolicySet,
    /// Annotations read per decision, extracted once (looking one up in the set parses the
    /// key, which cost more than the rest of a decision).
    notes: HashMap<PolicyId, Notes>,
    authorizer: Authorizer,
    action: EntityUid,
    types: EntityTypes,
    /// Slices by a hash of (subject, target); each slice holds the pair it is for.
    slices: RwLock<HashMap<u64, Arc<Slice>>>,
}

/// The policies that can apply to one principal and tool.
struct Slice {
    /// The principal and tool this slice is for (checked on lookup).
    subject: Subject,
    target: Target,
    /// Their entities (which depend on nothing else), built once.
    principal: EntityUid,
    resource: EntityUid,
    entities: Entities,
    set: PolicySet,
    /// Which context attributes any of them may read. Those none reads are left out of the
    /// request (building them, e.g. parsing a datetime, is most of a decision's cost); a
    /// policy that reads one always gets it, so leaving the others out changes nothing.
    reads: Reads,
    /// The decision, once made, when the policies read no context at all: every request
    /// for this principal and tool is then the same Cedar request (the entities above and
    /// an empty context), so the answer is too.
    fixed: std::sync::OnceLock<Decision>,
}

/// Context attributes a slice's policies may read (conservatively: any mention).
#[derive(Debug, Clone, Copy, Default)]
struct Reads {
    now: bool,
    client_ip: bool,
    rate: bool,
    arguments: bool,
    numbers: bool,
}

impl Reads {
    const ALL: Reads = Reads {
        now: true,
        client_ip: true,
        rate: true,
        arguments: true,
        numbers: true,
    };

    fn of(text: &str) -> Self {
        Self {
            now: text.contains("now"),
            client_ip: text.contains("clientIp"),
            rate: text.contains("rate"),
            arguments: text.contains("arguments") || text.contains("numbers"),
            numbers: text.contains("numbers"),
        }
    }

    /// Whether nothing in the context is read.
    fn nothing(self) -> bool {
        !(self.now || self.client_ip || self.rate || self.arguments || self.numbers)
    }

    fn union(self, o: Self) -> Self {
        Self {
            now: self.now || o.now,
            client_ip: self.client_ip || o.client_ip,
            rate: self.rate || o.rate,
            arguments: self.arguments || o.arguments,
            numbers: self.numbers || o.numbers,
        }
    }
}

/// How many humans an `@approval` annotation asks for, and from which group:
/// `@approval("required")` (one approver), `@approval("2-of:any")` (two distinct approvers)
/// or `@approval("2-of:group:finance")` (two distinct approvers of the group `finance`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Quorum {
    /// Distinct approvers needed (1 to [`Quorum::MAX`]).
    pub count: u32,
    /// The group they must belong to (`None`: any approver of the workspace).
    pub group: Option<String>,
}

impl Quorum {
    /// The largest quorum a rule may ask for.
    pub const MAX: u32 = 9;

    /// Parses an `@approval` annotation.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "required" {
            return Ok(Self {
                count: 1,
                group: None,
            });
        }
        let shape = || {
            format!(
                "@approval(\"{s}\") is not understood: use \"required\", \"N-of:any\" or \
                 \"N-of:group:NAME\" with N from 1 to {}",
                Self::MAX
            )
        };
        let (n, who) = s.split_once("-of:").ok_or_else(shape)?;
        let count: u32 = n
            .parse()
            .ok()
            .filter(|c| (1..=Self::MAX).contains(c))
            .ok_or_else(shape)?;
        let group = match who {
            "any" => None,
            g => Some(
                g.strip_prefix("group:")
                    .filter(|g| crate::identity::valid_segment(g))
                    .ok_or_else(shape)?
                    .to_owned(),
            ),
        };
        Ok(Self { count, group })
    }
}

impl std::fmt::Display for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.group, self.count) {
            (None, 1) => f.write_str("required"),
            (None, n) => write!(f, "{n}-of:any"),
            (Some(g), n) => write!(f, "{n}-of:group:{g}"),
        }
    }
}

/// The annotations warden acts on, of one policy.
#[derive(Debug, Clone, Default)]
struct Notes {
    approval: Option<Quorum>,
    reason: Option<String>,
    audit_arguments: bool,
}

/// The schema's entity type names, parsed once.
struct EntityTypes {
    agent: EntityTypeName,
    tool: EntityTypeName,
    group: EntityTypeName,
    arguments: EntityTypeName,
    numbers: EntityTypeName,
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

/// How the call's arguments enter the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arguments {
    /// As entities with tags (a call).
    Known,
    /// As unknowns (the listing check, by partial evaluation).
    Unknown,
    /// Left out: no policy that can apply reads them.
    Unused,
}

/// The request's entities and context, built once per decision.
struct Built<'a> {
    entities: std::borrow::Cow<'a, Entities>,
    context: Context,
}

impl PolicyEngine {
    /// Parses and validates a policy set (Cedar text; `@id("...")` names a policy).
    pub fn new(text: &str) -> Result<Self, PolicyError> {
        let schema = schema()?;
        let parsed = PolicySet::from_str(text).map_err(|e| PolicyError::Parse(e.to_string()))?;
        if parsed.num_of_templates() > 0 {
            return Err(PolicyError::Invalid(
                "  policy templates are not supported: write static policies".into(),
            ));
        }
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
            arguments: type_name("Warden::Arguments")?,
            numbers: type_name("Warden::Numbers")?,
        };
        // An `@approval` warden cannot read refuses the set: read as "no approval", a typo
        // would silently allow what the author meant to guard.
        let mut notes = HashMap::new();
        let mut bad = Vec::new();
        for p in set.policies() {
            let approval = match p.annotation("approval") {
                None => None,
                Some(a) => match Quorum::parse(a) {
                    Ok(q) => Some(q),
                    Err(e) => {
                        bad.push(format!("  {}: {e}", p.id()));
                        None
                    }
                },
            };
            let n = Notes {
                approval,
                reason: p.annotation("reason").map(str::to_owned),
                audit_arguments: p.annotation("audit") == Some("arguments"),
            };
            notes.insert(p.id().clone(), n);
        }
        if !bad.is_empty() {
            return Err(PolicyError::Invalid(bad.join("\n")));
        }
        Ok(Self {
            set,
            notes,
            authorizer: Authorizer::new(),
            action,
            types,
            slices: RwLock::default(),
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

    /// Whether any of `policies` lets the audit trail keep the call's arguments
    /// (`@audit("arguments")`).
    pub fn records_arguments(&self, policies: &[String]) -> bool {
        policies.iter().any(|id| {
            self.notes
                .get(&PolicyId::new(id.as_str()))
                .is_some_and(|n| n.audit_arguments)
        })
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

    /// Whether `subject` may call `target` with some arguments (allowed or with approval):
    /// the listing check. The arguments in `circumstances` are ignored and treated as
    /// unknown; anything that cannot be evaluated hides the tool.
    pub fn may_call(
        &self,
        subject: &Subject,
        target: &Target,
        circumstances: &Circumstances,
    ) -> bool {
        let Ok(slice) = self.slice(subject, target) else {
            return false;
        };
        let arguments = if slice.reads.arguments {
            Arguments::Unknown
        } else {
            Arguments::Unused
        };
        let Ok(built) = self.build(&slice, circumstances, arguments) else {
            return false;
        };
        let request = RequestBuilder::default()
            .principal(slice.principal.clone())
            .action(self.action.clone())
            .resource(slice.resource.clone())
            .context(built.context)
            .build();
        let response = self
            .authorizer
            .is_authorized_partial(&request, &slice.set, &built.entities);
        let forbid_errored = response.definitely_errored().any(|id| {
            slice
                .set
                .policy(id)
                .is_some_and(|p| p.effect() == Effect::Forbid)
        });
        !forbid_errored && response.decision() != Some(CedarDecision::Deny)
    }

    /// The policies whose scope can match this principal and tool, cached.
    fn slice(&self, s: &Subject, t: &Target) -> Result<Arc<Slice>, String> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        s.hash(&mut hasher);
        t.hash(&mut hasher);
        let key = hasher.finish();
        if let Some(slice) = self
            .slices
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .filter(|slice| slice.subject == *s && slice.target == *t)
        {
            return Ok(slice.clone());
        }
        let (principal, resource, entities) = self.base_entities(s, t)?;
        let groups: HashSet<EntityUid> = s
            .groups
            .iter()
            .map(|g| EntityUid::from_type_name_and_id(self.types.group.clone(), EntityId::new(g)))
            .collect();
        let principal_in = |uid: &EntityUid| *uid == principal || groups.contains(uid);
        let mut slice = PolicySet::new();
        let mut reads = Reads::default();
        for policy in self.set.policies() {
            let principal_matches = match policy.principal_constraint() {
                PrincipalConstraint::Any => true,
                PrincipalConstraint::Eq(uid) => uid == principal,
                PrincipalConstraint::In(uid) => principal_in(&uid),
                PrincipalConstraint::Is(ty) => ty == self.types.agent,
                PrincipalConstraint::IsIn(ty, uid) => ty == self.types.agent && principal_in(&uid),
            };
            // Tools have no parents: `resource in X` holds only for X itself.
            let resource_matches = match policy.resource_constraint() {
                ResourceConstraint::Any => true,
                ResourceConstraint::Eq(uid) | ResourceConstraint::In(uid) => uid == resource,
                ResourceConstraint::Is(ty) => ty == self.types.tool,
                ResourceConstraint::IsIn(ty, uid) => ty == self.types.tool && uid == resource,
            };
            if principal_matches && resource_matches {
                // Conservative: any mention of the names counts as reading them.
                reads = reads.union(Reads::of(&policy.to_string()));
                // Ids are unique in the full set, so adding cannot fail; if it did, keep
                // the full set rather than decide on a partial one.
                if slice.add(policy.clone()).is_err() {
                    return Ok(Arc::new(Slice {
                        subject: s.clone(),
                        target: t.clone(),
                        principal,
                        resource,
                        entities,
                        set: self.set.clone(),
                        reads: Reads::ALL,
                        fixed: std::sync::OnceLock::new(),
                    }));
                }
            }
        }
        let slice = Arc::new(Slice {
            subject: s.clone(),
            target: t.clone(),
            principal,
            resource,
            entities,
            set: slice,
            reads,
            fixed: std::sync::OnceLock::new(),
        });
        let mut slices = self
            .slices
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slices.len() >= SLICE_CACHE_LIMIT {
            slices.clear();
        }
        slices.insert(key, slice.clone());
        Ok(slice)
    }

    /// The agent's and the tool's entities (cached with the slice).
    fn base_entities(
        &self,
        s: &Subject,
        t: &Target,
    ) -> Result<(EntityUid, EntityUid, Entities), String> {
        // Entities and context are built with Cedar's typed API (no JSON round trip): the
        // policies were validated against the schema when applied, and these values are
        // constructed here to the schema's shape.
        let uid = |ty: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
        };
        let string = |v: &str| RestrictedExpression::new_string(v.to_owned());
        let principal = uid(&self.types.agent, &s.path());
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
        Ok((principal, resource, entities))
    }

    /// Builds the per-request entities and context over a slice.
    fn build<'a>(
        &self,
        slice: &'a Slice,
        c: &Circumstances,
        arguments: Arguments,
    ) -> Result<Built<'a>, String> {
        let reads = slice.reads;
        let uid = |ty: &EntityTypeName, id: &str| {
            EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
        };
        let mut extra = Vec::new();
        let mut context = Vec::with_capacity(5);
        if reads.now {
            context.push(("now".to_owned(), RestrictedExpression::new_datetime(&c.now)));
        }
        if reads.client_ip
            && let Some(ip) = c.client_ip
        {
            context.push((
                "clientIp".to_owned(),
                RestrictedExpression::new_ip(ip.to_string()),
            ));
        }
        if reads.rate {
            context.push(("rate".to_owned(), RestrictedExpression::new_long(c.rate)));
        }
        if arguments == Arguments::Known {
            let arguments = uid(&self.types.arguments, "call");
            let numbers = uid(&self.types.numbers, "call");
            let strings = c.arguments.iter().map(|(k, v)| {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), RestrictedExpression::new_string(text))
            });
            let longs = c.arguments.iter().filter_map(|(k, v)| {
                Some((k.clone(), RestrictedExpression::new_long(as_long(v)?)))
            });
            extra.push(
                Entity::new_with_tags(arguments.clone(), [], [], strings)
                    .map_err(|e| e.to_string())?,
            );
            extra.push(
                Entity::new_with_tags(numbers.clone(), [], [], longs).map_err(|e| e.to_string())?,
            );
            context.push((
                "arguments".to_owned(),
                RestrictedExpression::new_entity_uid(arguments),
            ));
            context.push((
                "numbers".to_owned(),
                RestrictedExpression::new_entity_uid(numbers),
            ));
        } else if arguments == Arguments::Unknown {
            context.push((
                "arguments".to_owned(),
                RestrictedExpression::new_unknown("arguments"),
            ));
            context.push((
                "numbers".to_owned(),
                RestrictedExpression::new_unknown("numbers"),
            ));
        }
        let entities = if extra.is_empty() {
            std::borrow::Cow::Borrowed(&slice.entities)
        } else {
            std::borrow::Cow::Owned(
                slice
                    .entities
                    .clone()
                    .add_entities(extra, None)
                    .map_err(|e| e.to_string())?,
            )
        };
        let context = Context::from_pairs(context).map_err(|e| e.to_string())?;
        Ok(Built { entities, context })
    }

    fn evaluate(&self, s: &Subject, t: &Target, c: &Circumstances) -> Result<Decision, String> {
        let slice = self.slice(s, t)?;
        // A number no Long can hold would be missing from `context.numbers`, so a
        // `hasTag`-guarded forbid would not see it while the skill does: refuse the call.
        if slice.reads.numbers
            && let Some(name) = c
                .arguments
                .iter()
                .find(|(_, v)| v.is_number() && as_long(v).is_none())
                .map(|(k, _)| k)
        {
            return Ok(Decision::Deny {
                reasons: vec![format!(
                    "argument `{name}` is a number policy cannot represent (fractional or beyond 64 bits)"
                )],
                policies: Vec::new(),
            });
        }
        let fixed = slice.reads.nothing();
        if fixed && let Some(decision) = slice.fixed.get() {
            return Ok(decision.clone());
        }
        let decision = self.run(&slice, c)?;
        if fixed {
            // Another thread may have set the same decision first.
            let _ = slice.fixed.set(decision.clone());
        }
        Ok(decision)
    }

    /// Asks Cedar about one call (what [`PolicyEngine::evaluate`] does past the checks of
    /// what cannot be asked).
    fn run(&self, slice: &Slice, c: &Circumstances) -> Result<Decision, String> {
        let arguments = if slice.reads.arguments {
            Arguments::Known
        } else {
            Arguments::Unused
        };
        let built = self.build(slice, c, arguments)?;
        let request = Request::new(
            slice.principal.clone(),
            self.action.clone(),
            slice.resource.clone(),
            built.context,
            None,
        )
        .map_err(|e| e.to_string())?;
        let response = self
            .authorizer
            .is_authorized(&request, &slice.set, &built.entities);

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
                slice
                    .set
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
        let mut deciding: Vec<&PolicyId> = response.diagnostics().reason().collect();
        deciding.sort();
        let policies: Vec<String> = deciding.iter().map(|id| id.to_string()).collect();
        Ok(match response.decision() {
            CedarDecision::Allow => {
                let mut quorums: Vec<Quorum> = Vec::new();
                for q in deciding
                    .iter()
                    .filter_map(|id| self.notes.get(*id).and_then(|n| n.approval.clone()))
                {
                    if !quorums.contains(&q) {
                        quorums.push(q);
                    }
                }
                if !quorums.is_empty() {
                    Decision::RequireApproval { policies, quorums }
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
                            self.notes
                                .get(*id)
                                .and_then(|n| n.reason.clone())
                                .unwrap_or_else(|| format!("forbidden by {id}"))
                        })
                        .collect()
                };
                Decision::Deny { reasons, policies }
            }
        })
    }
}

/// A number argument as `context.numbers` presents it: integers, also when spelled `1e3`
/// or `1000.0`, as a Long; None for anything else (not a number, fractional, or beyond
/// 64 bits).
fn as_long(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    // i64::MAX is not exactly representable as f64; 2^63 is the first value beyond it.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f) {
        #[allow(clippy::cast_possible_truncation)]
        return Some(f as i64);
    }
    None
}

/// A policy set as stored: its text and version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// Monotonic version number (1 is the first applied set).
    pub version: u64,
    /// The Cedar text.
    pub text: String,
    /// BLAKE3 of the text (hex).
    pub digest: String,
    /// Unix seconds when applied.
    pub applied_at: u64,
    /// Who applied it (admin principal name).
    pub applied_by: String,
    /// Number of policies.
    pub policies: usize,
}

/// The starter policy `warden up` applies to a new data directory: the local agent may call
/// the first-party tools (whose own sandbox still denies outbound HTTP until configured);
/// every other principal stays denied until an operator writes policy.
pub const STARTER_POLICY: &str = r#"// warden starter policy (version 1). Replace it with `warden policy apply FILE`.
// Deny by default: only what a permit allows runs, and a forbid always wins.

@id("local-agent-first-party")
permit (
  principal == Warden::Agent::"default/default/dev/local",
  action == Warden::Action::"call",
  resource
) when { resource.namespace == "warden" };
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(groups: &[&str]) -> Subject {
        Subject {
            tenant: "acme".into(),
            workspace: "core".into(),
            environment: "prod".into(),
            agent: "bot".into(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    fn target() -> Target {
        Target {
            exposed: "warden_http__request".into(),
            namespace: "warden".into(),
            skill: "http".into(),
            tool: "request".into(),
            publisher: String::new(),
            read_only: false,
            destructive: true,
            idempotent: false,
            open_world: true,
        }
    }

    fn at(args: Value) -> Circumstances {
        Circumstances {
            now: "2026-11-25T10:00:00Z".into(),
            client_ip: Some("127.0.0.1".parse().unwrap()),
            rate: 1,
            arguments: args.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn argument_rules_decide_calls_and_listing_sees_the_possibility() {
        let engine = PolicyEngine::new(
            r#"@id("github-get")
               permit (principal in Warden::Group::"ops", action, resource)
               when { context.arguments.hasTag("url")
                      && context.arguments.getTag("url") like "https://api.github.com/*" };
               @id("small-only") @reason("too many items")
               forbid (principal, action, resource)
               when { context.numbers.hasTag("limit") && context.numbers.getTag("limit") > 100 };"#,
        )
        .unwrap();
        let ops = subject(&["ops"]);
        let ok = at(serde_json::json!({"url": "https://api.github.com/repos", "limit": 5}));
        assert_eq!(
            engine.decide(&ops, &target(), &ok),
            Decision::Allow {
                policies: vec!["github-get".into()]
            }
        );
        let other = at(serde_json::json!({"url": "https://evil.example/"}));
        assert!(matches!(
            engine.decide(&ops, &target(), &other),
            Decision::Deny { .. }
        ));
        let big = at(serde_json::json!({"url": "https://api.github.com/x", "limit": 500}));
        match engine.decide(&ops, &target(), &big) {
            Decision::Deny { reasons, .. } => assert_eq!(reasons, ["too many items"]),
            d => panic!("{d:?}"),
        }
        // Listing: the ops member may call it with some arguments; a non-member never can.
        assert!(engine.may_call(&ops, &target(), &at(Value::Null)));
        assert!(!engine.may_call(&subject(&[]), &target(), &at(Value::Null)));
        // Unconditional forbid hides it even from ops.
        let engine = PolicyEngine::new(
            r#"permit (principal, action, resource);
               forbid (principal, action, resource) when { resource.destructive };"#,
        )
        .unwrap();
        assert!(!engine.may_call(&ops, &target(), &at(Value::Null)));
        assert!(
            !PolicyEngine::new("")
                .unwrap()
                .may_call(&ops, &target(), &at(Value::Null))
        );
    }

    #[test]
    fn numbers_a_long_cannot_hold_do_not_slip_past_a_forbid() {
        let engine = PolicyEngine::new(
            r#"permit (principal, action, resource);
               @id("small-only") @reason("too many items")
               forbid (principal, action, resource)
               when { context.numbers.hasTag("limit") && context.numbers.getTag("limit") > 100 };"#,
        )
        .unwrap();
        let ops = subject(&["ops"]);
        let decide = |raw: &str| {
            let args: Value = serde_json::from_str(&format!(r#"{{"limit": {raw}}}"#)).unwrap();
            engine.decide(&ops, &target(), &at(args))
        };
        // Integers however spelled are the same Long: the forbid sees them.
        for big in ["1e3", "1000.0", "1000", "101"] {
            assert!(
                matches!(decide(big), Decision::Deny { ref reasons, .. } if reasons == &["too many items"]),
                "{big}"
            );
        }
        // Numbers no Long represents are refused outright.
        for odd in [
            "9223372036854775808",
            "18446744073709551616",
            "1e300",
            "100.5",
            "-1e19",
        ] {
            match decide(odd) {
                Decision::Deny { reasons, .. } => {
                    assert!(
                        reasons[0].contains("cannot represent"),
                        "{odd}: {reasons:?}"
                    )
                }
                d => panic!("{odd}: {d:?}"),
            }
        }
        for fine in ["5", "1e2", "100.0", "-9223372036854775808"] {
            assert!(matches!(decide(fine), Decision::Allow { .. }), "{fine}");
        }
        // A policy set that never reads numbers lets fractional arguments through.
        let open = PolicyEngine::new("permit (principal, action, resource);").unwrap();
        let args = serde_json::json!({"temperature": 0.7});
        assert!(matches!(
            open.decide(&ops, &target(), &at(args)),
            Decision::Allow { .. }
        ));
    }

    #[test]
    fn decisions_are_kept_only_where_no_context_is_read() {
        let engine = PolicyEngine::new(
            r#"permit (principal in Warden::Group::"ops", action, resource);
               forbid (principal, action, resource) when { context.rate > 10 };"#,
        )
        .unwrap();
        let (ops, dev) = (subject(&["ops"]), subject(&["dev"]));
        let calm = at(serde_json::json!({"x": 1}));
        let busy = Circumstances {
            rate: 11,
            ..at(serde_json::json!({}))
        };
        // The forbid reads `context.rate`: asked again on every call.
        assert!(matches!(
            engine.decide(&ops, &target(), &calm),
            Decision::Allow { .. }
        ));
        assert!(matches!(
            engine.decide(&ops, &target(), &busy),
            Decision::Deny { .. }
        ));
        assert!(matches!(
            engine.decide(&ops, &target(), &calm),
            Decision::Allow { .. }
        ));
        assert!(engine.slice(&ops, &target()).unwrap().fixed.get().is_none());

        // Group rules alone read nothing: one answer per principal and tool, kept, and the
        // same whatever the call's circumstances.
        let engine =
            PolicyEngine::new(r#"permit (principal in Warden::Group::"ops", action, resource);"#)
                .unwrap();
        for c in [&calm, &busy, &calm] {
            assert!(matches!(
                engine.decide(&ops, &target(), c),
                Decision::Allow { .. }
            ));
            assert!(matches!(
                engine.decide(&dev, &target(), c),
                Decision::Deny { .. }
            ));
        }
        let kept = engine.slice(&ops, &target()).unwrap();
        assert!(matches!(kept.fixed.get(), Some(Decision::Allow { .. })));
    }

    #[test]
    fn an_unknown_client_address_matches_no_permit_that_reads_it() {
        let engine = PolicyEngine::new(
            r#"permit (principal, action, resource)
               when { context.clientIp.isInRange(ip("127.0.0.0/8")) };"#,
        )
        .unwrap();
        let ops = subject(&["ops"]);
        let known = at(serde_json::json!({}));
        assert!(matches!(
            engine.decide(&ops, &target(), &known),
            Decision::Allow { .. }
        ));
        let unknown = Circumstances {
            client_ip: None,
            ..known
        };
        assert!(matches!(
            engine.decide(&ops, &target(), &unknown),
            Decision::Deny { .. }
        ));
        assert!(!engine.may_call(&ops, &target(), &unknown));
        // A forbid that reads it fails closed.
        let engine = PolicyEngine::new(
            r#"permit (principal, action, resource);
               forbid (principal, action, resource)
               when { !context.clientIp.isLoopback() };"#,
        )
        .unwrap();
        assert!(matches!(
            engine.decide(&ops, &target(), &unknown),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn templates_and_unguarded_tags_are_refused() {
        assert!(
            PolicyEngine::new(r#"permit (principal == ?principal, action, resource);"#).is_err()
        );
        // getTag without hasTag does not validate in strict mode.
        assert!(
            PolicyEngine::new(
                r#"permit (principal, action, resource) when { context.arguments.getTag("x") == "y" };"#
            )
            .is_err()
        );
        assert!(PolicyEngine::new(STARTER_POLICY).is_ok());
    }

    #[test]
    fn approval_annotations_name_a_quorum_and_a_typo_refuses_the_set() {
        for (text, count, group) in [
            ("required", 1, None),
            ("1-of:any", 1, None),
            ("3-of:any", 3, None),
            ("2-of:group:finance", 2, Some("finance")),
        ] {
            let q = Quorum::parse(text).unwrap();
            assert_eq!((q.count, q.group.as_deref()), (count, group), "{text}");
            // The stored form reads back as the same quorum.
            assert_eq!(Quorum::parse(&q.to_string()).unwrap(), q);
        }
        for bad in [
            "requried",
            "",
            "0-of:any",
            "10-of:any",
            "2-of:",
            "2-of:group:",
            "2-of:group:Fin ance",
            "2-of:team:x",
            "-1-of:any",
        ] {
            assert!(Quorum::parse(bad).is_err(), "{bad}");
        }
        let typo = r#"@approval("requried")
permit (principal, action, resource);"#;
        let err = PolicyEngine::new(typo).unwrap_err().to_string();
        assert!(err.contains("requried"), "{err}");

        // Every deciding rule's quorum is asked for, once.
        let two = r#"@id("a") @approval("required") permit (principal, action, resource);
@id("b") @approval("2-of:group:finance") permit (principal, action, resource);
@id("c") @approval("required") permit (principal, action, resource);"#;
        let engine = PolicyEngine::new(two).unwrap();
        let c = Circumstances {
            now: "2026-11-25T10:00:00Z".into(),
            client_ip: None,
            rate: 1,
            arguments: Map::new(),
        };
        match engine.decide(&subject(&[]), &target(), &c) {
            Decision::RequireApproval { quorums, policies } => {
                assert_eq!(policies, ["a", "b", "c"]);
                assert_eq!(
                    quorums,
                    [
                        Quorum::parse("required").unwrap(),
                        Quorum::parse("2-of:group:finance").unwrap()
                    ]
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

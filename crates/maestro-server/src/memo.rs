//! Making authorization cheap without changing a single answer.
//!
//! A Rego decision costs tens of microseconds in the interpreter, and a page of twenty
//! runs asks twenty of them. Two facts make most of them unnecessary:
//!
//! - A policy can only see the input through the identifier `input`. [`Reads::of`] lexes
//!   the policy (with regorus' own lexer) and collects every `input.a.b` path it names;
//!   the decision is a function of the values at those paths. The built-in policy reads
//!   `input.action`, `input.actor.roles`, `input.actor.tenant` and
//!   `input.resource.tenant`, so twenty runs of one tenant are one decision. Anything the
//!   analysis cannot follow (`input[x]`, `input` alone) widens the key, never narrows it.
//! - Rego is deterministic unless it calls the clock, randomness or the network. A policy
//!   that names one of those built-ins is never memoized.
//!
//! Each worker thread keeps its own prepared copy of the engine (no clone per decision)
//! and its own bounded memo, keyed by policy instance, so nothing is shared or locked.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;

use crate::auth::Actor;
use crate::authz::Resource;

/// Built-ins whose answer is not a function of their arguments. A policy naming one is
/// evaluated every time.
const IMPURE: &[&str] = &[
    "time.now_ns",
    "rand.",
    "uuid.rfc4122",
    "http.send",
    "net.lookup_ip_addr",
    "opa.runtime",
    "io.jwt.decode_verify",
];

/// Decisions kept per thread and policy before the memo starts over.
const MEMO_LIMIT: usize = 4096;

/// Policies whose engine a thread keeps (tests load many; a server one).
const ENGINES_LIMIT: usize = 4;

/// Which parts of the input a policy can see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reads {
    /// Sorted, and no path has another as its prefix. An empty path is the whole input.
    paths: Vec<Vec<String>>,
    /// The same, resolved against the input's shape once, for [`Reads::key`].
    parts: Vec<Part>,
}

/// A part of the input that goes into the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Whole,
    Action,
    /// The actor, or one of its fields.
    Actor(Option<&'static str>),
    /// The resource, or one of its fields.
    Resource(Option<&'static str>),
}

const ACTOR_FIELDS: &[&str] = &["id", "roles", "teams", "tenant", "scopes", "via"];
const RESOURCE_FIELDS: &[&str] = &["kind", "id", "service", "environment", "tenant"];

impl Part {
    /// `None` for a path that is undefined in every input (`input.nothing`,
    /// `input.actor.nothing`): it adds nothing to the key.
    fn of(path: &[String]) -> Option<Part> {
        let field = |names: &[&'static str], f: &String| names.iter().copied().find(|n| n == f);
        match path {
            [] => Some(Part::Whole),
            [a, ..] if a == "action" => Some(Part::Action),
            [a] if a == "actor" => Some(Part::Actor(None)),
            [a, f, ..] if a == "actor" => field(ACTOR_FIELDS, f).map(|f| Part::Actor(Some(f))),
            [r] if r == "resource" => Some(Part::Resource(None)),
            [r, f, ..] if r == "resource" => {
                field(RESOURCE_FIELDS, f).map(|f| Part::Resource(Some(f)))
            }
            _ => None,
        }
    }
}

impl Reads {
    /// The input paths named by these policy sources, or `None` when the policy calls an
    /// impure built-in (or cannot be lexed), so its decisions must not be memoized.
    pub(crate) fn of(sources: &[(String, String)]) -> Option<Reads> {
        let mut paths = Vec::new();
        for (name, text) in sources {
            let source = regorus::Source::from_contents(name.clone(), text.clone()).ok()?;
            let mut lexer = regorus::unstable::Lexer::new(&source);
            let mut tokens = Vec::new();
            loop {
                let token = lexer.next_token().ok()?;
                if token.0 == regorus::unstable::TokenKind::Eof {
                    break;
                }
                tokens.push(token);
            }
            for (i, t) in tokens.iter().enumerate() {
                if t.0 != regorus::unstable::TokenKind::Ident {
                    continue;
                }
                let dotted = dotted_name(&tokens[i..]);
                if IMPURE
                    .iter()
                    .any(|f| dotted == *f || (f.ends_with('.') && dotted.starts_with(f)))
                {
                    return None;
                }
                if t.1.text() == "input" && !follows_dot(&tokens, i) {
                    paths.push(path_after(&tokens[i..]));
                }
            }
        }
        paths.sort();
        paths.dedup();
        let mut minimal: Vec<Vec<String>> = Vec::new();
        for p in paths {
            if !minimal.iter().any(|m| p.starts_with(m)) {
                minimal.push(p);
            }
        }
        let parts = minimal.iter().filter_map(|p| Part::of(p)).collect();
        Some(Reads {
            paths: minimal,
            parts,
        })
    }

    /// The paths, as `input.a.b` (for `maestro api` and tests).
    pub(crate) fn shown(&self) -> Vec<String> {
        self.paths
            .iter()
            .map(|p| {
                std::iter::once("input")
                    .chain(p.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(".")
            })
            .collect()
    }

    /// The memo key: the values at every path the policy reads, each length-prefixed so
    /// that two different inputs never share a key.
    pub(crate) fn key(&self, actor: &Actor, action: &str, resource: &Resource) -> String {
        let mut key = String::with_capacity(96);
        for part in &self.parts {
            match *part {
                Part::Whole => {
                    put_actor(&mut key, actor, None);
                    put(&mut key, Some(action));
                    put_resource(&mut key, resource, None);
                }
                Part::Action => put(&mut key, Some(action)),
                Part::Actor(field) => put_actor(&mut key, actor, field),
                Part::Resource(field) => put_resource(&mut key, resource, field),
            }
        }
        key
    }
}

/// `a.b.c` from an identifier and the adjacent `.ident` tokens after it.
fn dotted_name(tokens: &[regorus::unstable::Token]) -> String {
    let mut name = tokens[0].1.text().to_owned();
    let mut i = 1;
    while let Some(next) = adjacent_field(tokens, i) {
        name.push('.');
        name.push_str(next);
        i += 2;
    }
    name
}

/// The field names after `input`: `.a.b` with no space in between. A bracket or anything
/// else ends the path there, which only makes the key wider.
fn path_after(tokens: &[regorus::unstable::Token]) -> Vec<String> {
    let mut path = Vec::new();
    let mut i = 1;
    while let Some(next) = adjacent_field(tokens, i) {
        path.push(next.to_owned());
        i += 2;
    }
    path
}

/// The identifier of a `.ident` at `tokens[i..]` that touches `tokens[i - 1]`.
fn adjacent_field(tokens: &[regorus::unstable::Token], i: usize) -> Option<&str> {
    let (prev, dot, field) = (tokens.get(i - 1)?, tokens.get(i)?, tokens.get(i + 1)?);
    let touching = prev.1.end == dot.1.start && dot.1.end == field.1.start;
    (touching
        && dot.0 == regorus::unstable::TokenKind::Symbol
        && dot.1.text() == "."
        && field.0 == regorus::unstable::TokenKind::Ident)
        .then(|| field.1.text())
}

/// Whether `tokens[i]` is a field name (`x.input`), not the variable `input`.
fn follows_dot(tokens: &[regorus::unstable::Token], i: usize) -> bool {
    i > 0 && tokens[i - 1].1.text() == "." && tokens[i - 1].1.end == tokens[i].1.start
}

fn put(key: &mut String, value: Option<&str>) {
    match value {
        // `write!` to a String cannot fail.
        Some(v) => {
            let _ = write!(key, "{}:{v}", v.len());
        }
        None => key.push('-'),
    }
}

fn put_list(key: &mut String, values: &[String]) {
    let _ = write!(key, "[{}", values.len());
    for v in values {
        put(key, Some(v));
    }
}

fn put_actor(key: &mut String, actor: &Actor, field: Option<&str>) {
    let all = field.is_none();
    key.push('a');
    if all || field == Some("id") {
        put(key, Some(&actor.id));
    }
    if all || field == Some("roles") {
        put_list(key, &actor.roles);
    }
    if all || field == Some("teams") {
        put_list(key, &actor.teams);
    }
    if all || field == Some("tenant") {
        put(key, Some(&actor.tenant));
    }
    if all || field == Some("scopes") {
        put_list(key, &actor.scopes);
    }
    if all || field == Some("via") {
        put(key, Some(&actor.via));
    }
}

fn put_resource(key: &mut String, resource: &Resource, field: Option<&str>) {
    let all = field.is_none();
    key.push('r');
    if all || field == Some("kind") {
        put(key, Some(resource.kind));
    }
    if all || field == Some("id") {
        put(key, resource.id.as_deref());
    }
    if all || field == Some("service") {
        put(key, resource.service.as_deref());
    }
    if all || field == Some("environment") {
        put(key, resource.environment.as_deref());
    }
    if all || field == Some("tenant") {
        put(key, Some(&resource.tenant));
    }
}

struct Local {
    policy: u64,
    engine: regorus::Engine,
    decisions: HashMap<String, bool>,
}

thread_local! {
    static LOCAL: RefCell<Vec<Local>> = const { RefCell::new(Vec::new()) };
}

/// Runs `decide` with this thread's engine for policy `id` (cloned from `prepared` the
/// first time), consulting and filling the memo under `key` when there is one.
pub(crate) fn with_engine(
    id: u64,
    prepared: &regorus::Engine,
    key: Option<String>,
    decide: impl FnOnce(&mut regorus::Engine) -> Result<bool, String>,
) -> Result<bool, String> {
    LOCAL.with(|cell| {
        let mut locals = cell.borrow_mut();
        let at = match locals.iter().position(|l| l.policy == id) {
            Some(at) => at,
            None => {
                if locals.len() >= ENGINES_LIMIT {
                    locals.remove(0);
                }
                locals.push(Local {
                    policy: id,
                    engine: prepared.clone(),
                    decisions: HashMap::new(),
                });
                locals.len() - 1
            }
        };
        let local = &mut locals[at];
        if let Some(k) = &key
            && let Some(d) = local.decisions.get(k)
        {
            return Ok(*d);
        }
        let decision = decide(&mut local.engine)?;
        if let Some(k) = key {
            if local.decisions.len() >= MEMO_LIMIT {
                local.decisions.clear();
            }
            local.decisions.insert(k, decision);
        }
        Ok(decision)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(text: &str) -> Option<Vec<String>> {
        Reads::of(&[("p.rego".to_owned(), text.to_owned())]).map(|r| r.shown())
    }

    #[test]
    fn the_builtin_policy_reads_four_paths() {
        assert_eq!(
            reads(crate::authz::BUILTIN).expect("pure"),
            [
                "input.action",
                "input.actor.roles",
                "input.actor.tenant",
                "input.resource.tenant"
            ]
        );
    }

    #[test]
    fn comments_and_strings_are_not_reads() {
        let r = reads(
            "package p\n# input.resource.id is ignored\nallow if input.action == \"input.resource.id\"\n",
        );
        assert_eq!(r.expect("pure"), ["input.action"]);
    }

    #[test]
    fn brackets_imports_and_bare_input_widen_the_key() {
        assert_eq!(
            reads("package p\nallow if input[\"resource\"].id == \"x\"\n").expect("pure"),
            ["input"]
        );
        assert_eq!(
            reads("package p\nimport input.resource as r\nallow if r.id == \"x\"\n").expect("pure"),
            ["input.resource"]
        );
        assert_eq!(
            reads("package p\nallow if { x := input; x.action == \"a\" }\n").expect("pure"),
            ["input"]
        );
        // A prefix covers longer paths.
        assert_eq!(
            reads("package p\nallow if { input.actor.id == \"a\"; input.actor }\n").expect("pure"),
            ["input.actor"]
        );
        // `x.input` is a field, not the input.
        assert_eq!(
            reads("package p\nallow if data.x.input.y == input.action\n").expect("pure"),
            ["input.action"]
        );
    }

    #[test]
    fn impure_builtins_turn_the_memo_off() {
        assert_eq!(reads("package p\nallow if time.now_ns() > 0\n"), None);
        assert_eq!(
            reads("package p\nallow if rand.intn(\"x\", 2) == 1\n"),
            None
        );
        assert_eq!(
            reads("package p\nallow if http.send({\"method\": \"get\", \"url\": \"x\"})\n"),
            None
        );
        assert!(reads("package p\nallow if time.parse_rfc3339_ns(\"x\") > 0\n").is_some());
    }

    #[test]
    fn keys_differ_exactly_where_read_values_differ() {
        let r = Reads::of(&[("p".to_owned(), crate::authz::BUILTIN.to_owned())]).expect("pure");
        let actor = Actor {
            id: "ana".to_owned(),
            roles: vec!["viewer".to_owned()],
            teams: Vec::new(),
            tenant: "acme".to_owned(),
            scopes: vec!["*".to_owned()],
            via: "token:tok_1".to_owned(),
        };
        let run = |id: &str, tenant: &str| Resource {
            kind: "run",
            id: Some(id.to_owned()),
            service: None,
            environment: None,
            tenant: tenant.to_owned(),
        };
        let k = |a: &Actor, res: &Resource| r.key(a, "runs.read", res);
        assert_eq!(k(&actor, &run("1", "acme")), k(&actor, &run("2", "acme")));
        assert_ne!(k(&actor, &run("1", "acme")), k(&actor, &run("1", "other")));
        let admin = Actor {
            roles: vec!["admin".to_owned()],
            ..actor.clone()
        };
        assert_ne!(k(&actor, &run("1", "acme")), k(&admin, &run("1", "acme")));
        // Length prefixes: ["ab"] and ["a", "b"] are different role lists.
        let one = Actor {
            roles: vec!["ab".to_owned()],
            ..actor.clone()
        };
        let two = Actor {
            roles: vec!["a".to_owned(), "b".to_owned()],
            ..actor.clone()
        };
        assert_ne!(k(&one, &run("1", "acme")), k(&two, &run("1", "acme")));
    }
}

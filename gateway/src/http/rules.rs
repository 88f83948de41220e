//! `google.api.http` rules read from the descriptors: every binding of
//! every annotated method, its parsed path template, body and response body,
//! checked once at start-up so a bad annotation stops the gateway with a
//! message naming the method and the rule instead of failing calls later.

use std::fmt;

use http::Method;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ReflectMessage, Value,
};

/// One segment of a flattened path template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Segment {
    /// Matches exactly this text.
    Literal(String),
    /// `*`: one non-empty segment.
    One,
    /// `**`: zero or more segments; only last.
    Many,
}

impl Segment {
    /// Lower is more specific.
    pub(crate) fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::One => 1,
            Segment::Many => 2,
        }
    }
}

/// A `{field.path=sub/template}` of a template.
#[derive(Debug, Clone)]
pub(crate) struct Variable {
    /// The field path as written, e.g. `quota.name`.
    pub(crate) field_path: String,
    /// The fields from the request message down to the leaf.
    pub(crate) fields: Vec<FieldDescriptor>,
    /// First segment (index into [`Template::segments`]) it captures.
    pub(crate) start: usize,
    /// One past its last segment.
    pub(crate) end: usize,
}

impl Variable {
    /// Whether it captures exactly one `*` segment, whose value is then
    /// fully percent-decoded (multi-segment values keep `%2F`).
    pub(crate) fn is_single(&self, template: &Template) -> bool {
        self.end == self.start + 1 && template.segments[self.start] == Segment::One
    }
}

/// A parsed path template.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    /// As written in the annotation.
    pub(crate) raw: String,
    /// Flattened segments: literals and wildcards, variables expanded.
    pub(crate) segments: Vec<Segment>,
    /// The custom verb after the last `:`, e.g. `undelete`.
    pub(crate) verb: Option<String>,
    /// The variables, in order.
    pub(crate) variables: Vec<Variable>,
}

/// What the HTTP body carries.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// No body.
    None,
    /// `body: "*"`: every field not bound by the path.
    All,
    /// `body: "field"`: that top-level field.
    Field(FieldDescriptor),
}

/// One HTTP binding of one method: the primary rule or an additional binding.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    /// The RPC.
    pub(crate) rpc: MethodDescriptor,
    /// 0 for the primary rule, n for the n-th additional binding.
    pub(crate) index: usize,
    /// The HTTP method.
    pub(crate) method: Method,
    /// The path template.
    pub(crate) template: Template,
    /// The request body mapping.
    pub(crate) body: Body,
    /// `response_body`: the response field sent instead of the whole message.
    pub(crate) response_body: Option<FieldDescriptor>,
}

impl Binding {
    /// `GET /v1/{name=projects/*}` (for messages).
    pub(crate) fn describe(&self) -> String {
        format!("{} {}", self.method, self.template.raw)
    }

    /// The gRPC path, `/package.Service/Method`.
    pub(crate) fn grpc_path(&self) -> String {
        format!(
            "/{}/{}",
            self.rpc.parent_service().full_name(),
            self.rpc.name()
        )
    }

    /// Whether a request field path (by proto names) is bound by the path.
    pub(crate) fn path_binds(&self, fields: &[FieldDescriptor]) -> bool {
        self.template
            .variables
            .iter()
            .any(|v| v.fields.len() <= fields.len() && same_fields(&v.fields, fields))
    }
}

fn same_fields(prefix: &[FieldDescriptor], fields: &[FieldDescriptor]) -> bool {
    prefix
        .iter()
        .zip(fields)
        .all(|(a, b)| a.full_name() == b.full_name())
}

/// Why the annotations cannot be served.
#[derive(Debug, Clone)]
pub(crate) struct RuleError(pub(crate) String);

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RuleError {}

/// Every binding of every annotated method of `services` (all services of
/// the pool when empty). Client- and bidi-streaming methods are skipped
/// with a warning: there is no JSON mapping for request streams here.
pub(crate) fn bindings(
    pool: &DescriptorPool,
    services: &[&str],
) -> Result<Vec<Binding>, RuleError> {
    let Some(http) = pool.get_extension_by_name("google.api.http") else {
        // No google/api/http.proto in the pool: nothing is annotated.
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for service in pool.services() {
        if !services.is_empty() && !services.contains(&service.full_name()) {
            continue;
        }
        for rpc in service.methods() {
            let options = rpc.options();
            if !options.has_extension(&http) {
                continue;
            }
            if rpc.is_client_streaming() {
                tracing::warn!(
                    method = rpc.full_name(),
                    "google.api.http on a client-streaming method is not served over HTTP"
                );
                continue;
            }
            let rule = match options.get_extension(&http).as_ref() {
                Value::Message(m) => m.clone(),
                _ => continue,
            };
            let context =
                |e: String| RuleError(format!("{}: google.api.http: {e}", rpc.full_name()));
            out.push(binding(&rpc, 0, &rule).map_err(context)?);
            let additional = field(&rule, "additional_bindings");
            if let Value::List(list) = additional.as_ref() {
                for (i, extra) in list.iter().enumerate() {
                    let Value::Message(extra) = extra else {
                        continue;
                    };
                    if let Value::List(nested) = field(extra, "additional_bindings").as_ref() {
                        if !nested.is_empty() {
                            return Err(context(format!(
                                "additional_bindings[{i}] has additional_bindings of its own, \
                                 which google.api.HttpRule forbids"
                            )));
                        }
                    }
                    out.push(binding(&rpc, i + 1, extra).map_err(context)?);
                }
            }
        }
    }
    check_conflicts(&out)?;
    Ok(out)
}

fn field<'a>(message: &'a DynamicMessage, name: &str) -> std::borrow::Cow<'a, Value> {
    message
        .get_field_by_name(name)
        .unwrap_or(std::borrow::Cow::Owned(Value::String(String::new())))
}

fn string_field(message: &DynamicMessage, name: &str) -> String {
    match field(message, name).as_ref() {
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

fn binding(rpc: &MethodDescriptor, index: usize, rule: &DynamicMessage) -> Result<Binding, String> {
    let which = if index == 0 {
        String::new()
    } else {
        format!("additional_bindings[{}]: ", index - 1)
    };
    let mut pattern = None;
    for (name, method) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        let desc = rule.descriptor();
        if let Some(f) = desc.get_field_by_name(name) {
            if rule.has_field(&f) {
                pattern = Some((method, string_field(rule, name)));
            }
        }
    }
    if let Some(f) = rule.descriptor().get_field_by_name("custom") {
        if rule.has_field(&f) {
            if let Value::Message(custom) = rule.get_field(&f).as_ref() {
                let kind = string_field(custom, "kind");
                let method = Method::from_bytes(kind.as_bytes())
                    .map_err(|_| format!("{which}custom kind {kind:?} is not an HTTP method"))?;
                pattern = Some((method, string_field(custom, "path")));
            }
        }
    }
    let Some((method, path)) = pattern else {
        return Err(format!(
            "{which}no pattern: set one of get, put, post, delete, patch or custom"
        ));
    };
    let input = rpc.input();
    let template =
        parse_template(&path, &input).map_err(|e| format!("{which}{method} {path:?}: {e}"))?;
    let describe = |e: String| format!("{which}{method} {path}: {e}");

    let body = match string_field(rule, "body").as_str() {
        "" => Body::None,
        "*" => Body::All,
        name => {
            let f = input.get_field_by_name(name).ok_or_else(|| {
                describe(format!(
                    "body {name:?} is not a top-level field of {}",
                    input.full_name()
                ))
            })?;
            if template
                .variables
                .iter()
                .any(|v| v.fields.len() == 1 && v.fields[0].number() == f.number())
            {
                return Err(describe(format!(
                    "field {name:?} is bound by both the path and the body"
                )));
            }
            Body::Field(f)
        }
    };
    if method == Method::GET && !matches!(body, Body::None) {
        return Err(describe(
            "a GET binding cannot have a body; use query parameters".to_string(),
        ));
    }
    let response_body = match string_field(rule, "response_body").as_str() {
        "" => None,
        name => Some(rpc.output().get_field_by_name(name).ok_or_else(|| {
            describe(format!(
                "response_body {name:?} is not a top-level field of {}",
                rpc.output().full_name()
            ))
        })?),
    };
    Ok(Binding {
        rpc: rpc.clone(),
        index,
        method,
        template,
        body,
        response_body,
    })
}

/// Parses `Template = "/" Segments [ Verb ]` and resolves its variables
/// against `input`.
pub(crate) fn parse_template(raw: &str, input: &MessageDescriptor) -> Result<Template, String> {
    let rest = raw
        .strip_prefix('/')
        .ok_or_else(|| "a path template must start with `/`".to_string())?;
    // The verb is a `:` outside braces after the last `/` outside braces.
    let mut depth = 0i32;
    let mut last_slash = 0usize;
    let mut verb_at = None;
    for (i, c) in rest.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            '/' if depth == 0 => {
                last_slash = i;
                verb_at = None;
            }
            ':' if depth == 0 && i >= last_slash => verb_at = Some(i),
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err("unbalanced or nested `{}`".to_string());
        }
    }
    if depth != 0 {
        return Err("unbalanced `{}`".to_string());
    }
    let (body, verb) = match verb_at {
        Some(i) => {
            let verb = &rest[i + 1..];
            if verb.is_empty() || !verb.chars().all(is_literal_char) {
                return Err(format!("bad custom verb {verb:?}"));
            }
            (&rest[..i], Some(verb.to_string()))
        }
        None => (rest, None),
    };

    let mut segments = Vec::new();
    let mut variables: Vec<Variable> = Vec::new();
    for part in split_top(body) {
        if let Some(inner) = part.strip_prefix('{') {
            let inner = inner
                .strip_suffix('}')
                .ok_or_else(|| format!("bad variable segment {part:?}"))?;
            let (path, sub) = match inner.split_once('=') {
                Some((p, s)) => (p, s),
                None => (inner, "*"),
            };
            let fields = resolve_path(path, input)?;
            if variables.iter().any(|v| {
                let n = v.fields.len().min(fields.len());
                same_fields(&v.fields[..n], &fields[..n])
            }) {
                return Err(format!("field {path:?} is bound twice"));
            }
            let start = segments.len();
            for s in sub.split('/') {
                segments.push(segment(s, true)?);
            }
            variables.push(Variable {
                field_path: path.to_string(),
                fields,
                start,
                end: segments.len(),
            });
        } else {
            segments.push(segment(part, false)?);
        }
    }
    if let Some(i) = segments.iter().position(|s| *s == Segment::Many) {
        if i + 1 != segments.len() {
            return Err("`**` must be the last segment".to_string());
        }
    }
    Ok(Template {
        raw: raw.to_string(),
        segments,
        verb,
        variables,
    })
}

fn split_top(body: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            '/' if depth == 0 => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&body[start..]);
    parts
}

fn is_literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()+,;@%".contains(c)
}

fn segment(s: &str, in_variable: bool) -> Result<Segment, String> {
    match s {
        "*" => Ok(Segment::One),
        "**" => Ok(Segment::Many),
        "" => Err("empty path segment".to_string()),
        _ if s.chars().all(is_literal_char) => Ok(Segment::Literal(s.to_string())),
        _ if in_variable => Err(format!("bad segment {s:?} in a variable")),
        _ => Err(format!("bad segment {s:?}")),
    }
}

/// Resolves `a.b.c` (proto field names) to fields: every step but the last
/// a singular message, the last a singular scalar or enum.
fn resolve_path(path: &str, input: &MessageDescriptor) -> Result<Vec<FieldDescriptor>, String> {
    let mut message = input.clone();
    let mut fields = Vec::new();
    let idents: Vec<&str> = path.split('.').collect();
    for (i, ident) in idents.iter().enumerate() {
        let f = message.get_field_by_name(ident).ok_or_else(|| {
            format!(
                "field path {path:?}: no field {ident:?} in {}",
                message.full_name()
            )
        })?;
        if f.is_list() || f.is_map() {
            return Err(format!(
                "field path {path:?}: {ident:?} is repeated; path variables must be singular"
            ));
        }
        let last = i + 1 == idents.len();
        match f.kind() {
            Kind::Message(m) if !last => message = m,
            Kind::Message(m) => {
                return Err(format!(
                    "field path {path:?}: {ident:?} is a message ({}); bind one of its fields",
                    m.full_name()
                ))
            }
            _ if !last => return Err(format!("field path {path:?}: {ident:?} is not a message")),
            _ => {}
        }
        fields.push(f);
    }
    Ok(fields)
}

/// Two templates of one method and verb can match one path and neither is
/// more specific at every segment: no order between them would be right.
fn ambiguous(a: &[Segment], b: &[Segment]) -> bool {
    overlap(a, b) && !dominates(a, b) && !dominates(b, a)
}

/// Whether some path matches both.
pub(crate) fn overlap(a: &[Segment], b: &[Segment]) -> bool {
    match (a.first(), b.first()) {
        (Some(Segment::Many), _) | (_, Some(Segment::Many)) => true,
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some(Segment::Literal(x)), Some(Segment::Literal(y))) => {
            x == y && overlap(&a[1..], &b[1..])
        }
        _ => overlap(&a[1..], &b[1..]),
    }
}

/// Whether `a` is at least as specific as `b` at every segment.
fn dominates(a: &[Segment], b: &[Segment]) -> bool {
    for i in 0.. {
        match (a.get(i), b.get(i)) {
            (_, Some(Segment::Many)) => return true,
            (Some(Segment::Many), _) => return false,
            (None, None) => return true,
            (None, _) | (_, None) => return false,
            (Some(x), Some(y)) if x.rank() > y.rank() => return false,
            _ => {}
        }
    }
    true
}

fn check_conflicts(bindings: &[Binding]) -> Result<(), RuleError> {
    for (i, a) in bindings.iter().enumerate() {
        for b in &bindings[i + 1..] {
            if a.method != b.method || a.template.verb != b.template.verb {
                continue;
            }
            let (sa, sb) = (&a.template.segments, &b.template.segments);
            let who = || {
                format!(
                    "{} ({}) and {} ({})",
                    a.describe(),
                    a.rpc.full_name(),
                    b.describe(),
                    b.rpc.full_name()
                )
            };
            if sa == sb {
                return Err(RuleError(format!(
                    "conflicting HTTP routes: {} match exactly the same paths",
                    who()
                )));
            }
            if ambiguous(sa, sb) {
                return Err(RuleError(format!(
                    "ambiguous HTTP routes: {} both match some paths and neither is more \
                     specific; change one template",
                    who()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(s: &str) -> Vec<Segment> {
        s.split('/')
            .map(|p| match p {
                "*" => Segment::One,
                "**" => Segment::Many,
                l => Segment::Literal(l.to_string()),
            })
            .collect()
    }

    #[test]
    fn overlap_and_dominance() {
        assert!(overlap(&segs("v1/*"), &segs("v1/a")));
        assert!(!overlap(&segs("v1/a"), &segs("v1/b")));
        assert!(!overlap(&segs("v1/*"), &segs("v1/*/x")));
        assert!(overlap(&segs("v1/**"), &segs("v1/*/x")));
        assert!(overlap(&segs("v1/**"), &segs("v1")));
        assert!(!ambiguous(&segs("v1/a/*"), &segs("v1/*/*")));
        assert!(ambiguous(&segs("v1/a/*"), &segs("v1/*/b")));
        assert!(!ambiguous(&segs("v1/*/b"), &segs("v1/**")));
        assert!(!ambiguous(&segs("v1/a"), &segs("v1/b")));
    }
}

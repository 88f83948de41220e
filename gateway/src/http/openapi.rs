//! The OpenAPI 3.1 document, generated at start-up from the same
//! descriptors and bindings the router serves: proto comments become
//! descriptions, every binding an operation, every reachable message and
//! enum a schema.
//!
//! Paths spell out the literals of resource-name variables, so clients
//! send real slashes: `{name=projects/*/networks/*}` becomes
//! `/projects/{project}/networks/{network}`.

use std::collections::{BTreeMap, HashMap, HashSet};

use prost_reflect::{
    DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, ServiceDescriptor,
};
use serde_json::{json, Map, Value as Json};

use super::rules::{Binding, Body, Segment};

/// How deep query parameters reach into nested messages.
const QUERY_DEPTH: usize = 4;

/// Leading comments by file and source path.
#[derive(Debug, Default)]
struct Comments(HashMap<String, HashMap<Vec<i32>, String>>);

impl Comments {
    fn new(pool: &DescriptorPool) -> Comments {
        let mut by_file = HashMap::new();
        for file in pool.files() {
            let proto = file.file_descriptor_proto();
            let mut map = HashMap::new();
            if let Some(info) = &proto.source_code_info {
                for location in &info.location {
                    if let Some(text) = &location.leading_comments {
                        let text = clean(text);
                        if !text.is_empty() {
                            map.insert(location.path.clone(), text);
                        }
                    }
                }
            }
            by_file.insert(proto.name().to_string(), map);
        }
        Comments(by_file)
    }

    fn get(&self, file: &str, path: &[i32]) -> Option<&str> {
        self.0.get(file)?.get(path).map(String::as_str)
    }
}

fn clean(comment: &str) -> String {
    comment
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_string()
}

struct Generator<'a> {
    comments: &'a Comments,
    schemas: BTreeMap<String, Json>,
    pending: Vec<MessageDescriptor>,
    seen: HashSet<String>,
}

fn reference(name: &str) -> Json {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

impl Generator<'_> {
    fn message_comment(&self, m: &MessageDescriptor) -> Option<&str> {
        self.comments.get(m.parent_file().name(), m.path())
    }

    fn field_comment(&self, f: &FieldDescriptor) -> Option<&str> {
        self.comments
            .get(f.parent_message().parent_file().name(), f.path())
    }

    fn service_comment(&self, s: &ServiceDescriptor) -> Option<&str> {
        self.comments.get(s.parent_file().name(), s.path())
    }

    /// A `$ref` to a message schema (queued for generation), or the inline
    /// JSON form of a well-known type.
    fn message_ref(&mut self, m: &MessageDescriptor) -> Json {
        if let Some(schema) = wkt_schema(m.full_name()) {
            return schema;
        }
        if self.seen.insert(m.full_name().to_string()) {
            self.pending.push(m.clone());
        }
        reference(m.full_name())
    }

    fn enum_ref(&mut self, e: &EnumDescriptor) -> Json {
        let name = e.full_name().to_string();
        if !self.schemas.contains_key(&name) {
            let mut description = self
                .comments
                .get(e.parent_file().name(), e.path())
                .unwrap_or_default()
                .to_string();
            for value in e.values() {
                let comment = self
                    .comments
                    .get(e.parent_file().name(), value.path())
                    .unwrap_or_default();
                description.push_str(&format!("\n- `{}`: {}", value.name(), comment));
            }
            let names: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
            self.schemas.insert(
                name.clone(),
                json!({
                    "type": "string",
                    "enum": names,
                    "description": description.trim(),
                }),
            );
        }
        reference(&name)
    }

    /// The schema of one value of a field's type.
    fn kind_schema(&mut self, kind: &Kind) -> Json {
        match kind {
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295u32})
            }
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": "string", "format": "uint64", "pattern": "^[0-9]+$"})
            }
            Kind::Bool => json!({"type": "boolean"}),
            Kind::String => json!({"type": "string"}),
            Kind::Bytes => json!({"type": "string", "format": "byte", "contentEncoding": "base64"}),
            Kind::Enum(e) => self.enum_ref(e),
            Kind::Message(m) => self.message_ref(m),
        }
    }

    /// The schema of a field, with its comment.
    fn field_schema(&mut self, f: &FieldDescriptor) -> Json {
        let mut schema = if f.is_map() {
            let value = match f.kind() {
                Kind::Message(entry) => {
                    let v = entry.map_entry_value_field();
                    self.kind_schema(&v.kind())
                }
                _ => json!({}),
            };
            json!({"type": "object", "additionalProperties": value})
        } else if f.is_list() {
            json!({"type": "array", "items": self.kind_schema(&f.kind())})
        } else {
            self.kind_schema(&f.kind())
        };
        if let Some(comment) = self.field_comment(f) {
            let comment = comment.to_string();
            if let Json::Object(o) = &mut schema {
                if comment.starts_with("Output only") {
                    o.insert("readOnly".to_string(), Json::Bool(true));
                }
                o.insert("description".to_string(), Json::String(comment));
            }
        }
        schema
    }

    fn message_schema(&mut self, m: &MessageDescriptor) -> Json {
        let mut properties = Map::new();
        for f in m.fields() {
            properties.insert(f.json_name().to_string(), self.field_schema(&f));
        }
        let mut schema = json!({"type": "object", "properties": properties});
        if let Some(comment) = self.message_comment(m) {
            schema["description"] = Json::String(comment.to_string());
        }
        schema
    }

    fn drain(&mut self) {
        while let Some(m) = self.pending.pop() {
            let schema = self.message_schema(&m);
            self.schemas.insert(m.full_name().to_string(), schema);
        }
    }

    /// Query parameters for every leaf field of `m` the path and body
    /// leave free.
    fn query_params(
        &mut self,
        binding: &Binding,
        m: &MessageDescriptor,
        prefix: &str,
        fields: &mut Vec<FieldDescriptor>,
        out: &mut Vec<Json>,
    ) {
        for f in m.fields() {
            if fields.is_empty() {
                if let Body::Field(body) = &binding.body {
                    if body.number() == f.number() {
                        continue;
                    }
                }
            }
            fields.push(f.clone());
            let name = format!("{prefix}{}", f.json_name());
            let bound = binding.path_binds(fields);
            match f.kind() {
                _ if bound || f.is_map() => {}
                Kind::Message(inner) if wkt_schema(inner.full_name()).is_none() => {
                    let recursive = fields[..fields.len() - 1].iter().any(|p| {
                        matches!(p.kind(), Kind::Message(pm) if pm.full_name() == inner.full_name())
                    });
                    if !f.is_list() && !recursive && fields.len() < QUERY_DEPTH {
                        self.query_params(binding, &inner, &format!("{name}."), fields, out);
                    }
                }
                Kind::Message(inner)
                    if matches!(
                        inner.full_name(),
                        "google.protobuf.Struct"
                            | "google.protobuf.Value"
                            | "google.protobuf.ListValue"
                            | "google.protobuf.Any"
                            | "google.protobuf.Empty"
                    ) => {}
                _ => {
                    let mut param = json!({
                        "name": name,
                        "in": "query",
                        "required": false,
                        "schema": self.field_schema(&f),
                    });
                    if let Some(d) = self.field_comment(&f) {
                        param["description"] = Json::String(d.to_string());
                    }
                    if f.is_list() {
                        param["style"] = json!("form");
                        param["explode"] = json!(true);
                    }
                    out.push(param);
                }
            }
            fields.pop();
        }
    }

    fn operation(&mut self, binding: &Binding, params: Vec<Json>) -> Json {
        let rpc = &binding.rpc;
        let service = rpc.parent_service();
        let comment = self
            .comments
            .get(rpc.parent_file().name(), rpc.path())
            .unwrap_or_default()
            .to_string();
        let mut op = json!({
            "operationId": operation_id(binding),
            "tags": [service.name()],
            "summary": comment.lines().next().unwrap_or(rpc.name()),
            "description": format!("{comment}\n\ngRPC: `{}`.", rpc.full_name()).trim(),
        });
        let mut parameters = params;
        let input = rpc.input();
        self.query_params(binding, &input, "", &mut Vec::new(), &mut parameters);
        if !parameters.is_empty() {
            op["parameters"] = Json::Array(parameters);
        }
        let body = match &binding.body {
            Body::None => None,
            Body::All => {
                let mut schema = self.message_schema(&input);
                for v in &binding.template.variables {
                    if let [f] = v.fields.as_slice() {
                        if let Some(Json::Object(props)) = schema.get_mut("properties") {
                            props.remove(f.json_name());
                        }
                    }
                }
                Some((schema, None))
            }
            Body::Field(f) => {
                let mut schema = self.field_schema(f);
                let description = schema
                    .as_object_mut()
                    .and_then(|o| o.remove("description"))
                    .and_then(|d| d.as_str().map(str::to_string));
                if let Some(o) = schema.as_object_mut() {
                    o.remove("readOnly");
                }
                Some((schema, description))
            }
        };
        if let Some((schema, description)) = body {
            let mut request_body = json!({
                "required": false,
                "content": {"application/json": {"schema": schema}},
            });
            if let Some(d) = description {
                request_body["description"] = Json::String(d);
            }
            op["requestBody"] = request_body;
        }
        let output = rpc.output();
        let (schema, description) = match &binding.response_body {
            Some(f) => {
                let schema = self.field_schema(f);
                let d = self.field_comment(f).unwrap_or("OK").to_string();
                (schema, d)
            }
            None => {
                let d = self.message_comment(&output).unwrap_or("OK").to_string();
                (self.message_ref(&output), d)
            }
        };
        let ok = if rpc.is_server_streaming() {
            json!({
                "description": format!("{description}\n\nA stream: one JSON object per line, \
                    `{{\"result\": ...}}` per message, `{{\"error\": ...}}` if the stream fails."),
                "content": {"application/x-ndjson": {"schema": {
                    "type": "object",
                    "properties": {"result": schema, "error": reference(STATUS)},
                }}},
            })
        } else {
            json!({
                "description": description,
                "content": {"application/json": {"schema": schema}},
            })
        };
        op["responses"] = json!({
            "200": ok,
            "default": {
                "description": "An error: the gRPC status as `google.rpc.Status` JSON, \
                    under the HTTP status of its code.",
                "content": {"application/json": {"schema": reference(STATUS)}},
            },
        });
        op
    }
}

const STATUS: &str = "google.rpc.Status";

/// `ProjectService_CreateProject`, `_1`... for additional bindings.
fn operation_id(binding: &Binding) -> String {
    let base = format!(
        "{}_{}",
        binding.rpc.parent_service().name(),
        binding.rpc.name()
    );
    if binding.index == 0 {
        base
    } else {
        format!("{base}_{}", binding.index)
    }
}

/// The inline schema of a well-known type's JSON form.
fn wkt_schema(name: &str) -> Option<Json> {
    Some(match name {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$", "examples": ["1.5s"]})
        }
        "google.protobuf.FieldMask" => {
            json!({"type": "string", "description": "Comma-separated lowerCamelCase field paths."})
        }
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.Empty" => json!({"type": "object"}),
        "google.protobuf.Any" => json!({
            "type": "object",
            "properties": {"@type": {"type": "string"}},
            "required": ["@type"],
        }),
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": "number"}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => json!({"type": "integer"}),
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "pattern": "^-?[0-9]+$"})
        }
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BytesValue" => json!({"type": "string", "format": "byte"}),
        _ => return None,
    })
}

/// `projects` → `project`, `accessRules` → `accessRule`, `policies` →
/// `policy`, `shelves` → `shelf`.
fn singular(word: &str) -> String {
    if let Some(stem) = word.strip_suffix("ies") {
        format!("{stem}y")
    } else if let Some(stem) = word.strip_suffix("lves") {
        format!("{stem}lf")
    } else if let Some(stem) = word.strip_suffix("sses") {
        format!("{stem}ss")
    } else if let Some(stem) = word.strip_suffix('s') {
        stem.to_string()
    } else {
        word.to_string()
    }
}

/// The OpenAPI path of a binding and its path parameters.
fn path_and_params(g: &mut Generator<'_>, binding: &Binding) -> (String, Vec<Json>) {
    let template = &binding.template;
    let mut path = String::new();
    let mut params = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, segment) in template.segments.iter().enumerate() {
        path.push('/');
        let variable = template
            .variables
            .iter()
            .find(|v| v.start <= i && i < v.end);
        let literal = match segment {
            Segment::Literal(l) => {
                path.push_str(l);
                continue;
            }
            _ => match (i.checked_sub(1).map(|p| &template.segments[p]), variable) {
                (_, Some(v)) if v.is_single(template) => v.field_path.clone(),
                (Some(Segment::Literal(prev)), _) => singular(prev),
                (_, Some(v)) => v.field_path.replace('.', "_"),
                (_, None) => format!("segment{i}"),
            },
        };
        let mut name = literal.clone();
        let mut n = 2;
        while names.contains(&name) {
            name = format!("{literal}{n}");
            n += 1;
        }
        names.push(name.clone());
        path.push('{');
        path.push_str(&name);
        path.push('}');

        let (schema, description) = match variable {
            Some(v) if v.is_single(template) => {
                let leaf = v.fields.last().map(|f| g.field_schema(f));
                let mut schema = leaf.unwrap_or_else(|| json!({"type": "string"}));
                let d = schema
                    .as_object_mut()
                    .and_then(|o| {
                        o.remove("readOnly");
                        o.remove("description")
                    })
                    .and_then(|d| d.as_str().map(str::to_string))
                    .unwrap_or_default();
                if schema.get("type") == Some(&json!("string")) && schema.get("enum").is_none() {
                    schema["pattern"] = json!("^[^/]+$");
                }
                (schema, d)
            }
            Some(v) => {
                let field_doc = v
                    .fields
                    .last()
                    .and_then(|f| g.field_comment(f))
                    .unwrap_or_default();
                let many = *segment == Segment::Many;
                (
                    if many {
                        json!({"type": "string"})
                    } else {
                        json!({"type": "string", "pattern": "^[^/]+$"})
                    },
                    format!(
                        "{} of `{}` ({}). {}",
                        if many {
                            "The trailing segments (slashes allowed)"
                        } else {
                            "One segment"
                        },
                        v.field_path,
                        template_of(binding, v),
                        field_doc
                    )
                    .trim()
                    .to_string(),
                )
            }
            None => (json!({"type": "string"}), "Any segment.".to_string()),
        };
        let mut param = json!({
            "name": name,
            "in": "path",
            "required": true,
            "schema": schema,
        });
        if !description.is_empty() {
            param["description"] = Json::String(description);
        }
        params.push(param);
    }
    if let Some(verb) = &template.verb {
        path.push(':');
        path.push_str(verb);
    }
    if path.is_empty() {
        path.push('/');
    }
    (path, params)
}

/// `projects/*/networks/*`: what a variable's value looks like.
fn template_of(binding: &Binding, v: &super::rules::Variable) -> String {
    binding.template.segments[v.start..v.end]
        .iter()
        .map(|s| match s {
            Segment::Literal(l) => l.as_str(),
            Segment::One => "*",
            Segment::Many => "**",
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The document for `bindings`.
pub(crate) fn document(pool: &DescriptorPool, bindings: &[Binding]) -> Json {
    let comments = Comments::new(pool);
    let mut g = Generator {
        comments: &comments,
        schemas: BTreeMap::new(),
        pending: Vec::new(),
        seen: HashSet::new(),
    };
    let mut paths: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    let mut tags: BTreeMap<String, Json> = BTreeMap::new();
    // Stable order: by gRPC method, then binding.
    let mut ordered: Vec<&Binding> = bindings.iter().collect();
    ordered.sort_by_key(|b| (b.rpc.full_name().to_string(), b.index));
    for binding in ordered {
        let service = binding.rpc.parent_service();
        tags.entry(service.name().to_string()).or_insert_with(|| {
            json!({
                "name": service.name(),
                "description": g.service_comment(service).unwrap_or_default(),
            })
        });
        let (path, params) = path_and_params(&mut g, binding);
        let operation = g.operation(binding, params);
        paths
            .entry(path)
            .or_default()
            .insert(binding.method.as_str().to_lowercase(), operation);
    }
    g.drain();
    g.schemas.insert(
        STATUS.to_string(),
        json!({
            "type": "object",
            "description": "The error of a failed call (google.rpc.Status). `code` is the gRPC \
                status code; `details` holds typed details such as google.rpc.BadRequest, each \
                with its `@type`.",
            "properties": {
                "code": {"type": "integer", "format": "int32", "description": "The gRPC status code."},
                "message": {"type": "string", "description": "What went wrong, for developers."},
                "details": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"@type": {"type": "string"}},
                        "required": ["@type"],
                    },
                },
            },
            "required": ["code", "message"],
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Nordlys API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-service provisioning of projects, users, memberships, networks \
                and access rules across regions. JSON over HTTP, transcoded from the gRPC API \
                by its google.api.http annotations (proto3 JSON mapping: lowerCamelCase names, \
                enums as strings, 64-bit integers as strings). Authenticate with \
                `Authorization: Bearer <API key>`.",
        },
        "tags": tags.into_values().collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "schemas": g.schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An organization API key (`nlk_...`) or the operator key.",
                },
            },
        },
        "security": [{"bearerAuth": []}],
    })
}

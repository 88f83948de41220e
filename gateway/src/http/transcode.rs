//! JSON to protobuf and back, per the proto3 JSON mapping (prost-reflect's
//! serde support does the mapping; this file only decides which part of the
//! HTTP request feeds which field).
//!
//! A request message is built from, in order: the body (`*`, one field, or
//! none), the path variables, then query parameters for every field the
//! path and body leave free. Each value is checked on its own so an error
//! names the parameter or the body field that is wrong.

use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions, Value,
};
use serde_json::Value as Json;
use tonic::Status;

use super::errors::HttpError;
use super::rules::{Binding, Body};

/// Canonical proto3 JSON out, as grpc-gateway emits it: lowerCamelCase
/// names, enums by name, 64-bit integers as strings, and fields at their
/// default value included (unset message fields are left out).
pub(crate) fn json_options() -> SerializeOptions {
    SerializeOptions::new()
        .stringify_64_bit_integers(true)
        .use_enum_numbers(false)
        .use_proto_field_name(false)
        .skip_default_fields(false)
}

/// How lenient request decoding is.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Leniency {
    /// Ignore unknown JSON fields and query parameters instead of a 400.
    pub(crate) allow_unknown_fields: bool,
}

impl Leniency {
    fn options(self) -> DeserializeOptions {
        DeserializeOptions::new().deny_unknown_fields(!self.allow_unknown_fields)
    }
}

/// The request message for `binding` from the path variables' `values`, the
/// raw query string and the body.
pub(crate) fn request(
    binding: &Binding,
    values: &[String],
    query: Option<&str>,
    body: &[u8],
    leniency: Leniency,
) -> Result<DynamicMessage, HttpError> {
    let input = binding.rpc.input();
    let blank = body.iter().all(u8::is_ascii_whitespace);
    let mut message = match &binding.body {
        Body::None => {
            if !blank {
                return Err(HttpError::bad_request(
                    "",
                    format!(
                        "{} takes no request body; send the fields as query parameters",
                        binding.describe()
                    ),
                ));
            }
            DynamicMessage::new(input.clone())
        }
        Body::All if blank => DynamicMessage::new(input.clone()),
        Body::All => parse_json(input.clone(), body, "", leniency)?,
        Body::Field(field) => {
            let mut message = DynamicMessage::new(input.clone());
            if !blank {
                let value = match field.kind() {
                    Kind::Message(desc) if !field.is_list() && !field.is_map() => {
                        Value::Message(parse_json(desc, body, field.json_name(), leniency)?)
                    }
                    _ => {
                        // A repeated, map or scalar body: parse it as the
                        // value of that field of the request.
                        let json: Json = serde_json::from_slice(body).map_err(|e| {
                            HttpError::bad_request(field.json_name(), json_error(&e))
                        })?;
                        let wrapped =
                            Json::Object([(field.name().to_string(), json)].into_iter().collect());
                        let tmp = DynamicMessage::deserialize_with_options(
                            input.clone(),
                            wrapped,
                            &leniency.options(),
                        )
                        .map_err(|e| HttpError::bad_request(field.json_name(), e.to_string()))?;
                        tmp.get_field(field).into_owned()
                    }
                };
                message.set_field(field, value);
            }
            message
        }
    };

    for (variable, value) in binding.template.variables.iter().zip(values) {
        let Some(leaf) = variable.fields.last() else {
            continue;
        };
        let json = scalar_json(leaf, value).map_err(|why| {
            HttpError::bad_request(&variable.field_path, format!("bad path value: {why}"))
        })?;
        set_path(&mut message, &variable.fields, json).map_err(|why| {
            HttpError::bad_request(&variable.field_path, format!("bad path value: {why}"))
        })?;
    }

    if let Some(query) = query.filter(|q| !q.is_empty()) {
        let mut params: Vec<(String, Vec<String>)> = Vec::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match params.iter_mut().find(|(k, _)| *k == key) {
                Some((_, values)) => values.push(value.into_owned()),
                None => params.push((key.into_owned(), vec![value.into_owned()])),
            }
        }
        for (key, values) in params {
            query_param(binding, &mut message, &key, &values, leniency)?;
        }
    }
    implied_update_mask(binding, &mut message, body);
    Ok(message)
}

/// As grpc-gateway does for a PATCH whose body is one message field: when
/// the request has an `update_mask` the caller did not set, it names the
/// fields the JSON body holds (nested objects by their leaves), so a
/// partial body changes only what it carries. The resource's top-level
/// `name` and `etag` say which resource and which version of it (AIP-134,
/// AIP-154): they are never part of the change.
fn implied_update_mask(binding: &Binding, message: &mut DynamicMessage, body: &[u8]) {
    if binding.method != http::Method::PATCH {
        return;
    }
    let Body::Field(field) = &binding.body else {
        return;
    };
    let Kind::Message(desc) = field.kind() else {
        return;
    };
    let Some(mask_field) = message.descriptor().get_field_by_name("update_mask") else {
        return;
    };
    if !matches!(mask_field.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask")
        || message.has_field(&mask_field)
    {
        return;
    }
    let Ok(Json::Object(object)) = serde_json::from_slice::<Json>(body) else {
        return;
    };
    let mut paths = Vec::new();
    body_paths(&desc, &object, "", &mut paths);
    paths.retain(|p| p != "name" && p != "etag");
    let mask = prost_types::FieldMask { paths };
    if let Ok(value) = DynamicMessage::decode(
        match mask_field.kind() {
            Kind::Message(m) => m,
            _ => return,
        },
        mask.encode_to_vec().as_slice(),
    ) {
        message.set_field(&mask_field, Value::Message(value));
    }
}

/// The field paths a JSON object sets in `desc`: a nested object of a plain
/// message field by its leaves, anything else (scalars, lists, maps,
/// well-known types) as one path.
fn body_paths(
    desc: &MessageDescriptor,
    object: &serde_json::Map<String, Json>,
    prefix: &str,
    out: &mut Vec<String>,
) {
    for (key, value) in object {
        let Some(field) = desc
            .get_field_by_json_name(key)
            .or_else(|| desc.get_field_by_name(key))
        else {
            continue;
        };
        let path = format!("{prefix}{}", field.name());
        match (field.kind(), value) {
            (Kind::Message(inner), Json::Object(nested))
                if !field.is_list()
                    && !field.is_map()
                    && !inner.full_name().starts_with("google.protobuf.") =>
            {
                body_paths(&inner, nested, &format!("{path}."), out);
            }
            _ => out.push(path),
        }
    }
}

/// Decodes one JSON document into `desc`, naming the failing field.
fn parse_json(
    desc: MessageDescriptor,
    body: &[u8],
    prefix: &str,
    leniency: Leniency,
) -> Result<DynamicMessage, HttpError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let mut track = serde_path_to_error::Track::new();
    let result = DynamicMessage::deserialize_with_options(
        desc,
        serde_path_to_error::Deserializer::new(&mut de, &mut track),
        &leniency.options(),
    );
    let field = |track: serde_path_to_error::Track| {
        // `Unknown` is a key the parser could not read (the JSON ends or
        // breaks inside an object): the violation names the object, not
        // `object.?`.
        let mut path = String::new();
        for segment in &track.path() {
            match segment {
                serde_path_to_error::Segment::Unknown => break,
                serde_path_to_error::Segment::Seq { .. } => path.push_str(&segment.to_string()),
                _ => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&segment.to_string());
                }
            }
        }
        match (prefix.is_empty(), path.is_empty()) {
            (_, true) => prefix.to_string(),
            (true, false) => path,
            (false, false) => format!("{prefix}.{path}"),
        }
    };
    match result {
        Ok(message) => {
            de.end()
                .map_err(|e| HttpError::bad_request(prefix, json_error(&e)))?;
            Ok(message)
        }
        Err(e) => Err(HttpError::bad_request(&field(track), json_error(&e))),
    }
}

/// A serde_json error, with what kind of mistake it is.
fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => format!("malformed JSON: {e}"),
        Category::Data if e.to_string().contains("unrecognized field") => {
            format!("unknown field: {e}")
        }
        Category::Data => format!("invalid value: {e}"),
        Category::Io => format!("unreadable body: {e}"),
    }
}

/// Whether `m` is a well-known type that JSON writes as one value.
fn scalar_wkt(m: &MessageDescriptor) -> bool {
    matches!(
        m.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.FloatValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.Int32Value"
            | "google.protobuf.UInt32Value"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
    )
}

/// The JSON value for a path or query text, for a field of this kind: the
/// proto3 JSON parser then checks it (numbers may be strings in proto3 JSON).
fn scalar_json(field: &FieldDescriptor, text: &str) -> Result<Json, String> {
    let boolean = |text: &str| match text {
        "true" | "True" | "TRUE" | "1" | "t" => Ok(Json::Bool(true)),
        "false" | "False" | "FALSE" | "0" | "f" => Ok(Json::Bool(false)),
        _ => Err(format!("{text:?} is not a boolean (true or false)")),
    };
    match field.kind() {
        Kind::Bool => boolean(text),
        Kind::Enum(e) => match text.parse::<i32>() {
            Ok(n) => Ok(Json::from(n)),
            Err(_) if e.get_value_by_name(text).is_some() => Ok(Json::String(text.to_string())),
            Err(_) => {
                let names: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
                Err(format!(
                    "{text:?} is not a value of {}: one of {}",
                    e.name(),
                    names.join(", ")
                ))
            }
        },
        Kind::Message(m) if m.full_name() == "google.protobuf.BoolValue" => boolean(text),
        Kind::Message(m) if m.full_name() == "google.protobuf.FieldMask" => {
            Ok(Json::String(field_mask_json(text)))
        }
        Kind::Message(m) if scalar_wkt(&m) => Ok(Json::String(text.to_string())),
        Kind::Message(m) => Err(format!(
            "{} is a message: set its fields one by one (`{}.field=...`)",
            m.full_name(),
            field.json_name()
        )),
        _ => Ok(Json::String(text.to_string())),
    }
}

/// A FieldMask's text from a query parameter or a path, in its JSON form:
/// the paths may be in that form already (`displayName`) or name the
/// fields by their proto names (`display_name`, `limits.access_rules`), as
/// grpc-gateway passes them on and as the services name them in their
/// errors; the JSON form allows no `_`, so `_x` becomes `X` (and the JSON
/// parser turns it back). An `_` before anything but a lowercase letter
/// has no JSON form and stays, for the parser to refuse.
fn field_mask_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('_', Some(next)) if next.is_ascii_lowercase() => {
                out.push(next.to_ascii_uppercase());
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

/// Sets the field at `fields` (from the request down) from its JSON value,
/// creating the messages on the way.
fn set_path(
    root: &mut DynamicMessage,
    fields: &[FieldDescriptor],
    json: Json,
) -> Result<(), String> {
    let Some((leaf, parents)) = fields.split_last() else {
        return Ok(());
    };
    let mut message = root;
    for f in parents {
        message = match message.get_field_mut(f) {
            Value::Message(m) => m,
            _ => return Err(format!("{} is not a message", f.name())),
        };
    }
    let wrapped = Json::Object([(leaf.name().to_string(), json)].into_iter().collect());
    let tmp = DynamicMessage::deserialize_with_options(
        message.descriptor(),
        wrapped,
        &DeserializeOptions::new(),
    )
    .map_err(|e| e.to_string())?;
    message.set_field(leaf, tmp.get_field(leaf).into_owned());
    Ok(())
}

/// Resolves a query key (`a.b.c`, proto or JSON names) and sets it.
fn query_param(
    binding: &Binding,
    message: &mut DynamicMessage,
    key: &str,
    values: &[String],
    leniency: Leniency,
) -> Result<(), HttpError> {
    let unknown = |why: String| {
        if leniency.allow_unknown_fields {
            Ok(())
        } else {
            Err(HttpError::bad_request(key, why))
        }
    };
    if matches!(binding.body, Body::All) {
        return unknown(format!(
            "{} takes every field in the body; no query parameters",
            binding.describe()
        ));
    }
    let mut desc = binding.rpc.input();
    let mut fields: Vec<FieldDescriptor> = Vec::new();
    let idents: Vec<&str> = key.split('.').collect();
    for (i, ident) in idents.iter().enumerate() {
        let Some(f) = desc
            .get_field_by_name(ident)
            .or_else(|| desc.get_field_by_json_name(ident))
        else {
            return unknown(format!(
                "unknown query parameter: {} has no field {ident:?}",
                desc.full_name()
            ));
        };
        fields.push(f.clone());
        if i + 1 < idents.len() {
            match f.kind() {
                Kind::Message(m) if !f.is_list() && !f.is_map() && !scalar_wkt(&m) => desc = m,
                _ => {
                    return Err(HttpError::bad_request(
                        key,
                        format!("{ident:?} has no fields to set with `.`"),
                    ))
                }
            }
        }
    }
    if let Body::Field(body) = &binding.body {
        if fields[0].number() == body.number() {
            return Err(HttpError::bad_request(
                key,
                format!(
                    "`{}` is the request body of {}; set it there",
                    body.json_name(),
                    binding.describe()
                ),
            ));
        }
    }
    if binding.path_binds(&fields) {
        return Err(HttpError::bad_request(
            key,
            format!("bound by the path of {}", binding.describe()),
        ));
    }
    let Some(leaf) = fields.last() else {
        return Ok(());
    };
    if leaf.is_map() {
        return Err(HttpError::bad_request(
            key,
            "map fields cannot be set from query parameters",
        ));
    }
    let json = if leaf.is_list() {
        let mut items = Vec::with_capacity(values.len());
        for v in values {
            items.push(scalar_json(leaf, v).map_err(|why| HttpError::bad_request(key, why))?);
        }
        Json::Array(items)
    } else {
        if values.len() > 1 {
            return Err(HttpError::bad_request(
                key,
                format!("given {} times; it takes one value", values.len()),
            ));
        }
        scalar_json(leaf, &values[0]).map_err(|why| HttpError::bad_request(key, why))?
    };
    set_path(message, &fields, json).map_err(|why| {
        HttpError::bad_request(key, format!("invalid value {:?}: {why}", values.join(",")))
    })
}

/// The JSON answer for a successful call: the response message, or its
/// `response_body` field.
pub(crate) fn response(binding: &Binding, encoded: &[u8]) -> Result<Json, Status> {
    message_json(binding, &decode_answer(binding, encoded)?)
}

/// The call's answer, as the message type the binding's RPC returns.
fn decode_answer(binding: &Binding, encoded: &[u8]) -> Result<DynamicMessage, Status> {
    DynamicMessage::decode(binding.rpc.output(), encoded).map_err(|e| {
        Status::internal(format!(
            "cannot decode the {} answer: {e}",
            binding.rpc.name()
        ))
    })
}

fn render_failed(e: serde_json::Error) -> Status {
    Status::internal(format!("cannot render the answer as JSON: {e}"))
}

fn message_json(binding: &Binding, message: &DynamicMessage) -> Result<Json, Status> {
    let render = |m: &DynamicMessage| {
        m.serialize_with_options(serde_json::value::Serializer, &json_options())
            .map_err(render_failed)
    };
    match &binding.response_body {
        None => render(message),
        Some(field) => match message.get_field(field).as_ref() {
            Value::Message(m) if !field.is_list() && !field.is_map() => render(m),
            _ => Ok(render(message)?
                .get(field.json_name())
                .cloned()
                .unwrap_or(Json::Null)),
        },
    }
}

/// As [`response`], written straight to JSON text: no `serde_json::Value`
/// tree in between (a map and a string per field) on the unary hot path.
pub(crate) fn response_text(binding: &Binding, encoded: &[u8]) -> Result<Vec<u8>, Status> {
    let message = decode_answer(binding, encoded)?;
    let render = |m: &DynamicMessage| {
        let mut text = Vec::with_capacity(256);
        m.serialize_with_options(&mut serde_json::Serializer::new(&mut text), &json_options())
            .map_err(render_failed)?;
        Ok(text)
    };
    match &binding.response_body {
        None => render(&message),
        Some(field) => match message.get_field(field).as_ref() {
            Value::Message(m) if !field.is_list() && !field.is_map() => render(m),
            // Lists and maps of a response_body field: through the tree.
            _ => serde_json::to_vec(&message_json(binding, &message)?).map_err(render_failed),
        },
    }
}

/// The binary request, for the gRPC call.
pub(crate) fn encode(message: &DynamicMessage) -> bytes::Bytes {
    message.encode_to_vec().into()
}

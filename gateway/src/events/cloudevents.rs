//! The CloudEvents NATS protocol binding, binary mode: an [`Event`]'s
//! attributes travel as `ce-` headers, its data (the resource, in protobuf)
//! as the payload, and `content-type` is the data's content type. The
//! `cloudevents` crate speaks only the structured mode and pins an older
//! async-nats, so the few headers are written here.

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use nordlys_proto::pb::google::rpc::Status as RpcStatus;
use nordlys_proto::pb::nordlys::v1::{event::Data, Actor, Event, Origin};
use prost::Message;

/// The CloudEvents version written.
pub(crate) const SPEC_VERSION: &str = "1.0";
/// The data's content type when an event has data.
pub(crate) const PROTOBUF: &str = "application/protobuf";
/// Where `dataschema` values start: the protobuf type URL convention.
const SCHEMA_PREFIX: &str = "type.googleapis.com/";

// Attribute headers. Extension names are lowercase letters and digits
// only, as the CloudEvents spec asks.
const CE_SPECVERSION: &str = "ce-specversion";
const CE_ID: &str = "ce-id";
const CE_SOURCE: &str = "ce-source";
const CE_TYPE: &str = "ce-type";
const CE_SUBJECT: &str = "ce-subject";
const CE_TIME: &str = "ce-time";
const CE_DATASCHEMA: &str = "ce-dataschema";
const CONTENT_TYPE: &str = "content-type";
const CE_ORGANIZATION: &str = "ce-organization";
const CE_ACTOR: &str = "ce-actor";
const CE_ACTORROLE: &str = "ce-actorrole";
const CE_APIKEY: &str = "ce-apikey";
const CE_PEERADDRESS: &str = "ce-peeraddress";
const CE_REQUESTID: &str = "ce-requestid";
const CE_TRACEID: &str = "ce-traceid";
const CE_OUTCOME: &str = "ce-outcome";
const CE_OUTCOMEMESSAGE: &str = "ce-outcomemessage";
/// JetStream's de-duplication key: a retried publish is stored once.
const NATS_MSG_ID: &str = "Nats-Msg-Id";

/// Why a stored message is not an event this gateway wrote.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    /// A required attribute is missing.
    #[error("the message has no {0} header")]
    Missing(&'static str),
    /// An attribute's value is malformed.
    #[error("the {0} header is malformed")]
    Malformed(&'static str),
    /// The data does not decode as its schema says.
    #[error("the data is not a {0}: {1}")]
    Data(String, prost::DecodeError),
}

/// The headers and payload of `event` in binary mode. `name` and
/// `sequence` are not sent: the stream assigns the sequence.
pub(crate) fn encode(event: &Event) -> (HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if !value.is_empty() {
            // Values come from validated names and ids or are escaped
            // below; one that still cannot be a header value is left out
            // rather than failing the publish.
            if let Ok(value) = header_safe(value).parse::<HeaderValue>() {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
    };
    put(CE_SPECVERSION, SPEC_VERSION);
    put(CE_ID, &event.id);
    put(NATS_MSG_ID, &event.id);
    put(CE_SOURCE, &event.source);
    put(CE_TYPE, &event.r#type);
    put(CE_SUBJECT, &event.subject);
    if let Some(time) = &event.time {
        put(CE_TIME, &time.to_string());
    }
    put(CE_ORGANIZATION, &event.organization);
    if let Some(actor) = &event.actor {
        put(CE_ACTOR, &actor.member);
        put(CE_ACTORROLE, &actor.role);
        put(CE_APIKEY, &actor.api_key);
    }
    if let Some(origin) = &event.origin {
        put(CE_PEERADDRESS, &origin.peer_address);
        put(CE_REQUESTID, &origin.request_id);
        put(CE_TRACEID, &origin.trace_id);
    }
    let outcome = event.outcome.clone().unwrap_or_default();
    put(CE_OUTCOME, &outcome.code.to_string());
    put(CE_OUTCOMEMESSAGE, &outcome.message);
    let payload = match &event.data {
        Some(data) => {
            let (schema, bytes) = data_bytes(data);
            put(CONTENT_TYPE, PROTOBUF);
            put(CE_DATASCHEMA, &format!("{SCHEMA_PREFIX}{schema}"));
            bytes
        }
        None => Bytes::new(),
    };
    (headers, payload)
}

/// The event stored at `sequence` with `headers` and `payload`; `name` is
/// filled from the organization and the sequence.
pub(crate) fn decode(
    sequence: u64,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> Result<Event, DecodeError> {
    let empty = HeaderMap::new();
    let headers = headers.unwrap_or(&empty);
    let get = |name: &'static str| headers.get(name).map(|v| v.as_str().to_string());
    let need = |name: &'static str| get(name).ok_or(DecodeError::Missing(name));
    if need(CE_SPECVERSION)? != SPEC_VERSION {
        return Err(DecodeError::Malformed(CE_SPECVERSION));
    }
    let organization = need(CE_ORGANIZATION)?;
    let time = match get(CE_TIME) {
        Some(t) => Some(
            t.parse::<prost_types::Timestamp>()
                .map_err(|_| DecodeError::Malformed(CE_TIME))?,
        ),
        None => None,
    };
    let code = match get(CE_OUTCOME) {
        Some(c) => c
            .parse::<i32>()
            .map_err(|_| DecodeError::Malformed(CE_OUTCOME))?,
        None => 0,
    };
    let data = match get(CE_DATASCHEMA) {
        Some(schema) => {
            let schema = schema
                .strip_prefix(SCHEMA_PREFIX)
                .ok_or(DecodeError::Malformed(CE_DATASCHEMA))?;
            Some(data_from(schema, payload)?)
        }
        None => None,
    };
    Ok(Event {
        name: format!("{organization}/events/{sequence}"),
        sequence,
        id: need(CE_ID)?,
        source: need(CE_SOURCE)?,
        r#type: need(CE_TYPE)?,
        subject: get(CE_SUBJECT).unwrap_or_default(),
        time,
        organization,
        actor: Some(Actor {
            member: get(CE_ACTOR).unwrap_or_default(),
            role: get(CE_ACTORROLE).unwrap_or_default(),
            api_key: get(CE_APIKEY).unwrap_or_default(),
        }),
        origin: Some(Origin {
            peer_address: get(CE_PEERADDRESS).unwrap_or_default(),
            request_id: get(CE_REQUESTID).unwrap_or_default(),
            trace_id: get(CE_TRACEID).unwrap_or_default(),
        }),
        outcome: Some(RpcStatus {
            code,
            message: get(CE_OUTCOMEMESSAGE).unwrap_or_default(),
            details: Vec::new(),
        }),
        data,
    })
}

/// The event's type as stored, read without decoding the rest.
pub(crate) fn type_of(headers: Option<&HeaderMap>) -> Option<&str> {
    headers?.get(CE_TYPE).map(|v| v.as_str())
}

/// The event's subject (the resource) as stored.
pub(crate) fn subject_of(headers: Option<&HeaderMap>) -> Option<&str> {
    headers?.get(CE_SUBJECT).map(|v| v.as_str())
}

/// Header values are one line: messages from the services may hold line
/// breaks, which NATS headers cannot carry.
fn header_safe(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(['\r', '\n']) {
        value.replace(['\r', '\n'], " ").into()
    } else {
        value.into()
    }
}

fn data_bytes(data: &Data) -> (&'static str, Bytes) {
    let (schema, bytes) = match data {
        Data::Project(m) => ("nordlys.v1.Project", m.encode_to_vec()),
        Data::User(m) => ("nordlys.v1.User", m.encode_to_vec()),
        Data::Membership(m) => ("nordlys.v1.Membership", m.encode_to_vec()),
        Data::Network(m) => ("nordlys.v1.Network", m.encode_to_vec()),
        Data::AccessRule(m) => ("nordlys.v1.AccessRule", m.encode_to_vec()),
        Data::Quota(m) => ("nordlys.v1.Quota", m.encode_to_vec()),
        Data::Member(m) => ("nordlys.v1.Member", m.encode_to_vec()),
        Data::ApiKey(m) => ("nordlys.v1.ApiKey", m.encode_to_vec()),
        Data::OrganizationCreated(m) => ("nordlys.v1.Organization", m.encode_to_vec()),
    };
    (schema, Bytes::from(bytes))
}

fn data_from(schema: &str, payload: &[u8]) -> Result<Data, DecodeError> {
    use nordlys_proto::pb::nordlys::v1;
    let wrong = |e| DecodeError::Data(schema.to_string(), e);
    Ok(match schema {
        "nordlys.v1.Project" => Data::Project(v1::Project::decode(payload).map_err(wrong)?),
        "nordlys.v1.User" => Data::User(v1::User::decode(payload).map_err(wrong)?),
        "nordlys.v1.Membership" => {
            Data::Membership(v1::Membership::decode(payload).map_err(wrong)?)
        }
        "nordlys.v1.Network" => Data::Network(v1::Network::decode(payload).map_err(wrong)?),
        "nordlys.v1.AccessRule" => {
            Data::AccessRule(v1::AccessRule::decode(payload).map_err(wrong)?)
        }
        "nordlys.v1.Quota" => Data::Quota(v1::Quota::decode(payload).map_err(wrong)?),
        "nordlys.v1.Member" => Data::Member(v1::Member::decode(payload).map_err(wrong)?),
        "nordlys.v1.ApiKey" => Data::ApiKey(v1::ApiKey::decode(payload).map_err(wrong)?),
        "nordlys.v1.Organization" => {
            Data::OrganizationCreated(v1::Organization::decode(payload).map_err(wrong)?)
        }
        _ => return Err(DecodeError::Malformed(CE_DATASCHEMA)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nordlys_proto::pb::nordlys::v1::Project;

    fn sample() -> Event {
        Event {
            name: String::new(),
            sequence: 0,
            id: "0af1".to_string(),
            source: "//nordlys/gateway".to_string(),
            r#type: "io.nordlys.v1.project.created".to_string(),
            subject: "projects/web".to_string(),
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000,
            }),
            organization: "organizations/acme".to_string(),
            actor: Some(Actor {
                member: "organizations/acme/members/ada".to_string(),
                role: "admin".to_string(),
                api_key: "organizations/acme/apiKeys/k1".to_string(),
            }),
            origin: Some(Origin {
                peer_address: "127.0.0.1".to_string(),
                request_id: "req-1".to_string(),
                trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".to_string(),
            }),
            outcome: Some(RpcStatus {
                code: 0,
                message: String::new(),
                details: Vec::new(),
            }),
            data: Some(Data::Project(Project {
                name: "projects/web".to_string(),
                display_name: "Web".to_string(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn binary_mode_round_trip() {
        let event = sample();
        let (headers, payload) = encode(&event);
        assert_eq!(
            headers.get("ce-specversion").map(|v| v.as_str()),
            Some("1.0")
        );
        assert_eq!(
            headers.get("content-type").map(|v| v.as_str()),
            Some(PROTOBUF)
        );
        assert_eq!(
            headers.get("Nats-Msg-Id").map(|v| v.as_str()),
            Some("0af1"),
            "the id de-duplicates retried publishes"
        );
        assert_eq!(
            type_of(Some(&headers)),
            Some("io.nordlys.v1.project.created")
        );
        assert_eq!(subject_of(Some(&headers)), Some("projects/web"));
        let back = decode(42, Some(&headers), &payload).expect("decodes");
        let mut expected = event;
        expected.sequence = 42;
        expected.name = "organizations/acme/events/42".to_string();
        assert_eq!(back, expected);
    }

    #[test]
    fn a_delete_has_no_data_and_no_content_type() {
        let mut event = sample();
        event.r#type = "io.nordlys.v1.project.deleted".to_string();
        event.data = None;
        let (headers, payload) = encode(&event);
        assert!(payload.is_empty());
        assert!(headers.get("content-type").is_none());
        let back = decode(1, Some(&headers), &payload).expect("decodes");
        assert_eq!(back.data, None);
    }

    #[test]
    fn line_breaks_do_not_reach_headers() {
        let mut event = sample();
        event.outcome = Some(RpcStatus {
            code: 7,
            message: "denied\r\nX-Injected: 1".to_string(),
            details: Vec::new(),
        });
        let (headers, payload) = encode(&event);
        let back = decode(1, Some(&headers), &payload).expect("decodes");
        let outcome = back.outcome.expect("outcome");
        assert_eq!(outcome.code, 7);
        assert!(!outcome.message.contains('\n'));
        assert!(headers.get("X-Injected").is_none());
    }

    #[test]
    fn foreign_messages_are_refused() {
        assert!(matches!(decode(1, None, b""), Err(DecodeError::Missing(_))));
        let (mut headers, payload) = encode(&sample());
        headers.insert("ce-dataschema", "type.googleapis.com/other.Thing");
        assert!(matches!(
            decode(1, Some(&headers), &payload),
            Err(DecodeError::Malformed(_))
        ));
    }
}

//! JSON to block-style YAML for `/openapi.yaml`. Every string is written
//! double-quoted with JSON escapes, which YAML 1.2 reads the same way, so
//! no value can be mistaken for a number, a boolean or a YAML keyword.

use serde_json::Value as Json;

/// `value` as a YAML document.
pub(crate) fn to_yaml(value: &Json) -> String {
    let mut out = String::new();
    match value {
        Json::Object(o) if !o.is_empty() => mapping(o, 0, &mut out),
        Json::Array(a) if !a.is_empty() => sequence(a, 0, &mut out),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn scalar(value: &Json) -> String {
    match value {
        Json::Object(_) => "{}".to_string(),
        Json::Array(_) => "[]".to_string(),
        // JSON's string, number, boolean and null spellings are YAML's too.
        other => other.to_string(),
    }
}

fn is_block(value: &Json) -> bool {
    match value {
        Json::Object(o) => !o.is_empty(),
        Json::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn mapping(o: &serde_json::Map<String, Json>, indent: usize, out: &mut String) {
    for (key, value) in o {
        out.push_str(&" ".repeat(indent));
        out.push_str(&Json::String(key.clone()).to_string());
        out.push(':');
        if is_block(value) {
            out.push('\n');
            block(value, indent + 2, out);
        } else {
            out.push(' ');
            out.push_str(&scalar(value));
            out.push('\n');
        }
    }
}

fn sequence(a: &[Json], indent: usize, out: &mut String) {
    for value in a {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        if is_block(value) {
            out.push('\n');
            block(value, indent + 2, out);
        } else {
            out.push(' ');
            out.push_str(&scalar(value));
            out.push('\n');
        }
    }
}

fn block(value: &Json, indent: usize, out: &mut String) {
    match value {
        Json::Object(o) => mapping(o, indent, out),
        Json::Array(a) => sequence(a, indent, out),
        other => {
            out.push_str(&" ".repeat(indent));
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_blocks_and_quoted_strings() {
        let doc = json!({"a": {"b": [1, "yes", {"c": null}], "d": {}}, "e": "x: \"y\"\n"});
        assert_eq!(
            to_yaml(&doc),
            "\"a\":\n  \"b\":\n    - 1\n    - \"yes\"\n    -\n      \"c\": null\n  \"d\": {}\n\"e\": \"x: \\\"y\\\"\\n\"\n"
        );
    }
}

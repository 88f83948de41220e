//! Matches an HTTP method and path to a binding and extracts the values of
//! its path variables.
//!
//! Bindings are tried most specific first (literal before `*` before `**`,
//! segment by segment; custom verbs before plain templates). Start-up has
//! refused any pair for which that order would be a guess, so the first
//! match is the only right one.

use http::Method;

use super::rules::{Binding, Segment};

/// A matched binding and its variables' values, in template order.
#[derive(Debug)]
pub(crate) struct Match<'a> {
    pub(crate) binding: &'a Binding,
    pub(crate) values: Vec<String>,
}

/// Why nothing matched.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No binding has this path.
    NotFound,
    /// Some binding has this path, with other methods.
    MethodNotAllowed(Vec<Method>),
    /// A path segment is not valid percent-encoded UTF-8.
    BadEncoding(String),
}

/// All bindings, ordered for matching.
#[derive(Debug)]
pub(crate) struct Router {
    bindings: Vec<Binding>,
}

impl Router {
    pub(crate) fn new(mut bindings: Vec<Binding>) -> Router {
        bindings.sort_by(|a, b| {
            let ka = (
                a.template.verb.is_none(),
                a.template
                    .segments
                    .iter()
                    .map(Segment::rank)
                    .collect::<Vec<_>>(),
            );
            let kb = (
                b.template.verb.is_none(),
                b.template
                    .segments
                    .iter()
                    .map(Segment::rank)
                    .collect::<Vec<_>>(),
            );
            ka.cmp(&kb)
        });
        Router { bindings }
    }

    /// The bindings, in matching order.
    #[cfg(test)]
    pub(crate) fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    /// The binding for `method` and the raw (still percent-encoded) `path`.
    pub(crate) fn find(&self, method: &Method, path: &str) -> Result<Match<'_>, Miss> {
        let Some(rest) = path.strip_prefix('/') else {
            return Err(Miss::NotFound);
        };
        let raw: Vec<&str> = rest.split('/').collect();
        for part in &raw {
            decode(part)?;
        }
        let mut allowed: Vec<Method> = Vec::new();
        for binding in &self.bindings {
            let Some(values) = matches(binding, &raw)? else {
                continue;
            };
            if binding.method == *method {
                return Ok(Match { binding, values });
            }
            if !allowed.contains(&binding.method) {
                allowed.push(binding.method.clone());
            }
        }
        if allowed.is_empty() {
            Err(Miss::NotFound)
        } else {
            Err(Miss::MethodNotAllowed(allowed))
        }
    }
}

fn decode(segment: &str) -> Result<String, Miss> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| {
            Miss::BadEncoding(format!(
                "path segment {segment:?} is not valid UTF-8 once percent-decoded"
            ))
        })
}

/// The variables' values when `raw` (the path's segments) matches.
fn matches(binding: &Binding, raw: &[&str]) -> Result<Option<Vec<String>>, Miss> {
    let template = &binding.template;
    let mut raw: Vec<&str> = raw.to_vec();
    if let Some(verb) = &template.verb {
        let Some(last) = raw.last_mut() else {
            return Ok(None);
        };
        let Some(stripped) = last
            .strip_suffix(verb.as_str())
            .and_then(|s| s.strip_suffix(':'))
        else {
            return Ok(None);
        };
        *last = stripped;
    }
    let segments = &template.segments;
    let many = segments.last() == Some(&Segment::Many);
    let fixed = segments.len() - usize::from(many);
    if raw.len() < fixed || (!many && raw.len() != fixed) {
        return Ok(None);
    }
    for (segment, part) in segments.iter().zip(&raw) {
        match segment {
            Segment::Literal(l) => {
                if part != l && decode(part)? != *l {
                    return Ok(None);
                }
            }
            Segment::One => {
                if part.is_empty() {
                    return Ok(None);
                }
            }
            Segment::Many => break,
        }
    }
    // `**` matches zero or more segments, none of them empty.
    if many && raw[fixed..].iter().any(|p| p.is_empty()) {
        return Ok(None);
    }
    let mut values = Vec::with_capacity(template.variables.len());
    for variable in &template.variables {
        let end = if variable.end == segments.len() && many {
            raw.len()
        } else {
            variable.end
        };
        let parts = &raw[variable.start..end];
        let value = if variable.is_single(template) {
            decode(parts[0])?
        } else {
            // Multi-segment values keep `%2F` so slashes in a segment stay
            // distinguishable from separators.
            let mut decoded = Vec::with_capacity(parts.len());
            for part in parts {
                decoded.push(decode(part)?.replace('/', "%2F"));
            }
            decoded.join("/")
        };
        values.push(value);
    }
    Ok(Some(values))
}

//! What the trail keeps of a call's arguments: their canonical digest (RFC 8785), and,
//! when policy asks for them, the arguments with secret-looking values redacted.
//!
//! Threat: secrets (passwords, tokens, keys, credentials in URL query strings) leaking into
//! the audit trail.

use serde_json::Value;

/// Names whose values are never stored.
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "pass",
        "secret",
        "token",
        "auth",
        "key",
        "cookie",
        "credential",
        "session",
        "private",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// Values that look like credentials.
fn secret_value(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    v.starts_with("wdn_")
        || lower.starts_with("bearer ")
        || lower.starts_with("basic ")
        || v.starts_with("-----BEGIN")
        || ["ghp_", "gho_", "github_pat_", "xox", "sk-", "AKIA", "eyJ"]
            .iter()
            .any(|p| v.starts_with(p))
}

/// Redacts secret values: by argument name, by the input schema (`writeOnly`, `format:
/// password`) and by value shape. Nested objects and arrays are walked.
pub fn redact(arguments: &Value, schema: &Value) -> Value {
    fn walk(v: &Value, schema: Option<&Value>, name: Option<&str>) -> Value {
        let schema_secret = schema.is_some_and(|s| {
            s.get("writeOnly").and_then(Value::as_bool) == Some(true)
                || s.get("format").and_then(Value::as_str) == Some("password")
        });
        if schema_secret || name.is_some_and(secret_name) {
            return Value::String("[redacted]".into());
        }
        match v {
            Value::String(s) if secret_value(s) => Value::String("[redacted]".into()),
            Value::String(s) if s.contains("://") => Value::String(redact_url(s)),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| {
                        let sub = schema
                            .and_then(|s| s.get("properties"))
                            .and_then(|p| p.get(k));
                        (k.clone(), walk(v, sub, Some(k)))
                    })
                    .collect(),
            ),
            Value::Array(items) => {
                let sub = schema.and_then(|s| s.get("items"));
                Value::Array(items.iter().map(|i| walk(i, sub, None)).collect())
            }
            other => other.clone(),
        }
    }
    walk(arguments, Some(schema), None)
}

/// Redacts the credentials a URL can carry: the password of its user info, and query
/// parameters whose name or value looks secret (`?api_key=...`, `?token=...`,
/// `?x=ghp_...`). The rest of the URL stays readable.
fn redact_url(url: &str) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (url, None),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(url.len());
    // scheme://user:password@host/...: keep the user, drop the password.
    match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            out.push_str(scheme);
            out.push_str("://");
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                    out.push_str(user);
                    if userinfo.contains(':') {
                        out.push_str(":[redacted]");
                    }
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(base),
    }
    for (i, part) in [query, fragment].into_iter().enumerate() {
        let Some(part) = part else { continue };
        out.push(if i == 0 { '?' } else { '#' });
        let pairs: Vec<String> = part
            .split('&')
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
                let decoded: String = serde_urlencoded::from_str::<Vec<(String, String)>>(pair)
                    .ok()
                    .and_then(|v| v.into_iter().next())
                    .map_or_else(|| value.to_owned(), |(_, v)| v);
                if secret_name(name) || secret_value(&decoded) {
                    format!("{name}=[redacted]")
                } else {
                    pair.to_owned()
                }
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    out
}

/// BLAKE3 digest of the arguments in their canonical JSON form (RFC 8785, JCS): the same
/// arguments give the same digest whatever their key order or number spelling, so an
/// approval can be bound to it.
pub fn digest(arguments: &Value) -> String {
    let canonical = serde_json_canonicalizer::to_vec(arguments)
        .unwrap_or_else(|_| arguments.to_string().into_bytes());
    blake3::hash(&canonical).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn urls_keep_their_shape_but_not_their_credentials() {
        let schema = json!({});
        let args = json!({
            "url": "https://bob:hunter2@api.example.com/v1/x?page=2&api_key=abc123&sig=ghp_zzz#access_token=t0k",
            "plain": "https://example.com/a?b=c",
        });
        let r = redact(&args, &schema);
        let url = r["url"].as_str().unwrap();
        assert_eq!(
            url,
            "https://bob:[redacted]@api.example.com/v1/x?page=2&api_key=[redacted]&sig=[redacted]#access_token=[redacted]"
        );
        for secret in ["hunter2", "abc123", "ghp_zzz", "t0k"] {
            assert!(!r.to_string().contains(secret), "{secret} leaked: {r}");
        }
        assert_eq!(r["plain"], "https://example.com/a?b=c");
    }

    #[test]
    fn the_digest_is_canonical() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"y":[1,2],"x":"\u0041"}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"x":"A","y":[1,2]},"b":1.0}"#).unwrap();
        assert_eq!(digest(&a), digest(&b));
        assert_ne!(
            digest(&a),
            digest(&json!({"b": 2, "a": {"x": "A", "y": [1, 2]}}))
        );
    }
}

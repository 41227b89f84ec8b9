//! Masking of secret values in what leaves the host: a tool's result, its error, the
//! skill's log lines, an upstream response the skill reads, the audit record.
//!
//! Invariants: a value is matched in every encoding a careless skill or an echoing server
//! would produce (plain, standard and URL-safe base64 with and without padding, percent-
//! and form-encoding in upper and lower case, hex in both cases, JSON string escaping);
//! longer patterns are replaced first, so no fragment of a longer form survives; the
//! patterns live in wiped buffers and are never formatted; a value shorter than
//! [`MIN_SECRET_LEN`] is never stored (see the vault), so masking cannot shred ordinary text.
//!
//! Threat: a credential leaking back to the agent, the model or the trail because some
//! layer re-encoded it.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::Value;
use zeroize::Zeroizing;

/// Shortest secret value the vault stores (masking shorter strings would mangle text).
pub const MIN_SECRET_LEN: usize = 8;

/// Every encoding of one value to look for.
fn encodings(value: &[u8]) -> Vec<Zeroizing<Vec<u8>>> {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
    // The escaping sets encoders actually use: everything but letters and digits; RFC
    // 3986's unreserved characters; JavaScript's encodeURIComponent; Python's quote (which
    // keeps `/`).
    const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    const JS_COMPONENT: &AsciiSet = &UNRESERVED
        .remove(b'!')
        .remove(b'*')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')');
    const PYTHON_QUOTE: &AsciiSet = &UNRESERVED.remove(b'/');
    let mut out: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    let mut add = |bytes: Vec<u8>| {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() >= MIN_SECRET_LEN / 2 && !out.iter().any(|b| **b == *bytes) {
            out.push(bytes);
        }
    };
    add(value.to_vec());
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        add(engine.encode(value).into_bytes());
    }
    // Base64 of a longer text that holds the value (`user:password` in basic auth, a
    // token inside a JSON document): at each of the three byte alignments, the characters
    // that encode only the value's bits are the same whatever surrounds it.
    for offset in 0..3usize {
        let mut padded = Zeroizing::new(vec![0u8; offset]);
        padded.extend_from_slice(value);
        let encoded = Zeroizing::new(STANDARD_NO_PAD.encode(padded.as_slice()));
        let start = (offset * 8).div_ceil(6);
        let end = (padded.len() * 8) / 6;
        if end > start + MIN_SECRET_LEN {
            let core = &encoded.as_bytes()[start..end];
            add(core.to_vec());
            add(core
                .iter()
                .map(|b| match b {
                    b'+' => b'-',
                    b'/' => b'_',
                    other => *other,
                })
                .collect());
        }
    }
    for digits in [b"0123456789abcdef", b"0123456789ABCDEF"] {
        let mut hex = Vec::with_capacity(value.len() * 2);
        for b in value {
            hex.push(digits[usize::from(b >> 4)]);
            hex.push(digits[usize::from(b & 0x0f)]);
        }
        add(hex);
    }
    if let Ok(text) = std::str::from_utf8(value) {
        // Each escaping set only where the value has a character that set treats apart
        // (a value of letters and digits is its own percent-encoding).
        let has = |chars: &[u8]| text.bytes().any(|b| chars.contains(&b));
        let mut sets: Vec<&AsciiSet> = Vec::new();
        if !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
            sets.push(NON_ALPHANUMERIC);
            if has(b"-._~") {
                sets.push(UNRESERVED);
            }
            if has(b"-._~!*'()") {
                sets.push(JS_COMPONENT);
            }
            if has(b"-._~/") {
                sets.push(PYTHON_QUOTE);
            }
        }
        for set in sets {
            let pct = Zeroizing::new(utf8_percent_encode(text, set).to_string());
            if pct.bytes().any(|b| (b'A'..=b'F').contains(&b)) {
                add(lower_percent(&pct).into_bytes());
            }
            add(pct.as_bytes().to_vec());
            if text.contains(' ') {
                let form = pct.replace("%20", "+");
                add(lower_percent(&form).into_bytes());
                add(form.into_bytes());
            }
        }
        if text
            .bytes()
            .any(|b| b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b))
            && let Ok(json) = serde_json::to_string(text)
        {
            add(json.as_bytes()[1..json.len() - 1].to_vec());
        }
    }
    out
}

/// Percent escapes with lower-case hex digits.
fn lower_percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = 0usize;
    for c in s.chars() {
        if c == '%' {
            rest = 2;
            out.push(c);
        } else if rest > 0 {
            rest -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The values to mask, with the name each is replaced by.
#[derive(Default, Clone)]
pub struct Masker {
    /// (pattern, replacement), longest pattern first.
    patterns: Vec<(Zeroizing<Vec<u8>>, std::sync::Arc<str>)>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Masker({} patterns)", self.patterns.len())
    }
}

impl Masker {
    /// Adds `value` (and its encodings), to be replaced by `[masked:<label>]`.
    pub fn add(&mut self, label: &str, value: &[u8]) {
        // The same value again (a secret injected twice in one call): nothing new.
        if self.patterns.iter().any(|(p, _)| **p == *value) {
            return;
        }
        let replacement: std::sync::Arc<str> = format!("[masked:{label}]").into();
        for pattern in encodings(value) {
            if !self.patterns.iter().any(|(p, _)| **p == *pattern) {
                self.patterns.push((pattern, replacement.clone()));
            }
        }
        self.patterns
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    }

    /// Adds every pattern of `other` (the secrets of another grant used by the same call).
    pub fn merge(&mut self, other: &Masker) {
        for (pattern, replacement) in &other.patterns {
            if !self.patterns.iter().any(|(p, _)| **p == **pattern) {
                self.patterns.push((pattern.clone(), replacement.clone()));
            }
        }
        self.patterns
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `bytes` with every pattern replaced, or `None` when none occurs.
    pub fn mask_bytes(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let mut current: Option<Vec<u8>> = None;
        for (pattern, replacement) in &self.patterns {
            let haystack = current.as_deref().unwrap_or(bytes);
            if memchr::memmem::find(haystack, pattern).is_none() {
                continue;
            }
            let mut out = Vec::with_capacity(haystack.len());
            let mut at = 0;
            for hit in memchr::memmem::find_iter(haystack, pattern.as_slice()) {
                if hit < at {
                    continue;
                }
                out.extend_from_slice(&haystack[at..hit]);
                out.extend_from_slice(replacement.as_bytes());
                at = hit + pattern.len();
            }
            out.extend_from_slice(&haystack[at..]);
            current = Some(out);
        }
        current
    }

    /// `text` with every pattern replaced, or `None` when none occurs.
    pub fn mask_str(&self, text: &str) -> Option<String> {
        // Replacing whole UTF-8 patterns with ASCII keeps the text valid UTF-8; a pattern
        // cut inside a character cannot match, as patterns are whole encodings.
        self.mask_bytes(text.as_bytes())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// Masks `text` in place.
    pub fn mask_string(&self, text: &mut String) {
        if let Some(masked) = self.mask_str(text) {
            *text = masked;
        }
    }

    /// Masks every string (and object key) inside `value`.
    pub fn mask_value(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => self.mask_string(s),
            Value::Array(items) => items.iter_mut().for_each(|v| self.mask_value(v)),
            Value::Object(map) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for key in keys {
                    if let Some(mut v) = map.remove(&key) {
                        self.mask_value(&mut v);
                        let key = self.mask_str(&key).unwrap_or(key);
                        map.insert(key, v);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_encoding_is_masked() {
        let secret = "sk_live_canary+/=?& 42";
        let mut m = Masker::default();
        m.add("stripe_key", secret.as_bytes());
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        let forms = [
            secret.to_owned(),
            STANDARD.encode(secret),
            STANDARD_NO_PAD.encode(secret),
            URL_SAFE.encode(secret),
            URL_SAFE_NO_PAD.encode(secret),
            hex.clone(),
            hex.to_ascii_uppercase(),
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
            percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .replace("%20", "+")
                .to_ascii_lowercase(),
        ];
        for form in forms {
            let text = format!("before {form} after");
            let masked = m.mask_str(&text).unwrap();
            assert_eq!(masked, "before [masked:stripe_key] after", "{form}");
        }
        assert_eq!(m.mask_str("nothing here"), None);
        // Inside the base64 of a longer text, at every alignment.
        for prefix in ["", "u:", "us:", "use:"] {
            let text = STANDARD.encode(format!("{prefix}{secret}!"));
            let masked = m.mask_str(&text).unwrap();
            assert!(masked.contains("[masked:stripe_key]"), "{prefix}: {masked}");
        }
        let mut v = serde_json::json!({"a": [secret, {"k": format!("x{secret}y")}], secret: 1});
        m.mask_value(&mut v);
        let text = v.to_string();
        assert!(!text.contains("canary"), "{text}");
        assert!(!format!("{m:?}").contains("canary"));
    }
}

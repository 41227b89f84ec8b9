//! First-party skill `text`: deterministic text and data utilities that models are bad at
//! doing in their heads: exact counts, case conversion, base64, hashes, JSON pointers and
//! regular expressions (linear-time engine, size-limited, so a hostile pattern cannot hang
//! the call).

use ::base64::Engine as _;
use sha2::Digest as _;
use warden_sdk::prelude::*;

/// Largest input text accepted, in bytes.
const MAX_TEXT: usize = 4 * 1024 * 1024;
/// Compiled-regex size limit, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

fn check_len(text: &str) -> Result<(), ToolError> {
    if text.len() > MAX_TEXT {
        return Err(ToolError::invalid_arguments(format!(
            "text is larger than {MAX_TEXT} bytes"
        )));
    }
    Ok(())
}

/// A text argument.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TextArgs {
    /// The text.
    text: String,
}

/// Counts of a text.
#[derive(Serialize, JsonSchema)]
struct Stats {
    /// Unicode scalar values.
    chars: usize,
    /// UTF-8 bytes.
    bytes: usize,
    /// Whitespace-separated words.
    words: usize,
    /// Lines (a trailing newline does not start a new line).
    lines: usize,
}

/// Count the characters, bytes, words and lines of a text.
#[tool(read_only, idempotent)]
fn stats(args: TextArgs) -> Result<Stats, ToolError> {
    check_len(&args.text)?;
    let t = &args.text;
    Ok(Stats {
        chars: t.chars().count(),
        bytes: t.len(),
        words: t.split_whitespace().count(),
        lines: t.lines().count(),
    })
}

/// A case or whitespace transformation.
#[derive(Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Op {
    /// UPPER CASE
    Upper,
    /// lower case
    Lower,
    /// Title Case Of Each Word
    Title,
    /// snake_case
    Snake,
    /// kebab-case
    Kebab,
    /// Trim surrounding whitespace.
    Trim,
    /// Reverse the characters.
    Reverse,
}

/// Arguments of `transform`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct TransformArgs {
    /// The text.
    text: String,
    /// What to do.
    op: Op,
}

/// A text result.
#[derive(Serialize, JsonSchema)]
struct TextOut {
    /// The resulting text.
    text: String,
}

fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in text.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_numeric();
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Change the case of a text (upper, lower, title, snake, kebab), trim it or reverse it.
#[tool(read_only, idempotent)]
fn transform(args: TransformArgs) -> Result<TextOut, ToolError> {
    check_len(&args.text)?;
    let t = &args.text;
    let text = match args.op {
        Op::Upper => t.to_uppercase(),
        Op::Lower => t.to_lowercase(),
        Op::Trim => t.trim().to_owned(),
        Op::Reverse => t.chars().rev().collect(),
        Op::Title => t
            .split(' ')
            .map(|w| {
                let mut cs = w.chars();
                match cs.next() {
                    Some(f) => f.to_uppercase().chain(cs.flat_map(char::to_lowercase)).collect(),
                    None => String::new(),
                }
            })
            .collect::<Vec<String>>()
            .join(" "),
        Op::Snake => words(t).iter().map(|w| w.to_lowercase()).collect::<Vec<_>>().join("_"),
        Op::Kebab => words(t).iter().map(|w| w.to_lowercase()).collect::<Vec<_>>().join("-"),
    };
    Ok(TextOut { text })
}

/// Direction of `base64`.
#[derive(Deserialize, JsonSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// Text to base64.
    Encode,
    /// Base64 to text (must decode to UTF-8).
    Decode,
}

/// Arguments of `base64`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Base64Args {
    /// The input.
    text: String,
    /// Encode or decode.
    mode: Mode,
    /// Use the URL-safe alphabet without padding.
    #[serde(default)]
    url_safe: bool,
}

/// Encode text as base64, or decode base64 into text.
#[tool(read_only, idempotent, name = "base64")]
fn base64_codec(args: Base64Args) -> Result<TextOut, ToolError> {
    check_len(&args.text)?;
    let engine = if args.url_safe {
        ::base64::engine::general_purpose::URL_SAFE_NO_PAD
    } else {
        ::base64::engine::general_purpose::STANDARD
    };
    let text = match args.mode {
        Mode::Encode => engine.encode(args.text.as_bytes()),
        Mode::Decode => {
            let bytes = engine
                .decode(args.text.trim())
                .map_err(|e| ToolError::invalid_arguments(format!("not valid base64: {e}")))?;
            String::from_utf8(bytes)
                .map_err(|_| ToolError::invalid_arguments("decoded bytes are not UTF-8 text"))?
        }
    };
    Ok(TextOut { text })
}

/// Hash algorithms.
#[derive(Deserialize, JsonSchema, Clone, Copy, Default)]
#[serde(rename_all = "lowercase")]
enum Algorithm {
    /// SHA-256
    #[default]
    Sha256,
    /// SHA-512
    Sha512,
}

/// Arguments of `hash`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct HashArgs {
    /// The text to hash (its UTF-8 bytes).
    text: String,
    /// The algorithm (default sha256).
    #[serde(default)]
    algorithm: Algorithm,
}

/// A digest.
#[derive(Serialize, JsonSchema)]
struct HashOut {
    /// Lower-case hex digest.
    hex: String,
}

/// Hash a text with SHA-256 or SHA-512 and return the hex digest.
#[tool(read_only, idempotent)]
fn hash(args: HashArgs) -> Result<HashOut, ToolError> {
    check_len(&args.text)?;
    let bytes: Vec<u8> = match args.algorithm {
        Algorithm::Sha256 => sha2::Sha256::digest(args.text.as_bytes()).to_vec(),
        Algorithm::Sha512 => sha2::Sha512::digest(args.text.as_bytes()).to_vec(),
    };
    let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(HashOut { hex })
}

/// Arguments of `json_pointer`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PointerArgs {
    /// The JSON document.
    document: serde_json::Value,
    /// An RFC 6901 JSON Pointer, e.g. `/items/0/name` (empty string = the whole document).
    pointer: String,
}

/// The result of a lookup.
#[derive(Serialize, JsonSchema)]
struct PointerOut {
    /// Whether the pointer matched.
    found: bool,
    /// The value at the pointer (null when not found).
    value: serde_json::Value,
}

/// Extract the value at an RFC 6901 JSON Pointer from a JSON document.
#[tool(read_only, idempotent)]
fn json_pointer(args: PointerArgs) -> Result<PointerOut, ToolError> {
    if !args.pointer.is_empty() && !args.pointer.starts_with('/') {
        return Err(ToolError::invalid_arguments(
            "a JSON Pointer is empty or starts with '/'",
        ));
    }
    let value = args.document.pointer(&args.pointer).cloned();
    Ok(PointerOut {
        found: value.is_some(),
        value: value.unwrap_or(serde_json::Value::Null),
    })
}

/// Arguments of `regex_find`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct RegexArgs {
    /// The text to search.
    text: String,
    /// A regular expression (Rust `regex` syntax; no backreferences or lookaround).
    pattern: String,
    /// Most matches to return (default 100).
    #[schemars(range(min = 1, max = 10000))]
    limit: Option<usize>,
}

/// One match.
#[derive(Serialize, JsonSchema)]
struct Match {
    /// Byte offset of the start.
    start: usize,
    /// Byte offset of the end.
    end: usize,
    /// The matched text.
    text: String,
    /// Capture groups 1.. (null for groups that did not participate).
    groups: Vec<Option<String>>,
}

/// All matches.
#[derive(Serialize, JsonSchema)]
struct Matches {
    /// The matches, in order.
    matches: Vec<Match>,
    /// Whether more matches exist beyond `limit`.
    truncated: bool,
}

/// Find the matches of a regular expression in a text, with capture groups.
#[tool(read_only, idempotent)]
fn regex_find(args: RegexArgs) -> Result<Matches, ToolError> {
    check_len(&args.text)?;
    let re = regex::RegexBuilder::new(&args.pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| ToolError::invalid_arguments(format!("bad pattern: {e}")))?;
    let limit = args.limit.unwrap_or(100);
    let mut matches = Vec::new();
    let mut truncated = false;
    for caps in re.captures_iter(&args.text) {
        if matches.len() == limit {
            truncated = true;
            break;
        }
        let Some(m) = caps.get(0) else { continue };
        matches.push(Match {
            start: m.start(),
            end: m.end(),
            text: m.as_str().to_owned(),
            groups: caps
                .iter()
                .skip(1)
                .map(|g| g.map(|g| g.as_str().to_owned()))
                .collect(),
        });
    }
    Ok(Matches { matches, truncated })
}

warden_sdk::skill!(stats, transform, base64_codec, hash, json_pointer, regex_find);

//! serde_json's errors told as Go's encoding/json tells them (MobiledgeX's servers are Go: clients match
//! on these texts): where the input broke, in bytes, and Go's words for why.

/// A JSON error in Go's terms.
#[derive(Debug, PartialEq)]
pub enum GoJsonError {
    /// `SyntaxError`: `offset` is how many bytes were read, the bad one included.
    Syntax { offset: usize, message: String },
    /// `UnmarshalTypeError`: a value of the wrong JSON kind for a field.
    Type {
        expected: &'static str,
        got: &'static str,
        field: String,
        offset: usize,
    },
    /// Anything else (a missing field, an unknown enum value), serde's words without the position.
    Other(String),
}

/// Classifies `e`, an error of parsing `body`.
pub fn classify(body: &[u8], e: &serde_json::Error) -> GoJsonError {
    if e.is_eof() {
        return GoJsonError::Syntax {
            offset: body.len(),
            message: "unexpected end of JSON input".into(),
        };
    }
    // serde's position is the line and column (1-based) of the last character it read.
    let index = body
        .split_inclusive(|b| *b == b'\n')
        .take(e.line().saturating_sub(1))
        .map(<[u8]>::len)
        .sum::<usize>()
        + e.column().saturating_sub(1);
    let text = e.to_string();
    let text = text
        .rsplit_once(" at line ")
        .map_or(text.as_str(), |(t, _)| t);
    if e.is_syntax() {
        let c = body.get(index).copied().unwrap_or(b' ');
        return GoJsonError::Syntax {
            offset: index + 1,
            message: format!(
                "invalid character {} {}",
                quote(c),
                syntax_context(body, index, text)
            ),
        };
    }
    if let Some((got, expected)) = text
        .strip_prefix("invalid type: ")
        .and_then(|t| t.split_once(", expected "))
    {
        return GoJsonError::Type {
            expected: go_type(expected),
            got: json_kind(got),
            field: key_before(&body[..index.min(body.len())]),
            offset: index + 1,
        };
    }
    GoJsonError::Other(text.to_string())
}

/// Go's `quoteChar`.
fn quote(c: u8) -> String {
    match c {
        b'\'' => "'\\''".into(),
        b'"' => "'\"'".into(),
        0x20..=0x7e => format!("'{}'", c as char),
        _ => format!("'\\x{c:02x}'"),
    }
}

/// Go's words for where in the grammar the bad character came.
fn syntax_context(body: &[u8], index: usize, serde_text: &str) -> String {
    if serde_text.starts_with("expected ident") {
        // Inside `true`, `false` or `null`: which letter was due.
        let start = body[..index]
            .iter()
            .rposition(|b| matches!(b, b't' | b'f' | b'n'));
        if let Some(start) = start
            && let Some(word) = ["true", "false", "null"]
                .into_iter()
                .find(|w| w.as_bytes()[0] == body[start])
            && let Some(due) = word.as_bytes().get(index - start)
        {
            return format!("in literal {word} (expecting {})", quote(*due));
        }
    }
    let context = [
        ("expected `:`", "after object key"),
        ("expected `,` or `}`", "after object key:value pair"),
        (
            "key must be a string",
            "looking for beginning of object key string",
        ),
        ("expected `,` or `]`", "after array element"),
        ("trailing characters", "after top-level value"),
        ("control character", "in string literal"),
        ("invalid escape", "in string escape code"),
    ]
    .into_iter()
    .find(|(serde, _)| serde_text.starts_with(serde))
    .map_or("looking for beginning of value", |(_, go)| go);
    context.to_string()
}

/// The JSON kind serde saw, in Go's words.
fn json_kind(serde_unexpected: &str) -> &'static str {
    let s = serde_unexpected;
    if s.starts_with("integer") || s.starts_with("floating") {
        "number"
    } else if s.starts_with("string") {
        "string"
    } else if s.starts_with("boolean") {
        "bool"
    } else if s.starts_with("map") {
        "object"
    } else if s.starts_with("sequence") {
        "array"
    } else {
        "null"
    }
}

/// The Go type MobiledgeX's help names for what serde expected.
fn go_type(serde_expected: &str) -> &'static str {
    let s = serde_expected;
    if s.contains("string") || s.contains("char") {
        "string"
    } else if s.contains("bool") {
        "bool"
    } else if s.contains("f32") || s.contains("f64") || s.contains("float") {
        "float64"
    } else if s.contains("i8")
        || s.contains("i16")
        || s.contains("i32")
        || s.contains("i64")
        || s.contains("u8")
        || s.contains("u16")
        || s.contains("u32")
        || s.contains("u64")
        || s.contains("integer")
    {
        "int"
    } else if s.contains("sequence") || s.contains("vec") {
        "array"
    } else {
        "object"
    }
}

/// The last object key before a value that ends at the end of `before` (`"Name": 5` → `Name`).
fn key_before(before: &[u8]) -> String {
    let text = String::from_utf8_lossy(before);
    let Some(colon) = text.rfind(':') else {
        return String::new();
    };
    let key = text[..colon].trim_end();
    key.strip_suffix('"')
        .and_then(|k| k.rfind('"').map(|i| k[i + 1..].to_string()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> GoJsonError {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            #[serde(rename = "Name")]
            name: String,
            #[serde(rename = "Locked", default)]
            locked: bool,
        }
        classify(
            body.as_bytes(),
            &serde_json::from_str::<T>(body).unwrap_err(),
        )
    }

    fn syntax(offset: usize, message: &str) -> GoJsonError {
        GoJsonError::Syntax {
            offset,
            message: message.into(),
        }
    }

    #[test]
    fn errors_read_as_go_writes_them() {
        assert_eq!(
            err("x"),
            syntax(1, "invalid character 'x' looking for beginning of value")
        );
        assert_eq!(err(""), syntax(0, "unexpected end of JSON input"));
        assert_eq!(err("{\"Name\":"), syntax(8, "unexpected end of JSON input"));
        assert_eq!(
            err("{\"Name\" 1}"),
            syntax(9, "invalid character '1' after object key")
        );
        assert_eq!(
            err("{\"Name\":\"a\" \"b\"}"),
            syntax(13, "invalid character '\"' after object key:value pair")
        );
        assert_eq!(
            err("{\n\"Name\": nul}"),
            syntax(14, "invalid character '}' in literal null (expecting 'l')")
        );
        assert_eq!(
            err("{\"Name\": 5}"),
            GoJsonError::Type {
                expected: "string",
                got: "number",
                field: "Name".into(),
                offset: 10
            }
        );
        assert_eq!(
            err("{\"Name\": \"a\", \"Locked\": \"yes\"}"),
            GoJsonError::Type {
                expected: "bool",
                got: "string",
                field: "Locked".into(),
                offset: 29
            }
        );
        assert_eq!(err("{}"), GoJsonError::Other("missing field `Name`".into()));
    }
}

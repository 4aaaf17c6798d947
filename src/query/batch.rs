//! A large batch's values, shared by the blocking tasks that answer its parts.

use std::borrow::Cow;
use std::sync::Arc;

/// The values of one `POST /v1/lookup` body without a copy of each: spans of one shared copy
/// of the body for the values the JSON parse borrowed (those without escapes: almost all),
/// the decoded text for the others. A thousand small allocations and frees on the query
/// thread, which the tasks wait for, become one.
pub(crate) struct BatchValues {
    body: Option<Arc<str>>,
    values: Vec<Value>,
}

enum Value {
    Span(usize, usize),
    Own(Box<str>),
}

impl BatchValues {
    /// `values` as parsed from `body` (borrowing from it where they could).
    pub(crate) fn new(body: &[u8], values: Vec<Cow<'_, str>>) -> BatchValues {
        // A body serde_json parsed is UTF-8 (text outside strings is ASCII, strings are
        // checked); should it not be, every value is copied instead.
        let text = std::str::from_utf8(body).ok();
        let base = body.as_ptr() as usize;
        let values = values
            .into_iter()
            .map(|v| match v {
                Cow::Borrowed(s)
                    if text.is_some()
                        && (s.as_ptr() as usize) >= base
                        && s.as_ptr() as usize + s.len() <= base + body.len() =>
                {
                    let start = s.as_ptr() as usize - base;
                    Value::Span(start, start + s.len())
                }
                v => Value::Own(v.into_owned().into()),
            })
            .collect();
        BatchValues {
            body: text.map(Arc::from),
            values,
        }
    }

    /// Values `from..to` (clamped to the batch).
    pub(crate) fn part(&self, from: usize, to: usize) -> Vec<&str> {
        let to = to.min(self.values.len());
        self.values[from.min(to)..to]
            .iter()
            .map(|v| match v {
                // a span of a borrowed `&str` of this very text: always on char boundaries
                Value::Span(a, b) => self
                    .body
                    .as_deref()
                    .and_then(|t| t.get(*a..*b))
                    .unwrap_or(""),
                Value::Own(s) => s,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::handlers::parse_lookup_body;

    #[test]
    fn values_come_back_as_parsed_borrowed_or_not() {
        let body = br#"{"values":["a.example","q\"uo\\ted","10.0.0.1","\u00e9t\u00e9.example","","b\u00e9.example"]}"#;
        let parsed = parse_lookup_body(body, 10).unwrap();
        let want: Vec<String> = parsed.iter().map(|v| v.to_string()).collect();
        let borrowed = parsed
            .iter()
            .filter(|v| matches!(v, Cow::Borrowed(_)))
            .count();
        assert_eq!(borrowed, 3, "the test has both kinds");
        let b = BatchValues::new(body, parsed);
        assert_eq!(b.part(0, 99), want);
        assert_eq!(b.part(2, 4), want[2..4]);
        assert!(b.part(7, 9).is_empty());
        // values not borrowed from the body given are copied, never read out of it
        let other: Vec<Cow<'_, str>> = vec![Cow::Borrowed("x.example"), Cow::Owned("y".into())];
        assert_eq!(
            BatchValues::new(b"{}", other).part(0, 2),
            ["x.example", "y"]
        );
    }
}

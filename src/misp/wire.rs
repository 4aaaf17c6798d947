//! MISP's JSON as it really arrives: `/attributes/restSearch` pages, feed event files and feed
//! manifests. Numbers come as strings or integers, flags as bools, 0/1 or "0"/"1", tags may be
//! null, unknown keys are ignored. One malformed attribute is skipped and counted; a page that
//! is not JSON, or not of a known shape, is an error (never "the end").
//!
//! Pages and feed events are read in one pass by [`super::lenient`] first; the careful
//! decoders here read whatever it gives up on, so both always agree (tested there).

use super::lenient;
use crate::model::Attribute;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why a body could not be read as MISP data.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error(
        "invalid JSON at line {line} column {column}: {message} (truncated or corrupted response?)"
    )]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("unexpected JSON shape: {0}")]
    Shape(String),
}

impl From<serde_json::Error> for WireError {
    fn from(e: serde_json::Error) -> Self {
        WireError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        }
    }
}

/// Attributes decoded from one body, and how many rows were skipped as malformed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Decoded {
    pub attributes: Vec<Attribute>,
    /// Rows in the body (good and bad).
    pub rows: usize,
    /// Rows skipped because a field had the wrong type or a required one was missing.
    pub bad_rows: usize,
}

/// MISP's integers: a number, a numeric string (`"1700000000"`), `""` or null for none. Read
/// with a visitor, straight from the parser: no intermediate `Value` per field.
fn flex_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an integer, a numeric string or null")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("number out of range"))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.fract() == 0.0 && v.abs() < 9e15 {
                Ok(Some(v as i64))
            } else {
                Err(E::custom("number out of range"))
            }
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            s.parse().map(Some).map_err(|_| E::custom("not an integer"))
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_option(V)
}

/// MISP's flags: a boolean, 0/1, `"0"`/`"1"`/`"true"`/`"false"`/`""`, or null for none.
fn flex_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Option<bool>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a boolean, 0 or 1, or null")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            match v {
                0 => Ok(Some(false)),
                1 => Ok(Some(true)),
                _ => Err(E::custom("expected 0 or 1")),
            }
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(-1))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(E::custom("expected 0 or 1"))
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
            match s.trim() {
                "0" | "false" | "" => Ok(Some(false)),
                "1" | "true" => Ok(Some(true)),
                _ => Err(E::custom("expected a boolean")),
            }
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(V)
        }
    }
    d.deserialize_option(V)
}

fn null_vec<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

// The wire structs borrow their strings from the body where they can (no escapes): a row's
// text is copied once, into the model.

#[derive(Deserialize, Debug, Default)]
pub struct WireTag<'a> {
    #[serde(default, borrow)]
    pub name: Cow<'a, str>,
    #[serde(default, deserialize_with = "flex_bool")]
    pub inherited: Option<bool>,
}

/// The bits of a nested `Event` (restSearch `includeContext`/default, or a feed event) we use.
#[derive(Deserialize, Debug, Default)]
pub struct WireEventRef<'a> {
    #[serde(default, borrow)]
    pub uuid: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "flex_bool")]
    pub published: Option<bool>,
    #[serde(default, borrow, rename = "Tag", deserialize_with = "null_vec")]
    pub tags: Vec<WireTag<'a>>,
}

#[derive(Deserialize, Debug)]
pub struct WireAttribute<'a> {
    #[serde(borrow)]
    pub uuid: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    pub misp_type: Cow<'a, str>,
    #[serde(default, borrow)]
    pub category: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub value: Cow<'a, str>,
    #[serde(default, deserialize_with = "flex_bool")]
    pub to_ids: Option<bool>,
    #[serde(default, deserialize_with = "flex_bool")]
    pub deleted: Option<bool>,
    #[serde(default, deserialize_with = "flex_i64")]
    pub timestamp: Option<i64>,
    #[serde(default)]
    pub last_seen: Option<Value>,
    #[serde(default, borrow)]
    pub event_uuid: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "Event")]
    pub event: Option<WireEventRef<'a>>,
    #[serde(default, borrow, rename = "Tag", deserialize_with = "null_vec")]
    pub tags: Vec<WireTag<'a>>,
}

/// What a feed event file or restSearch row inherits from its event.
#[derive(Default, Clone, Copy)]
pub struct EventContext<'a> {
    pub uuid: Option<&'a str>,
    pub published: Option<bool>,
    pub tags: &'a [WireTag<'a>],
}

impl WireAttribute<'_> {
    /// Converts to the shared model. Tags: the attribute's own first, then inherited ones
    /// (restSearch marks them `inherited`), then the event's, without duplicates.
    pub fn into_model(self, ctx: EventContext<'_>) -> Attribute {
        self.into_model_with(ctx, &mut Shared::default())
    }

    /// [`WireAttribute::into_model`], taking the strings rows repeat from `shared`.
    pub(crate) fn into_model_with(self, ctx: EventContext<'_>, shared: &mut Shared) -> Attribute {
        let mut names: Vec<&str> = Vec::new();
        let own = self.tags.iter().filter(|t| t.inherited != Some(true));
        let inherited = self.tags.iter().filter(|t| t.inherited == Some(true));
        let event = self.event.iter().flat_map(|e| e.tags.iter());
        for t in own.chain(inherited).chain(event).chain(ctx.tags) {
            if !t.name.is_empty() && !names.contains(&&*t.name) {
                names.push(&t.name);
            }
        }
        let tags = shared.tags(&names);
        let event_uuid = self
            .event_uuid
            .as_deref()
            .filter(|u| !u.is_empty())
            .or_else(|| self.event.as_ref().and_then(|e| e.uuid.as_deref()))
            .or(ctx.uuid)
            .map(|e| shared.event(e));
        let event_published = self
            .event
            .as_ref()
            .and_then(|e| e.published)
            .or(ctx.published);
        let last_seen = match &self.last_seen {
            Some(Value::String(s)) => parse_iso8601(s),
            Some(Value::Number(n)) => n.as_i64().map(|v| {
                if v > 100_000_000_000 {
                    v / 1_000_000
                } else {
                    v
                }
            }),
            _ => None,
        };
        Attribute {
            uuid: self.uuid.into(),
            event_uuid,
            misp_type: shared.str(&self.misp_type),
            category: shared.str(self.category.as_deref().unwrap_or_default()),
            value: self.value.into(),
            to_ids: self.to_ids.unwrap_or(false),
            deleted: self.deleted.unwrap_or(false),
            timestamp: self.timestamp.unwrap_or(0),
            tags,
            last_seen,
            event_published,
        }
    }
}

/// The strings many rows of one body repeat (type, category, tag names, the tag list, the
/// event uuid), allocated once per body instead of once per row. Bounded: past `MAX` distinct
/// strings, new ones are allocated per row as before.
#[derive(Default)]
pub(crate) struct Shared {
    strings: Vec<Arc<str>>,
    tags: Option<Arc<[Arc<str>]>>,
    event: Option<Arc<str>>,
}

impl Shared {
    const MAX: usize = 64;

    fn str(&mut self, s: &str) -> Arc<str> {
        if let Some(x) = self.strings.iter().find(|x| ***x == *s) {
            return x.clone();
        }
        let x: Arc<str> = Arc::from(s);
        if self.strings.len() < Self::MAX {
            self.strings.push(x.clone());
        }
        x
    }

    /// The last tag list again when it is the same (rows of one event carry the same tags).
    fn tags(&mut self, names: &[&str]) -> Arc<[Arc<str>]> {
        if let Some(t) = &self.tags {
            if t.len() == names.len() && t.iter().zip(names).all(|(a, b)| **a == **b) {
                return t.clone();
            }
        }
        let t: Arc<[Arc<str>]> = names.iter().map(|n| self.str(n)).collect();
        self.tags = Some(t.clone());
        t
    }

    /// The last event uuid again when it is the same (a feed file, or an event's run of rows).
    fn event(&mut self, e: &str) -> Arc<str> {
        match &self.event {
            Some(x) if **x == *e => x.clone(),
            _ => {
                let x: Arc<str> = Arc::from(e);
                self.event = Some(x.clone());
                x
            }
        }
    }
}

/// Decodes rows one by one so that a malformed row is counted, not fatal.
fn decode_rows(rows: Vec<Value>, ctx: EventContext<'_>, out: &mut Decoded) {
    out.rows += rows.len();
    for row in rows {
        match WireAttribute::deserialize(row) {
            Ok(a) if !a.uuid.is_empty() && !a.misp_type.is_empty() => {
                out.attributes.push(a.into_model(ctx))
            }
            Ok(_) | Err(_) => out.bad_rows += 1,
        }
    }
}

fn take_array(v: &mut Value, what: &str) -> Result<Vec<Value>, WireError> {
    match v.take() {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(Vec::new()),
        other => Err(WireError::Shape(format!(
            "{what} is {} instead of an array",
            kind(&other)
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Decodes an `/attributes/restSearch` JSON body: `{"response":{"Attribute":[...]}}`, the
/// unwrapped `{"Attribute":[...]}` (what PyMISP hands around), or `{"response":[]}` (an empty
/// result from some versions).
pub fn decode_rest_search(body: &[u8]) -> Result<Decoded, WireError> {
    let fast = std::str::from_utf8(body)
        .ok()
        .and_then(lenient::rest_search);
    fast.map_or_else(|| decode_rest_search_careful(body), Ok)
}

/// Two passes: the rows are split out as raw text, then each is parsed on its own (a row
/// serde refuses is counted bad); bodies of other shapes go through a whole `Value` tree.
/// What [`decode_rest_search`] falls back to when its single pass gives up.
pub(super) fn decode_rest_search_careful(body: &[u8]) -> Result<Decoded, WireError> {
    if let Some(rows) = raw_rows(body) {
        let mut out = Decoded {
            rows: rows.len(),
            ..Decoded::default()
        };
        for row in rows {
            match serde_json::from_str::<WireAttribute>(row.get()) {
                Ok(a) if !a.uuid.is_empty() && !a.misp_type.is_empty() => {
                    out.attributes.push(a.into_model(EventContext::default()))
                }
                Ok(_) | Err(_) => out.bad_rows += 1,
            }
        }
        return Ok(out);
    }
    let mut v: Value = serde_json::from_slice(body)?;
    let mut inner = match v.get_mut("response") {
        Some(r) => r.take(),
        None => v,
    };
    let rows = match &mut inner {
        Value::Array(a) if a.is_empty() => Vec::new(),
        Value::Object(o) => match o.get_mut("Attribute") {
            Some(a) => take_array(a, "`Attribute`")?,
            None => {
                return Err(WireError::Shape(
                    "no `Attribute` list in the response".into(),
                ))
            }
        },
        other => return Err(WireError::Shape(format!("the response is {}", kind(other)))),
    };
    let mut out = Decoded::default();
    decode_rows(rows, EventContext::default(), &mut out);
    Ok(out)
}

/// The careful path's split of the usual shapes (`{"response":{"Attribute":[...]}}` or
/// `{"Attribute":[...]}`) into raw rows, each then parsed on its own. Anything unusual returns
/// `None` and goes through a whole `Value` tree, which gives the precise error.
fn raw_rows(body: &[u8]) -> Option<Vec<&serde_json::value::RawValue>> {
    use serde_json::value::RawValue;
    #[derive(Deserialize)]
    struct Rows<'a> {
        #[serde(borrow, rename = "Attribute")]
        attribute: Vec<&'a RawValue>,
        #[serde(default)]
        response: Present,
    }
    #[derive(Deserialize)]
    struct Wrapped<'a> {
        #[serde(borrow)]
        response: Rows<'a>,
    }
    let text = std::str::from_utf8(body).ok()?;
    if let Ok(w) = serde_json::from_str::<Wrapped>(text) {
        return Some(w.response.attribute);
    }
    let bare = serde_json::from_str::<Rows>(text).ok()?;
    // A body with a `response` key that did not parse above is not bare: let the careful path
    // judge it. The parser says whether the key is there, escaped (`respons\u0065`) or not.
    (!bare.response.0).then_some(bare.attribute)
}

/// Whether a key was present in an object, whatever its value (`null` included); read through
/// the parser, so an escaped spelling of the key counts too.
#[derive(Default)]
pub(super) struct Present(pub(super) bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de::IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

/// Decodes a feed event file `{"Event":{..., "Attribute":[...], "Object":[{"Attribute":[...]}]}}`
/// (the unwrapped event is accepted too). Attributes of objects are included; event tags are
/// inherited; `event_published` comes from `Event.published`.
pub fn decode_feed_event(body: &[u8]) -> Result<(Option<String>, Decoded), WireError> {
    lenient::feed_event(body).map_or_else(|| decode_feed_event_careful(body), Ok)
}

/// Through a whole `Value` tree: what [`decode_feed_event`] falls back to when its single
/// pass gives up (the unwrapped event, a shape it does not know, an error to report).
pub(super) fn decode_feed_event_careful(
    body: &[u8],
) -> Result<(Option<String>, Decoded), WireError> {
    let mut v: Value = serde_json::from_slice(body)?;
    // Anything that is not recognisably an event is an error, not an empty event: an empty
    // event would read as "all its attributes were deleted".
    let unwrapped =
        v.get("uuid").is_some() && (v.get("info").is_some() || v.get("Attribute").is_some());
    let mut event = match v.get_mut("Event") {
        Some(e) => e.take(),
        None if unwrapped => v,
        None => return Err(WireError::Shape("no `Event` object".into())),
    };
    let Value::Object(obj) = &mut event else {
        return Err(WireError::Shape(format!("the event is {}", kind(&event))));
    };
    let mut attrs = match obj.get_mut("Attribute") {
        Some(a) => take_array(a, "`Event.Attribute`")?,
        None => Vec::new(),
    };
    if let Some(objects) = obj.get_mut("Object") {
        for mut o in take_array(objects, "`Event.Object`")? {
            if let Some(a) = o.get_mut("Attribute") {
                attrs.extend(take_array(a, "`Object.Attribute`")?);
            }
        }
    }
    let head = WireEventRef::deserialize(event)
        .map_err(|e| WireError::Shape(format!("event header: {e}")))?;
    let ctx = EventContext {
        uuid: head.uuid.as_deref(),
        published: head.published,
        tags: &head.tags,
    };
    let mut out = Decoded::default();
    decode_rows(attrs, ctx, &mut out);
    Ok((head.uuid.map(Cow::into_owned), out))
}

#[derive(Deserialize)]
struct ManifestEntry {
    #[serde(default, deserialize_with = "flex_i64")]
    timestamp: Option<i64>,
}

/// Decodes a feed `manifest.json`: event uuid -> event timestamp. Entries with a bad uuid or
/// no usable timestamp are counted in the second value and left out.
pub fn decode_manifest(body: &[u8]) -> Result<(BTreeMap<String, i64>, usize), WireError> {
    let v: BTreeMap<String, Value> = serde_json::from_slice(body)?;
    let mut out = BTreeMap::new();
    let mut bad = 0;
    for (uuid, entry) in v {
        match serde_json::from_value::<ManifestEntry>(entry) {
            Ok(ManifestEntry {
                timestamp: Some(ts),
            }) if is_uuid(&uuid) => {
                out.insert(uuid.to_ascii_lowercase(), ts);
            }
            _ => bad += 1,
        }
    }
    Ok((out, bad))
}

/// `8-4-4-4-12` hex digits: the only event names a feed may use (no path tricks).
pub fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Parses MISP's ISO 8601 times (`2023-02-08T00:00:00.000000+00:00`, `...Z`, or a bare date)
/// to epoch seconds.
pub fn parse_iso8601(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = crate::tls::der::days_from_civil(y, mo, d) * 86_400;
    if b.len() == 10 {
        return Some(secs);
    }
    if !matches!(b[10], b'T' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    secs += num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?;
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    match rest.as_bytes() {
        [] | [b'Z'] => Some(secs),
        [sign @ (b'+' | b'-'), ..] => {
            let off = rest[1..].replace(':', "");
            if off.len() != 4 || !off.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let mins = off[..2].parse::<i64>().ok()? * 60 + off[2..].parse::<i64>().ok()?;
            Some(if *sign == b'+' {
                secs - mins * 60
            } else {
                secs + mins * 60
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag_names(tags: &[Arc<str>]) -> Vec<&str> {
        tags.iter().map(|t| &**t).collect()
    }

    #[test]
    fn iso_times() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_iso8601("2023-02-08T00:00:00.000000+00:00"),
            Some(1_675_814_400)
        );
        assert_eq!(
            parse_iso8601("2023-02-08T01:00:00+01:00"),
            Some(1_675_814_400)
        );
        assert_eq!(parse_iso8601("2023-02-08"), Some(1_675_814_400));
        assert_eq!(parse_iso8601("yesterday"), None);
        assert_eq!(parse_iso8601("2023-02-08T00:00:00+0"), None);
    }

    #[test]
    fn flexible_numbers_and_flags_from_text_and_from_values() {
        #[derive(Deserialize, Debug, PartialEq)]
        struct F {
            #[serde(default, deserialize_with = "flex_i64")]
            n: Option<i64>,
            #[serde(default, deserialize_with = "flex_bool")]
            b: Option<bool>,
        }
        type Want = Option<(Option<i64>, Option<bool>)>;
        let cases: &[(&str, Want)] = &[
            (r#"{}"#, Some((None, None))),
            (r#"{"n":null,"b":null}"#, Some((None, None))),
            (r#"{"n":17,"b":true}"#, Some((Some(17), Some(true)))),
            (r#"{"n":"17","b":"1"}"#, Some((Some(17), Some(true)))),
            (r#"{"n":" 17 ","b":"0"}"#, Some((Some(17), Some(false)))),
            (r#"{"n":"","b":""}"#, Some((None, Some(false)))),
            (r#"{"n":-5,"b":0}"#, Some((Some(-5), Some(false)))),
            (
                r#"{"n":1.7e9,"b":1}"#,
                Some((Some(1_700_000_000), Some(true))),
            ),
            (r#"{"n":"17"}"#, Some((Some(17), None))),
            (r#"{"b":"false"}"#, Some((None, Some(false)))),
            (r#"{"n":1.5}"#, None),
            (r#"{"n":18446744073709551615}"#, None),
            (r#"{"n":"x"}"#, None),
            (r#"{"n":true}"#, None),
            (r#"{"n":[1]}"#, None),
            (r#"{"b":2}"#, None),
            (r#"{"b":1.0}"#, None),
            (r#"{"b":"yes"}"#, None),
            (r#"{"b":{}}"#, None),
        ];
        for (text, want) in cases {
            let want = want.map(|(n, b)| F { n, b });
            let direct = serde_json::from_str::<F>(text).ok();
            assert_eq!(direct, want, "{text}");
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(
                serde_json::from_value::<F>(value).ok(),
                want,
                "{text} via Value"
            );
        }
    }

    #[test]
    fn flexible_fields_and_bad_rows() {
        let body = br#"{"response":{"Attribute":[
            {"uuid":"u1","type":"ip-dst","category":"Network activity","value":"192.0.2.1","to_ids":"1","deleted":0,"timestamp":1700000000,"Tag":null,"event_uuid":"e1"},
            {"uuid":"u2","type":"domain","value":"example.org","to_ids":true,"timestamp":"1700000001","last_seen":"2023-02-08T00:00:00.000000+00:00",
             "Tag":[{"name":"tlp:green","inherited":1},{"name":"own"}],"Event":{"uuid":"e2","published":true},"unknown":{"x":1}},
            {"uuid":"u3","type":"domain","value":"bad.example","timestamp":{"nested":true}},
            {"type":"domain","value":"no-uuid.example"},
            {"uuid":"u5","type":"domain","value":"x.example","to_ids":"maybe"}
        ]}}"#;
        let d = decode_rest_search(body).unwrap();
        assert_eq!((d.rows, d.bad_rows, d.attributes.len()), (5, 3, 2));
        let a = &d.attributes[0];
        assert!(a.to_ids && !a.deleted && a.tags.is_empty());
        assert_eq!(
            (a.timestamp, a.event_uuid.as_deref()),
            (1_700_000_000, Some("e1"))
        );
        let b = &d.attributes[1];
        assert_eq!(tag_names(&b.tags), vec!["own", "tlp:green"]);
        assert_eq!(b.event_uuid.as_deref(), Some("e2"));
        assert_eq!(b.event_published, Some(true));
        assert_eq!(b.last_seen, Some(1_675_814_400));
    }

    #[test]
    fn shapes() {
        assert_eq!(decode_rest_search(br#"{"response":[]}"#).unwrap().rows, 0);
        assert_eq!(
            decode_rest_search(br#"{"response":{"Attribute":[]}}"#)
                .unwrap()
                .rows,
            0
        );
        assert_eq!(
            decode_rest_search(br#"{"Attribute":[{"uuid":"a","type":"md5","value":"x"}]}"#)
                .unwrap()
                .rows,
            1
        );
        assert!(matches!(
            decode_rest_search(br#"{"response":{"Attribute":[{"uuid":"a""#),
            Err(WireError::Json { .. })
        ));
        assert!(matches!(
            decode_rest_search(br#"{"response":{}}"#),
            Err(WireError::Shape(_))
        ));
        assert!(matches!(
            decode_rest_search(br#"[1,2]"#),
            Err(WireError::Shape(_))
        ));
        assert!(matches!(
            decode_rest_search(br#"{"response":{"Attribute":{"a":1}}}"#),
            Err(WireError::Shape(_))
        ));
    }

    #[test]
    fn feed_event_with_objects_and_event_tags() {
        let body = br#"{"Event":{"uuid":"5dee939d-5e18-45cc-8be6-31abc0a8018c","info":"x","published":"1",
            "Tag":[{"name":"tlp:white"},{"name":"osint"}],
            "Attribute":[{"uuid":"a1","type":"md5","value":"d41d8cd98f00b204e9800998ecf8427e","to_ids":"1","timestamp":"1575909901",
                          "Tag":[{"name":"own"},{"name":"osint"}]}],
            "Object":[{"name":"file","Attribute":[{"uuid":"a2","type":"filename","value":"x.exe","timestamp":"1575909902"}]},
                      {"name":"empty"}]}}"#;
        let (uuid, d) = decode_feed_event(body).unwrap();
        assert_eq!(
            uuid.as_deref(),
            Some("5dee939d-5e18-45cc-8be6-31abc0a8018c")
        );
        assert_eq!((d.rows, d.bad_rows), (2, 0));
        let a = &d.attributes[0];
        assert_eq!(tag_names(&a.tags), vec!["own", "osint", "tlp:white"]);
        assert_eq!(a.event_published, Some(true));
        assert_eq!(a.event_uuid.as_deref(), uuid.as_deref());
        assert_eq!(tag_names(&d.attributes[1].tags), vec!["tlp:white", "osint"]);
        assert!(!d.attributes[1].to_ids);
    }

    #[test]
    fn things_that_are_not_events_are_errors() {
        for body in [
            &br#"{}"#[..],
            br#"{"response":[{"Event":{}}]}"#,
            br#"{"5dee939d-5e18-45cc-8be6-31abc0a8018c":{"timestamp":1}}"#,
            b"[]",
        ] {
            assert!(
                decode_feed_event(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // PyMISP's unwrapped event is accepted.
        let (u, d) = decode_feed_event(
            br#"{"uuid":"e","info":"i","Attribute":[{"uuid":"a","type":"md5","value":"v"}]}"#,
        )
        .unwrap();
        assert_eq!((u.as_deref(), d.rows), (Some("e"), 1));
    }

    #[test]
    fn every_truncation_of_a_real_page_is_an_error() {
        let body =
            include_bytes!("../../tests/fixtures/restsearch/demisto_search_attribute_by_type.json");
        let full = decode_rest_search(body).unwrap();
        assert_eq!(full.rows, 2);
        for cut in 0..body.len() - 1 {
            let prefix = &body[..cut];
            if prefix.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'}')
                && cut > body.len() - 4
            {
                continue; // only trailing whitespace is missing
            }
            assert!(decode_rest_search(prefix).is_err(), "cut at {cut} decoded");
        }
        let event = include_bytes!(
            "../../tests/fixtures/feed-infoblox/dad88707-beb8-4a14-94e2-5ffecf5a5f85.json"
        );
        for cut in (0..event.len() - 2).step_by(7) {
            assert!(
                decode_feed_event(&event[..cut]).is_err(),
                "cut at {cut} decoded"
            );
        }
    }

    #[test]
    fn real_fixture_bodies() {
        let stix = decode_rest_search(include_bytes!(
            "../../tests/fixtures/restsearch/misp-stix_test_attributes_collection_1.json"
        ))
        .unwrap();
        assert_eq!((stix.rows, stix.bad_rows), (2, 0));
        assert_eq!(&*stix.attributes[0].misp_type, "AS");
        assert_eq!(stix.attributes[0].timestamp, 1_603_642_920);
        let ev = include_bytes!(
            "../../tests/fixtures/events/PyMISP_57c4445b-c548-4654-af0b-4be3950d210f.json"
        );
        let (uuid, d) = decode_feed_event(ev).unwrap();
        assert_eq!(
            uuid.as_deref(),
            Some("57c4445b-c548-4654-af0b-4be3950d210f")
        );
        assert_eq!((d.rows, d.bad_rows), (9, 0));
        assert!(d.attributes.iter().any(|a| &*a.misp_type == "regkey|value"));
        let (m, bad) = decode_manifest(include_bytes!(
            "../../tests/fixtures/feed-infoblox/manifest.json"
        ))
        .unwrap();
        assert_eq!((m.len(), bad), (3, 0));
    }

    #[test]
    fn manifest_and_uuid() {
        let (m, bad) = decode_manifest(
            br#"{"5dee79d3-cc58-4c82-a7fd-31a9c0a8018c":{"timestamp":"1575909901"},
                 "0472809b-1582-4dde-88a9-d82848e9e660":{"timestamp":1700000000},
                 "../etc/passwd":{"timestamp":1}, "0472809b-1582-4dde-88a9-d82848e9e661":{}}"#,
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(bad, 2);
        assert!(is_uuid("0472809b-1582-4dde-88a9-d82848e9e660"));
        assert!(!is_uuid("0472809b-1582-4dde-88a9-d82848e9e66/"));
        assert!(!is_uuid("../../../../../../../../../../../etc"));
    }
}

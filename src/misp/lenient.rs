//! Single-pass decoding of MISP attribute rows, straight from the parser: a field of the wrong
//! type marks its row bad (the row is skipped and counted) without failing the page, while JSON
//! that does not parse still fails it. [`super::wire`] tries these first; whenever they give up
//! (an unusual shape, a positional row, anything refused), its careful decoders run instead, so
//! what a body decodes to never depends on which path read it.

use super::wire::{Decoded, EventContext, Present, Shared, WireAttribute, WireEventRef, WireTag};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// One JSON value as a field sees it: scalars kept (strings borrowed where they can be), arrays
/// and objects only consumed.
enum Any<'de> {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(Cow<'de, str>),
    Array,
    Object,
}

impl<'de> Deserialize<'de> for Any<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Any<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Any<'de>, E> {
                Ok(Any::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Any<'de>, E> {
                Ok(Any::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Any<'de>, D::Error> {
                Any::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Any<'de>, E> {
                Ok(Any::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Any<'de>, E> {
                Ok(Any::I64(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Any<'de>, E> {
                Ok(Any::U64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Any<'de>, E> {
                Ok(Any::F64(v))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Any<'de>, E> {
                Ok(Any::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Any<'de>, E> {
                Ok(Any::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Any<'de>, E> {
                Ok(Any::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Any<'de>, A::Error> {
                while s.next_element::<Checked>()?.is_some() {}
                Ok(Any::Array)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Any<'de>, A::Error> {
                while m.next_entry::<Checked, Checked>()?.is_some() {}
                Ok(Any::Object)
            }
        }
        d.deserialize_any(V)
    }
}

/// A value that is read and dropped, but read in full: strings unescaped, numbers parsed, as
/// building a `serde_json::Value` does (serde's `IgnoredAny` only skips, and lets a lone
/// surrogate escape or a number out of range through). Feed events are read that way by the
/// careful path, so their fast path must refuse what it refuses.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Checked;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Checked, A::Error> {
                while s.next_element::<Checked>()?.is_some() {}
                Ok(Checked)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Checked, A::Error> {
                while m.next_entry::<Checked, Checked>()?.is_some() {}
                Ok(Checked)
            }
        }
        d.deserialize_any(V)
    }
}

/// Skips a value the decoder does not use: fast for restSearch rows (the careful path parses
/// each row with serde, which skips the same way), in full for feed events (`LAST_WINS`).
fn skip<'de, A: MapAccess<'de>, const L: bool>(m: &mut A) -> Result<(), A::Error> {
    if L {
        m.next_value::<Checked>().map(drop)
    } else {
        m.next_value::<IgnoredAny>().map(drop)
    }
}

/// A field's value is of the wrong type: its row is bad.
struct Bad;

// The conversions below accept exactly what the wire module's serde fields accept.

fn text(v: Any<'_>) -> Result<Cow<'_, str>, Bad> {
    match v {
        Any::Str(s) => Ok(s),
        _ => Err(Bad),
    }
}

fn opt_text(v: Any<'_>) -> Result<Option<Cow<'_, str>>, Bad> {
    match v {
        Any::Null => Ok(None),
        v => text(v).map(Some),
    }
}

/// As `wire::flex_i64`.
fn flex_i64(v: Any<'_>) -> Result<Option<i64>, Bad> {
    match v {
        Any::Null => Ok(None),
        Any::I64(v) => Ok(Some(v)),
        Any::U64(v) => i64::try_from(v).map(Some).map_err(|_| Bad),
        Any::F64(v) if v.fract() == 0.0 && v.abs() < 9e15 => Ok(Some(v as i64)),
        Any::Str(s) => {
            let s = s.trim();
            if s.is_empty() {
                return Ok(None);
            }
            s.parse().map(Some).map_err(|_| Bad)
        }
        _ => Err(Bad),
    }
}

/// As `wire::flex_bool`.
fn flex_bool(v: Any<'_>) -> Result<Option<bool>, Bad> {
    let int = |v: i64| match v {
        0 => Ok(Some(false)),
        1 => Ok(Some(true)),
        _ => Err(Bad),
    };
    match v {
        Any::Null => Ok(None),
        Any::Bool(b) => Ok(Some(b)),
        Any::I64(v) => int(v),
        Any::U64(v) => int(i64::try_from(v).unwrap_or(-1)),
        Any::Str(s) => match s.trim() {
            "0" | "false" | "" => Ok(Some(false)),
            "1" | "true" => Ok(Some(true)),
            _ => Err(Bad),
        },
        _ => Err(Bad),
    }
}

/// `last_seen` as the `Option<Value>` the model conversion reads (it uses strings and numbers
/// only, so arrays and objects stand as empty ones).
fn any_value(v: Any<'_>) -> Option<Value> {
    Some(match v {
        Any::Null => return None,
        Any::Bool(b) => Value::Bool(b),
        Any::I64(v) => Value::from(v),
        Any::U64(v) => Value::from(v),
        Any::F64(v) => Value::from(v),
        Any::Str(s) => Value::String(s.into_owned()),
        Any::Array => Value::Array(Vec::new()),
        Any::Object => Value::Object(serde_json::Map::new()),
    })
}

/// The keys the decoders look at, read without allocating.
#[derive(Clone, Copy, PartialEq)]
enum Key {
    Uuid,
    Type,
    Category,
    Value,
    ToIds,
    Deleted,
    Timestamp,
    LastSeen,
    EventUuid,
    Event,
    Tag,
    Name,
    Inherited,
    Published,
    Attribute,
    Object,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "uuid" => Key::Uuid,
                    "type" => Key::Type,
                    "category" => Key::Category,
                    "value" => Key::Value,
                    "to_ids" => Key::ToIds,
                    "deleted" => Key::Deleted,
                    "timestamp" => Key::Timestamp,
                    "last_seen" => Key::LastSeen,
                    "event_uuid" => Key::EventUuid,
                    "Event" => Key::Event,
                    "Tag" => Key::Tag,
                    "name" => Key::Name,
                    "inherited" => Key::Inherited,
                    "published" => Key::Published,
                    "Attribute" => Key::Attribute,
                    "Object" => Key::Object,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

/// MISP never sends a struct as an array; serde would read one positionally. Rather than mirror
/// that, the fast path gives up and the careful decoder reads the body.
fn positional<E: de::Error>() -> E {
    E::custom("a positional struct; left to the careful decoder")
}

/// A field slot: `None` until its key is seen.
type Slot<T> = Option<Result<T, Bad>>;

/// Stores a field. With `last_wins` a repeated key replaces the earlier value (what reading the
/// row through a `serde_json::Value` does); without, it makes the row bad (what serde does).
fn put<T>(slot: &mut Slot<T>, v: Result<T, Bad>, last_wins: bool) {
    *slot = Some(if slot.is_some() && !last_wins {
        Err(Bad)
    } else {
        v
    });
}

/// An optional field: missing is the default, present must be good.
fn opt<T: Default>(slot: Slot<T>) -> Result<T, Bad> {
    slot.unwrap_or(Ok(T::default()))
}

/// A required field: missing is bad.
fn req<T>(slot: Slot<T>) -> Result<T, Bad> {
    slot.unwrap_or(Err(Bad))
}

struct TagSeed<const LAST_WINS: bool>;

impl<'de, const L: bool> DeserializeSeed<'de> for TagSeed<L> {
    type Value = Result<WireTag<'de>, Bad>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<const L: bool>;
        impl<'de, const L: bool> Visitor<'de> for V<L> {
            type Value = Result<WireTag<'de>, Bad>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a tag")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let (mut name, mut inherited) = (None, None);
                while let Some(k) = m.next_key::<Key>()? {
                    match k {
                        Key::Name => put(&mut name, text(m.next_value()?), L),
                        Key::Inherited => put(&mut inherited, flex_bool(m.next_value()?), L),
                        _ => skip::<_, L>(&mut m)?,
                    }
                }
                let tag = || {
                    Ok(WireTag {
                        name: opt(name)?,
                        inherited: opt(inherited)?,
                    })
                };
                Ok(tag())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(positional())
            }
        }
        // Anything but an object or an array is a bad tag (its scalar consumed).
        d.deserialize_any(Scalar(V::<L>))
    }
}

/// `Tag`: null for none, or an array of tags.
struct TagsSeed<const LAST_WINS: bool>;

impl<'de, const L: bool> DeserializeSeed<'de> for TagsSeed<L> {
    type Value = Result<Vec<WireTag<'de>>, Bad>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<const L: bool>;
        impl<'de, const L: bool> Visitor<'de> for V<L> {
            type Value = Result<Vec<WireTag<'de>>, Bad>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of tags or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Ok(Vec::new()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                let mut tags = Ok(Vec::new());
                while let Some(t) = s.next_element_seed(TagSeed::<L>)? {
                    match (&mut tags, t) {
                        (Ok(v), Ok(t)) => v.push(t),
                        (_, _) => tags = Err(Bad),
                    }
                }
                Ok(tags)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                while m.next_entry::<Checked, Checked>()?.is_some() {}
                Ok(Err(Bad))
            }
        }
        d.deserialize_any(Scalar(V::<L>))
    }
}

/// A row's `Event`: null for none, or an object.
struct EventSeed<const LAST_WINS: bool>;

impl<'de, const L: bool> DeserializeSeed<'de> for EventSeed<L> {
    type Value = Result<Option<WireEventRef<'de>>, Bad>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<const L: bool>;
        impl<'de, const L: bool> Visitor<'de> for V<L> {
            type Value = Result<Option<WireEventRef<'de>>, Bad>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Ok(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let (mut uuid, mut published, mut tags) = (None, None, None);
                while let Some(k) = m.next_key::<Key>()? {
                    match k {
                        Key::Uuid => put(&mut uuid, opt_text(m.next_value()?), L),
                        Key::Published => put(&mut published, flex_bool(m.next_value()?), L),
                        Key::Tag => put(&mut tags, m.next_value_seed(TagsSeed::<L>)?, L),
                        _ => skip::<_, L>(&mut m)?,
                    }
                }
                let event = || {
                    Ok(Some(WireEventRef {
                        uuid: opt(uuid)?,
                        published: opt(published)?,
                        tags: opt(tags)?,
                    }))
                };
                Ok(event())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(positional())
            }
        }
        d.deserialize_any(Scalar(V::<L>))
    }
}

/// One row: a good attribute or a bad row.
struct RowSeed<const LAST_WINS: bool>;

impl<'de, const L: bool> DeserializeSeed<'de> for RowSeed<L> {
    type Value = Result<WireAttribute<'de>, Bad>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<const L: bool>;
        impl<'de, const L: bool> Visitor<'de> for V<L> {
            type Value = Result<WireAttribute<'de>, Bad>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an attribute")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let (mut uuid, mut misp_type, mut category, mut value) = (None, None, None, None);
                let (mut to_ids, mut deleted, mut timestamp) = (None, None, None);
                let (mut last_seen, mut event_uuid, mut event, mut tags) = (None, None, None, None);
                while let Some(k) = m.next_key::<Key>()? {
                    match k {
                        Key::Uuid => put(&mut uuid, text(m.next_value()?), L),
                        Key::Type => put(&mut misp_type, text(m.next_value()?), L),
                        Key::Category => put(&mut category, opt_text(m.next_value()?), L),
                        Key::Value => put(&mut value, text(m.next_value()?), L),
                        Key::ToIds => put(&mut to_ids, flex_bool(m.next_value()?), L),
                        Key::Deleted => put(&mut deleted, flex_bool(m.next_value()?), L),
                        Key::Timestamp => put(&mut timestamp, flex_i64(m.next_value()?), L),
                        Key::LastSeen => put(&mut last_seen, Ok(any_value(m.next_value()?)), L),
                        Key::EventUuid => put(&mut event_uuid, opt_text(m.next_value()?), L),
                        Key::Event => put(&mut event, m.next_value_seed(EventSeed::<L>)?, L),
                        Key::Tag => put(&mut tags, m.next_value_seed(TagsSeed::<L>)?, L),
                        _ => skip::<_, L>(&mut m)?,
                    }
                }
                let row = || {
                    Ok(WireAttribute {
                        uuid: req(uuid)?,
                        misp_type: req(misp_type)?,
                        category: opt(category)?,
                        value: req(value)?,
                        to_ids: opt(to_ids)?,
                        deleted: opt(deleted)?,
                        timestamp: opt(timestamp)?,
                        last_seen: opt(last_seen)?,
                        event_uuid: opt(event_uuid)?,
                        event: opt(event)?,
                        tags: opt(tags)?,
                    })
                };
                Ok(row())
            }
            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(positional())
            }
        }
        d.deserialize_any(Scalar(V::<L>))
    }
}

/// Wraps a visitor of objects (and arrays): every other value is consumed and reads as `Err(Bad)`.
struct Scalar<V>(V);

macro_rules! bad_scalar {
    ($($name:ident($t:ty)),*) => {$(
        fn $name<E: de::Error>(self, _: $t) -> Result<Self::Value, E> {
            Ok(Err(Bad))
        }
    )*};
}

impl<'de, T, V: Visitor<'de, Value = Result<T, Bad>>> Visitor<'de> for Scalar<V> {
    type Value = Result<T, Bad>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }
    bad_scalar!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str)
    );
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        // Null: a visitor that accepts it (`Tag`, `Event`) says so; otherwise a bad value.
        self.0.visit_unit::<E>().or(Ok(Err(Bad)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(s)
    }
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(m)
    }
}

/// An `Attribute` list: the good rows, and how many rows there were.
pub(super) struct Rows<'de, const LAST_WINS: bool> {
    pub rows: usize,
    pub good: Vec<WireAttribute<'de>>,
}

// Generic over the borrowed lifetime as `&'a str` is, so `#[serde(borrow)]` fields can hold it.
impl<'de: 'a, 'a, const L: bool> Deserialize<'de> for Rows<'a, L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const L: bool>;
        impl<'de, const L: bool> Visitor<'de> for V<L> {
            type Value = Rows<'de, L>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of attributes")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                let mut out = Rows {
                    rows: 0,
                    good: Vec::with_capacity(s.size_hint().unwrap_or(0).min(16_384)),
                };
                while let Some(row) = s.next_element_seed(RowSeed::<L>)? {
                    out.rows += 1;
                    if let Ok(a) = row {
                        out.good.push(a);
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V::<L>)
    }
}

impl<const L: bool> Rows<'_, L> {
    /// Converts the good rows (those with a uuid and a type), counting the others as bad.
    fn into_decoded(self, ctx: EventContext<'_>, out: &mut Decoded, shared: &mut Shared) {
        out.rows += self.rows;
        out.bad_rows += self.rows - self.good.len();
        out.attributes.reserve(self.good.len());
        for a in self.good {
            if a.uuid.is_empty() || a.misp_type.is_empty() {
                out.bad_rows += 1;
            } else {
                out.attributes.push(a.into_model_with(ctx, shared));
            }
        }
    }
}

/// `{"response":{"Attribute":[...]}}` or `{"Attribute":[...]}` in one pass; `None` for anything
/// else, read by the careful path. Mirrors that path's shape checks (`wire::raw_rows`).
pub(super) fn rest_search(text: &str) -> Option<Decoded> {
    #[derive(Deserialize)]
    struct Bare<'a> {
        #[serde(borrow, rename = "Attribute")]
        attribute: Rows<'a, false>,
        #[serde(default)]
        response: Present,
    }
    #[derive(Deserialize)]
    struct Wrapped<'a> {
        #[serde(borrow)]
        response: Bare<'a>,
    }
    let rows = match serde_json::from_str::<Wrapped>(text) {
        Ok(w) => w.response.attribute,
        // A body with a `response` key (however spelled) that did not parse above is not bare.
        Err(_) => match serde_json::from_str::<Bare>(text).ok()? {
            Bare {
                response: Present(true),
                ..
            } => return None,
            bare => bare.attribute,
        },
    };
    let mut out = Decoded::default();
    rows.into_decoded(EventContext::default(), &mut out, &mut Shared::default());
    Some(out)
}

/// The parts of a feed event this reads: its header, its rows and its objects' rows.
struct FeedEvent<'de> {
    uuid: Option<Cow<'de, str>>,
    published: Option<bool>,
    tags: Vec<WireTag<'de>>,
    attributes: Option<Rows<'de, true>>,
    objects: Vec<Rows<'de, true>>,
}

/// The careful path reads a feed event through a `serde_json::Value`, where a repeated key
/// keeps its last value: rows here do the same (`LAST_WINS`). Anything the careful path would
/// refuse, or read differently, is an error here.
fn refuse<E: de::Error>(what: &str) -> E {
    E::custom(format!("{what}; left to the careful decoder"))
}

impl<'de> Deserialize<'de> for FeedEvent<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FeedEvent<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut ev = FeedEvent {
                    uuid: None,
                    published: None,
                    tags: Vec::new(),
                    attributes: None,
                    objects: Vec::new(),
                };
                let mut seen = Vec::new();
                while let Some(k) = m.next_key::<Key>()? {
                    if k != Key::Other {
                        if seen.contains(&(k as u8)) {
                            return Err(refuse("a repeated event key"));
                        }
                        seen.push(k as u8);
                    }
                    match k {
                        Key::Uuid => {
                            ev.uuid = opt_text(m.next_value()?).map_err(|_| refuse("uuid"))?
                        }
                        Key::Published => {
                            ev.published =
                                flex_bool(m.next_value()?).map_err(|_| refuse("published"))?
                        }
                        Key::Tag => {
                            ev.tags = m
                                .next_value_seed(TagsSeed::<true>)?
                                .map_err(|_| refuse("tags"))?
                        }
                        Key::Attribute => ev.attributes = m.next_value()?,
                        Key::Object => {
                            ev.objects = m.next_value::<Option<Objects>>()?.unwrap_or_default().0
                        }
                        _ => skip::<_, true>(&mut m)?,
                    }
                }
                Ok(ev)
            }
        }
        d.deserialize_map(V)
    }
}

/// `Event.Object`: the rows of each object; an entry that is not an object has none.
#[derive(Default)]
struct Objects<'de>(Vec<Rows<'de, true>>);

impl<'de> Deserialize<'de> for Objects<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Objects<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of objects")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(o) = s.next_element::<Object>()? {
                    out.extend(o.0);
                }
                Ok(Objects(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// One `Event.Object` entry: its `Attribute` rows, if it is an object that has them.
struct Object<'de>(Option<Rows<'de, true>>);

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let (mut rows, mut seen) = (None, false);
                while let Some(k) = m.next_key::<Key>()? {
                    if k == Key::Attribute {
                        if std::mem::replace(&mut seen, true) {
                            return Err(refuse("a repeated object key"));
                        }
                        rows = m.next_value::<Option<Rows<true>>>()?;
                    } else {
                        m.next_value::<Checked>()?;
                    }
                }
                Ok(Object(rows))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Self::Value, A::Error> {
                while s.next_element::<Checked>()?.is_some() {}
                Ok(Object(None))
            }
        }
        // Scalars are not objects either: consumed, no rows.
        d.deserialize_any(Skip(V))
    }
}

/// Wraps a visitor of objects and arrays: any other value is consumed and reads as the
/// visitor's empty answer.
struct Skip<V>(V);

macro_rules! skip_scalar {
    ($($name:ident($t:ty)),*) => {$(
        fn $name<E: de::Error>(self, _: $t) -> Result<Self::Value, E> {
            Ok(Object(None))
        }
    )*};
}

impl<'de, V: Visitor<'de, Value = Object<'de>>> Visitor<'de> for Skip<V> {
    type Value = Object<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.expecting(f)
    }
    skip_scalar!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str)
    );
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Object(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(s)
    }
    fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(m)
    }
}

/// `{"Event":{...}}` in one pass; `None` for anything else (the unwrapped event included), read
/// by the careful path.
pub(super) fn feed_event(body: &[u8]) -> Option<(Option<String>, Decoded)> {
    struct File<'de>(FeedEvent<'de>);
    impl<'de> Deserialize<'de> for File<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = File<'de>;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("an object with an event")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                    let mut event = None;
                    while let Some(k) = m.next_key::<Key>()? {
                        if k == Key::Event {
                            if event.is_some() {
                                return Err(refuse("a repeated `Event`"));
                            }
                            event = Some(m.next_value::<FeedEvent>()?);
                        } else {
                            m.next_value::<Checked>()?;
                        }
                    }
                    event.map(File).ok_or_else(|| refuse("no `Event`"))
                }
            }
            d.deserialize_map(V)
        }
    }
    let File(ev) = serde_json::from_slice::<File>(body).ok()?;
    let ctx = EventContext {
        uuid: ev.uuid.as_deref(),
        published: ev.published,
        tags: &ev.tags,
    };
    let mut out = Decoded::default();
    let mut shared = Shared::default();
    for rows in ev.attributes.into_iter().chain(ev.objects) {
        rows.into_decoded(ctx, &mut out, &mut shared);
    }
    Some((ev.uuid.as_deref().map(str::to_owned), out))
}

#[cfg(test)]
mod tests {
    use super::super::wire::{
        decode_feed_event, decode_feed_event_careful, decode_rest_search,
        decode_rest_search_careful,
    };
    use super::*;

    /// Same result, or the same error.
    fn same<T: PartialEq + fmt::Debug, E: fmt::Display>(a: Result<T, E>, b: Result<T, E>) {
        match (a, b) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!(
                "{:?} vs {:?}",
                a.map_err(|e| e.to_string()),
                b.map_err(|e| e.to_string())
            ),
        }
    }

    /// Both decoders on one restSearch body; whether the single pass read it.
    fn check_page(body: &[u8]) -> bool {
        same(decode_rest_search(body), decode_rest_search_careful(body));
        std::str::from_utf8(body)
            .ok()
            .and_then(rest_search)
            .is_some()
    }

    fn check_event(body: &[u8]) -> bool {
        same(decode_feed_event(body), decode_feed_event_careful(body));
        feed_event(body).is_some()
    }

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

    #[test]
    fn real_fixtures_decode_as_the_careful_decoders_decode_them() {
        for name in [
            "demisto_search_attribute_by_type.json",
            "misp-stix_test_attributes_collection_1.json",
            "misp-stix_test_attributes_collection_2.json",
        ] {
            let body = std::fs::read(format!("{FIXTURES}/restsearch/{name}")).unwrap();
            assert!(check_page(&body), "{name}: not read in one pass");
        }
        for name in [
            "PyMISP_reportlab_testfiles_long_event.json",
            "infoblox-sample.json",
            "events/PyMISP_57c4445b-c548-4654-af0b-4be3950d210f.json",
            "feed-infoblox/24e799ca-aad8-4244-8005-90b3ceb44540.json",
            "feed-infoblox/dad88707-beb8-4a14-94e2-5ffecf5a5f85.json",
            "feed-infoblox/f02183b6-33a0-4a69-bc22-7a0d5b034ab6.json",
        ] {
            let body = std::fs::read(format!("{FIXTURES}/{name}")).unwrap();
            assert!(check_event(&body), "{name}: not read in one pass");
            let (_, d) = decode_feed_event(&body).unwrap();
            assert!(!d.attributes.is_empty(), "{name}");
        }
    }

    /// Rows of every wrong shape this could think of, each alone on a page and in an event.
    const ROWS: &[&str] = &[
        r#"{"uuid":"u","type":"md5","value":"v"}"#,
        r#"{"uuid":"u","type":"md5","value":"v","uuid":"w"}"#,
        r#"{"uuid":"u","type":"md5","value":"v","to_ids":"1","to_ids":true}"#,
        r#"{"uuid":"u","type":"md5","value":"v","timestamp":{"x":1},"timestamp":"5"}"#,
        r#"{"uuid":"u","type":"md5","value":"v","other":1,"other":2}"#,
        r#"{"uuid":"","type":"md5","value":"v"}"#,
        r#"{"uuid":"u","type":"","value":"v"}"#,
        r#"{"uuid":"u","type":"md5"}"#,
        r#"{"uuid":"u","value":"v"}"#,
        r#"{"uuid":null,"type":"md5","value":"v"}"#,
        r#"{"uuid":1,"type":"md5","value":"v"}"#,
        r#"{"uuid":"u","type":"md5","value":["v"]}"#,
        r#"{"uuid":"u","type":"md5","value":"v","category":null}"#,
        r#"{"uuid":"u","type":"md5","value":"v","category":5}"#,
        r#"{"uuid":"u","type":"md5","value":"v","to_ids":2}"#,
        r#"{"uuid":"u","type":"md5","value":"v","to_ids":1.0}"#,
        r#"{"uuid":"u","type":"md5","value":"v","deleted":"true","to_ids":" 1 "}"#,
        r#"{"uuid":"u","type":"md5","value":"v","timestamp":1.5}"#,
        r#"{"uuid":"u","type":"md5","value":"v","timestamp":-3}"#,
        r#"{"uuid":"u","type":"md5","value":"v","timestamp":18446744073709551615}"#,
        r#"{"uuid":"u","type":"md5","value":"v","timestamp":" 12 ","last_seen":1700000000123456}"#,
        r#"{"uuid":"u","type":"md5","value":"v","last_seen":"2023-02-08"}"#,
        r#"{"uuid":"u","type":"md5","value":"v","last_seen":[1],"first_seen":{}}"#,
        r#"{"uuid":"u","type":"md5","value":"v","last_seen":true}"#,
        r#"{"uuid":"u","type":"md5","value":"v","last_seen":1.5e3}"#,
        r#"{"uuid":"u","type":"md5","value":"v","event_uuid":""}"#,
        r#"{"uuid":"u","type":"md5","value":"v","event_uuid":"","Event":{"uuid":"e2"}}"#,
        r#"{"uuid":"u","type":"md5","value":"v","event_uuid":7}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Event":null}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Event":"e"}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Event":{"uuid":null,"published":"0"}}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Event":{"published":"maybe"}}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Event":{"uuid":"a","uuid":"b"}}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Event":{"Tag":[{"name":"t"}]},"Tag":[{"name":"t"},{"name":"s","inherited":true}]}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Event":["e",true]}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Tag":null}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Tag":{}}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Tag":"tlp:white"}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Tag":[null]}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Tag":["tlp:white"]}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Tag":[{"name":null}]}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Tag":[{"name":"a","name":"b"}]}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Tag":[{"name":"a","inherited":"x"}]}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Tag":[{"colour":"white"},{"name":""},{"name":"a"},{"name":"a"}]}"#,
        r#"{"uuid":"u","type":"md5","value":"v","Tag":[["a",true]]}"#,
        r#"{"uuid":"u\u0031","type":"m\"d5","value":"v\\","typ\u0065":"sha1"}"#,
        r#"{"uuid":"u","type":"md5","value":"\ud800"}"#,
        r#"{"uuid":"u","type":"md5","value":"v","ignored":"\ud800"}"#,
        r#"["u","md5",null,"v"]"#,
        r#"["u","md5"]"#,
        r#"[]"#,
        r#"null"#,
        r#"5"#,
        r#""row""#,
        r#"{}"#,
    ];

    #[test]
    fn malformed_rows_decode_as_the_careful_decoders_decode_them() {
        let (mut fast_pages, mut fast_events) = (0, 0);
        let mut bad = 0;
        for row in ROWS {
            let page = format!(
                r#"{{"response":{{"Attribute":[{row},{{"uuid":"g","type":"md5","value":"x"}}]}}}}"#
            );
            fast_pages += usize::from(check_page(page.as_bytes()));
            bad += decode_rest_search(page.as_bytes()).map_or(0, |d| d.bad_rows);
            let bare = format!(r#"{{"Attribute":[{row}]}}"#);
            check_page(bare.as_bytes());
            let event = format!(
                r#"{{"Event":{{"uuid":"e","published":1,"Tag":[{{"name":"ev"}}],
                    "Object":[{{"Attribute":[{row}]}},3,null,[1],{{"name":"o"}}],"Attribute":[{row}]}}}}"#
            );
            fast_events += usize::from(check_event(event.as_bytes()));
        }
        // All but these were read in one pass: five positional structs and a lone surrogate
        // (and in an event, a lone surrogate in a key it does not use).
        assert_eq!(fast_pages, ROWS.len() - 6);
        assert_eq!(fast_events, ROWS.len() - 7);
        assert!(bad > ROWS.len() / 2, "{bad}");
    }

    const ESCAPED_RESPONSE: &str = r#"{"respons\u0065":{"Attribute":[{"uuid":"a","type":"ip-dst","value":"1.2.3.4"},{"uuid":"b","type":"ip-dst","value":"5.6.7.8","Event":[]}]},"Attribute":[]}"#;

    #[test]
    fn odd_bodies_decode_as_the_careful_decoders_decode_them() {
        for body in [
            r#"{"response":[]}"#,
            r#"{"response":{}}"#,
            r#"{"response":{"Attribute":null}}"#,
            r#"{"response":{"Attribute":{"a":1}}}"#,
            r#"{"response":{"Attribute":[]},"response":{"Attribute":[]}}"#,
            r#"{"Attribute":[],"note":"response"}"#,
            r#"{"Attribute":[],"x":"\"response\""}"#,
            r#"[{"Attribute":[{"uuid":"a","type":"md5","value":"x"}]}]"#,
            r#"{"response":{"Attribute":[{"uuid":"a","type":"md5","value":"x"}]}} x"#,
            r#"{"response":{"Attribute":[{"uuid":"a","type":"md5","value":"x"},]}}"#,
            // `response` spelled with an escape is still `response` (found in review: the
            // fast path used to read the empty top-level list instead)
            ESCAPED_RESPONSE,
            r#"{"respons\u0065":{"Attribute":[["a","ip-dst",null,"1.2.3.4"]]},"Attribute":[]}"#,
            r#"{"Attribute":[{"uuid":"a","type":"md5","value":"x"}],"response":null}"#,
            "",
        ] {
            check_page(body.as_bytes());
        }
        let d = super::super::wire::decode_rest_search(ESCAPED_RESPONSE.as_bytes()).unwrap();
        assert_eq!(
            (d.rows, d.attributes.len()),
            (2, 2),
            "the rows inside the escaped `response`, not the empty top-level list"
        );
        check_page(b"{\"Attribute\":[{\"uuid\":\"a\",\"type\":\"md5\",\"value\":\"\xff\"}]}");
        for body in [
            r#"{"Event":{"uuid":"e","Attribute":null,"Object":null}}"#,
            r#"{"Event":{"uuid":"e","Attribute":{}}}"#,
            r#"{"Event":{"uuid":"e","Object":[{"Attribute":5}]}}"#,
            r#"{"Event":{"uuid":"e","Object":{}}}"#,
            r#"{"Event":{"uuid":"e","uuid":"f","Attribute":[]}}"#,
            r#"{"Event":{"uuid":5,"Attribute":[]}}"#,
            r#"{"Event":{"uuid":"e","Tag":[5]}}"#,
            r#"{"Event":{"uuid":"e","Tag":[["t"]]}}"#,
            r#"{"Event":{"uuid":"e","published":"x"}}"#,
            r#"{"Event":{"uuid":"e"},"Event":{"uuid":"f"}}"#,
            r#"{"Event":null}"#,
            r#"{"Event":[{"uuid":"e"}]}"#,
            r#"{"uuid":"e","info":"i","Attribute":[{"uuid":"a","type":"md5","value":"v"}]}"#,
            r#"[{"Event":{"uuid":"e"}}]"#,
            r#"{"Event":{"uuid":"e","Attribute":[{"uuid":"a","type":"md5","value":"v"}]}"#,
        ] {
            check_event(body.as_bytes());
        }
    }

    /// Random fields of a real page's rows replaced by values of other types, removed, or
    /// repeated: both decoders agree on every one.
    #[test]
    fn mutated_real_rows_decode_as_the_careful_decoders_decode_them() {
        let body = std::fs::read(format!("{FIXTURES}/infoblox-sample.json")).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        let rows: Vec<Value> = v["Event"]["Attribute"].as_array().unwrap()[..40].to_vec();
        let keys = [
            "uuid",
            "type",
            "category",
            "value",
            "to_ids",
            "deleted",
            "timestamp",
            "last_seen",
            "event_uuid",
            "Event",
            "Tag",
        ];
        let others = [
            "null",
            "1",
            "0",
            "-1",
            "1.5",
            "2e3",
            "\"1\"",
            "\"\"",
            "\"x\"",
            "true",
            "[]",
            "{}",
            "[{\"name\":\"t\"}]",
            "{\"uuid\":\"e\",\"Tag\":[{\"name\":\"x\",\"inherited\":1}]}",
            "[{\"name\":5}]",
            "\"2023-02-08T00:00:00Z\"",
        ];
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut fast, mut bad) = (0, 0);
        for _ in 0..400 {
            let mut texts = Vec::new();
            for row in &rows {
                let mut row = row.clone();
                let obj = row.as_object_mut().unwrap();
                let key = keys[rng.usize(..keys.len())];
                let other = others[rng.usize(..others.len())];
                let mut text = match rng.u8(..3) {
                    0 => {
                        obj.insert(key.into(), serde_json::from_str(other).unwrap());
                        row.to_string()
                    }
                    1 => {
                        obj.remove(key);
                        row.to_string()
                    }
                    _ => row.to_string(),
                };
                if rng.u8(..4) == 0 {
                    text.insert_str(1, &format!("\"{key}\":{other},"));
                }
                texts.push(text);
            }
            let rows = texts.join(",");
            let page = format!(r#"{{"response":{{"Attribute":[{rows}]}}}}"#);
            fast += usize::from(check_page(page.as_bytes()));
            bad += decode_rest_search(page.as_bytes()).unwrap().bad_rows;
            let event = format!(
                r#"{{"Event":{{"uuid":"e","Tag":[{{"name":"x"}}],"Attribute":[{rows}],"Object":[{{"Attribute":[{rows}]}}]}}}}"#
            );
            check_event(event.as_bytes());
        }
        assert!(fast > 100, "{fast}");
        assert!(bad > 1000, "{bad}");
    }

    #[test]
    fn strings_rows_repeat_are_shared() {
        let body = br#"{"response":{"Attribute":[
            {"uuid":"a","type":"md5","category":"c","value":"1","event_uuid":"e","Tag":[{"name":"t"}]},
            {"uuid":"b","type":"md5","category":"c","value":"2","event_uuid":"e","Tag":[{"name":"t"}]},
            {"uuid":"c","type":"sha1","category":"c","value":"3","event_uuid":"f","Tag":[]}]}}"#;
        let d = rest_search(std::str::from_utf8(body).unwrap()).unwrap();
        let [a, b, c] = &d.attributes[..] else {
            panic!("{d:?}")
        };
        assert!(std::sync::Arc::ptr_eq(&a.misp_type, &b.misp_type));
        assert!(std::sync::Arc::ptr_eq(&a.category, &c.category));
        assert!(std::sync::Arc::ptr_eq(&a.tags, &b.tags));
        assert!(std::sync::Arc::ptr_eq(
            a.event_uuid.as_ref().unwrap(),
            b.event_uuid.as_ref().unwrap()
        ));
        assert_eq!(c.event_uuid.as_deref(), Some("f"));
        assert!(c.tags.is_empty() && &*c.misp_type == "sha1");
    }
}

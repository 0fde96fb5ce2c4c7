//! The fast path of [`super::parse`]: a serde deserializer straight over
//! the events of [`super::plain_yaml`], for the plain YAML rule files are
//! written in.
//!
//! It reads a document whose scalars are text, decimal numbers, or YAML
//! 1.2 Core booleans and nulls, and gives up at the first thing outside
//! that or the first error: [`super::parse`] then reads the file with
//! serde-saphyr, which has the last word on what the file means and says
//! where it is wrong. So nothing here needs an error message, and a value
//! read here must be the value serde-saphyr reads: the tests in
//! `config/mod.rs` (rule files) and `fast_tests.rs` (any document) hold it
//! to that.

use super::plain_yaml::{Event, GiveUp, Mark, Scanner};
use super::spanned::{self, Location};
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// serde-saphyr's budget of nodes, counted as it counts them (every
/// scalar, keys included, and every collection): a file over it goes to
/// serde-saphyr, which refuses it.
const MAX_NODES: usize = 250_000;

/// Reads `text` as a `T`, or `None` when serde-saphyr should read it.
pub(super) fn read<T: DeserializeOwned>(text: &str) -> Option<T> {
    let _reading = spanned::fast_read();
    let mut reader = Reader {
        scanner: Scanner::new(text)?,
        peeked: None,
        nodes: 0,
    };
    let value = T::deserialize(&mut reader).ok()?;
    matches!(reader.next().ok()?.0, Event::End).then_some(value)
}

/// The fast reader's error: serde's deserializers need one.
impl de::Error for GiveUp {
    fn custom<T: fmt::Display>(_: T) -> Self {
        GiveUp
    }
}

type Result<T> = std::result::Result<T, GiveUp>;

/// The first event of a node.
enum Node<'a> {
    /// A scalar's text, and whether it was plain.
    Scalar(Cow<'a, str>, bool),
    Mapping,
    Sequence,
}

struct Reader<'a> {
    scanner: Scanner<'a>,
    peeked: Option<(Event<'a>, Mark)>,
    nodes: usize,
}

impl<'a> Reader<'a> {
    fn peek(&mut self) -> Result<&Event<'a>> {
        if self.peeked.is_none() {
            self.peeked = Some(self.scanner.next()?);
        }
        self.peeked.as_ref().map(|(e, _)| e).ok_or(GiveUp)
    }

    fn next(&mut self) -> Result<(Event<'a>, Mark)> {
        match self.peeked.take() {
            Some(next) => Ok(next),
            None => self.scanner.next(),
        }
    }

    /// Where the next node starts, as serde-saphyr reports it (the line,
    /// and the column counted from 1).
    fn position(&mut self) -> Result<Location> {
        self.peek()?;
        let (_, mark) = self.peeked.as_ref().ok_or(GiveUp)?;
        Ok(self.scanner.location(*mark))
    }

    /// Takes the next node's first event; a collection is entered.
    fn node(&mut self) -> Result<Node<'a>> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(GiveUp);
        }
        match self.next()?.0 {
            Event::Scalar(text, plain) => Ok(Node::Scalar(text, plain)),
            Event::MappingStart => Ok(Node::Mapping),
            Event::SequenceStart => Ok(Node::Sequence),
            _ => Err(GiveUp),
        }
    }

    /// The next node's text, when it is a scalar that is text for every
    /// target: quoted, or plain and not a null.
    fn text(&mut self) -> Result<Cow<'a, str>> {
        match self.node()? {
            Node::Scalar(text, plain) if !plain || !is_null(&text) => Ok(text),
            _ => Err(GiveUp),
        }
    }

    /// The next node's text, when it is a plain scalar.
    fn plain(&mut self) -> Result<Cow<'a, str>> {
        match self.node()? {
            Node::Scalar(text, true) => Ok(text),
            _ => Err(GiveUp),
        }
    }

    fn mapping<'de, V: Visitor<'de>>(&mut self, visitor: V, keys: Keys<'a>) -> Result<V::Value> {
        let mut entries = Entries {
            reader: self,
            keys,
            done: false,
        };
        let value = visitor.visit_map(&mut entries)?;
        if entries.done { Ok(value) } else { Err(GiveUp) }
    }

    fn sequence<'de, V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let mut items = Items {
            reader: self,
            done: false,
        };
        let value = visitor.visit_seq(&mut items)?;
        // A tuple stops reading at its length: the end must come next.
        if items.done || self.end_of_collection()? {
            Ok(value)
        } else {
            Err(GiveUp)
        }
    }

    /// Whether the collection being read has another entry (`done` once
    /// its end is consumed; asking again is an error).
    fn more(&mut self, done: &mut bool) -> Result<bool> {
        if *done {
            return Err(GiveUp);
        }
        *done = self.end_of_collection()?;
        Ok(!*done)
    }

    /// Consumes the end of the collection being read, if it is next.
    fn end_of_collection(&mut self) -> Result<bool> {
        if matches!(self.peek()?, Event::MappingEnd | Event::SequenceEnd) {
            self.next()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn integer<'de, V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let text = self.plain()?;
        match decimal(&text).ok_or(GiveUp)? {
            Number::Signed(n) => visitor.visit_i64(n),
            Number::Unsigned(n) => visitor.visit_u64(n),
            Number::Float(_) => Err(GiveUp),
        }
    }

    fn visit_text<'de, V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        visitor.visit_str(&self.text()?)
    }

    fn float<'de, V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value> {
        let text = self.plain()?;
        match decimal(&text).ok_or(GiveUp)? {
            Number::Float(f) => visitor.visit_f64(f),
            _ => visitor.visit_f64(text.parse().map_err(|_| GiveUp)?),
        }
    }
}

/// The YAML 1.2 Core spellings of null (an empty plain scalar included).
fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// The YAML 1.2 Core booleans (serde-saphyr's `strict_booleans`).
fn boolean(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

enum Number {
    Signed(i64),
    Unsigned(u64),
    Float(f64),
}

/// A plain decimal number in its one unambiguous spelling: `0`, or digits
/// without a leading zero, optionally negative, optionally with a fraction
/// and an exponent. Other spellings (`+1`, `007`, `1_000`, `0x1F`, `.5`,
/// `.inf`) are serde-saphyr's to judge.
fn decimal(text: &str) -> Option<Number> {
    let digits = text.strip_prefix('-').unwrap_or(text).as_bytes();
    let whole = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if whole == 0 || (whole > 1 && digits[0] == b'0') {
        return None;
    }
    let rest = &digits[whole..];
    if rest.is_empty() {
        if text == "-0" {
            return None;
        }
        // serde-saphyr visits a non-negative integer as a `u64`.
        return if text.starts_with('-') {
            text.parse().ok().map(Number::Signed)
        } else {
            text.parse().ok().map(Number::Unsigned)
        };
    }
    let exponent = match rest {
        [b'.', fraction @ ..] => {
            let n = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
            if n == 0 {
                return None;
            }
            &fraction[n..]
        }
        _ => rest,
    };
    match exponent {
        [] => {}
        [b'e' | b'E', sign_and_digits @ ..] => {
            let digits = match sign_and_digits {
                [b'+' | b'-', d @ ..] => d,
                d => d,
            };
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
        }
        _ => return None,
    }
    let f: f64 = text.parse().ok()?;
    f.is_finite().then_some(Number::Float(f))
}

/// A plain scalar that serde-saphyr might read as something other than
/// text when the target takes anything: starts like a number or is a
/// spelling of a special value in some YAML version.
fn may_not_be_text(text: &str) -> bool {
    const WORDS: [&str; 12] = [
        "null", "true", "false", "yes", "no", "on", "off", "y", "n", "nan", "inf", "infinity",
    ];
    matches!(
        text.as_bytes().first(),
        None | Some(b'0'..=b'9' | b'+' | b'-' | b'.' | b'~' | b'<')
    ) || WORDS.iter().any(|w| text.eq_ignore_ascii_case(w))
}

/// Keys seen in a mapping read as a map (not a struct: serde's derive
/// refuses a repeated field itself), to give up on a repeated one.
enum Keys<'a> {
    Unchecked,
    /// A small mapping's keys, compared one by one.
    Few(Vec<Cow<'a, str>>),
    Many(HashSet<Cow<'a, str>>),
}

impl<'a> Keys<'a> {
    /// A map's keys, none seen yet.
    fn checked() -> Self {
        Keys::Few(Vec::new())
    }

    /// Notes `key`; false when it was seen before.
    fn insert(&mut self, key: Cow<'a, str>) -> bool {
        match self {
            Keys::Unchecked => true,
            Keys::Few(seen) if seen.contains(&key) => false,
            Keys::Few(seen) if seen.len() < 16 => {
                seen.push(key);
                true
            }
            Keys::Few(seen) => {
                let mut many: HashSet<_> = seen.drain(..).collect();
                many.insert(key);
                *self = Keys::Many(many);
                true
            }
            Keys::Many(seen) => seen.insert(key),
        }
    }
}

struct Entries<'r, 'a> {
    reader: &'r mut Reader<'a>,
    keys: Keys<'a>,
    done: bool,
}

impl<'de> MapAccess<'de> for Entries<'_, '_> {
    type Error = GiveUp;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !self.reader.more(&mut self.done)? {
            return Ok(None);
        }
        match self.reader.peek()? {
            // `<<` would be a merge key; numbers and nulls as keys compare
            // by value, not text.
            Event::Scalar(text, plain) if !*plain || !may_not_be_text(text) => {
                if !matches!(self.keys, Keys::Unchecked) && !self.keys.insert(text.clone()) {
                    return Err(GiveUp);
                }
            }
            _ => return Err(GiveUp),
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(&mut *self.reader)
    }
}

struct Items<'r, 'a> {
    reader: &'r mut Reader<'a>,
    done: bool,
}

impl<'de> SeqAccess<'de> for Items<'_, '_> {
    type Error = GiveUp;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !self.reader.more(&mut self.done)? {
            return Ok(None);
        }
        seed.deserialize(&mut *self.reader).map(Some)
    }
}

/// Deserializer methods that read with one of [`Reader`]'s helpers.
macro_rules! read_with {
    ($($helper:ident: $($method:ident),*;)*) => {
        $($(fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
            self.$helper(visitor)
        })*)*
    };
}

/// Gives up on a target the rule types do not use.
macro_rules! give_up {
    ($($method:ident $(($($arg:ty),*))?),* $(,)?) => {
        $(fn $method<V: Visitor<'de>>(self, $($(_: $arg,)*)? _: V) -> Result<V::Value> {
            Err(GiveUp)
        })*
    };
}

impl<'de> de::Deserializer<'de> for &mut Reader<'_> {
    type Error = GiveUp;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.node()? {
            Node::Mapping => self.mapping(visitor, Keys::checked()),
            Node::Sequence => self.sequence(visitor),
            Node::Scalar(text, true) => {
                if is_null(&text) {
                    return visitor.visit_unit();
                }
                if let Some(b) = boolean(&text) {
                    return visitor.visit_bool(b);
                }
                match decimal(&text) {
                    Some(Number::Signed(n)) => visitor.visit_i64(n),
                    Some(Number::Unsigned(n)) => visitor.visit_u64(n),
                    Some(Number::Float(f)) => visitor.visit_f64(f),
                    None if may_not_be_text(&text) => Err(GiveUp),
                    None => visitor.visit_str(&text),
                }
            }
            Node::Scalar(text, _) => visitor.visit_str(&text),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_bool(boolean(&self.plain()?).ok_or(GiveUp)?)
    }

    read_with! {
        integer: deserialize_i8, deserialize_i16, deserialize_i32, deserialize_i64,
            deserialize_u8, deserialize_u16, deserialize_u32, deserialize_u64;
        float: deserialize_f32, deserialize_f64;
        visit_text: deserialize_str, deserialize_string, deserialize_identifier;
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        if matches!(self.peek()?, Event::Scalar(text, true) if is_null(text)) {
            self.node()?;
            return visitor.visit_none();
        }
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name == spanned::FAST_SPANNED {
            spanned::set_fast_position(self.position()?);
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.node()? {
            Node::Sequence => self.sequence(visitor),
            _ => Err(GiveUp),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.node()? {
            Node::Mapping => self.mapping(visitor, Keys::checked()),
            _ => Err(GiveUp),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.node()? {
            Node::Mapping => self.mapping(visitor, Keys::Unchecked),
            _ => Err(GiveUp),
        }
    }

    give_up! {
        deserialize_char,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_unit,
        deserialize_ignored_any,
        deserialize_unit_struct(&'static str),
        deserialize_tuple_struct(&'static str, usize),
        deserialize_enum(&'static str, &'static [&'static str]),
    }
}

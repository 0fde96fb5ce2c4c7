//! The fast reader against serde-saphyr on YAML of every shape the
//! scanner (`plain_yaml.rs`) reads, not only rule files: random documents
//! in block and flow style, compact and same-indentation sequences,
//! comments, quoting and escapes, some with a random piece put in. Each
//! is read into a generic tree with the position of every node, and what
//! the fast reader reads must be what serde-saphyr reads.

use super::spanned::Spanned;
use super::{fast, serde_saphyr_options};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// Any YAML document, with the position of every key and value.
#[derive(Debug, PartialEq)]
enum Doc {
    Map(Vec<(Spanned<String>, Spanned<Doc>)>),
    Seq(Vec<Spanned<Doc>>),
    Text(String),
    Bool(bool),
    Signed(i64),
    Unsigned(u64),
    Float(f64),
    Null,
}

impl<'de> Deserialize<'de> for Doc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Doc, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Doc;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = map.next_key()? {
                    entries.push((k, map.next_value()?));
                }
                Ok(Doc::Map(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Doc::Seq(items))
            }
            fn visit_bool<E>(self, b: bool) -> Result<Doc, E> {
                Ok(Doc::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Doc, E> {
                Ok(Doc::Signed(n))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Doc, E> {
                Ok(Doc::Unsigned(n))
            }
            fn visit_f64<E>(self, n: f64) -> Result<Doc, E> {
                Ok(Doc::Float(n))
            }
            fn visit_str<E>(self, s: &str) -> Result<Doc, E> {
                Ok(Doc::Text(s.to_string()))
            }
            fn visit_unit<E>(self) -> Result<Doc, E> {
                Ok(Doc::Null)
            }
            fn visit_none<E>(self) -> Result<Doc, E> {
                Ok(Doc::Null)
            }
        }
        d.deserialize_any(V)
    }
}

/// Whether the fast reader read `text`; panics unless serde-saphyr reads
/// the same tree at the same positions.
fn agrees(text: &str) -> bool {
    let Some(fast) = fast::read::<Spanned<Doc>>(text) else {
        return false;
    };
    let slow = serde_saphyr::from_str_with_options::<Spanned<Doc>>(text, serde_saphyr_options())
        .map_err(|e| e.to_string());
    assert_eq!(
        Ok(&fast),
        slow.as_ref(),
        "the fast reader disagrees with serde-saphyr on:\n{text}"
    );
    true
}

/// A small deterministic generator (xorshift), so a failure repeats.
struct Random(u64);

impl Random {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

/// Scalars as a rule file might spell them, and the spellings that make
/// a scanner's life hard.
const SCALARS: &[&str] = &[
    "a",
    "b c",
    "api.example.com",
    "/api/v1",
    "^/x/[0-9]+$",
    "a,b",
    "x]",
    "it's",
    "say \"hi\"",
    "http://h:1/p",
    "x:y",
    "a#b",
    "-x",
    "-1",
    "1",
    "0",
    "42",
    "1.5",
    "-2.5e3",
    "true",
    "False",
    "null",
    "~",
    "é",
    "naïve text",
    "'q'",
    "'it''s'",
    "''",
    "\"d\"",
    "\"\"",
    "\"a\\tb\\n\"",
    "\"\\u00e9\\x41\\\\\\\"\"",
    "\"#x\"",
    "'a: b'",
    "\"[1]\"",
    "'{}'",
];

/// Scalars safe inside a flow collection.
const FLOW_SCALARS: &[&str] = &[
    "a", "b c", "x:y", "-1", "1", "2.5", "true", "null", "é", "'q'", "\"d,e\"", "'[x]'", "a#b",
];

const KEYS: &[&str] = &[
    "k", "name", "to", "key two", "'q k'", "\"d k\"", "x-y", "a.b", "é",
];

/// Pieces put in at random: each makes some documents invalid or changes
/// what they mean.
const PIECES: &[&str] = &[
    " ", "  ", "\n", "\n  ", ":", ": ", "-", "- ", "[", "]", "{", "}", ",", "#", " #c", "'", "\"",
    "?", "&a ", "*a", "!", "|", ">", "\t", "\\", "---\n", "...", "é", "\r",
];

struct Writer<'r> {
    random: &'r mut Random,
    out: String,
}

impl Writer<'_> {
    fn comment(&mut self) -> &'static str {
        if self.random.chance(15) { "  # c" } else { "" }
    }

    fn blank_lines(&mut self, indent: usize) {
        if self.random.chance(10) {
            self.out.push('\n');
        }
        if self.random.chance(10) {
            let at = self.random.below(indent + 2);
            self.out.push_str(&" ".repeat(at));
            self.out.push_str("# note\n");
        }
    }

    /// A value after `key:` or `- ` at `indent`, ending its lines.
    fn block_value(&mut self, indent: usize, depth: usize, in_seq: bool) {
        let choice = if depth >= 4 { 0 } else { self.random.below(7) };
        match choice {
            0 | 1 => {
                let s = self.random.pick(SCALARS);
                let c = self.comment();
                self.out.push_str(&format!(" {s}{c}\n"));
            }
            2 => {
                self.out.push(' ');
                self.flow(depth + 1, indent);
                let c = self.comment();
                self.out.push_str(&format!("{c}\n"));
            }
            3 => {
                let c = self.comment();
                self.out.push_str(&format!("{c}\n"));
                let more = self.random.below(3) + 1;
                self.block_map(indent + more, depth + 1, false);
            }
            4 => {
                let c = self.comment();
                self.out.push_str(&format!("{c}\n"));
                // A sequence may sit at its key's own indentation.
                let more = if in_seq { 1 } else { 0 } + self.random.below(3);
                self.block_seq(indent + more, depth + 1);
            }
            5 if in_seq => {
                // A compact mapping: its first key on the `- ` line.
                self.out.push(' ');
                self.block_map(indent + 2, depth + 1, true);
            }
            5 => self.out.push('\n'),
            _ => {
                // Empty: a null.
                if self.random.chance(50) {
                    self.out.push(' ');
                }
                self.out.push('\n');
            }
        }
    }

    fn block_map(&mut self, indent: usize, depth: usize, compact: bool) {
        let n = self.random.below(3) + 1;
        for i in 0..n {
            if i > 0 || !compact {
                if i > 0 {
                    self.blank_lines(indent);
                }
                self.out.push_str(&" ".repeat(indent));
            }
            let key = if n > 1 {
                format!("k{i}")
            } else {
                self.random.pick(KEYS).to_string()
            };
            let space = if self.random.chance(10) { " " } else { "" };
            self.out.push_str(&format!("{key}{space}:"));
            self.block_value(indent, depth, false);
        }
    }

    fn block_seq(&mut self, indent: usize, depth: usize) {
        let n = self.random.below(3) + 1;
        for i in 0..n {
            if i > 0 {
                self.blank_lines(indent);
            }
            self.out.push_str(&" ".repeat(indent));
            self.out.push('-');
            self.block_value(indent, depth, true);
        }
    }

    fn flow(&mut self, depth: usize, indent: usize) {
        let map = self.random.chance(50);
        self.out.push(if map { '{' } else { '[' });
        let n = self.random.below(4);
        for i in 0..n {
            if i > 0 {
                self.out.push(',');
            }
            self.flow_space(indent);
            if map {
                let key = self.random.pick(KEYS);
                self.out.push_str(&format!("{key}: "));
            }
            if depth < 4 && self.random.chance(20) {
                self.flow(depth + 1, indent);
            } else {
                let s = self.random.pick(FLOW_SCALARS);
                self.out.push_str(s);
            }
        }
        if n > 0 && self.random.chance(15) {
            self.out.push(',');
        }
        self.flow_space(indent);
        self.out.push(if map { '}' } else { ']' });
    }

    fn flow_space(&mut self, indent: usize) {
        match self.random.below(8) {
            0 => {
                let at = indent + self.random.below(3);
                self.out.push('\n');
                self.out.push_str(&" ".repeat(at));
            }
            1 => {
                let at = indent + 1 + self.random.below(3);
                self.out.push_str(" # c\n");
                self.out.push_str(&" ".repeat(at));
            }
            2..=4 => self.out.push(' '),
            _ => {}
        }
    }

    fn document(&mut self) {
        if self.random.chance(20) {
            self.out.push_str("# a rule file\n");
        }
        let indent = self.random.below(2);
        match self.random.below(6) {
            0 => self.block_seq(indent, 0),
            1 => {
                self.flow(0, 0);
                self.out.push('\n');
            }
            _ => self.block_map(indent, 0, false),
        }
    }
}

/// A random document, and sometimes a random piece put in it.
fn random_document(random: &mut Random) -> String {
    let mut writer = Writer {
        random,
        out: String::new(),
    };
    writer.document();
    let mut text = writer.out;
    if random.chance(30) {
        let piece = random.pick(PIECES);
        let mut at = random.below(text.len() + 1);
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.insert_str(at, piece);
    }
    text
}

#[test]
fn fast_reader_agrees_on_random_documents() {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    let total = 20_000;
    let read = (0..total)
        .filter(|_| agrees(&random_document(&mut random)))
        .count();
    // Most documents are valid YAML the scanner reads (some scalars, like
    // `-x` as a value of any type, are left to serde-saphyr).
    assert!(read * 2 > total, "{read} of {total} read");
}

#[test]
fn fast_reader_reads_every_shape_it_claims() {
    for text in [
        "a: 1\nb:\n  c: x\n  d: [1, 2]\n",
        // A sequence at its key's indentation, then the next key.
        "a:\n- 1\n- x: u\n  z: w\nb: 2\n",
        // Compact mappings and sequences.
        "- a: 1\n  b: 2\n- - x\n  - z\n-\n  c: 3\n-\n",
        // Flow over several lines, with comments and a trailing comma.
        "a: {b: 1, # c\n  c: [x,\n    z,],\n  }\nd: e\n",
        // Comments everywhere, and a key spaced from its colon.
        "# top\na : 1 # one\n\n  # indented\nb: 'x' # two\n",
        // Escapes.
        "a: \"\\u00e9\\t\\\\\\\"\\/\"\nb: 'it''s'\n",
        // Empty values.
        "a:\nb:   \nc: # note\nd: ~\n",
        // Columns counted in characters, on and on along one line.
        "é: [é, b, {é: c, d: é}, 'é', e]\n",
    ] {
        assert!(agrees(text), "the fast reader left alone:\n{text}");
    }
}

#[test]
fn fast_reader_leaves_what_it_does_not_read() {
    for text in [
        // A scalar over two lines, in block and in flow style.
        "a: b\n  c\n",
        "a: [b\n  c]\n",
        "a: \"b\n  c\"\n",
        // Block scalars.
        "a: |\n  b\n",
        "a: >-\n  b\n",
        // Document markers and directives.
        "---\na: 1\n",
        "%YAML 1.2\n---\na: 1\n",
        "a: 1\n...\n",
        // Tabs, carriage returns and a byte order mark.
        "a:\t1\n",
        "a: 1\r\n",
        "\u{feff}a: 1\n",
        // Complex and flow keys.
        "? a\n: 1\n",
        "{a: 1}: 2\n",
        "[a]: 2\n",
        // A flow entry without a value, and a single-pair mapping in a
        // sequence.
        "a: {b}\n",
        "a: [b: c]\n",
    ] {
        assert!(!agrees(text), "the fast reader read:\n{text}");
    }
}

#[test]
fn deep_nesting_is_left_to_serde_saphyr() {
    let nested = |depth: usize| format!("{}x{}\n", "[".repeat(depth), "]".repeat(depth));
    assert!(agrees(&nested(48)), "48 levels are read");
    assert!(!agrees(&nested(49)), "49 levels are left alone");
}

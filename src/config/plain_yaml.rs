//! The events of a rule file in plain YAML, for the fast reader
//! (`fast.rs`): block and flow mappings and sequences, comments, and
//! scalars on one line each (plain, single- or double-quoted).
//!
//! A YAML parser that reads everything pays for it: granit-parser
//! (serde-saphyr's parser) spent more than half of a 10,000-route reload
//! on its scan, a third of that moving tokens through its queue to
//! resolve keys it could not yet tell from values. Plain rule files need
//! none of that: a key sits on one line, so one look ahead of the scalar
//! finds its `:`. This scanner reads that subset and gives up on anything
//! else (anchors, tags, block scalars, scalars over several lines,
//! directives, document markers, tabs, control characters, and every
//! error), for serde-saphyr to read. So it never needs an error message,
//! and what it reads must be what serde-saphyr reads, positions included:
//! `fast_tests.rs` holds it to that on random documents of every shape it
//! reads, and `config::fast_reader_agrees` on rule files (the tests, the
//! fuzz target, and every file a debug build reads).

use super::spanned::Location;
use std::borrow::Cow;
use std::fmt;

/// Why the scanner or the fast reader stopped; never shown (serde-saphyr
/// says why).
#[derive(Debug)]
pub(super) struct GiveUp;

impl fmt::Display for GiveUp {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("left to serde-saphyr")
    }
}

impl std::error::Error for GiveUp {}

type Result<T> = std::result::Result<T, GiveUp>;

/// One step through a document.
#[derive(Debug)]
pub(super) enum Event<'a> {
    MappingStart,
    MappingEnd,
    SequenceStart,
    SequenceEnd,
    /// A scalar's text, and whether it was plain (not quoted).
    Scalar(Cow<'a, str>, bool),
    /// The end of the document.
    End,
}

/// Where an event starts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Mark {
    offset: usize,
    line: u32,
    line_start: usize,
}

/// Deeper nesting is given up on, for serde-saphyr to read (its budget
/// stops at 64).
const MAX_DEPTH: usize = 48;

/// YAML's limit on an implicit key, in characters.
const MAX_KEY_LEN: usize = 1024;

/// What the scanner is inside of, innermost last.
#[derive(Clone, Copy)]
enum Context {
    /// A block mapping with its keys at `indent`; `value_next` after a
    /// key's `:`.
    BlockMap { indent: usize, value_next: bool },
    /// A block sequence with its `-` at `indent`.
    BlockSeq { indent: usize },
    /// A flow mapping (`{`) or sequence (`[`).
    Flow { map: bool, next: FlowNext },
}

/// What a flow collection takes next.
#[derive(Clone, Copy, PartialEq)]
enum FlowNext {
    /// An entry (a key, or a sequence's item) or the end.
    Entry,
    /// A mapping's value, after its `:`.
    Value,
    /// A `,` or the end.
    Separator,
}

/// Reads the events of one document; see the module doc.
pub(super) struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    /// The 1-based line at `pos`, and where it starts.
    line: u32,
    line_start: usize,
    stack: Vec<Context>,
    started: bool,
    /// The last place [`Self::location`] counted to, and its column.
    counted: Option<(usize, usize)>,
}

impl<'a> Scanner<'a> {
    /// A scanner of `text`, or `None` when the text has characters it
    /// leaves to serde-saphyr (tabs, carriage returns, controls, a byte
    /// order mark, and the characters YAML 1.1 and 1.2 disagree on).
    pub(super) fn new(text: &'a str) -> Option<Self> {
        let bytes = text.as_bytes();
        if bytes.iter().any(|&b| (b < 0x20 && b != b'\n') || b == 0x7f) {
            return None;
        }
        if !text.is_ascii() && text.chars().any(left_to_serde_saphyr) {
            return None;
        }
        Some(Scanner {
            text,
            bytes,
            pos: 0,
            line: 1,
            line_start: 0,
            stack: Vec::new(),
            started: false,
            counted: None,
        })
    }

    /// Where `mark` is, as serde-saphyr reports it: the 1-based line and
    /// the 1-based column counted in characters. Counts on from the last
    /// place asked for on the same line, so a long line costs its length
    /// once, not once a node.
    pub(super) fn location(&mut self, mark: Mark) -> Location {
        let (from, counted) = match self.counted {
            Some((offset, column)) if mark.line_start <= offset && offset <= mark.offset => {
                (offset, column)
            }
            _ => (mark.line_start, 0),
        };
        let between = &self.text[from..mark.offset];
        let column = counted
            + if between.is_ascii() {
                between.len()
            } else {
                between.chars().count()
            };
        self.counted = Some((mark.offset, column));
        Location::at(u64::from(mark.line), column as u64 + 1)
    }

    /// The next event.
    pub(super) fn next(&mut self) -> Result<(Event<'a>, Mark)> {
        match self.stack.last().copied() {
            None if !self.started => {
                self.started = true;
                let col = self.content()?.ok_or(GiveUp)?;
                self.block_node(col, true)
            }
            None => match self.content()? {
                None => Ok((Event::End, self.mark())),
                Some(_) => Err(GiveUp),
            },
            Some(Context::BlockMap { indent, value_next }) => {
                if value_next {
                    self.set_top(Context::BlockMap {
                        indent,
                        value_next: false,
                    });
                    self.block_value(indent)
                } else {
                    self.block_key(indent)
                }
            }
            Some(Context::BlockSeq { indent }) => self.block_item(indent),
            Some(Context::Flow { map, next }) => self.flow(map, next),
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            offset: self.pos,
            line: self.line,
            line_start: self.line_start,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<u8> {
        self.bytes.get(self.pos + ahead).copied()
    }

    /// The column of `pos` (its byte offset in the line: only spaces, `-`
    /// and `{`/`[` come before a node whose column matters).
    fn col(&self) -> usize {
        self.pos - self.line_start
    }

    fn set_top(&mut self, context: Context) {
        if let Some(top) = self.stack.last_mut() {
            *top = context;
        }
    }

    fn push(&mut self, context: Context) -> Result<()> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(GiveUp);
        }
        self.stack.push(context);
        Ok(())
    }

    /// The innermost block collection's indentation (`None` at the root).
    fn block_indent(&self) -> Option<usize> {
        self.stack.iter().rev().find_map(|c| match c {
            Context::BlockMap { indent, .. } | Context::BlockSeq { indent } => Some(*indent),
            Context::Flow { .. } => None,
        })
    }

    /// Steps over a line break at `pos`.
    fn newline(&mut self) {
        self.pos += 1;
        self.line += 1;
        self.line_start = self.pos;
    }

    /// Skips spaces; whether there were any.
    fn spaces(&mut self) -> bool {
        let from = self.pos;
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
        self.pos > from
    }

    /// Skips a comment's text, up to its line break.
    fn comment(&mut self) {
        let rest = &self.bytes[self.pos..];
        self.pos += rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    }

    /// Moves to the next content at or after `pos` (a line's first
    /// content when `pos` is at a line's start), over spaces, empty lines
    /// and comments; its column, or `None` at the end of the text.
    /// Document markers (`---`, `...`) are given up on: the scanner reads
    /// one document.
    fn content(&mut self) -> Result<Option<usize>> {
        loop {
            let spaced = self.spaces() || self.pos == self.line_start;
            match self.peek() {
                None => return Ok(None),
                Some(b'\n') => self.newline(),
                Some(b'#') if spaced => self.comment(),
                Some(_) if self.col() == 0 && self.document_marker() => return Err(GiveUp),
                Some(_) => return Ok(Some(self.col())),
            }
        }
    }

    fn document_marker(&self) -> bool {
        let rest = &self.bytes[self.pos..];
        (rest.starts_with(b"---") || rest.starts_with(b"..."))
            && matches!(rest.get(3), None | Some(b' ' | b'\n'))
    }

    /// Ends a line after a node: spaces, then a comment (after a space)
    /// or the line break (consumed).
    fn end_of_line(&mut self) -> Result<()> {
        self.spaces();
        let spaced = self.bytes[..self.pos].last() == Some(&b' ');
        match self.peek() {
            None => Ok(()),
            Some(b'\n') => {
                self.newline();
                Ok(())
            }
            Some(b'#') if spaced => {
                self.comment();
                if self.peek() == Some(b'\n') {
                    self.newline();
                }
                Ok(())
            }
            _ => Err(GiveUp),
        }
    }

    /// Whether `pos` holds a `-` that starts a sequence entry.
    fn at_entry(&self) -> bool {
        self.peek() == Some(b'-') && matches!(self.peek_at(1), None | Some(b' ' | b'\n'))
    }

    /// The content at `pos` (column `col`) as a block node: a sequence, a
    /// mapping (when a key and its `:` start it), a flow collection or a
    /// scalar on this one line. `collections` is false for a value on its
    /// key's line, where a block collection cannot start.
    fn block_node(&mut self, col: usize, collections: bool) -> Result<(Event<'a>, Mark)> {
        let mark = self.mark();
        if self.at_entry() {
            if !collections {
                return Err(GiveUp);
            }
            self.push(Context::BlockSeq { indent: col })?;
            return Ok((Event::SequenceStart, mark));
        }
        if let Some(event) = self.flow_start()? {
            return Ok((event, mark));
        }
        let text = self.scalar(false)?;
        self.spaces();
        if self.at_key_colon() {
            if !collections {
                return Err(GiveUp);
            }
            self.pos = mark.offset;
            self.push(Context::BlockMap {
                indent: col,
                value_next: false,
            })?;
            return Ok((Event::MappingStart, mark));
        }
        self.end_of_line()?;
        Ok((text, mark))
    }

    /// Whether `pos` holds a key's `:` (followed by a space, a line break
    /// or the end).
    fn at_key_colon(&self) -> bool {
        self.peek() == Some(b':') && matches!(self.peek_at(1), None | Some(b' ' | b'\n'))
    }

    /// A block mapping's next key, or its end.
    fn block_key(&mut self, indent: usize) -> Result<(Event<'a>, Mark)> {
        match self.content()? {
            Some(col) if col == indent => {}
            Some(col) if col > indent => return Err(GiveUp),
            _ => {
                self.stack.pop();
                return Ok((Event::MappingEnd, self.mark()));
            }
        }
        let mark = self.mark();
        let key = self.scalar(false)?;
        if self.pos - mark.offset > MAX_KEY_LEN {
            return Err(GiveUp);
        }
        self.spaces();
        if !self.at_key_colon() {
            return Err(GiveUp);
        }
        self.pos += 1;
        self.set_top(Context::BlockMap {
            indent,
            value_next: true,
        });
        Ok((key, mark))
    }

    /// A block mapping's value, after its key's `:`: on the key's line,
    /// or on the lines below (a sequence may sit at the key's own
    /// indentation), or a null when there is none.
    fn block_value(&mut self, indent: usize) -> Result<(Event<'a>, Mark)> {
        // An empty value is where its `:` is.
        let empty = Mark {
            offset: self.pos - 1,
            ..self.mark()
        };
        if let Some(node) = self.node_on_this_line(false) {
            return node;
        }
        match self.content()? {
            Some(col) if col > indent => self.block_node(col, true),
            Some(col) if col == indent && self.at_entry() => {
                // A sequence at its key's indentation is where its first
                // item is, past the `-`, its spaces and a comment.
                self.push(Context::BlockSeq { indent: col })?;
                let dash = self.pos;
                self.pos += 1;
                if self.spaces() && self.peek() == Some(b'#') {
                    self.comment();
                }
                let mark = self.mark();
                self.pos = dash;
                Ok((Event::SequenceStart, mark))
            }
            _ => Ok((Event::Scalar(Cow::Borrowed(""), true), empty)),
        }
    }

    /// The node after a key's `:` or an item's `-` when it is on the same
    /// line; otherwise skips the line's comment and gives `None`.
    fn node_on_this_line(&mut self, collections: bool) -> Option<Result<(Event<'a>, Mark)>> {
        let spaced = self.spaces();
        match self.peek() {
            Some(b'#') if spaced => self.comment(),
            None | Some(b'\n') => {}
            Some(_) => {
                let col = self.col();
                return Some(self.block_node(col, collections));
            }
        }
        None
    }

    /// A block sequence's next item, or its end.
    fn block_item(&mut self, indent: usize) -> Result<(Event<'a>, Mark)> {
        match self.content()? {
            Some(col) if col == indent && self.at_entry() => {}
            Some(col) if col > indent => return Err(GiveUp),
            _ => {
                self.stack.pop();
                return Ok((Event::SequenceEnd, self.mark()));
            }
        }
        self.pos += 1;
        if let Some(node) = self.node_on_this_line(true) {
            return node;
        }
        // An empty item is past its `-`, its spaces and a comment.
        let empty = self.mark();
        match self.content()? {
            Some(col) if col > indent => self.block_node(col, true),
            _ => Ok((Event::Scalar(Cow::Borrowed(""), true), empty)),
        }
    }

    /// Opens a flow collection when `pos` holds `{` or `[`.
    fn flow_start(&mut self) -> Result<Option<Event<'a>>> {
        let (map, event) = match self.peek() {
            Some(b'{') => (true, Event::MappingStart),
            Some(b'[') => (false, Event::SequenceStart),
            _ => return Ok(None),
        };
        self.pos += 1;
        self.push(Context::Flow {
            map,
            next: FlowNext::Entry,
        })?;
        Ok(Some(event))
    }

    /// The next event inside a flow collection.
    fn flow(&mut self, map: bool, next: FlowNext) -> Result<(Event<'a>, Mark)> {
        let spaced = self.flow_space()?;
        let mark = self.mark();
        let close = if map { b'}' } else { b']' };
        match self.peek() {
            Some(b'#') if !spaced => return Err(GiveUp),
            Some(c) if c == close && next != FlowNext::Value => return self.flow_end(map, mark),
            Some(b',') if next == FlowNext::Separator => {
                self.pos += 1;
                self.set_top(Context::Flow {
                    map,
                    next: FlowNext::Entry,
                });
                return self.flow(map, FlowNext::Entry);
            }
            _ if next == FlowNext::Separator => return Err(GiveUp),
            _ => {}
        }
        if map && next == FlowNext::Entry {
            let line = self.line;
            let key = self.scalar(true)?;
            if self.pos - mark.offset > MAX_KEY_LEN {
                return Err(GiveUp);
            }
            self.spaces();
            if self.line != line || !self.at_key_colon() {
                return Err(GiveUp);
            }
            self.pos += 1;
            self.set_top(Context::Flow {
                map,
                next: FlowNext::Value,
            });
            return Ok((key, mark));
        }
        // A sequence's item or a mapping's value.
        self.set_top(Context::Flow {
            map,
            next: FlowNext::Separator,
        });
        if let Some(event) = self.flow_start()? {
            return Ok((event, mark));
        }
        let item = self.scalar(true)?;
        Ok((item, mark))
    }

    /// Closes the innermost flow collection; one in block context must
    /// end its line.
    fn flow_end(&mut self, map: bool, mark: Mark) -> Result<(Event<'a>, Mark)> {
        self.pos += 1;
        self.stack.pop();
        if !matches!(self.stack.last(), Some(Context::Flow { .. })) {
            self.spaces();
            if self.peek() == Some(b':') {
                return Err(GiveUp);
            }
            self.end_of_line()?;
        }
        let event = if map {
            Event::MappingEnd
        } else {
            Event::SequenceEnd
        };
        Ok((event, mark))
    }

    /// Skips spaces, line breaks and comments inside a flow collection;
    /// whether anything was skipped. A line inside must be indented past
    /// the block collection around it.
    fn flow_space(&mut self) -> Result<bool> {
        let from = self.pos;
        loop {
            let spaced = self.spaces() || self.pos == self.line_start;
            match self.peek() {
                Some(b'\n') => self.newline(),
                Some(b'#') if spaced => self.comment(),
                _ => break,
            }
        }
        if self.line_start > from && self.peek().is_some() {
            let col = self.col();
            if col == 0 && self.document_marker() {
                return Err(GiveUp);
            }
            if self.block_indent().is_some_and(|indent| col <= indent) {
                return Err(GiveUp);
            }
        }
        Ok(self.pos > from)
    }

    /// A scalar on one line at `pos`: quoted, or plain (`flow`: inside a
    /// flow collection, where `,[]{}` end it). Leaves `pos` after it.
    fn scalar(&mut self, flow: bool) -> Result<Event<'a>> {
        match self.peek() {
            Some(quote @ (b'"' | b'\'')) => self.quoted(quote),
            _ => self.plain(flow),
        }
    }

    fn plain(&mut self, flow: bool) -> Result<Event<'a>> {
        let start = self.pos;
        let first = self.peek().ok_or(GiveUp)?;
        let indicator = b"-?:,[]{}#&*!|>'\"%@` \n".contains(&first);
        // Only `-` starts a plain scalar among the indicators, and only
        // when something safe follows (`-1`, `-x`).
        if indicator && (first != b'-' || !self.peek_at(1).is_some_and(|b| safe_in_plain(b, flow)))
        {
            return Err(GiveUp);
        }
        let mut end = start;
        while let Some(b) = self.peek() {
            match b {
                b'\n' => break,
                b':' if !self.peek_at(1).is_some_and(|b| safe_in_plain(b, flow)) => break,
                b'#' if self.bytes[self.pos - 1] == b' ' => break,
                b',' | b'[' | b']' | b'{' | b'}' if flow => break,
                b' ' => {}
                _ => end = self.pos + 1,
            }
            self.pos += 1;
        }
        // `end` is just past the last non-space byte; a multi-byte
        // character's last byte is never a space, so it is a boundary.
        self.pos = end;
        Ok(Event::Scalar(Cow::Borrowed(&self.text[start..end]), true))
    }

    /// A quoted scalar on one line: single-quoted (`''` is a quote) or
    /// double-quoted (with the common escapes).
    fn quoted(&mut self, quote: u8) -> Result<Event<'a>> {
        self.pos += 1;
        let start = self.pos;
        let mut owned: Option<String> = None;
        loop {
            let rest = &self.bytes[self.pos..];
            let n = rest
                .iter()
                .position(|&b| b == quote || b == b'\n' || (b == b'\\' && quote == b'"'))
                .ok_or(GiveUp)?;
            let chunk = &self.text[self.pos..self.pos + n];
            self.pos += n + 1;
            let unquoted = match self.bytes[self.pos - 1] {
                b'\n' => return Err(GiveUp),
                b'\\' => self.escape()?,
                b'\'' if quote == b'\'' && self.peek() == Some(b'\'') => {
                    self.pos += 1;
                    '\''
                }
                _ => {
                    let text = match owned {
                        Some(mut s) => {
                            s.push_str(chunk);
                            Cow::Owned(s)
                        }
                        None => Cow::Borrowed(&self.text[start..self.pos - 1]),
                    };
                    return self.after_quoted(text);
                }
            };
            let s = owned.get_or_insert_with(String::new);
            s.push_str(chunk);
            s.push(unquoted);
        }
    }

    /// The character a double-quoted scalar's escape (after its `\`)
    /// stands for; only the common escapes are read here.
    fn escape(&mut self) -> Result<char> {
        let c = self.peek().ok_or(GiveUp)?;
        self.pos += 1;
        let digits = match c {
            b'\\' => return Ok('\\'),
            b'"' => return Ok('"'),
            b'/' => return Ok('/'),
            b'n' => return Ok('\n'),
            b't' => return Ok('\t'),
            b'r' => return Ok('\r'),
            b'0' => return Ok('\0'),
            b'x' => 2,
            b'u' => 4,
            b'U' => 8,
            _ => return Err(GiveUp),
        };
        let hex = self
            .text
            .get(self.pos..self.pos + digits)
            .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or(GiveUp)?;
        self.pos += digits;
        let code = u32::from_str_radix(hex, 16).map_err(|_| GiveUp)?;
        char::from_u32(code).ok_or(GiveUp)
    }

    /// A quoted scalar must be followed by a space, a line break, the end,
    /// or (key or flow) an indicator.
    fn after_quoted(&self, text: Cow<'a, str>) -> Result<Event<'a>> {
        match self.peek() {
            None | Some(b' ' | b'\n' | b':' | b',' | b']' | b'}') => Ok(Event::Scalar(text, false)),
            _ => Err(GiveUp),
        }
    }
}

/// The characters outside ASCII that the scanner leaves to serde-saphyr:
/// C1 controls, YAML 1.1's line separators, byte order marks and
/// non-characters.
fn left_to_serde_saphyr(c: char) -> bool {
    matches!(
        c,
        '\u{80}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
    )
}

/// Whether `b`, after a `:` or a leading `-`, keeps a plain scalar going.
fn safe_in_plain(b: u8, flow: bool) -> bool {
    match b {
        b' ' | b'\n' => false,
        b',' | b'[' | b']' | b'{' | b'}' => !flow,
        _ => true,
    }
}

//! Rule files → raw: reading a file or a directory, parsing each file, and
//! reading the files they name ([`files`]). This is the only module that
//! touches the YAML crate, serde-saphyr, and the only one that reads
//! YAML: plain rule files also have a fast path (`fast.rs` over
//! `plain_yaml.rs`); see [`parse`].
//!
//! A directory is read as every `*.yaml` / `*.yml` file directly inside it,
//! in byte-wise name order, skipping names that start with `.` (so a
//! Kubernetes ConfigMap's `..data` link is not read twice). How the files'
//! sections merge is decided by [`crate::compile`].

pub mod diagnostic;
pub mod duration;
mod fast;
#[cfg(test)]
mod fast_tests;
pub mod files;
mod plain_yaml;
pub mod raw;
pub mod schema;
mod spanned;

pub use diagnostic::{Diagnostic, Diagnostics, Severity};
pub use duration::parse_duration;
pub use spanned::Location;

use raw::Spanned;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One rule file as read from disk.
#[derive(Debug)]
pub struct Source {
    /// The file's name as shown in diagnostics (`routes/api.yaml`).
    pub name: Arc<str>,
    /// The path it was read from.
    pub path: PathBuf,
    /// The directory relative paths inside the file resolve against.
    pub dir: PathBuf,
    /// Its parsed content.
    pub doc: raw::File,
}

impl Source {
    /// Resolves a path written in this file against the file's directory.
    pub fn resolve(&self, written: &str) -> PathBuf {
        let p = Path::new(written);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

/// Every rule file of a config, parsed, in load order, with the files they
/// name.
#[derive(Debug)]
pub struct Loaded {
    /// The rule files.
    pub sources: Vec<Source>,
    /// Certificates, keys and CA bundles named by the rule files.
    pub files: files::Files,
    /// sha256 over every file's name (as listed) and content, in load order.
    pub sha256: String,
}

impl Loaded {
    /// The rule files' names, in load order (`/config`'s `sources`).
    pub fn source_names(&self) -> Vec<String> {
        self.sources.iter().map(|s| s.name.to_string()).collect()
    }
}

/// Reads and parses the config at `path` (a file or a directory). Returns
/// every problem found, each with its position.
pub fn load(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let files = list_files(path).map_err(|e| vec![e])?;
    let mut hasher = Sha256::new();
    let mut sources = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for file in files {
        let name: Arc<str> = Arc::from(file.display().to_string());
        let text = match read_rule_file(&file) {
            Ok(t) => t,
            Err(e) => {
                errors.push(whole_file(&name, e));
                continue;
            }
        };
        hash_rule_file(&mut hasher, &file, &text);
        match parse(&name, &text) {
            Ok(doc) => sources.push(Source {
                dir: file.parent().map(Path::to_path_buf).unwrap_or_default(),
                name,
                path: file,
                doc,
            }),
            Err(d) => errors.push(d),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // Certificate, key and CA files count as config files (SPEC 7).
    let files = files::Files::read(&sources);
    files.hash_into(&mut hasher);
    Ok(Loaded {
        sources,
        files,
        sha256: hex::encode(hasher.finalize()),
    })
}

/// The hash [`load`] would give the config at `path` if its rule files
/// name exactly `named` (the certificate, key, CA and password files of
/// the config loaded before), without parsing it. Rule files with the same
/// content name the same files, so when this equals the loaded config's
/// hash nothing changed, and a watcher event (a log written next to the
/// rule files, an editor's swap file) costs a read and a hash instead of a
/// parse. `None` when a rule file cannot be read: [`load`] says why.
pub fn fingerprint(path: &Path, named: &[PathBuf]) -> Option<String> {
    let mut hasher = Sha256::new();
    for file in list_files(path).ok()? {
        let text = read_rule_file(&file).ok()?;
        hash_rule_file(&mut hasher, &file, &text);
    }
    files::Files::read_paths(named.iter().cloned()).hash_into(&mut hasher);
    Some(hex::encode(hasher.finalize()))
}

/// Feeds one rule file's name (as listed) and content into the config hash.
fn hash_rule_file(hasher: &mut Sha256, file: &Path, text: &str) {
    let listed = file.file_name().map(|n| n.to_string_lossy().into_owned());
    hasher.update(listed.unwrap_or_default().as_bytes());
    hasher.update([0]);
    hasher.update(text.as_bytes());
    hasher.update([0]);
}

/// The most a rule file may hold. Ten thousand routes take about 1 MiB; a
/// larger file is refused at once rather than parsed for seconds (the YAML
/// crate's own budget stops at 250,000 nodes, but only after reading them).
pub const MAX_RULE_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Reads one rule file, refusing one over [`MAX_RULE_FILE_BYTES`] (read
/// with a limit: the size on disk may lie, as with a device or a pipe).
fn read_rule_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read file: {e}"))?;
    let mut text = String::new();
    f.take(MAX_RULE_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read file: {e}"))?;
    if text.len() as u64 > MAX_RULE_FILE_BYTES {
        return Err(format!(
            "rule file is larger than {} MiB",
            MAX_RULE_FILE_BYTES / (1024 * 1024)
        ));
    }
    Ok(text)
}

/// Whether a config directory lists a file of this name: `*.yaml` or
/// `*.yml`, not hidden.
pub fn is_rule_file_name(name: &[u8]) -> bool {
    !name.starts_with(b".") && (name.ends_with(b".yaml") || name.ends_with(b".yml"))
}

/// The files a config path stands for, in load order.
pub fn list_files(path: &Path) -> Result<Vec<PathBuf>, Diagnostic> {
    let name: Arc<str> = Arc::from(path.display().to_string());
    let meta = std::fs::metadata(path)
        .map_err(|e| whole_file(&name, format!("cannot read config: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| whole_file(&name, format!("cannot read directory: {e}")))?;
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        if !is_rule_file_name(file_name.as_encoded_bytes()) {
            continue;
        }
        let p = entry.path();
        if p.is_file() {
            files.push(p);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    if files.is_empty() {
        return Err(whole_file(
            &name,
            "no *.yaml or *.yml files in this directory".to_string(),
        ));
    }
    Ok(files)
}

/// Events that aliases (`*name`) may replay in one rule file, in all.
pub const MAX_ALIAS_REPLAYED_EVENTS: usize = 10_000;

/// Parses one rule file. Syntax errors, unknown keys, wrong types and
/// duplicate keys come back with their line and column. A file in plain
/// YAML is read by a fast path (`fast.rs` over `plain_yaml.rs`);
/// anything else, and every error, by serde-saphyr.
pub fn parse(name: &Arc<str>, text: &str) -> Result<raw::File, Diagnostic> {
    if text.trim().is_empty() {
        return Ok(raw::File::default());
    }
    match fast::read::<raw::File>(text) {
        Some(file) => {
            // Debug builds (every test's proxy) check each file read here
            // against serde-saphyr.
            #[cfg(debug_assertions)]
            assert_serde_saphyr_reads(text, &file);
            Ok(file)
        }
        None => parse_with_serde_saphyr(name, text),
    }
}

/// [`parse`] by serde-saphyr: what the file means, and where it is wrong.
fn parse_with_serde_saphyr(name: &Arc<str>, text: &str) -> Result<raw::File, Diagnostic> {
    let options = serde_saphyr_options();
    serde_saphyr::from_str_with_options::<raw::File>(text, options.clone()).map_err(|e| {
        let plain = e.without_snippet().to_string();
        let message = strip_position(&plain).to_string();
        let mut at = e.location().map(Location::from);
        if message.starts_with("missing field")
            && let Some(l) = at
        {
            at = Some(mapping_at(text, options, l).unwrap_or(l));
        }
        let (line, column) = at.map(|l| (l.line(), l.column())).unwrap_or((1, 1));
        Diagnostic {
            file: name.clone(),
            line,
            column,
            severity: Severity::Error,
            message,
        }
    })
}

/// How rule files are read by serde-saphyr.
fn serde_saphyr_options() -> serde_saphyr::Options {
    // YAML 1.2 Core booleans only: `in: [yes, no, y, on]` stays text (the
    // "Norway problem"), and `007` stays "007" rather than becoming 7.
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    options.leading_zero_numbers_as_strings = true;
    // Anchors and aliases are for sharing a list or two, not for an alias
    // bomb: a few thousand replayed events, rather than the crate's
    // million, refuse one at once instead of after seconds of parsing.
    options.alias_limits.max_total_replayed_events = MAX_ALIAS_REPLAYED_EVENTS;
    options.alias_limits.max_replay_stack_depth = 16;
    options
}

/// Whether the fast reader read `text`; panics when what it read (values
/// and positions) is not what serde-saphyr reads, or serde-saphyr refuses
/// the file. For the tests and the `rule_file` fuzz target.
pub(crate) fn fast_reader_agrees(text: &str) -> bool {
    let Some(fast) = fast::read::<raw::File>(text) else {
        return false;
    };
    assert_serde_saphyr_reads(text, &fast);
    true
}

/// Panics unless serde-saphyr reads `text` as `fast`, positions included.
fn assert_serde_saphyr_reads(text: &str, fast: &raw::File) {
    let name: Arc<str> = Arc::from("r.yaml");
    let slow = parse_with_serde_saphyr(&name, text).map(|f| format!("{f:?}"));
    assert_eq!(
        Ok(format!("{fast:?}")),
        slow.map_err(|e| e.to_string()),
        "the fast reader disagrees with serde-saphyr on:\n{text}"
    );
}

/// Where the mapping that has a key at `key` starts. The YAML crate
/// reports a missing field at the last key it read of the mapping that
/// lacks it (a route without `name` was reported at its last line); the
/// item to fix is the mapping, so the error goes to its first key. Runs
/// only on that error, with a second, position-only read of the file.
fn mapping_at(text: &str, options: serde_saphyr::Options, key: Location) -> Option<Location> {
    let tree: Spanned<Tree> = serde_saphyr::from_str_with_options(text, options).ok()?;
    tree.mapping_with_key(key)
}

/// A YAML document reduced to the positions of its nodes.
enum Tree {
    Map(Vec<(Spanned<IgnoredAny>, Spanned<Tree>)>),
    Seq(Vec<Spanned<Tree>>),
    Leaf,
}

impl Spanned<Tree> {
    fn mapping_with_key(&self, key: Location) -> Option<Location> {
        match &self.value {
            Tree::Map(entries) => {
                if entries.iter().any(|(k, _)| k.referenced == key) {
                    return Some(self.referenced);
                }
                entries.iter().find_map(|(_, v)| v.mapping_with_key(key))
            }
            Tree::Seq(items) => items.iter().find_map(|v| v.mapping_with_key(key)),
            Tree::Leaf => None,
        }
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Tree;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
                let mut entries = Vec::new();
                while let Some(k) = map.next_key::<Spanned<IgnoredAny>>()? {
                    entries.push((k, map.next_value::<Spanned<Tree>>()?));
                }
                Ok(Tree::Map(entries))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = seq.next_element::<Spanned<Tree>>()? {
                    items.push(v);
                }
                Ok(Tree::Seq(items))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_str<E>(self, _: &str) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_unit<E>(self) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
            fn visit_none<E>(self) -> Result<Tree, E> {
                Ok(Tree::Leaf)
            }
        }
        d.deserialize_any(V)
    }
}

/// The YAML crate appends " at line L, column C" to its messages; the
/// position is already in the diagnostic's prefix.
fn strip_position(message: &str) -> &str {
    let first = message.lines().next().unwrap_or(message);
    match first.rfind(" at line ") {
        Some(i) => &first[..i],
        None => first,
    }
}

fn whole_file(name: &Arc<str>, message: String) -> Diagnostic {
    Diagnostic::whole_file(name, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rule file with a slot of each kind of target the rule types read:
    /// a map key, text, a `u32`, a host list (`OneOrMany`), a `Scalar`, a
    /// list of them, an `f64` and a `bool`.
    const TEMPLATE: &str = "\
listen:
  - bind: \"127.0.0.1:8080\"
upstreams:
  KEY:
    endpoints:
      - TEXT
    retries: U32
routes:
  - name: r1
    match:
      host: HOST
      header:
        name: x-a
        equals: SCALAR
      query:
        name: q
        in: [SCALAR, b]
      body_json:
        pointer: /a
        gt: F64
      cookie:
        name: c
        present: BOOL
    to: api
";

    const SLOTS: [(&str, &str); 7] = [
        ("KEY", "api"),
        ("TEXT", "\"127.0.0.1:9000\""),
        ("U32", "1"),
        ("HOST", "a.example.com"),
        ("SCALAR", "v"),
        ("F64", "1.5"),
        ("BOOL", "true"),
    ];

    /// Scalars whose reading differs between targets, YAML versions or
    /// serde-saphyr's options, and nodes the fast reader leaves alone.
    const TOKENS: &[&str] = &[
        "1",
        "0",
        "-1",
        "42",
        "007",
        "00",
        "-0",
        "1_000",
        "0x1F",
        "0o17",
        "0b1",
        "+1",
        ".5",
        "1.",
        "1.5",
        "-1.5",
        "1.50",
        "1e5",
        "1E-5",
        "1.5e+3",
        "1e400",
        ".inf",
        "-.inf",
        ".nan",
        ".NaN",
        "nan",
        "inf",
        "Infinity",
        "true",
        "True",
        "TRUE",
        "tRUE",
        "false",
        "yes",
        "no",
        "on",
        "off",
        "y",
        "n",
        "Y",
        "null",
        "Null",
        "NULL",
        "nUll",
        "~",
        "",
        "\"1\"",
        "'x'",
        "\"\"",
        "\"true\"",
        "'null'",
        "2001-12-14",
        "12:30",
        "1:30:00",
        "18446744073709551615",
        "18446744073709551616",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "abc",
        "a b",
        "-abc",
        "a.example.com",
        "*.example.com",
        "<<",
        "<x",
        "[a, b]",
        "[]",
        "{}",
        "{a: 1}",
        "&a x",
        "*a",
        "!!str 1",
        "!!int 1",
        "!x y",
        "\"a\\tb\"",
        "'it''s'",
        "|\n        block",
        ">\n        folded\n        text",
        "x # comment",
        "\"\\u00e9\"",
        "é",
        "=",
        "?",
    ];

    fn agrees(text: &str) -> bool {
        fast_reader_agrees(text)
    }

    #[test]
    fn fast_reader_agrees_with_serde_saphyr() {
        let base = SLOTS
            .iter()
            .fold(TEMPLATE.to_string(), |t, (slot, v)| t.replace(slot, v));
        assert!(agrees(&base), "the fast reader must read the plain file");
        for (slot, _) in SLOTS {
            let mut read = 0;
            for token in TOKENS {
                let text = SLOTS.iter().fold(TEMPLATE.to_string(), |t, (s, v)| {
                    t.replace(s, if *s == slot { token } else { v })
                });
                read += usize::from(agrees(&text));
            }
            // Used, not merely safe: every slot takes a null or the
            // plain spellings of its values.
            assert!(read >= 8, "{slot}: {read} tokens read");
        }
    }

    proptest::proptest! {
        /// The slots' test, on files with characters that matter to YAML
        /// put in random places: what the fast reader reads still equals
        /// serde-saphyr's reading.
        #[test]
        fn fast_reader_agrees_on_mutated_files(
            edits in proptest::collection::vec(
                (0usize..2000, proptest::sample::select(&[
                    " ", "  ", "\n", "\n  ", ":", ": ", "-", "- ", "[", "]", "{", "}", ",", "#",
                    "&a ", "*a", "!", "|", ">", "'", "\"", "%", "@", "?", "0", "7", ".", "~",
                    "e", "x", "true", "null", "<<: ", "\t", "\\", "é",
                ][..])),
                1..4,
            ),
        ) {
            let mut text = SLOTS
                .iter()
                .fold(TEMPLATE.to_string(), |t, (slot, v)| t.replace(slot, v));
            for (at, piece) in edits {
                let mut at = at % (text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                text.insert_str(at, piece);
            }
            agrees(&text);
        }
    }

    #[test]
    fn fast_reader_leaves_anchors_merges_and_repeats_to_serde_saphyr() {
        for text in [
            // An anchor and its alias.
            "routes:\n  - &r {name: a, to: b}\n  - *r\n",
            // A merge key.
            "upstreams:\n  a: {endpoints: [x]}\n  b:\n    <<: {endpoints: [y]}\n",
            // A repeated key in a map and in a struct.
            "upstreams:\n  a: {endpoints: [x]}\n  a: {endpoints: [y]}\n",
            "routes:\n  - {name: a, name: b}\n",
            // Two documents.
            "routes: []\n---\nroutes: []\n",
            // A tag on the root.
            "!!map\nroutes: []\n",
        ] {
            assert!(!agrees(text), "the fast reader read:\n{text}");
        }
        // A repeat among many keys (past the few compared one by one).
        let many: String = (0..40)
            .map(|i| format!("  u{}: {{endpoints: [x]}}\n", i % 30))
            .collect();
        assert!(!agrees(&format!("upstreams:\n{many}")));
        let distinct: String = (0..40)
            .map(|i| format!("  u{i}: {{endpoints: [x]}}\n"))
            .collect();
        assert!(agrees(&format!("upstreams:\n{distinct}")));
    }

    #[test]
    fn fast_reader_agrees_on_the_shipped_rule_files() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = list_files(&root.join("routes")).expect("routes/");
        files.extend(list_files(&root.join("examples")).expect("examples/"));
        for file in files {
            let text = std::fs::read_to_string(&file).expect("readable");
            assert!(agrees(&text), "{} is plain YAML", file.display());
        }
    }

    fn parse_err(text: &str) -> String {
        let name: Arc<str> = Arc::from("r.yaml");
        match parse(&name, text) {
            Ok(_) => "ok".into(),
            Err(d) => d.to_string(),
        }
    }

    #[test]
    fn unknown_key_is_reported_at_its_line() {
        let e = parse_err("routes:\n  - name: a\n    bogus: 1\n");
        assert!(
            e.starts_with("r.yaml:3:5: error: unknown field `bogus`"),
            "{e}"
        );
    }

    /// Issue 18: a route without `name` is reported at the route, not at
    /// its last key.
    #[test]
    fn missing_field_is_reported_at_its_mapping() {
        let e = parse_err("routes:\n  - match: {path: /x}\n    to: a\n    strip_prefix: /x\n");
        assert!(
            e.starts_with("r.yaml:2:5: error: missing field `name`"),
            "{e}"
        );
        let e = parse_err("routes:\n  - name: a\n    to: u\n  - {to: a}\n");
        assert!(
            e.starts_with("r.yaml:4:5: error: missing field `name`"),
            "{e}"
        );
        let e = parse_err("upstreams:\n  a:\n    balance: random\n    retries: 2\n");
        assert!(
            e.starts_with("r.yaml:3:5: error: missing field `endpoints`"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_key_is_reported_at_the_second_one() {
        let e = parse_err("upstreams:\n  a: {endpoints: [\"x:1\"]}\n  a: {endpoints: [\"x:1\"]}\n");
        assert!(
            e.starts_with("r.yaml:3:3: error: duplicate mapping key"),
            "{e}"
        );
    }

    #[test]
    fn syntax_error_has_a_position() {
        let e = parse_err("routes: [\n");
        assert!(e.starts_with("r.yaml:1:"), "{e}");
    }

    #[test]
    fn yaml_1_1_booleans_stay_text() {
        let name: Arc<str> = Arc::from("r.yaml");
        let doc = parse(
            &name,
            "routes:\n  - name: a\n    match: { header: { name: x, in: [y, no, on, 007, true] } }\n    to: u\n",
        );
        let m = doc
            .ok()
            .and_then(|d| d.routes.into_iter().next())
            .and_then(|r| r.value.matcher);
        let tests = m.and_then(|m| m.value.header).map(|h| h.value.0);
        let values = tests
            .and_then(|t| t.into_iter().next())
            .and_then(|t| t.in_)
            .map(|v| v.value.iter().map(raw::Scalar::to_text).collect::<Vec<_>>());
        assert_eq!(values.unwrap_or_default(), ["y", "no", "on", "007", "true"]);
    }

    /// The watcher's shortcut gives the hash `load` gives, and sees a change
    /// to a rule file, to a file it names, and a rule file added to a
    /// directory config.
    #[test]
    fn fingerprint_is_the_loaded_hash() {
        let dir = tempfile::tempdir().unwrap();
        let rules = "upstreams:\n  a: {endpoints: [\"x:1\"], tls: {ca: ca.pem}}\n";
        std::fs::write(dir.path().join("10-a.yaml"), rules).unwrap();
        std::fs::write(dir.path().join("ca.pem"), "one").unwrap();
        std::fs::write(dir.path().join("app.log"), "not config").unwrap();
        let loaded = || load(dir.path()).unwrap();
        let named = |l: &Loaded| l.files.paths().map(PathBuf::from).collect::<Vec<_>>();
        let first = loaded();
        assert_eq!(named(&first).len(), 1);
        let same = fingerprint(dir.path(), &named(&first));
        assert_eq!(same.as_ref(), Some(&first.sha256));

        std::fs::write(dir.path().join("ca.pem"), "two").unwrap();
        let after_ca = fingerprint(dir.path(), &named(&first));
        assert_ne!(after_ca.as_ref(), Some(&first.sha256));
        assert_eq!(after_ca, Some(loaded().sha256));

        std::fs::write(dir.path().join("20-b.yaml"), "routes: []\n").unwrap();
        let after_add = fingerprint(dir.path(), &named(&first));
        assert_ne!(after_add, after_ca);
        assert_eq!(after_add, Some(loaded().sha256));

        std::fs::write(dir.path().join("10-a.yaml"), format!("{rules}# edited\n")).unwrap();
        let after_edit = fingerprint(dir.path(), &named(&first));
        assert_ne!(after_edit, after_add);
        assert_eq!(after_edit, Some(loaded().sha256));

        std::fs::remove_file(dir.path().join("10-a.yaml")).unwrap();
        std::fs::remove_file(dir.path().join("20-b.yaml")).unwrap();
        assert_eq!(fingerprint(dir.path(), &[]), None);
    }

    #[test]
    fn empty_file_is_an_empty_config() {
        assert_eq!(parse_err("# nothing\n"), "ok");
    }
}

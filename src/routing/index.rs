//! Host and path index over the routes: narrows the candidates a request has
//! to try, never changes the winner (the first route in file order whose
//! `match` holds).
//!
//! # How
//!
//! A route is indexed by the `host` and the `path` (or `path_prefix`) found
//! among the top-level conjuncts of its `match` ([`Expr::conjuncts`]);
//! matchers inside `any` / `not` are not used, so such a route is simply a
//! candidate for every host or path.
//!
//! 1. Host buckets: exact names (hash map), `*.suffix` wildcards (hash map
//!    keyed by the suffix, probed once per dot of the request host) and the
//!    routes without a host. A request visits at most one exact bucket, the
//!    wildcard buckets of its suffixes, and the host-less bucket.
//! 2. Inside a bucket, a [`PathIndex`]: routes without a path, plus a
//!    segment trie of their path templates. A lookup follows the path's
//!    segments through literal children and `{param}` children alike and
//!    collects, at each node it reaches, the routes whose template ends
//!    there (when the path ends there too) and those whose template goes on
//!    with a catch-all, a complex segment (`{id}.png`, escaped braces) or a
//!    `path_prefix` (whatever the rest of the path). That is a superset of
//!    the routes whose template fits, found in time bounded by the trie
//!    nodes on the path, never by the number of routes. The trie is frozen
//!    into flat arrays (sorted edges, labels in one string, id lists in one
//!    array): a few dozen bytes per template node instead of a matchit
//!    router's kilobytes (issue 6).
//! 3. Every source yields route ids sorted in file order; they are merged
//!    (k-way, from a fixed stack buffer, no allocation) and each candidate's
//!    whole `match` is evaluated until one holds.
//!
//! Anything the index cannot place (more sources than the buffer holds, more
//! trie nodes than ids, an index built from other routes) degrades to trying
//! more candidates, never fewer.

use super::context::RequestContext;
use super::expr::Expr;
use super::matchers::Leaf;
use super::{HasMatch, exact_slice, split_at_byte};
use std::collections::HashMap;

/// The host maps' hasher: every request looks its Host up in them (and
/// each of its parent domains in `wildcard`), and SipHash, the default,
/// costs several times more per lookup. The keys come from the rule file,
/// so there is no flooding to defend against; the seed is still random.
type HostMap<V> = HashMap<Box<str>, V, foldhash::fast::RandomState>;

/// More sources than this for one request fall back to a linear scan.
const MAX_SOURCES: usize = 64;

/// A bucket with at most this many routes keeps no path index: its routes
/// are all candidates (their whole `match` still decides). Most host buckets
/// hold one route, and a matchit router each costs kilobytes and build time
/// for next to no narrowing.
const SMALL_BUCKET: usize = 4;

/// Narrows the candidate routes by host and path.
#[derive(Debug, Default)]
pub struct RouteIndex {
    /// How many routes it was built from; a mismatch means linear scan.
    routes_len: usize,
    exact: HostMap<PathIndex>,
    /// Keyed by the suffix with its dot: `*.example.com` → `.example.com`.
    wildcard: HostMap<PathIndex>,
    /// The shortest and longest key of `wildcard`: a request's suffixes
    /// outside that range are not looked up.
    wildcard_len: (usize, usize),
    any_host: PathIndex,
}

/// Routes of one host bucket, by path.
#[derive(Debug, Default)]
struct PathIndex {
    /// Routes with no indexable path, in file order.
    pathless: Box<[u32]>,
    /// The path templates of the others; `None` in small buckets (most of
    /// them), so a host bucket costs 24 bytes, not 80 (issue 6).
    trie: Option<Box<PathTrie>>,
}

// === impl RouteIndex ===

impl RouteIndex {
    /// Builds the index over `routes` (in file order).
    pub fn build<R: HasMatch>(routes: &[R]) -> RouteIndex {
        #[derive(Default)]
        struct Bucket<'r> {
            items: Vec<(u32, Option<PathKey<'r>>)>,
        }
        let mut exact: HostMap<Bucket<'_>> = HostMap::default();
        let mut wildcard: HostMap<Bucket<'_>> = HostMap::default();
        let mut any_host = Bucket::default();
        for (i, route) in routes.iter().enumerate() {
            let Ok(id) = u32::try_from(i) else {
                // More routes than ids: the index cannot describe them.
                return RouteIndex::default();
            };
            let conj = route.matcher().conjuncts();
            let key = path_key(conj);
            let host = conj.iter().find_map(|e| match e {
                Expr::Leaf(Leaf::Host(h)) => Some(h),
                _ => None,
            });
            match host {
                None => any_host.items.push((id, key)),
                Some(h) => {
                    for name in h.exact() {
                        let b = exact.entry(name.clone()).or_default();
                        b.items.push((id, key));
                    }
                    for suffix in h.wildcard_suffixes() {
                        let b = wildcard.entry(suffix.clone()).or_default();
                        b.items.push((id, key));
                    }
                }
            }
        }
        let build = |b: Bucket<'_>| PathIndex::build(&b.items);
        let lens = wildcard.keys().map(|k| k.len());
        let wildcard_len = (lens.clone().min().unwrap_or(0), lens.max().unwrap_or(0));
        RouteIndex {
            wildcard_len,
            routes_len: routes.len(),
            exact: exact.into_iter().map(|(k, b)| (k, build(b))).collect(),
            wildcard: wildcard.into_iter().map(|(k, b)| (k, build(b))).collect(),
            any_host: build(any_host),
        }
    }

    /// The position of the first route in file order whose `match` holds.
    pub fn first_match<R: HasMatch>(
        &self,
        routes: &[R],
        ctx: &RequestContext<'_>,
    ) -> Option<usize> {
        if self.routes_len != routes.len() {
            return linear(routes, ctx);
        }
        let mut heads: [&[u32]; MAX_SOURCES] = [&[]; MAX_SOURCES];
        let mut n = 0;
        let host: &str = &ctx.host;
        let path = ctx.path;
        let mut ok = true;
        if let Some(pi) = self.exact.get(host) {
            ok &= pi.sources(path, &mut heads, &mut n);
        }
        if !self.wildcard.is_empty() {
            let (shortest, longest) = self.wildcard_len;
            for (i, b) in host.bytes().enumerate() {
                let len = host.len() - i;
                if b == b'.'
                    && i > 0
                    && (shortest..=longest).contains(&len)
                    && let Some(pi) = self.wildcard.get(&host[i..])
                {
                    ok &= pi.sources(path, &mut heads, &mut n);
                }
            }
        }
        ok &= self.any_host.sources(path, &mut heads, &mut n);
        if !ok {
            return linear(routes, ctx);
        }
        merge_first(&mut heads[..n], |id| {
            routes.get(id).is_some_and(|r| r.matcher().matches(ctx))
        })
    }

    /// Trie nodes over all buckets (for tests and diagnostics).
    pub fn trie_nodes(&self) -> usize {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .chain(std::iter::once(&self.any_host))
            .map(|p| p.trie.as_ref().map_or(0, |t| t.nodes.len()))
            .sum()
    }
}

fn linear<R: HasMatch>(routes: &[R], ctx: &RequestContext<'_>) -> Option<usize> {
    routes.iter().position(|r| r.matcher().matches(ctx))
}

/// Merges sorted id lists in ascending order (duplicates once) and returns
/// the first id `accept` takes.
fn merge_first(heads: &mut [&[u32]], mut accept: impl FnMut(usize) -> bool) -> Option<usize> {
    loop {
        let min = heads.iter().filter_map(|h| h.first()).min().copied()?;
        for h in heads.iter_mut() {
            if h.first() == Some(&min) {
                *h = &h[1..];
            }
        }
        let id = usize::try_from(min).ok()?;
        if accept(id) {
            return Some(id);
        }
    }
}

/// What a route's path conjunct asks of the path, for the trie: a `path`
/// template, or a `path_prefix` (as segments followed by "anything");
/// `None` when it has neither.
fn path_key(conj: &[Expr]) -> Option<PathKey<'_>> {
    let path = conj.iter().find_map(|e| match e {
        Expr::Leaf(Leaf::Path(t)) => Some(t.template()),
        _ => None,
    });
    if let Some(t) = path {
        return Some(PathKey::Template(t));
    }
    conj.iter().find_map(|e| match e {
        Expr::Leaf(Leaf::PathPrefix(p)) => Some(PathKey::Prefix(p.prefix())),
        _ => None,
    })
}

#[derive(Debug, Clone, Copy)]
enum PathKey<'r> {
    Template(&'r str),
    Prefix(&'r str),
}

impl<'r> PathKey<'r> {
    /// The segments to walk, and whether whatever follows them fits too.
    fn segments(self) -> (Vec<Seg<'r>>, bool) {
        match self {
            PathKey::Template(t) => (parse_segments(t), false),
            PathKey::Prefix(p) => {
                // `/api` holds for `/api` and `/api/…`, `/api/` for `/api/…`:
                // both for every path whose segments start with `api`.
                let p = p.strip_suffix('/').unwrap_or(p);
                let segs = if p.is_empty() {
                    Vec::new()
                } else {
                    p.strip_prefix('/')
                        .unwrap_or(p)
                        .split('/')
                        .map(Seg::Lit)
                        .collect()
                };
                (segs, true)
            }
        }
    }
}

// === impl PathIndex ===

impl PathIndex {
    fn build(items: &[(u32, Option<PathKey<'_>>)]) -> PathIndex {
        let mut pathless = Vec::new();
        if items.len() <= SMALL_BUCKET {
            // Ids arrive in file order: every route is a candidate.
            for (id, _) in items {
                push_unique(&mut pathless, *id);
            }
            return PathIndex {
                pathless: exact_slice(pathless),
                trie: None,
            };
        }
        let mut trie = TrieBuilder::default();
        for (id, key) in items {
            match key {
                None => push_unique(&mut pathless, *id),
                Some(key) => {
                    let (segs, open) = key.segments();
                    if !trie.insert(&segs, open, *id) {
                        push_unique(&mut pathless, *id);
                    }
                }
            }
        }
        let trie = trie.freeze();
        PathIndex {
            pathless: exact_slice(pathless),
            trie: (!trie.nodes.is_empty()).then(|| Box::new(trie)),
        }
    }

    /// Adds this bucket's id lists for `path`; false when the buffer is full.
    fn sources<'s>(&'s self, path: &str, heads: &mut [&'s [u32]], n: &mut usize) -> bool {
        let mut sink = Sink { heads, n, ok: true };
        sink.push(&self.pathless);
        if let Some(trie) = &self.trie {
            let rest = path.strip_prefix('/').unwrap_or(path);
            trie.walk(0, Some(rest), &mut sink);
        }
        sink.ok
    }
}

/// Where a lookup puts the id lists it finds.
struct Sink<'a, 's> {
    heads: &'a mut [&'s [u32]],
    n: &'a mut usize,
    ok: bool,
}

impl<'s> Sink<'_, 's> {
    fn push(&mut self, ids: &'s [u32]) {
        if ids.is_empty() {
            return;
        }
        match self.heads.get_mut(*self.n) {
            Some(slot) => {
                *slot = ids;
                *self.n += 1;
            }
            None => self.ok = false,
        }
    }
}

fn push_unique(ids: &mut Vec<u32>, id: u32) {
    if ids.last() != Some(&id) {
        ids.push(id);
    }
}

// === template segments ===

/// One `/`-separated segment of a template, as the trie sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seg<'t> {
    /// Exact text (no braces).
    Lit(&'t str),
    /// A whole-segment `{name}`: any segment.
    Param,
    /// A whole-segment `{*name}`, a parameter with a prefix or suffix, or
    /// escaped braces: treated as "anything from here on".
    Open,
}

fn parse_segments(template: &str) -> Vec<Seg<'_>> {
    let rest = template.strip_prefix('/').unwrap_or(template);
    rest.split('/')
        .map(|s| {
            if !s.contains(['{', '}']) {
                return Seg::Lit(s);
            }
            let inner = s.strip_prefix('{').and_then(|r| r.strip_suffix('}'));
            match inner {
                Some(name)
                    if !name.is_empty() && !name.starts_with('*') && !name.contains(['{', '}']) =>
                {
                    Seg::Param
                }
                _ => Seg::Open,
            }
        })
        .collect()
}

// === impl PathTrie ===

/// No node (a `u32` index).
const NONE: u32 = u32::MAX;

/// Template segments past this depth are not indexed (the template is
/// filed as "anything may follow" there), which bounds a lookup's recursion.
const MAX_DEPTH: usize = 32;

/// The segment trie of one bucket's templates, frozen into flat arrays.
#[derive(Debug, Default)]
struct PathTrie {
    /// Node 0 is the root (absent when the trie is empty).
    nodes: Box<[Node]>,
    /// Literal children, each node's sorted by label: `(label start, label
    /// end, child)`, labels in `labels`.
    edges: Box<[(u32, u32, u32)]>,
    labels: Box<str>,
    /// Every node's id lists, back to back.
    ids: Box<[u32]>,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    /// `edges[first_edge..first_edge + edge_count]`.
    first_edge: u32,
    edge_count: u32,
    /// The `{param}` child, or [`NONE`].
    param: u32,
    /// `ids[ids_start..ends]`: templates ending here; `ids[ends..opens]`:
    /// templates that fit whatever follows.
    ids_start: u32,
    ends: u32,
    opens: u32,
}

impl PathTrie {
    /// Collects the lists of `node` and of the nodes `rest` (the path after
    /// the segments that led here; `None`: nothing left) leads to. A loop
    /// down the path; it recurses only where both a literal and a `{param}`
    /// child fit the segment.
    fn walk<'s>(&'s self, mut node: u32, mut rest: Option<&str>, sink: &mut Sink<'_, 's>) {
        loop {
            let Some(n) = self.nodes.get(node as usize) else {
                return;
            };
            sink.push(self.slice(n.ends, n.opens));
            let Some(path) = rest else {
                sink.push(self.slice(n.ids_start, n.ends));
                return;
            };
            let (seg, next) = match split_at_byte(path, b'/') {
                Some((seg, next)) => (seg, Some(next)),
                None => (path, None),
            };
            let child = self.child(n, seg);
            if n.param != NONE {
                if child.is_none() {
                    (node, rest) = (n.param, next);
                    continue;
                }
                self.walk(n.param, next, sink);
            }
            match child {
                Some(c) => (node, rest) = (c, next),
                None => return,
            }
        }
    }

    fn slice(&self, from: u32, to: u32) -> &[u32] {
        self.ids.get(from as usize..to as usize).unwrap_or(&[])
    }

    /// An edge's label as bytes (no char-boundary checks on each probe).
    fn label(&self, start: u32, end: u32) -> &[u8] {
        self.labels
            .as_bytes()
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    fn child(&self, n: &Node, seg: &str) -> Option<u32> {
        let from = n.first_edge as usize;
        let edges = self.edges.get(from..from + n.edge_count as usize)?;
        let seg = seg.as_bytes();
        edges
            .binary_search_by(|&(s, e, _)| by_length_then_text(self.label(s, e), seg))
            .ok()
            .map(|i| edges[i].2)
    }
}

/// The order of a node's edges: by length first, so a lookup compares
/// the text only of labels as long as the segment it looks for. The text
/// byte by byte: labels are a few bytes long, and a slice comparison
/// calls `memcmp` for each probe of the binary search.
fn by_length_then_text(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    a.len().cmp(&b.len()).then_with(|| a.iter().cmp(b))
}

/// The trie while it is built: a node per template prefix.
#[derive(Debug, Default)]
struct TrieBuilder {
    nodes: Vec<BuildNode>,
}

#[derive(Debug, Default)]
struct BuildNode {
    lit: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    param: Option<u32>,
    ends: Vec<u32>,
    opens: Vec<u32>,
}

impl TrieBuilder {
    /// Adds route `id` under `segs`, in `opens` when `open` (anything may
    /// follow); false when the trie has no room for it.
    fn insert(&mut self, segs: &[Seg<'_>], open: bool, id: u32) -> bool {
        if self.nodes.is_empty() {
            self.nodes.push(BuildNode::default());
        }
        let mut node = 0usize;
        let (segs, open) = match segs.get(..MAX_DEPTH) {
            Some(head) if segs.len() > MAX_DEPTH => (head, true),
            _ => (segs, open),
        };
        for seg in segs {
            let next = match seg {
                Seg::Lit(s) => self.nodes[node].lit.get(*s).copied(),
                Seg::Param => self.nodes[node].param,
                Seg::Open => {
                    push_unique(&mut self.nodes[node].opens, id);
                    return true;
                }
            };
            let next = match next {
                Some(n) => n,
                None => {
                    let Ok(n) = u32::try_from(self.nodes.len()) else {
                        return false;
                    };
                    if n == NONE {
                        return false;
                    }
                    self.nodes.push(BuildNode::default());
                    match seg {
                        Seg::Lit(s) => {
                            self.nodes[node].lit.insert((*s).into(), n);
                        }
                        _ => self.nodes[node].param = Some(n),
                    }
                    n
                }
            };
            node = next as usize;
        }
        let list = if open {
            &mut self.nodes[node].opens
        } else {
            &mut self.nodes[node].ends
        };
        push_unique(list, id);
        true
    }

    /// The flat form; `ids`, `edges` and `labels` stay below `u32::MAX`
    /// because they count what `insert` admitted (at most one id and one
    /// edge per template segment).
    fn freeze(self) -> PathTrie {
        let mut nodes = Vec::with_capacity(self.nodes.len());
        let mut edges = Vec::new();
        let mut labels = String::new();
        let mut ids = Vec::new();
        let at = |len: usize| u32::try_from(len).unwrap_or(NONE);
        for b in self.nodes {
            let mut lit: Vec<(Box<str>, u32)> = b.lit.into_iter().collect();
            lit.sort_unstable_by(|(a, _), (b, _)| by_length_then_text(a.as_bytes(), b.as_bytes()));
            let first_edge = at(edges.len());
            for (label, child) in &lit {
                let start = at(labels.len());
                labels.push_str(label);
                edges.push((start, at(labels.len()), *child));
            }
            let ids_start = at(ids.len());
            ids.extend_from_slice(&b.ends);
            let ends = at(ids.len());
            ids.extend_from_slice(&b.opens);
            nodes.push(Node {
                first_edge,
                edge_count: at(lit.len()),
                param: b.param.unwrap_or(NONE),
                ids_start,
                ends,
                opens: at(ids.len()),
            });
        }
        PathTrie {
            nodes: nodes.into(),
            edges: exact_slice(edges),
            // A copy: shrinking in place could keep twice the length.
            labels: labels.as_str().into(),
            ids: exact_slice(ids),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(pi: &PathIndex, path: &str) -> Vec<usize> {
        let mut heads: [&[u32]; MAX_SOURCES] = [&[]; MAX_SOURCES];
        let mut n = 0;
        assert!(pi.sources(path, &mut heads, &mut n));
        let mut got = Vec::new();
        merge_first(&mut heads[..n], |id| {
            got.push(id);
            false
        });
        got
    }

    fn nodes(pi: &PathIndex) -> usize {
        pi.trie.as_ref().map_or(0, |t| t.nodes.len())
    }

    fn templates(list: &[&'static str]) -> Vec<(u32, Option<PathKey<'static>>)> {
        list.iter()
            .enumerate()
            .map(|(i, t)| (i as u32, Some(PathKey::Template(t))))
            .collect()
    }

    #[test]
    fn segments() {
        assert_eq!(
            parse_segments("/users/{id}/files/{*rest}"),
            [Seg::Lit("users"), Seg::Param, Seg::Lit("files"), Seg::Open]
        );
        assert_eq!(
            parse_segments("/img/{id}.png/{{x}}/"),
            [Seg::Lit("img"), Seg::Open, Seg::Open, Seg::Lit("")]
        );
        assert_eq!(parse_segments("/"), [Seg::Lit("")]);
        assert_eq!(PathKey::Prefix("/").segments(), (vec![], true));
        assert_eq!(
            PathKey::Prefix("/api/").segments(),
            (vec![Seg::Lit("api")], true)
        );
        assert_eq!(
            PathKey::Prefix("/a/b").segments(),
            (vec![Seg::Lit("a"), Seg::Lit("b")], true)
        );
    }

    #[test]
    fn lookups_find_every_template_that_may_fit() {
        let pi = PathIndex::build(&templates(&[
            "/users/{id}",
            "/users/me",
            "/users/{uid}",
            "/src/{*f}",
            "/src/{file}",
            "/other/x",
            "/",
            "/img/{id}.png",
        ]));
        assert_eq!(candidates(&pi, "/users/me"), [0, 1, 2]);
        assert_eq!(candidates(&pi, "/users/7"), [0, 2]);
        assert_eq!(candidates(&pi, "/users/7/x"), Vec::<usize>::new());
        assert_eq!(candidates(&pi, "/src/a"), [3, 4]);
        assert_eq!(candidates(&pi, "/src/a/b"), [3]);
        assert_eq!(candidates(&pi, "/other/x"), [5]);
        assert_eq!(candidates(&pi, "/"), [6]);
        assert_eq!(candidates(&pi, "/img/1.png"), [7]);
        assert_eq!(candidates(&pi, "/nothing"), Vec::<usize>::new());
    }

    #[test]
    fn prefixes_hold_for_the_segments_below() {
        let items = vec![
            (0, Some(PathKey::Prefix("/api"))),
            (1, Some(PathKey::Prefix("/api/"))),
            (2, Some(PathKey::Prefix("/"))),
            (3, None),
            (4, Some(PathKey::Prefix("/api/v1"))),
            (5, Some(PathKey::Template("/api"))),
        ];
        let pi = PathIndex::build(&items);
        assert_eq!(candidates(&pi, "/api"), [0, 1, 2, 3, 5]);
        assert_eq!(candidates(&pi, "/api/v1/x"), [0, 1, 2, 3, 4]);
        assert_eq!(candidates(&pi, "/apix"), [2, 3]);
    }

    #[test]
    fn small_buckets_keep_no_path_index() {
        let items = vec![
            (1, Some(PathKey::Template("/a"))),
            (1, Some(PathKey::Prefix("/a"))),
            (3, None),
            (5, Some(PathKey::Template("/b/{id}"))),
        ];
        let pi = PathIndex::build(&items);
        assert!(pi.trie.is_none());
        assert_eq!(&*pi.pathless, [1, 3, 5]);
    }

    #[test]
    fn deep_templates_are_cut_short() {
        let deep: &'static str = Box::leak(format!("{}/{{id}}", "/a".repeat(100)).into_boxed_str());
        let mut items = templates(&["/x", "/y", "/z", "/w"]);
        items.push((4, Some(PathKey::Template(deep))));
        let pi = PathIndex::build(&items);
        assert_eq!(nodes(&pi), 5 + MAX_DEPTH);
        assert_eq!(candidates(&pi, &format!("{}/7", "/a".repeat(100))), [4]);
        assert_eq!(candidates(&pi, &"/a".repeat(40)), [4]);
    }

    #[test]
    fn merge_dedups_and_orders() {
        let a: &[u32] = &[1, 4, 9];
        let b: &[u32] = &[0, 4, 5];
        let c: &[u32] = &[];
        let mut heads = [a, b, c];
        let mut got = Vec::new();
        assert_eq!(
            merge_first(&mut heads, |id| {
                got.push(id);
                false
            }),
            None
        );
        assert_eq!(got, [0, 1, 4, 5, 9]);
        let mut heads = [a, b];
        assert_eq!(merge_first(&mut heads, |id| id >= 4), Some(4));
    }

    #[test]
    fn many_templates_in_one_bucket_stay_cheap() {
        // 10,000 templates sharing a host bucket, a few overlapping all of
        // them: building is linear, and a lookup visits a handful of nodes.
        let mut owned: Vec<String> = (0..10_000u32)
            .map(|i| format!("/api/svc{i}/items/{{id}}"))
            .collect();
        owned.push("/api/{svc}/items/{id}".to_owned());
        owned.push("/api/{*rest}".to_owned());
        owned.push("/api/svc7/items/me".to_owned());
        let items: Vec<(u32, Option<PathKey<'_>>)> = owned
            .iter()
            .enumerate()
            .map(|(i, t)| (i as u32, Some(PathKey::Template(t))))
            .collect();
        let start = std::time::Instant::now();
        let pi = PathIndex::build(&items);
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        assert_eq!(
            candidates(&pi, "/api/svc7/items/me"),
            [7, 10_000, 10_001, 10_002]
        );
        assert_eq!(candidates(&pi, "/api/svc9/items/1"), [9, 10_000, 10_001]);
        // Root, api, svcN, items, {id} per template; the rest shared.
        assert!(nodes(&pi) < 3 * 10_000 + 10, "{}", nodes(&pi));
    }
}

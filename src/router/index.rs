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
//! 2. Inside a bucket, a [`PathIndex`]: routes without a path, plus path
//!    templates in matchit routers ("layers"). matchit returns one template
//!    per lookup, ranking overlaps by specificity, so no two templates that
//!    could both fit one path share a layer: each layer then finds the only
//!    template that fits, if any. Overlap is decided conservatively per
//!    segment with a trie (no pairwise work over all templates); a false
//!    "overlap" only costs a layer. `path_prefix: /api` is indexed as the
//!    templates `/api`, `/api/` and `/api/{*rest}`.
//! 3. Every source yields route ids sorted in file order; they are merged
//!    (k-way, from a fixed stack buffer, no allocation) and each candidate's
//!    whole `match` is evaluated until one holds.
//!
//! Anything the index cannot place (a template matchit refuses even in an
//! empty layer, more sources than the buffer holds, an index built from other
//! routes) degrades to trying more candidates, never fewer.

use super::Route;
use crate::context::RequestContext;
use crate::matchers::Leaf;
use crate::rules::Expr;
use std::collections::HashMap;

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
    exact: HashMap<Box<str>, PathIndex>,
    /// Keyed by the suffix with its dot: `*.example.com` → `.example.com`.
    wildcard: HashMap<Box<str>, PathIndex>,
    any_host: PathIndex,
}

/// Routes of one host bucket, by path.
#[derive(Debug, Default)]
struct PathIndex {
    /// Routes with no indexable path, in file order.
    pathless: Vec<u32>,
    /// Route ids (file order) per distinct template.
    entries: Vec<Vec<u32>>,
    /// Each maps a template to its entry; templates in one layer never overlap.
    layers: Vec<matchit::Router<u32>>,
}

// === impl RouteIndex ===

impl RouteIndex {
    /// Builds the index over `routes` (in file order).
    pub fn build(routes: &[Route]) -> RouteIndex {
        #[derive(Default)]
        struct Bucket {
            items: Vec<(u32, Option<Vec<String>>)>,
        }
        let mut exact: HashMap<Box<str>, Bucket> = HashMap::new();
        let mut wildcard: HashMap<Box<str>, Bucket> = HashMap::new();
        let mut any_host = Bucket::default();
        for (i, route) in routes.iter().enumerate() {
            let Ok(id) = u32::try_from(i) else {
                // More routes than ids: the index cannot describe them.
                return RouteIndex::default();
            };
            let conj = route.matcher.conjuncts();
            let templates = path_templates(conj);
            let host = conj.iter().find_map(|e| match e {
                Expr::Leaf(Leaf::Host(h)) => Some(h),
                _ => None,
            });
            match host {
                None => any_host.items.push((id, templates)),
                Some(h) => {
                    for name in h.exact() {
                        let b = exact.entry(name.clone()).or_default();
                        b.items.push((id, templates.clone()));
                    }
                    for suffix in h.wildcard_suffixes() {
                        let b = wildcard.entry(suffix.clone()).or_default();
                        b.items.push((id, templates.clone()));
                    }
                }
            }
        }
        let build = |b: Bucket| PathIndex::build(&b.items);
        RouteIndex {
            routes_len: routes.len(),
            exact: exact.into_iter().map(|(k, b)| (k, build(b))).collect(),
            wildcard: wildcard.into_iter().map(|(k, b)| (k, build(b))).collect(),
            any_host: build(any_host),
        }
    }

    /// The position of the first route in file order whose `match` holds.
    pub fn first_match(&self, routes: &[Route], ctx: &RequestContext<'_>) -> Option<usize> {
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
            for (i, b) in host.bytes().enumerate() {
                if b == b'.'
                    && i > 0
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
            routes.get(id).is_some_and(|r| r.matcher.matches(ctx))
        })
    }

    /// How many matchit layers the busiest bucket needs (for tests and
    /// diagnostics: 1 when no templates overlap).
    pub fn max_layers(&self) -> usize {
        self.exact
            .values()
            .chain(self.wildcard.values())
            .chain(std::iter::once(&self.any_host))
            .map(|p| p.layers.len())
            .max()
            .unwrap_or(0)
    }
}

fn linear(routes: &[Route], ctx: &RequestContext<'_>) -> Option<usize> {
    routes.iter().position(|r| r.matcher.matches(ctx))
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

/// The templates a route's path conjunct stands for: a `path` template, or
/// the templates covering a `path_prefix`; `None` when it has neither.
fn path_templates(conj: &[Expr]) -> Option<Vec<String>> {
    let path = conj.iter().find_map(|e| match e {
        Expr::Leaf(Leaf::Path(t)) => Some(t.template()),
        _ => None,
    });
    if let Some(t) = path {
        return Some(vec![t.to_owned()]);
    }
    let prefix = conj.iter().find_map(|e| match e {
        Expr::Leaf(Leaf::PathPrefix(p)) => Some(p.prefix()),
        _ => None,
    })?;
    let p = prefix.replace('{', "{{").replace('}', "}}");
    if p.ends_with('/') {
        // `/api/` holds for paths starting with it: itself, or more after it.
        Some(vec![p.clone(), format!("{p}{{*rest}}")])
    } else {
        Some(vec![p.clone(), format!("{p}/"), format!("{p}/{{*rest}}")])
    }
}

// === impl PathIndex ===

impl PathIndex {
    fn build(items: &[(u32, Option<Vec<String>>)]) -> PathIndex {
        let mut pi = PathIndex::default();
        if items.len() <= SMALL_BUCKET {
            // Ids arrive in file order: every route is a candidate.
            for (id, _) in items {
                push_unique(&mut pi.pathless, *id);
            }
            pi.pathless.shrink_to_fit();
            return pi;
        }
        let mut trie = Trie::default();
        // Canonical template → where its ids go.
        let mut placed: HashMap<String, Slot> = HashMap::new();
        for (id, templates) in items {
            let Some(templates) = templates else {
                push_unique(&mut pi.pathless, *id);
                continue;
            };
            for t in templates {
                let segs = parse_segments(t);
                let canon = canonical(&segs);
                let slot = match placed.get(&canon) {
                    Some(s) => *s,
                    None => {
                        let s = pi.place(&mut trie, &segs, &canon);
                        placed.insert(canon, s);
                        s
                    }
                };
                match slot {
                    Slot::Entry(e) => push_unique(&mut pi.entries[e], *id),
                    Slot::Unindexed => push_unique(&mut pi.pathless, *id),
                }
            }
        }
        pi.pathless.shrink_to_fit();
        pi.entries.iter_mut().for_each(Vec::shrink_to_fit);
        pi.entries.shrink_to_fit();
        pi
    }

    /// Puts a new template into the lowest layer holding nothing it overlaps.
    fn place(&mut self, trie: &mut Trie, segs: &[Seg<'_>], canon: &str) -> Slot {
        let mut taken = vec![false; self.layers.len() + 1];
        trie.overlapping(segs, &mut taken);
        let Ok(value) = u32::try_from(self.entries.len()) else {
            return Slot::Unindexed;
        };
        let mut layer = 0;
        loop {
            if taken.get(layer) == Some(&true) {
                layer += 1;
                continue;
            }
            let created = layer == self.layers.len();
            if created {
                self.layers.push(matchit::Router::new());
            }
            match self.layers[layer].insert(canon, value) {
                Ok(()) => break,
                Err(_) if created => {
                    // matchit refuses it even alone: try it on every request.
                    self.layers.pop();
                    return Slot::Unindexed;
                }
                Err(_) => layer += 1,
            }
        }
        self.entries.push(Vec::new());
        trie.insert(segs, layer_id(layer));
        Slot::Entry(self.entries.len() - 1)
    }

    /// Adds this bucket's id lists for `path`; false when the buffer is full.
    fn sources<'s>(&'s self, path: &str, heads: &mut [&'s [u32]], n: &mut usize) -> bool {
        let mut push = |ids: &'s [u32]| {
            if ids.is_empty() {
                return true;
            }
            match heads.get_mut(*n) {
                Some(slot) => {
                    *slot = ids;
                    *n += 1;
                    true
                }
                None => false,
            }
        };
        let mut ok = push(&self.pathless);
        for layer in &self.layers {
            if let Ok(m) = layer.at(path)
                && let Some(ids) = usize::try_from(*m.value)
                    .ok()
                    .and_then(|e| self.entries.get(e))
            {
                ok &= push(ids);
            }
        }
        ok
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Entry(usize),
    Unindexed,
}

fn push_unique(ids: &mut Vec<u32>, id: u32) {
    if ids.last() != Some(&id) {
        ids.push(id);
    }
}

fn layer_id(layer: usize) -> u32 {
    u32::try_from(layer).unwrap_or(u32::MAX)
}

// === template segments ===

/// One `/`-separated segment of a template, as overlap sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Seg<'t> {
    /// Exact text (no braces).
    Lit(&'t str),
    /// A whole-segment `{name}`: any non-empty text without `/`.
    Param,
    /// A whole-segment `{*name}`: the rest of the path.
    CatchAll,
    /// A parameter with a prefix or suffix, or escaped braces: treated as
    /// overlapping everything from here on.
    Complex(&'t str),
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
                Some(name) if !name.is_empty() && !name.contains(['{', '}']) => {
                    if name.starts_with('*') {
                        Seg::CatchAll
                    } else {
                        Seg::Param
                    }
                }
                _ => Seg::Complex(s),
            }
        })
        .collect()
}

/// The template with parameter names replaced by position, so templates
/// that differ only in names share one matchit entry.
fn canonical(segs: &[Seg<'_>]) -> String {
    let mut out = String::new();
    for (i, s) in segs.iter().enumerate() {
        out.push('/');
        match s {
            Seg::Lit(t) | Seg::Complex(t) => out.push_str(t),
            Seg::Param => out.push_str(&format!("{{p{i}}}")),
            Seg::CatchAll => out.push_str(&format!("{{*p{i}}}")),
        }
    }
    out
}

/// Segment trie of placed templates, answering "which layers hold a
/// template that may fit a path this template fits".
#[derive(Debug, Default)]
struct Trie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Default)]
struct TrieNode {
    lit: HashMap<Box<str>, usize>,
    param: Option<usize>,
    /// Layers of templates ending here.
    end: Vec<u32>,
    /// Layers of templates with a catch-all or complex segment here.
    wild: Vec<u32>,
    /// Layers of every template at or below this node.
    subtree: Vec<u32>,
}

impl Trie {
    fn root(&mut self) -> usize {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        0
    }

    fn insert(&mut self, segs: &[Seg<'_>], layer: u32) {
        let mut node = self.root();
        for seg in segs {
            add_layer(&mut self.nodes[node].subtree, layer);
            let next = match seg {
                Seg::Lit(s) => self.nodes[node].lit.get(*s).copied(),
                Seg::Param => self.nodes[node].param,
                Seg::CatchAll | Seg::Complex(_) => {
                    add_layer(&mut self.nodes[node].wild, layer);
                    return;
                }
            };
            node = match next {
                Some(n) => n,
                None => {
                    let n = self.nodes.len();
                    self.nodes.push(TrieNode::default());
                    match seg {
                        Seg::Lit(s) => {
                            self.nodes[node].lit.insert((*s).into(), n);
                        }
                        _ => self.nodes[node].param = Some(n),
                    }
                    n
                }
            };
        }
        add_layer(&mut self.nodes[node].subtree, layer);
        add_layer(&mut self.nodes[node].end, layer);
    }

    /// Marks in `taken` the layers of placed templates that may overlap `segs`.
    fn overlapping(&self, segs: &[Seg<'_>], taken: &mut [bool]) {
        if !self.nodes.is_empty() {
            self.walk(0, segs, taken);
        }
    }

    fn walk(&self, node: usize, segs: &[Seg<'_>], taken: &mut [bool]) {
        let Some(n) = self.nodes.get(node) else {
            return;
        };
        mark(taken, &n.wild);
        let Some((first, rest)) = segs.split_first() else {
            mark(taken, &n.end);
            return;
        };
        match first {
            Seg::Lit(s) => {
                if let Some(&c) = n.lit.get(*s) {
                    self.walk(c, rest, taken);
                }
                if let Some(c) = n.param {
                    self.walk(c, rest, taken);
                }
            }
            Seg::Param => {
                for &c in n.lit.values() {
                    self.walk(c, rest, taken);
                }
                if let Some(c) = n.param {
                    self.walk(c, rest, taken);
                }
            }
            Seg::CatchAll | Seg::Complex(_) => mark(taken, &n.subtree),
        }
    }
}

fn add_layer(layers: &mut Vec<u32>, layer: u32) {
    if let Err(pos) = layers.binary_search(&layer) {
        layers.insert(pos, layer);
    }
}

fn mark(taken: &mut [bool], layers: &[u32]) {
    for &l in layers {
        if let Some(t) = usize::try_from(l).ok().and_then(|l| taken.get_mut(l)) {
            *t = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_and_canonical_form() {
        let segs = parse_segments("/users/{id}/files/{*rest}");
        assert_eq!(
            segs,
            [
                Seg::Lit("users"),
                Seg::Param,
                Seg::Lit("files"),
                Seg::CatchAll
            ]
        );
        assert_eq!(canonical(&segs), "/users/{p1}/files/{*p3}");
        assert_eq!(
            canonical(&parse_segments("/users/{uid}/files/{*f}")),
            "/users/{p1}/files/{*p3}"
        );
        assert_eq!(
            parse_segments("/img/{id}.png/{{x}}/"),
            [
                Seg::Lit("img"),
                Seg::Complex("{id}.png"),
                Seg::Complex("{{x}}"),
                Seg::Lit("")
            ]
        );
    }

    #[test]
    fn overlapping_templates_get_separate_layers() {
        let items: Vec<(u32, Option<Vec<String>>)> = [
            "/users/{id}",
            "/users/me",
            "/users/{uid}",
            "/src/{*f}",
            "/src/{file}",
            "/other/x",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| (i as u32, Some(vec![t.to_string()])))
        .collect();
        let pi = PathIndex::build(&items);
        // /users/{id} and /users/{uid} share one entry.
        assert_eq!(pi.entries.len(), 5);
        assert_eq!(pi.entries[0], [0, 2]);
        assert_eq!(pi.layers.len(), 2);
        let mut heads: [&[u32]; MAX_SOURCES] = [&[]; MAX_SOURCES];
        let mut n = 0;
        assert!(pi.sources("/users/me", &mut heads, &mut n));
        let mut got = Vec::new();
        merge_first(&mut heads[..n], |id| {
            got.push(id);
            false
        });
        assert_eq!(got, [0, 1, 2]);
    }

    #[test]
    fn small_buckets_keep_no_path_index() {
        let items: Vec<(u32, Option<Vec<String>>)> = vec![
            (1, Some(vec!["/a".to_owned(), "/a/".to_owned()])),
            (1, Some(vec!["/a".to_owned()])),
            (3, None),
            (5, Some(vec!["/b/{id}".to_owned()])),
        ];
        let pi = PathIndex::build(&items);
        assert!(pi.layers.is_empty());
        assert!(pi.entries.is_empty());
        assert_eq!(pi.pathless, [1, 3, 5]);
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
    fn many_templates_in_one_bucket_stay_few_layers() {
        // 10,000 templates sharing a host bucket, a few overlapping all of
        // them: placing them must not be pairwise work, and layers stay few.
        let mut items: Vec<(u32, Option<Vec<String>>)> = (0..10_000u32)
            .map(|i| (i, Some(vec![format!("/api/svc{i}/items/{{id}}")])))
            .collect();
        items.push((10_000, Some(vec!["/api/{svc}/items/{id}".to_owned()])));
        items.push((10_001, Some(vec!["/api/{*rest}".to_owned()])));
        items.push((10_002, Some(vec!["/api/svc7/items/me".to_owned()])));
        let start = std::time::Instant::now();
        let pi = PathIndex::build(&items);
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
        assert_eq!(pi.layers.len(), 4);
        let mut heads: [&[u32]; MAX_SOURCES] = [&[]; MAX_SOURCES];
        let mut n = 0;
        assert!(pi.sources("/api/svc7/items/me", &mut heads, &mut n));
        let mut got = Vec::new();
        merge_first(&mut heads[..n], |id| {
            got.push(id);
            false
        });
        assert_eq!(got, [7, 10_000, 10_001, 10_002]);
    }
}

//! `path` templates (matchit syntax, first match wins, no specificity
//! ranking) and segment-aware `path_prefix`.

use super::find_byte;

/// `path`: a matchit template; without `{`/`}` an exact match.
///
/// Every template is validated by matchit, so the accepted syntax and the
/// errors are matchit's. Most templates use parameters only as whole
/// segments (`/users/{id}`, `/static/{*rest}`); those keep just their text
/// and are matched by [`simple_match`], which walks the template and the
/// path together without allocating. The rest (a parameter with a prefix
/// or suffix inside its segment, escaped braces) keep a matchit router,
/// which costs about a kilobyte each (issue 6: 10,000 routes).
#[derive(Debug, Clone)]
pub struct PathTemplate {
    template: Box<str>,
    /// `None`: exact text, or a simple template ([`is_simple`]).
    router: Option<Box<matchit::Router<()>>>,
}

impl PathTemplate {
    /// Validates and compiles a template; the error says how to fix it.
    pub fn new(template: &str) -> Result<PathTemplate, String> {
        if !template.starts_with('/') {
            return Err(format!("path template {template:?} must start with `/`"));
        }
        if !template.contains(['{', '}']) {
            if template.contains(':') && template.split('/').any(|s| s.starts_with(':')) {
                return Err(format!(
                    "path template {template:?}: parameters are written {{name}}, not :name (e.g. /users/{{id}})"
                ));
            }
            return Ok(PathTemplate {
                template: template.into(),
                router: None,
            });
        }
        let mut router = matchit::Router::new();
        router
            .insert(template, ())
            .map_err(|e| template_error(template, &e))?;
        Ok(PathTemplate {
            template: template.into(),
            router: (!is_simple(template)).then(|| Box::new(router)),
        })
    }

    /// The template as written.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// Whether the normalized path fits.
    pub fn matches(&self, path: &str) -> bool {
        match &self.router {
            None => simple_match(&self.template, path),
            Some(r) => r.at(path).is_ok(),
        }
    }
}

/// Whether every brace of a (matchit-valid) template is part of a
/// whole-segment parameter: `/{name}/` or `/{name}` at the end, the name
/// without braces, a catch-all `{*name}` only as the last segment. Escaped
/// braces (`{{`, `}}`) and parameters sharing a segment with text are not.
fn is_simple(template: &str) -> bool {
    let mut segs = template.split('/').skip(1).peekable();
    while let Some(seg) = segs.next() {
        if !seg.contains(['{', '}']) {
            continue;
        }
        let Some(name) = seg.strip_prefix('{').and_then(|r| r.strip_suffix('}')) else {
            return false;
        };
        let name = name.strip_prefix('*').unwrap_or(name);
        if name.is_empty() || name.contains(['{', '}', '*']) {
            return false;
        }
        if seg.starts_with("{*") && segs.peek().is_some() {
            return false;
        }
    }
    true
}

/// Matches a template accepted by [`is_simple`] (or one without braces)
/// the way matchit does: literal text byte for byte, `{name}` one
/// non-empty segment, `{*name}` the non-empty rest of the path.
fn simple_match(template: &str, path: &str) -> bool {
    let mut t = template;
    let mut p = path;
    loop {
        let Some(open) = find_byte(t, b'{') else {
            return t == p;
        };
        let Some(rest) = p.strip_prefix(&t[..open]) else {
            return false;
        };
        let Some(close) = find_byte(&t[open..], b'}').map(|c| open + c) else {
            return false;
        };
        if t.as_bytes().get(open + 1) == Some(&b'*') {
            return !rest.is_empty();
        }
        let len = find_byte(rest, b'/').unwrap_or(rest.len());
        if len == 0 {
            return false;
        }
        t = &t[close + 1..];
        p = &rest[len..];
    }
}

fn template_error(template: &str, e: &matchit::InsertError) -> String {
    let fix = match e {
        matchit::InsertError::InvalidParamSegment => {
            "only one {parameter} is allowed per segment; split it across segments (e.g. /{a}/{b})"
        }
        matchit::InsertError::InvalidParam => {
            "parameters need a name in matching braces, like {id} or {*rest}; write a literal brace as {{ or }}"
        }
        matchit::InsertError::InvalidCatchAll => {
            "a catch-all {*rest} must be the whole last segment, as in /static/{*rest}"
        }
        _ => "check the template syntax (/users/{id}, /static/{*rest})",
    };
    format!("invalid path template {template:?}: {e}; {fix}")
}

// === impl PathPrefix ===

/// `path_prefix`: segment-aware. `/api` holds for `/api` and `/api/…`, not
/// `/apix`; a prefix ending in `/` (such as `/`) holds for every path that
/// starts with it.
#[derive(Debug, Clone)]
pub struct PathPrefix(Box<str>);

impl PathPrefix {
    /// The prefix must start with `/`.
    pub fn new(prefix: &str) -> Result<PathPrefix, String> {
        if !prefix.starts_with('/') {
            return Err(format!("path_prefix {prefix:?} must start with `/`"));
        }
        Ok(PathPrefix(prefix.into()))
    }

    /// The prefix as written.
    pub fn prefix(&self) -> &str {
        &self.0
    }

    /// Whether the normalized path is inside the prefix.
    pub fn matches(&self, path: &str) -> bool {
        let p = &*self.0;
        path.starts_with(p)
            && (path.len() == p.len() || p.ends_with('/') || path.as_bytes()[p.len()] == b'/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_templates() {
        let t = PathTemplate::new("/users/{id}").unwrap();
        assert!(t.matches("/users/42"));
        assert!(!t.matches("/users/42/x"));
        assert!(!t.matches("/users/"));
        let c = PathTemplate::new("/static/{*rest}").unwrap();
        assert!(c.matches("/static/a/b.css"));
        assert!(!c.matches("/static/"));
        assert!(!c.matches("/static"));
        let e = PathTemplate::new("/status/legacy").unwrap();
        assert!(e.matches("/status/legacy"));
        assert!(!e.matches("/status/legacy/"));
        let s = PathTemplate::new("/img/{id}.png").unwrap();
        assert!(s.matches("/img/1.png"));
        assert!(!s.matches("/img/1.jpg"));
        let esc = PathTemplate::new("/{{x}}").unwrap();
        assert!(esc.matches("/{x}"));
        for bad in [
            "/{a}{b}",
            "/{",
            "/{*rest}/x",
            "users/{id}",
            "/users/:id",
            "/{}",
        ] {
            let err = PathTemplate::new(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
    }

    #[test]
    fn path_prefixes() {
        let p = PathPrefix::new("/api").unwrap();
        assert!(p.matches("/api"));
        assert!(p.matches("/api/"));
        assert!(p.matches("/api/x"));
        assert!(!p.matches("/apix"));
        assert!(!p.matches("/ap"));
        let slash = PathPrefix::new("/api/").unwrap();
        assert!(slash.matches("/api/x"));
        assert!(!slash.matches("/api"));
        let root = PathPrefix::new("/").unwrap();
        assert!(root.matches("/"));
        assert!(root.matches("/anything"));
        assert!(PathPrefix::new("api").is_err());
    }
}

#[cfg(test)]
mod template_props {
    use super::*;
    use proptest::prelude::*;

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("ab".to_owned()),
            Just("b".to_owned()),
            Just(String::new()),
            Just("{x}".to_owned()),
            Just("{y}".to_owned()),
        ]
    }

    fn template() -> impl Strategy<Value = String> {
        (prop::collection::vec(segment(), 0..4), any::<bool>()).prop_map(|(segs, catch_all)| {
            let mut segs = segs;
            // matchit rejects two parameters with one name.
            let mut seen = std::collections::HashSet::new();
            for s in segs.iter_mut() {
                if s.starts_with('{') && !seen.insert(s.clone()) {
                    *s = format!("{{p{}}}", seen.len());
                    seen.insert(s.clone());
                }
            }
            if catch_all {
                segs.push("{*rest}".to_owned());
            }
            format!("/{}", segs.join("/"))
        })
    }

    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("a"),
                Just("ab"),
                Just("b"),
                Just(""),
                Just("x"),
                Just("a/b"),
                Just("{x}")
            ],
            0..6,
        )
        .prop_map(|segs| format!("/{}", segs.join("/")))
    }

    proptest! {
        /// The allocation-free matcher of simple templates agrees with matchit.
        #[test]
        fn simple_templates_match_like_matchit(t in template(), paths in prop::collection::vec(path(), 1..8)) {
            let mut router = matchit::Router::new();
            if router.insert(t.as_str(), ()).is_err() {
                prop_assert!(PathTemplate::new(&t).is_err());
                return Ok(());
            }
            let compiled = PathTemplate::new(&t).unwrap();
            prop_assert!(compiled.router.is_none(), "{t} should be simple");
            // Paths built from the template itself, parameters filled in.
            let filled = t.replace("{*rest}", "r/s").replace("{x}", "v").replace("{y}", "w");
            for p in paths.iter().chain([&filled, &t]) {
                prop_assert_eq!(compiled.matches(p), router.at(p).is_ok(), "{} on {}", t, p);
            }
        }
    }

    #[test]
    fn complex_templates_keep_a_router() {
        for t in ["/img/{id}.png", "/{{x}}", "/v{n}/x", "/a/{id}x/{*rest}"] {
            if let Ok(c) = PathTemplate::new(t) {
                assert!(c.router.is_some(), "{t}");
            }
        }
        for t in ["/", "/a", "/a/{id}", "/a/{id}/", "/{*rest}", "/a/{b}/{*c}"] {
            assert!(PathTemplate::new(t).unwrap().router.is_none(), "{t}");
        }
    }
}

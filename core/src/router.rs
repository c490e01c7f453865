//! A request router: method + path patterns with named parameters (`/users/:id`) and a tail
//! wildcard (`/static/*path`), looked up in a tree of path segments.
//!
//! - A pattern is `/` followed by segments separated by `/`: a segment starting with `:` is
//!   a parameter (it matches one whole non-empty segment), a last segment starting with `*`
//!   is a wildcard (it matches the rest of the path, slashes included, possibly empty; `*`
//!   alone is named `*`), any other segment is literal.
//! - Precedence is static segment > parameter > wildcard at every level, whatever the
//!   order of registration, with backtracking: `/users/new` wins over `/users/:id`, and
//!   `/users/new/edit` still reaches `/users/:id/edit`.
//! - Matching walks one tree node per path segment, each a hash lookup among that node's
//!   literal children (FNV-1a), so its cost depends on the path, not the number of routes.
//! - Static segments are compared with the path as sent (still percent-encoded). Parameters
//!   are percent-decoded after matching, so `/hello/a%2Fb` gives `a/b` to `/hello/:name`;
//!   an invalid escape, or a decoded value that is not UTF-8, is [`Match::BadRequest`].
//! - A path that matches no pattern is [`Match::NotFound`]; one that matches patterns none
//!   of which has the method is [`Match::MethodNotAllowed`] with the `Allow` value. HEAD
//!   goes to the GET route where no HEAD route is registered.
//! - Trailing slashes are significant (`/a` and `/a/` are different paths).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::percent;

/// FNV-1a: a fast hash for short keys (the routes are the application's, not the client's).
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Children<T> = HashMap<Box<[u8]>, Node<T>, BuildHasherDefault<Fnv>>;

/// Why a route could not be added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The pattern is malformed (not starting with `/`, an empty parameter name, a
    /// wildcard before the last segment, a name used twice...); the text says what.
    Invalid(&'static str),
    /// The method is empty or not an HTTP token.
    BadMethod,
    /// The same method and pattern (up to parameter names) are already registered.
    Duplicate(String),
    /// A parameter or wildcard at this position already has another name.
    Conflict(String),
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteError::Invalid(why) => write!(f, "invalid route pattern: {why}"),
            RouteError::BadMethod => f.write_str("invalid route method"),
            RouteError::Duplicate(p) => write!(f, "route already registered: {p}"),
            RouteError::Conflict(p) => {
                write!(
                    f,
                    "route conflicts with {p}: another name at the same position"
                )
            }
        }
    }
}

impl std::error::Error for RouteError {}

/// The routes ending at one node: values by method, and the `Allow` value.
struct Endpoint<T> {
    pattern: Box<str>,
    methods: Vec<(Box<str>, T)>,
    allow: String,
}

impl<T> Endpoint<T> {
    fn new(pattern: &str) -> Self {
        Endpoint {
            pattern: pattern.into(),
            methods: Vec::new(),
            allow: String::new(),
        }
    }

    fn get(&self, method: &str) -> Option<&T> {
        let find = |m: &str| self.methods.iter().find(|(k, _)| &**k == m).map(|e| &e.1);
        find(method).or_else(|| if method == "HEAD" { find("GET") } else { None })
    }

    fn add(&mut self, method: &str, value: T) -> Result<(), RouteError> {
        if self.methods.iter().any(|(m, _)| &**m == method) {
            return Err(RouteError::Duplicate(format!("{method} {}", self.pattern)));
        }
        self.methods.push((method.into(), value));
        let mut names: Vec<&str> = self.methods.iter().map(|(m, _)| &**m).collect();
        if names.contains(&"GET") && !names.contains(&"HEAD") {
            let at = names.iter().position(|m| *m == "GET").unwrap_or(0) + 1;
            names.insert(at, "HEAD");
        }
        self.allow = names.join(", ");
        Ok(())
    }
}

struct Node<T> {
    statics: Children<T>,
    param: Option<(Box<str>, Box<Node<T>>)>,
    wildcard: Option<(Box<str>, Endpoint<T>)>,
    /// Routes whose pattern ends at this node.
    end: Option<Endpoint<T>>,
}

impl<T> Node<T> {
    fn new() -> Self {
        Node {
            statics: Children::default(),
            param: None,
            wildcard: None,
            end: None,
        }
    }
}

/// Most parameters (and wildcard) in one pattern.
pub const MAX_PARAMS: usize = 16;

/// Parameters of a match, percent-decoded, in pattern order; reusable across lookups (it
/// keeps its storage, so a warmed-up lookup allocates nothing).
#[derive(Default, Debug, Clone)]
pub struct Params {
    buf: String,
    /// (name start, name end, value end) in `buf`; a value starts where its name ends.
    spans: Vec<(u32, u32, u32)>,
}

impl Params {
    /// Empty parameters.
    pub fn new() -> Self {
        Params::default()
    }

    /// Forgets every parameter (keeping the storage).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.spans.clear();
    }

    /// How many parameters there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The `i`th parameter (name, decoded value), in pattern order.
    pub fn at(&self, i: usize) -> Option<(&str, &str)> {
        let &(a, b, c) = self.spans.get(i)?;
        Some((
            &self.buf[a as usize..b as usize],
            &self.buf[b as usize..c as usize],
        ))
    }

    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|p| p.1)
    }

    /// Every (name, decoded value), in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        (0..self.len()).filter_map(|i| self.at(i))
    }

    /// Appends a parameter: its name and its raw value, decoded strictly. False (and
    /// nothing appended) when the value is not valid percent-encoded UTF-8.
    pub fn push_decoded(&mut self, name: &str, raw: &[u8]) -> bool {
        let decoded = match percent::decode_strict(raw) {
            Ok(d) => d,
            Err(_) => return false,
        };
        let Ok(value) = std::str::from_utf8(&decoded) else {
            return false;
        };
        let a = self.buf.len();
        self.buf.push_str(name);
        let b = self.buf.len();
        self.buf.push_str(value);
        let c = self.buf.len();
        self.spans.push((a as u32, b as u32, c as u32));
        true
    }
}

/// The raw parameter spans of a match in progress: (name, start, end) in the path.
struct Raw<'r> {
    items: [(&'r str, usize, usize); MAX_PARAMS],
    len: usize,
}

/// The outcome of [`Router::find`].
#[derive(Debug)]
pub enum Match<'r, T> {
    /// A route for the method; its parameters are in the `Params` given to `find`.
    Found(&'r T),
    /// No pattern matches the path (404).
    NotFound,
    /// Patterns match the path but none has the method (405); the `Allow` value.
    MethodNotAllowed(&'r str),
    /// A parameter is not valid percent-encoded UTF-8 (400).
    BadRequest,
}

/// A router from (method, path) to values of type `T` (handlers).
pub struct Router<T> {
    root: Node<T>,
    len: usize,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router::new()
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

impl<T> Router<T> {
    /// An empty router.
    pub fn new() -> Self {
        Router {
            root: Node::new(),
            len: 0,
        }
    }

    /// How many (method, pattern) routes are registered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no route is registered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a route. Errors: a malformed pattern or method, the same method and pattern
    /// registered before, or a parameter/wildcard named differently from one already at
    /// the same position (`/users/:id` then `/users/:name/posts`).
    pub fn add(&mut self, method: &str, pattern: &str, value: T) -> Result<(), RouteError> {
        if method.is_empty() || !method.bytes().all(is_tchar) {
            return Err(RouteError::BadMethod);
        }
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(RouteError::Invalid("a pattern starts with '/'"));
        };
        let segs: Vec<&str> = rest.split('/').collect();
        let mut names: Vec<&str> = Vec::new();
        let mut node = &mut self.root;
        for (i, seg) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            if let Some(name) = seg.strip_prefix('*') {
                if !last {
                    return Err(RouteError::Invalid("a wildcard is the last segment"));
                }
                let name = if name.is_empty() { "*" } else { name };
                check_name(name, &mut names)?;
                let (n, end) = node
                    .wildcard
                    .get_or_insert_with(|| (name.into(), Endpoint::new(pattern)));
                if &**n != name {
                    return Err(RouteError::Conflict(end.pattern.to_string()));
                }
                end.add(method, value)?;
                self.len += 1;
                return Ok(());
            }
            node = if let Some(name) = seg.strip_prefix(':') {
                if name.is_empty() {
                    return Err(RouteError::Invalid("a parameter has a name"));
                }
                check_name(name, &mut names)?;
                let (n, child) = node
                    .param
                    .get_or_insert_with(|| (name.into(), Box::new(Node::new())));
                if &**n != name {
                    return Err(RouteError::Conflict(format!(
                        "the parameter :{n} of another route"
                    )));
                }
                child
            } else {
                node.statics
                    .entry(seg.as_bytes().into())
                    .or_insert_with(Node::new)
            };
        }
        node.end
            .get_or_insert_with(|| Endpoint::new(pattern))
            .add(method, value)?;
        self.len += 1;
        Ok(())
    }

    /// Looks up `method` and `path` (the path only: no query). On [`Match::Found`],
    /// `params` holds the decoded parameters (it is cleared first in every case).
    pub fn find<'r>(&'r self, method: &str, path: &str, params: &mut Params) -> Match<'r, T> {
        params.clear();
        if !path.starts_with('/') {
            return Match::NotFound;
        }
        let mut raw = Raw {
            items: [("", 0, 0); MAX_PARAMS],
            len: 0,
        };
        let mut allow = None;
        let w = Walk { path, method };
        let Some(value) = w.walk(&self.root, 1, &mut raw, &mut allow) else {
            return match allow {
                Some(a) => Match::MethodNotAllowed(a),
                None => Match::NotFound,
            };
        };
        for &(name, a, b) in &raw.items[..raw.len] {
            if !params.push_decoded(name, &path.as_bytes()[a..b]) {
                params.clear();
                return Match::BadRequest;
            }
        }
        Match::Found(value)
    }
}

fn check_name<'a>(name: &'a str, names: &mut Vec<&'a str>) -> Result<(), RouteError> {
    if names.contains(&name) {
        return Err(RouteError::Invalid("a parameter name is used twice"));
    }
    if names.len() == MAX_PARAMS {
        return Err(RouteError::Invalid("more than 16 parameters"));
    }
    names.push(name);
    Ok(())
}

/// One lookup: the full path and the method.
struct Walk<'p> {
    path: &'p str,
    method: &'p str,
}

impl Walk<'_> {
    /// The value of `end` for the method; else notes its `Allow` (the first endpoint that
    /// matched the path, in precedence order, answers a 405).
    fn at_end<'r, T>(&self, end: &'r Endpoint<T>, allow: &mut Option<&'r str>) -> Option<&'r T> {
        let v = end.get(self.method);
        if v.is_none() && allow.is_none() {
            *allow = Some(&end.allow);
        }
        v
    }

    /// Matches `path[pos..]` (what follows a `/`) below `node`, pushing parameters' raw
    /// spans to `raw` (popped again when backtracking).
    fn walk<'r, T>(
        &self,
        node: &'r Node<T>,
        pos: usize,
        raw: &mut Raw<'r>,
        allow: &mut Option<&'r str>,
    ) -> Option<&'r T> {
        let rest = &self.path[pos..];
        let (seg_end, tail) = match rest.find('/') {
            Some(i) => (pos + i, Some(pos + i + 1)),
            None => (self.path.len(), None),
        };
        let seg = &self.path[pos..seg_end];
        let next = |child: &'r Node<T>, raw: &mut Raw<'r>, allow: &mut Option<&'r str>| match tail {
            None => child.end.as_ref().and_then(|e| self.at_end(e, allow)),
            Some(t) => self.walk(child, t, raw, allow),
        };
        if let Some(child) = node.statics.get(seg.as_bytes()) {
            if let Some(v) = next(child, raw, allow) {
                return Some(v);
            }
        }
        if let Some((name, child)) = &node.param {
            if !seg.is_empty() && raw.len < MAX_PARAMS {
                let at = raw.len;
                raw.items[at] = (name, pos, seg_end);
                raw.len += 1;
                if let Some(v) = next(child, raw, allow) {
                    return Some(v);
                }
                raw.len = at;
            }
        }
        if let Some((name, end)) = &node.wildcard {
            if raw.len < MAX_PARAMS {
                if let Some(v) = self.at_end(end, allow) {
                    raw.items[raw.len] = (name, pos, self.path.len());
                    raw.len += 1;
                    return Some(v);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&str, &str)]) -> Router<usize> {
        let mut r = Router::new();
        for (i, (m, p)) in routes.iter().enumerate() {
            r.add(m, p, i).unwrap();
        }
        r
    }

    /// The route index and parameters found, or the status.
    fn look(
        r: &Router<usize>,
        m: &str,
        path: &str,
    ) -> Result<(usize, Vec<(String, String)>), String> {
        let mut p = Params::new();
        match r.find(m, path, &mut p) {
            Match::Found(v) => Ok((
                *v,
                p.iter()
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .collect(),
            )),
            Match::NotFound => Err("404".into()),
            Match::MethodNotAllowed(a) => Err(format!("405 {a}")),
            Match::BadRequest => Err("400".into()),
        }
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn static_param_wildcard() {
        let r = router(&[
            ("GET", "/"),
            ("GET", "/hello/:name"),
            ("GET", "/static/*path"),
            ("GET", "/users/:id/posts/:post"),
        ]);
        assert_eq!(look(&r, "GET", "/"), Ok((0, vec![])));
        assert_eq!(
            look(&r, "GET", "/hello/bob"),
            Ok((1, kv(&[("name", "bob")])))
        );
        assert_eq!(look(&r, "GET", "/hello/"), Err("404".into()));
        assert_eq!(look(&r, "GET", "/hello"), Err("404".into()));
        assert_eq!(look(&r, "GET", "/hello/a/b"), Err("404".into()));
        assert_eq!(
            look(&r, "GET", "/static/css/a.css"),
            Ok((2, kv(&[("path", "css/a.css")])))
        );
        assert_eq!(look(&r, "GET", "/static/"), Ok((2, kv(&[("path", "")]))));
        assert_eq!(look(&r, "GET", "/static"), Err("404".into()));
        assert_eq!(
            look(&r, "GET", "/users/7/posts/x"),
            Ok((3, kv(&[("id", "7"), ("post", "x")])))
        );
        assert_eq!(look(&r, "GET", "relative"), Err("404".into()));
        assert_eq!(look(&r, "GET", ""), Err("404".into()));
    }

    #[test]
    fn decoded_after_matching() {
        let r = router(&[("GET", "/hello/:name"), ("GET", "/f/*rest")]);
        assert_eq!(
            look(&r, "GET", "/hello/a%2Fb"),
            Ok((0, kv(&[("name", "a/b")])))
        );
        assert_eq!(
            look(&r, "GET", "/hello/a+b%20c"),
            Ok((0, kv(&[("name", "a+b c")])))
        );
        assert_eq!(
            look(&r, "GET", "/hello/%E2%82%AC"),
            Ok((0, kv(&[("name", "€")])))
        );
        assert_eq!(look(&r, "GET", "/hello/a%zz"), Err("400".into()));
        assert_eq!(look(&r, "GET", "/hello/a%2"), Err("400".into()));
        assert_eq!(
            look(&r, "GET", "/hello/%FF"),
            Err("400".into()),
            "not UTF-8"
        );
        assert_eq!(
            look(&r, "GET", "/f/a%2Fb/c"),
            Ok((1, kv(&[("rest", "a/b/c")])))
        );
        // An invalid escape in a path that matches nothing is a 404, not a 400.
        assert_eq!(look(&r, "GET", "/nope/%zz"), Err("404".into()));
    }

    #[test]
    fn precedence_independent_of_order() {
        let routes = [
            ("GET", "/users/:id"),
            ("GET", "/users/new"),
            ("GET", "/users/*rest"),
            ("GET", "/users/:id/edit"),
            ("GET", "/users/new/*x"),
        ];
        // Every rotation of the registration order gives the same answers.
        for k in 0..routes.len() {
            let mut rot = routes.to_vec();
            rot.rotate_left(k);
            let r = router(&rot);
            let idx = |p: &str| rot.iter().position(|(_, q)| *q == p).unwrap();
            assert_eq!(look(&r, "GET", "/users/new").unwrap().0, idx("/users/new"));
            assert_eq!(look(&r, "GET", "/users/5").unwrap().0, idx("/users/:id"));
            assert_eq!(
                look(&r, "GET", "/users/5/edit").unwrap().0,
                idx("/users/:id/edit")
            );
            // Backtracking: "new" is static, but /users/new/edit only exists as :id/edit...
            // except /users/new/*x, which is static "new" first: static wins at level 2.
            assert_eq!(
                look(&r, "GET", "/users/new/edit").unwrap().0,
                idx("/users/new/*x")
            );
            assert_eq!(
                look(&r, "GET", "/users/5/x/y").unwrap().0,
                idx("/users/*rest")
            );
            assert_eq!(look(&r, "GET", "/users/").unwrap().0, idx("/users/*rest"));
        }
        let r = router(&[("GET", "/users/:id/edit"), ("GET", "/users/new")]);
        assert_eq!(
            look(&r, "GET", "/users/new/edit"),
            Ok((0, kv(&[("id", "new")]))),
            "backtracks from the static segment to the parameter"
        );
    }

    #[test]
    fn methods_head_and_405() {
        let r = router(&[
            ("GET", "/a"),
            ("POST", "/a"),
            ("DELETE", "/b/:id"),
            ("HEAD", "/h"),
            ("GET", "/h"),
            ("POST", "/x/new"),
            ("GET", "/x/:id"),
        ]);
        assert_eq!(look(&r, "POST", "/a").unwrap().0, 1);
        assert_eq!(look(&r, "HEAD", "/a").unwrap().0, 0, "HEAD goes to GET");
        assert_eq!(look(&r, "HEAD", "/h").unwrap().0, 3, "HEAD route wins");
        assert_eq!(look(&r, "PUT", "/a"), Err("405 GET, HEAD, POST".into()));
        assert_eq!(look(&r, "GET", "/b/1"), Err("405 DELETE".into()));
        assert_eq!(look(&r, "GET", "/h").unwrap().0, 4);
        // A method missing on the static route falls back to the parameter route.
        assert_eq!(look(&r, "GET", "/x/new"), Ok((6, kv(&[("id", "new")]))));
        assert_eq!(look(&r, "PUT", "/x/new"), Err("405 POST".into()));
    }

    #[test]
    fn registration_errors() {
        let mut r: Router<u8> = Router::new();
        r.add("GET", "/users/:id", 0).unwrap();
        assert!(matches!(
            r.add("GET", "/users/:id", 1),
            Err(RouteError::Duplicate(_))
        ));
        assert!(matches!(
            r.add("GET", "/users/:name", 1),
            Err(RouteError::Conflict(_))
        ));
        assert!(matches!(
            r.add("GET", "/users/:uid/posts", 1),
            Err(RouteError::Conflict(_))
        ));
        r.add("POST", "/users/:id", 1).unwrap();
        r.add("GET", "/s/*p", 1).unwrap();
        assert!(matches!(
            r.add("GET", "/s/*q", 1),
            Err(RouteError::Conflict(_))
        ));
        assert!(matches!(
            r.add("GET", "/s/*p", 1),
            Err(RouteError::Duplicate(_))
        ));
        assert!(matches!(
            r.add("GET", "nope", 1),
            Err(RouteError::Invalid(_))
        ));
        assert!(matches!(
            r.add("GET", "/a/:", 1),
            Err(RouteError::Invalid(_))
        ));
        assert!(matches!(
            r.add("GET", "/a/*w/b", 1),
            Err(RouteError::Invalid(_))
        ));
        assert!(matches!(
            r.add("GET", "/a/:x/:x", 1),
            Err(RouteError::Invalid(_))
        ));
        assert!(matches!(r.add("", "/a", 1), Err(RouteError::BadMethod)));
        assert!(matches!(r.add("G T", "/a", 1), Err(RouteError::BadMethod)));
        let many: String = (0..17).map(|i| format!("/:p{i}")).collect();
        assert!(matches!(
            r.add("GET", &many, 1),
            Err(RouteError::Invalid(_))
        ));
        assert_eq!(r.len(), 3);
        assert!(RouteError::Duplicate("GET /x".into())
            .to_string()
            .contains("GET /x"));
    }

    #[test]
    fn unnamed_wildcard_and_root_wildcard() {
        let r = router(&[("GET", "/*"), ("GET", "/api/:v")]);
        assert_eq!(
            look(&r, "GET", "/anything/at/all"),
            Ok((0, kv(&[("*", "anything/at/all")])))
        );
        assert_eq!(look(&r, "GET", "/api/1"), Ok((1, kv(&[("v", "1")]))));
        assert_eq!(
            look(&r, "GET", "/api/1/2"),
            Ok((0, kv(&[("*", "api/1/2")])))
        );
    }

    #[test]
    fn lookups_reuse_params_storage() {
        let r = router(&[("GET", "/a/:x/:y")]);
        let mut p = Params::new();
        assert!(matches!(r.find("GET", "/a/1/2", &mut p), Match::Found(_)));
        let cap = (p.buf.capacity(), p.spans.capacity());
        for _ in 0..100 {
            assert!(matches!(r.find("GET", "/a/3/4", &mut p), Match::Found(_)));
        }
        assert_eq!((p.buf.capacity(), p.spans.capacity()), cap);
        assert_eq!(p.get("y"), Some("4"));
        assert!(matches!(r.find("GET", "/b", &mut p), Match::NotFound));
        assert!(p.is_empty(), "cleared on a miss");
    }
}

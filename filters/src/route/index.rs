//! The HTTPRoute matches of one route set, indexed by path so that choosing a rule costs the
//! same with 10 rules as with 10,000.
//!
//! # What it must return
//! The matches are kept in one list in Gateway API precedence order (built once per config by
//! `attach::sorted`: path kind and length, method, header count, query count, oldest route,
//! `namespace/name`, rule order, match order). The rule for a request is the *first* match of
//! that list the request satisfies. The index returns exactly that entry; it only avoids
//! looking at entries that cannot match.
//!
//! # How
//! Every match has a path condition, and which entries' path conditions a path can satisfy is
//! known from the path alone:
//! - `Exact(v)` holds only when the path is `v`: one hash lookup of the path finds them all;
//! - `PathPrefix(v)` (stored without its trailing `/`) holds exactly when `v` is `path[..k]`
//!   for a `k` where the path ends or has a `/` (see [`PathMatch::matches`]): one lookup per
//!   such `k`. Only the lengths some prefix actually has are looked up, so a path of many
//!   segments costs no more than the config's distinct prefix lengths allow;
//! - `RegularExpression` paths cannot be looked up: they stay in a list that is always
//!   scanned (the spec ranks them last anyway; header-, method- or query-only matches have the
//!   default path `PathPrefix /` and sit under the empty prefix, scanned when reached).
//!
//! Each lookup yields a list of positions in the precedence list, ascending. The answer is the
//! lowest position among candidates that satisfy the whole match (method, headers, query and
//! the path again), which is what the scan returns: the scan returns the lowest position that
//! matches, and every position that matches is a candidate, since its path condition holds.
//! Walking each list stops at its first match or at the best position found so far, and the
//! lists are visited most specific first (exact, longest prefix, ..., regular expressions), so
//! in practice the first match found ends the search. Correctness does not depend on that
//! visiting order, only on the lists being complete and ascending.
//!
//! The cost of a request is a handful of hash lookups (one per `/` of its path up to the
//! longest prefix in the config) plus the entries sharing its path condition, never the whole
//! list. Building is one pass over the list.

use std::collections::HashMap;

use super::RouteEntry;
use super::matcher::PathMatch;

/// HTTPRoute matches in precedence order, with the index that finds the first one a request
/// satisfies.
#[derive(Debug, Default)]
pub(super) struct HttpRoutes {
    /// Every match, in precedence order.
    entries: Vec<RouteEntry>,
    /// Path `Exact` value -> positions in `entries`, ascending.
    exact: HashMap<Box<str>, Vec<usize>>,
    /// `PathPrefix` value (without trailing `/`) -> positions in `entries`, ascending.
    prefix: HashMap<Box<str>, Vec<usize>>,
    /// `prefix_lengths[k]`: some `PathPrefix` value is `k` bytes long. Bounds the lookups a
    /// request makes by the config, not by how many `/` the client put in its path.
    prefix_lengths: Vec<bool>,
    /// Positions of `RegularExpression` path matches, ascending: always scanned.
    regex: Vec<usize>,
}

impl HttpRoutes {
    /// Indexes `entries`, which are in precedence order.
    pub(super) fn new(entries: Vec<RouteEntry>) -> Self {
        let mut routes = HttpRoutes {
            entries: Vec::new(),
            exact: HashMap::new(),
            prefix: HashMap::new(),
            prefix_lengths: Vec::new(),
            regex: Vec::new(),
        };
        // Positions are pushed in increasing order, so every list is ascending.
        for (position, entry) in entries.iter().enumerate() {
            match &entry.matcher.path {
                PathMatch::Exact(value) => routes
                    .exact
                    .entry(value.as_str().into())
                    .or_default()
                    .push(position),
                PathMatch::Prefix(value) => {
                    if routes.prefix_lengths.len() <= value.len() {
                        routes.prefix_lengths.resize(value.len() + 1, false);
                    }
                    routes.prefix_lengths[value.len()] = true;
                    routes
                        .prefix
                        .entry(value.as_str().into())
                        .or_default()
                        .push(position);
                }
                PathMatch::Regex(_) => routes.regex.push(position),
            }
        }
        routes.entries = entries;
        routes
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first entry, in precedence order, that `req` satisfies.
    pub(super) fn first_match<B>(&self, req: &http::Request<B>) -> Option<&RouteEntry> {
        let path = req.uri().path();
        // The lowest position found so far that matches; `usize::MAX` while none does.
        let mut best = usize::MAX;
        let mut visit = |candidates: &[usize]| {
            for &position in candidates {
                if position >= best {
                    // Ascending: nothing further in this list can beat `best`.
                    return;
                }
                if self.entries[position].matcher.matches(req) {
                    best = position;
                    return;
                }
            }
        };
        if let Some(candidates) = self.exact.get(path) {
            visit(candidates);
        }
        let bytes = path.as_bytes();
        // Longest prefix first; lengths beyond the path or beyond every prefix are skipped.
        let lengths = &self.prefix_lengths[..self.prefix_lengths.len().min(bytes.len() + 1)];
        for (k, _) in lengths.iter().enumerate().rev().filter(|(_, some)| **some) {
            let boundary = k == bytes.len() || bytes[k] == b'/';
            if !boundary {
                continue;
            }
            // `k` is the end of the path or the index of a `/`: always a char boundary.
            if let Some(candidates) = path.get(..k).and_then(|p| self.prefix.get(p)) {
                visit(candidates);
            }
        }
        visit(&self.regex);
        self.entries.get(best)
    }

    /// The plain scan the index replaces: the reference the tests hold it to.
    #[cfg(test)]
    pub(super) fn scan<B>(&self, req: &http::Request<B>) -> Option<&RouteEntry> {
        self.entries.iter().find(|e| e.matcher.matches(req))
    }

    #[cfg(test)]
    pub(super) fn entries(&self) -> &[RouteEntry] {
        &self.entries
    }
}

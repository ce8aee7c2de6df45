//! Compiled AuthorizationPolicy rules: every value parsed once at build time (string forms,
//! CIDRs, ports, path templates, condition keys), so matching a request is comparisons only.
//!
//! An attribute the request does not have (no peer identity, no JWT, no header) matches no
//! value, so a positive field fails and a `not*` field holds, as in Envoy's RBAC.
//!
//! A TCP connection ([`Attrs::l4`]) has no HTTP attributes at all. There the HTTP-only fields
//! (`requestPrincipals`, `hosts`, `methods`, `paths`, their `not*` twins, and the
//! `request.headers[..]` / `request.auth.*` conditions) are skipped: each holds. That is Istio's
//! treatment for DENY, AUDIT and CUSTOM rules; ALLOW rules that use any of them are dropped
//! before matching ([`RuleMatch::needs_http`], see the `connection` module).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use waypoint_core::config::resources::{
    AuthorizationRule, RuleCondition, RuleOperation, RuleSource,
};
use waypoint_core::http::authority;

use super::RequestPrincipal;

/// What matching reads of a request, after normalization.
pub(crate) struct Attrs<'a> {
    /// `td/ns/x/sa/y`, when the peer proved an identity.
    pub principal: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub service_account: Option<&'a str>,
    pub source_ip: Option<IpAddr>,
    pub remote_ip: Option<IpAddr>,
    pub destination: Option<SocketAddr>,
    pub method: &'a str,
    pub host: &'a str,
    /// Normalized, without the query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub jwt: Option<&'a RequestPrincipal>,
    /// The ClientHello's server name of a TLS connection passed through (`connection.sni`).
    pub sni: Option<&'a str>,
    /// A TCP (or TLS passthrough) connection: HTTP-only fields are skipped.
    pub l4: bool,
}

/// Istio's string forms: `*` presence, `abc*` prefix, `*abc` suffix, else exact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Presence,
}

impl StringMatch {
    pub(crate) fn parse(value: &str) -> Self {
        if value == "*" {
            StringMatch::Presence
        } else if let Some(rest) = value.strip_prefix('*') {
            StringMatch::Suffix(rest.to_owned())
        } else if let Some(rest) = value.strip_suffix('*') {
            StringMatch::Prefix(rest.to_owned())
        } else {
            StringMatch::Exact(value.to_owned())
        }
    }

    fn lowercase(self) -> Self {
        match self {
            StringMatch::Exact(s) => StringMatch::Exact(s.to_ascii_lowercase()),
            StringMatch::Prefix(s) => StringMatch::Prefix(s.to_ascii_lowercase()),
            StringMatch::Suffix(s) => StringMatch::Suffix(s.to_ascii_lowercase()),
            StringMatch::Presence => StringMatch::Presence,
        }
    }

    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(s) => value.starts_with(s.as_str()),
            StringMatch::Suffix(s) => value.ends_with(s.as_str()),
            StringMatch::Presence => !value.is_empty(),
        }
    }

    /// For patterns lowercased at build time: compares without allocating.
    fn matches_ignore_case(&self, value: &str) -> bool {
        let v = value.as_bytes();
        match self {
            StringMatch::Exact(s) => value.eq_ignore_ascii_case(s),
            StringMatch::Prefix(s) => {
                v.len() >= s.len() && v[..s.len()].eq_ignore_ascii_case(s.as_bytes())
            }
            StringMatch::Suffix(s) => {
                v.len() >= s.len() && v[v.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
            StringMatch::Presence => !value.is_empty(),
        }
    }
}

/// A field and its `not` twin: any of `values` (when given) and none of `not_values`.
#[derive(Debug)]
pub(crate) struct Field<T> {
    values: Vec<T>,
    not_values: Vec<T>,
}

impl<T> Default for Field<T> {
    fn default() -> Self {
        Field {
            values: Vec::new(),
            not_values: Vec::new(),
        }
    }
}

impl<T> Field<T> {
    fn build<E>(
        values: &[String],
        not_values: &[String],
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Self, (bool, usize, E)> {
        let values = values
            .iter()
            .enumerate()
            .map(|(i, v)| parse(v).map_err(|e| (false, i, e)))
            .collect::<Result<_, _>>()?;
        let not_values = not_values
            .iter()
            .enumerate()
            .map(|(i, v)| parse(v).map_err(|e| (true, i, e)))
            .collect::<Result<_, _>>()?;
        Ok(Field { values, not_values })
    }

    /// True when neither the field nor its `not` twin is set.
    fn is_empty(&self) -> bool {
        self.values.is_empty() && self.not_values.is_empty()
    }

    fn check(&self, pred: impl Fn(&T) -> bool) -> bool {
        (self.values.is_empty() || self.values.iter().any(&pred))
            && !self.not_values.iter().any(&pred)
    }
}

/// Builds a field from `name`/`notName`, naming the offending entry on error.
fn field<T>(
    at: &str,
    name: &str,
    values: &[String],
    not_values: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Field<T>, String> {
    Field::build(values, not_values, parse).map_err(|(not, i, e)| {
        let shown = if not {
            let mut c = name.chars();
            let first = c.next().map(|f| f.to_ascii_uppercase()).unwrap_or_default();
            format!("not{first}{}", c.as_str())
        } else {
            name.to_owned()
        };
        format!("{at}.{shown}[{i}]: {e}")
    })
}

fn strings(v: &str) -> Result<StringMatch, String> {
    Ok(StringMatch::parse(v))
}

pub(crate) fn parse_cidr(v: &str) -> Result<IpNet, String> {
    if let Ok(net) = v.parse::<IpNet>() {
        return Ok(net);
    }
    v.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{v}` is not an IP address or CIDR block"))
}

fn port(v: &str) -> Result<u16, String> {
    v.parse::<u16>()
        .map_err(|_| format!("`{v}` is not a port number (0-65535)"))
}

fn ip_in(nets: &Field<IpNet>, ip: Option<IpAddr>) -> bool {
    let ip = ip.map(|i| i.to_canonical());
    nets.check(|n| ip.is_some_and(|ip| n.contains(&ip)))
}

fn str_in(field: &Field<StringMatch>, value: Option<&str>) -> bool {
    field.check(|m| value.is_some_and(|v| m.matches(v)))
}

// ---------------------------------------------------------------------------------------------
// Path templates

/// A `paths` entry: a plain string form, or a URI template with `{*}` / `{**}`.
#[derive(Debug)]
pub(crate) enum PathPattern {
    Plain(StringMatch),
    Template(Vec<Token>),
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Token {
    Literal(String),
    /// `{*}`: one whole segment, at least one character.
    Segment,
    /// `{**}`: anything, slashes included, possibly nothing.
    Rest,
}

impl PathPattern {
    pub(crate) fn parse(v: &str) -> Result<Self, String> {
        if !v.contains('{') && !v.contains('}') {
            return Ok(PathPattern::Plain(StringMatch::parse(v)));
        }
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut seen_rest = false;
        for (i, seg) in v.split('/').enumerate() {
            if i > 0 {
                literal.push('/');
            }
            let op = match seg {
                "{*}" => Token::Segment,
                "{**}" => Token::Rest,
                _ if seg.contains(['{', '}']) => {
                    return Err(format!(
                        "`{v}` is not a valid path template: `{{*}}` and `{{**}}` must be a whole segment"
                    ));
                }
                _ if seg.contains('*') => {
                    return Err(format!(
                        "`{v}` is not a valid path template: `*` outside of `{{*}}` or `{{**}}`"
                    ));
                }
                _ => {
                    literal.push_str(seg);
                    continue;
                }
            };
            if seen_rest {
                return Err(format!(
                    "`{v}` is not a valid path template: `{{**}}` must be the last operator"
                ));
            }
            seen_rest = op == Token::Rest;
            if !literal.is_empty() {
                tokens.push(Token::Literal(std::mem::take(&mut literal)));
            }
            tokens.push(op);
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Ok(PathPattern::Template(tokens))
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Plain(m) => m.matches(path),
            PathPattern::Template(tokens) => template_matches(tokens, path),
        }
    }
}

fn template_matches(tokens: &[Token], mut rest: &str) -> bool {
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Literal(lit) => match rest.strip_prefix(lit.as_str()) {
                Some(r) => rest = r,
                None => return false,
            },
            Token::Segment => {
                let end = rest.find('/').unwrap_or(rest.len());
                if end == 0 {
                    return false;
                }
                rest = &rest[end..];
            }
            Token::Rest => {
                // `{**}` is the last operator: only a literal can follow it.
                return match tokens.get(i + 1) {
                    Some(Token::Literal(tail)) => rest.ends_with(tail.as_str()),
                    _ => true,
                };
            }
        }
    }
    rest.is_empty()
}

// ---------------------------------------------------------------------------------------------
// Sources, operations, conditions

#[derive(Debug)]
pub(crate) struct SourceMatch {
    principals: Field<StringMatch>,
    request_principals: Field<StringMatch>,
    namespaces: Field<StringMatch>,
    ip_blocks: Field<IpNet>,
    remote_ip_blocks: Field<IpNet>,
    service_accounts: Field<(String, String)>,
}

fn service_account(v: &str) -> Result<(String, String), String> {
    if v.contains('*') {
        return Err(format!("`{v}`: serviceAccounts allow no wildcards"));
    }
    match v.split_once('/') {
        Some((ns, sa)) if !ns.is_empty() && !sa.is_empty() && !sa.contains('/') => {
            Ok((ns.to_owned(), sa.to_owned()))
        }
        _ => Err(format!(
            "`{v}` is not of the form <namespace>/<serviceaccount>"
        )),
    }
}

impl SourceMatch {
    pub(crate) fn compile(at: &str, s: &RuleSource) -> Result<Self, String> {
        let has_sa = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
        let has_ids = !s.principals.is_empty()
            || !s.not_principals.is_empty()
            || !s.namespaces.is_empty()
            || !s.not_namespaces.is_empty();
        if has_sa && has_ids {
            return Err(format!(
                "{at}: serviceAccounts cannot be combined with principals or namespaces"
            ));
        }
        Ok(SourceMatch {
            principals: field(at, "principals", &s.principals, &s.not_principals, strings)?,
            request_principals: field(
                at,
                "requestPrincipals",
                &s.request_principals,
                &s.not_request_principals,
                strings,
            )?,
            namespaces: field(at, "namespaces", &s.namespaces, &s.not_namespaces, strings)?,
            ip_blocks: field(at, "ipBlocks", &s.ip_blocks, &s.not_ip_blocks, parse_cidr)?,
            remote_ip_blocks: field(
                at,
                "remoteIpBlocks",
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
                parse_cidr,
            )?,
            service_accounts: field(
                at,
                "serviceAccounts",
                &s.service_accounts,
                &s.not_service_accounts,
                service_account,
            )?,
        })
    }

    fn matches(&self, a: &Attrs<'_>) -> bool {
        str_in(&self.principals, a.principal)
            && (a.l4
                || str_in(
                    &self.request_principals,
                    a.jwt.map(|j| j.principal.as_str()),
                ))
            && str_in(&self.namespaces, a.namespace)
            && ip_in(&self.ip_blocks, a.source_ip)
            && ip_in(&self.remote_ip_blocks, a.remote_ip)
            && self.service_accounts.check(|(ns, sa)| {
                a.namespace == Some(ns.as_str()) && a.service_account == Some(sa.as_str())
            })
    }
}

#[derive(Debug)]
pub(crate) struct OperationMatch {
    hosts: Field<StringMatch>,
    ports: Field<u16>,
    methods: Field<StringMatch>,
    paths: Field<PathPattern>,
}

impl OperationMatch {
    pub(crate) fn compile(at: &str, o: &RuleOperation) -> Result<Self, String> {
        Ok(OperationMatch {
            hosts: field(at, "hosts", &o.hosts, &o.not_hosts, |v| {
                Ok(StringMatch::parse(v).lowercase())
            })?,
            ports: field(at, "ports", &o.ports, &o.not_ports, port)?,
            methods: field(at, "methods", &o.methods, &o.not_methods, strings)?,
            paths: field(at, "paths", &o.paths, &o.not_paths, PathPattern::parse)?,
        })
    }

    fn needs_http(&self) -> bool {
        !(self.hosts.is_empty() && self.methods.is_empty() && self.paths.is_empty())
    }

    fn matches(&self, a: &Attrs<'_>) -> bool {
        if a.l4 {
            return self
                .ports
                .check(|p| a.destination.is_some_and(|d| d.port() == *p));
        }
        let bare = authority::strip_port(a.host);
        let has_port = bare.len() != a.host.len();
        self.hosts
            .check(|m| m.matches_ignore_case(a.host) || (has_port && m.matches_ignore_case(bare)))
            && self
                .ports
                .check(|p| a.destination.is_some_and(|d| d.port() == *p))
            && self.methods.check(|m| m.matches(a.method))
            && self.paths.check(|p| p.matches(a.path))
    }
}

#[derive(Debug)]
enum Key {
    Header(HeaderName),
    SourceIp,
    RemoteIp,
    SourceNamespace,
    SourcePrincipal,
    AuthPrincipal,
    AuthAudiences,
    AuthPresenter,
    AuthClaims(Vec<String>),
    DestinationIp,
    DestinationPort,
    /// The SNI of a TLS connection passed through; absent for HTTP requests (the waypoint
    /// sees plaintext HTTP inside the tunnel, and ztunnel sends no SNI).
    ConnectionSni,
}

impl Key {
    /// Keys that only an HTTP request has (Istio refuses them on TCP filter chains).
    fn is_http_only(&self) -> bool {
        matches!(
            self,
            Key::Header(_)
                | Key::AuthPrincipal
                | Key::AuthAudiences
                | Key::AuthPresenter
                | Key::AuthClaims(_)
        )
    }
}

#[derive(Debug)]
enum Values {
    Strings(Field<StringMatch>),
    Ips(Field<IpNet>),
    Ports(Field<u16>),
}

#[derive(Debug)]
pub(crate) struct ConditionMatch {
    key: Key,
    values: Values,
}

/// `[a][b][c]` → `["a", "b", "c"]`; `None` when not that shape.
fn bracketed(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        let name = &inner[..end];
        if name.is_empty() || name.contains('[') {
            return None;
        }
        out.push(name.to_owned());
        rest = &inner[end + 1..];
    }
    (!out.is_empty()).then_some(out)
}

fn parse_key(key: &str) -> Result<Key, String> {
    let simple = match key {
        "source.ip" => Some(Key::SourceIp),
        "remote.ip" => Some(Key::RemoteIp),
        "source.namespace" => Some(Key::SourceNamespace),
        "source.principal" => Some(Key::SourcePrincipal),
        "request.auth.principal" => Some(Key::AuthPrincipal),
        "request.auth.audiences" => Some(Key::AuthAudiences),
        "request.auth.presenter" => Some(Key::AuthPresenter),
        "destination.ip" => Some(Key::DestinationIp),
        "destination.port" => Some(Key::DestinationPort),
        "connection.sni" => Some(Key::ConnectionSni),
        _ => None,
    };
    if let Some(k) = simple {
        return Ok(k);
    }
    if let Some(rest) = key.strip_prefix("request.headers") {
        return match bracketed(rest).as_deref() {
            Some([name]) => HeaderName::from_bytes(name.as_bytes())
                .map(Key::Header)
                .map_err(|_| format!("`{name}` is not a valid header name")),
            _ => Err(format!("`{key}`: write request.headers[<header-name>]")),
        };
    }
    if let Some(rest) = key.strip_prefix("request.auth.claims") {
        return bracketed(rest)
            .map(Key::AuthClaims)
            .ok_or_else(|| format!("`{key}`: write request.auth.claims[<name>] or [<a>][<b>]"));
    }
    if key.starts_with("experimental.envoy.filters.") {
        return Err(format!(
            "`{key}`: Envoy filter metadata does not exist in this waypoint"
        ));
    }
    Err(format!("`{key}` is not a supported condition key"))
}

impl ConditionMatch {
    pub(crate) fn compile(at: &str, c: &RuleCondition) -> Result<Self, String> {
        let key = parse_key(&c.key).map_err(|e| format!("{at}.key: {e}"))?;
        let values = match key {
            Key::SourceIp | Key::RemoteIp | Key::DestinationIp => {
                Values::Ips(field(at, "values", &c.values, &c.not_values, parse_cidr)?)
            }
            Key::DestinationPort => {
                Values::Ports(field(at, "values", &c.values, &c.not_values, port)?)
            }
            _ => Values::Strings(field(at, "values", &c.values, &c.not_values, strings)?),
        };
        Ok(ConditionMatch { key, values })
    }

    fn matches(&self, a: &Attrs<'_>) -> bool {
        if a.l4 && self.key.is_http_only() {
            return true;
        }
        match (&self.key, &self.values) {
            (Key::SourceIp, Values::Ips(f)) => ip_in(f, a.source_ip),
            (Key::RemoteIp, Values::Ips(f)) => ip_in(f, a.remote_ip),
            (Key::DestinationIp, Values::Ips(f)) => ip_in(f, a.destination.map(|d| d.ip())),
            (Key::DestinationPort, Values::Ports(f)) => {
                f.check(|p| a.destination.is_some_and(|d| d.port() == *p))
            }
            (key, Values::Strings(f)) => {
                let jwt = a.jwt;
                match key {
                    Key::Header(name) => str_in(f, header(a.headers, name).as_deref()),
                    Key::SourceNamespace => str_in(f, a.namespace),
                    Key::SourcePrincipal => str_in(f, a.principal),
                    Key::AuthPrincipal => str_in(f, jwt.map(|j| j.principal.as_str())),
                    Key::AuthPresenter => str_in(f, jwt.and_then(|j| j.presenter.as_deref())),
                    Key::AuthAudiences => f.check(|m| {
                        jwt.is_some_and(|j| j.audiences.iter().any(|aud| m.matches(aud)))
                    }),
                    Key::AuthClaims(path) => {
                        let claim = jwt.and_then(|j| claim_at(&j.claims, path));
                        f.check(|m| claim.is_some_and(|c| claim_matches(c, m)))
                    }
                    Key::ConnectionSni => str_in(f, a.sni),
                    _ => false,
                }
            }
            // Keys and value kinds are paired in `compile`.
            _ => false,
        }
    }
}

/// Every value of a header, joined with `,` as Istio's normalization merges duplicates.
fn header<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<Cow<'h, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    let mut out = String::from_utf8_lossy(first.as_bytes());
    for v in values {
        let s = out.to_mut();
        s.push(',');
        s.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(out)
}

fn claim_at<'c>(claims: &'c serde_json::Value, path: &[String]) -> Option<&'c serde_json::Value> {
    path.iter().try_fold(claims, |v, k| v.get(k.as_str()))
}

/// Istio matches string claims and lists of strings (any element); other types never match.
fn claim_matches(claim: &serde_json::Value, m: &StringMatch) -> bool {
    match claim {
        serde_json::Value::String(s) => m.matches(s),
        serde_json::Value::Array(items) => items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| m.matches(s))),
        _ => false,
    }
}

/// A compiled rule. A rule that could not be compiled keeps a fixed answer chosen by the
/// policy's action so that the mistake fails closed.
#[derive(Debug)]
pub(crate) enum RuleMatch {
    Compiled {
        from: Vec<SourceMatch>,
        to: Vec<OperationMatch>,
        when: Vec<ConditionMatch>,
    },
    Fixed(bool),
}

impl RuleMatch {
    pub(crate) fn compile(at: &str, rule: &AuthorizationRule) -> Result<Self, String> {
        let from = rule
            .from
            .iter()
            .enumerate()
            .map(|(i, f)| SourceMatch::compile(&format!("{at}.from[{i}].source"), &f.source))
            .collect::<Result<_, _>>()?;
        let to = rule
            .to
            .iter()
            .enumerate()
            .map(|(i, t)| OperationMatch::compile(&format!("{at}.to[{i}].operation"), &t.operation))
            .collect::<Result<_, _>>()?;
        let when = rule
            .when
            .iter()
            .enumerate()
            .map(|(i, c)| ConditionMatch::compile(&format!("{at}.when[{i}]"), c))
            .collect::<Result<_, _>>()?;
        Ok(RuleMatch::Compiled { from, to, when })
    }

    /// True when the rule sets an HTTP-only field: an ALLOW rule that does never matches a
    /// TCP connection. A rule that failed to compile keeps its fixed answer.
    pub(crate) fn needs_http(&self) -> bool {
        match self {
            RuleMatch::Fixed(_) => false,
            RuleMatch::Compiled { from, to, when } => {
                from.iter().any(|s| !s.request_principals.is_empty())
                    || to.iter().any(OperationMatch::needs_http)
                    || when.iter().any(|c| c.key.is_http_only())
            }
        }
    }

    pub(crate) fn matches(&self, a: &Attrs<'_>) -> bool {
        match self {
            RuleMatch::Fixed(answer) => *answer,
            RuleMatch::Compiled { from, to, when } => {
                (from.is_empty() || from.iter().any(|s| s.matches(a)))
                    && (to.is_empty() || to.iter().any(|o| o.matches(a)))
                    && when.iter().all(|c| c.matches(a))
            }
        }
    }
}

//! Connection cases: TCP (and TLS from the client) through a Gateway listener, as upstream's
//! TCPRoute and TLSRoute tests dial them, with what must come of each.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One TCP connection and what must come of it: upstream's
/// `tcp.MakeTCPRequestAndExpectEventuallyValidResponse` (`expect: echo`, the default),
/// `tls.MakeTLSConnectionAndExpectEventuallyConnectionRejection` (`expect: rejected`), or
/// `tcp.EchoSendOnce` repeated for a traffic split (`weights`) or a fixed backend (`samples`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionCase {
    /// The upstream subtest name, when it has one.
    #[serde(default)]
    pub name: Option<String>,
    /// `namespace/name:port` of the Gateway listener dialled (default the case's gateway).
    #[serde(default)]
    pub gateway: Option<String>,
    /// TLS from the client, as upstream's dialer does it; plain TCP without.
    #[serde(default)]
    pub tls: Option<ClientTls>,
    /// What must come of it.
    #[serde(default)]
    pub expect: ConnectionExpect,
    /// With `echo`: the backend (pod name prefix, `<backend>-`) that must answer.
    #[serde(default)]
    pub backend: Option<String>,
    /// With `echo`: the namespace the answering pod must be in.
    #[serde(default)]
    pub namespace: Option<String>,
    /// With `echo`: what the backend must answer to `IS_TLS` (TLS reached it end to end).
    #[serde(default)]
    pub backend_is_tls: bool,
    /// With `echo`: the server name the backend must have seen in the handshake (upstream's
    /// `Hostname`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// With `echo`: the protocol the backend must have negotiated (upstream's `TLSProtocol`).
    #[serde(default)]
    pub negotiated_protocol: Option<String>,
    /// A traffic split to check with single `TEST` exchanges: backend → expected share.
    #[serde(default)]
    pub weights: Option<BTreeMap<String, f64>>,
    /// After the echo passes, this many single `TEST` exchanges must all reach `backend`.
    #[serde(default)]
    pub samples: Option<u32>,
}

/// TLS from the client.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTls {
    /// The server name (SNI) sent.
    pub server_name: String,
    /// Trust the CA in this ConfigMap's `ca.crt` (`namespace/name`), checking the name.
    #[serde(default)]
    pub ca_config_map: Option<String>,
    /// Trust exactly this Secret's `tls.crt` (`namespace/name`).
    #[serde(default)]
    pub certificate: Option<String>,
}

/// What a connection must come to.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ConnectionExpect {
    /// The echo backend's welcome, `PONG`, `IS_TLS` and `TEST` answers, as expected.
    #[default]
    Echo,
    /// The connection closed (EOF or reset) before the TLS handshake completed.
    Rejected,
}

impl ConnectionCase {
    /// Consistency checks of one connection; `case_gateway` says whether the case names one.
    pub(super) fn check(&self, case_gateway: bool) -> Result<(), String> {
        if self.gateway.is_none() && !case_gateway {
            return Err("needs a gateway (case `gateway` or its own)".into());
        }
        if let Some(g) = &self.gateway
            && g.rsplit_once(':')
                .is_none_or(|(_, p)| p.parse::<u16>().is_err())
        {
            return Err(format!("gateway {g:?}: expected `namespace/name:port`"));
        }
        match self.expect {
            ConnectionExpect::Rejected => {
                if self.tls.is_none() {
                    return Err("`rejected` is a TLS probe: it needs `tls`".into());
                }
                if self.backend.is_some() || self.weights.is_some() || self.samples.is_some() {
                    return Err("`rejected` takes no backend, weights or samples".into());
                }
            }
            ConnectionExpect::Echo => {
                if self.backend.is_none() && self.weights.is_none() {
                    return Err("`echo` needs a backend or weights".into());
                }
                if self.samples.is_some() && self.backend.is_none() {
                    return Err("`samples` need a backend".into());
                }
                if let Some(tls) = &self.tls
                    && tls.ca_config_map.is_some() == tls.certificate.is_some()
                {
                    return Err("tls: trust exactly one of caConfigMap or certificate".into());
                }
            }
        }
        Ok(())
    }
}

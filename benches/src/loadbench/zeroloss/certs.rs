//! Certificate rotation under load. The waypoint terminates HBONE (the load generator is the
//! client ztunnel, one tunnel per load connection) and originates HBONE to a destination
//! ztunnel stand-in, so its certificate serves both as server and as client. Its files are
//! replaced several times with new certificates from the same CA, as Istio's agent rotates
//! them; the client side's are rotated too. After each rotation a fresh TLS handshake must be
//! answered with the new certificate (so the rotation was applied, not merely written) and a
//! fresh client must get a request through; meanwhile the load, on connections opened before,
//! must lose nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use waypoint_core::tls::{
    CertPaths, CertStore, DevCa, ExpectedIdentity, WorkloadCerts, client_config,
};
use waypoint_core::upstream::{HboneClientOptions, HbonePool};

use super::backend::Backend;
use super::{OpenLoad, Setup, Tally};
use crate::loadbench::configs::{AUTHORITY, Job, SERVICE_VIP, waypoint_manifests};
use crate::loadbench::load::{self, Dialer};
use crate::loadbench::runner::{CLIENT_ID, DEST_ID, WAYPOINT_ID, free_port};
use crate::loadbench::upstream::serve_hbone_destination;

/// The scale of a run.
#[derive(Clone, Debug)]
pub struct CertPlan {
    /// Load, requests per second.
    pub rate: f64,
    /// Load connections (tunnels).
    pub connections: usize,
    /// Rotations.
    pub rotations: usize,
    /// Load between rotations.
    pub pause: Duration,
}

/// Where the HBONE side of the scenario lives.
#[derive(Clone, Debug)]
pub struct CertEnv {
    /// A directory holding `ca-cert.pem` and `ca-key.pem` (`waypoint certs ca --out`).
    pub ca_dir: PathBuf,
    /// The destination ztunnel stand-in (`<endpoint ip>:15008`), trusting that CA.
    pub dest_hbone: SocketAddr,
    /// The port of the backend behind the stand-in.
    pub backend_port: u16,
}

/// A [`CertEnv`] served from this process: a new CA, a backend, and a destination stand-in
/// in front of it on a loopback address of its own (`127.77.x.y:15008`, so parallel runs and
/// loadbench's own stand-in do not collide). The backend lives as long as this value.
#[derive(Debug)]
pub struct LocalMesh {
    /// Where things are.
    pub env: CertEnv,
    _backend: Backend,
}

impl LocalMesh {
    /// Writes the CA and the stand-in's certificates under `dir` and starts both servers.
    pub async fn start(dir: &Path) -> Result<LocalMesh, String> {
        let ca = DevCa::generate("cluster.local").map_err(|e| e.to_string())?;
        let ca_dir = dir.join("ca");
        ca.write_ca(&ca_dir).map_err(|e| e.to_string())?;
        let dest_dir = dir.join("destination");
        issue(&ca, &dest_dir, DEST_ID)?;
        let backend = Backend::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            "echo",
            Duration::ZERO,
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut last = String::new();
        for _ in 0..5 {
            let ip = std::net::Ipv4Addr::new(127, 77, fastrand::u8(1..=254), fastrand::u8(1..=254));
            match serve_hbone_destination((ip, 15008).into(), dest_dir.clone(), backend.addr())
                .await
            {
                Ok(dest_hbone) => {
                    return Ok(LocalMesh {
                        env: CertEnv {
                            ca_dir,
                            dest_hbone,
                            backend_port: backend.addr().port(),
                        },
                        _backend: backend,
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// What a run saw.
#[derive(Clone, Debug)]
pub struct CertOutcome {
    /// Every load request.
    pub tally: Tally,
    /// Rotations whose new certificate a fresh handshake was then answered with.
    pub applied: usize,
    /// Fresh clients (new TLS connection, rotated client certificate) that got a 200 after a
    /// rotation.
    pub fresh_ok: usize,
    /// Why a rotation check failed, if one did.
    pub problems: Vec<String>,
}

fn expected() -> Result<Vec<ExpectedIdentity>, String> {
    Ok(vec![ExpectedIdentity::Exact(
        WAYPOINT_ID.parse().map_err(|e| format!("{e}"))?,
    )])
}

fn issue(ca: &DevCa, dir: &Path, id: &str) -> Result<CertPaths, String> {
    let id = id.parse().map_err(|e| format!("{id}: {e}"))?;
    ca.write_workload_dir(dir, &id, Duration::from_secs(3600))
        .map_err(|e| e.to_string())
}

fn hbone_dialer(store: Arc<CertStore>, via: SocketAddr) -> Result<Dialer, String> {
    Ok(Dialer::Hbone {
        pool: HbonePool::new(store, HboneClientOptions::default()),
        via,
        target: SERVICE_VIP.parse().map_err(|e| format!("{e}"))?,
        expected: expected()?,
    })
}

/// The leaf certificate a fresh TLS handshake with `addr` is answered with.
async fn presented_leaf(addr: SocketAddr, client: &WorkloadCerts) -> Result<Vec<u8>, String> {
    let config = client_config(client, expected()?).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or("no peer certificate")?;
    Ok(leaf.as_ref().to_vec())
}

/// Runs the scenario: see the module documentation.
pub async fn run(setup: &Setup, plan: &CertPlan, env: &CertEnv) -> Result<CertOutcome, String> {
    let read =
        |name: &str| std::fs::read_to_string(env.ca_dir.join(name)).map_err(|e| e.to_string());
    let ca =
        DevCa::from_pem(&read("ca-cert.pem")?, &read("ca-key.pem")?).map_err(|e| e.to_string())?;
    let base = setup.dir.join("zero-loss-certs");
    let (waypoint_dir, client_dir) = (base.join("waypoint"), base.join("client"));
    issue(&ca, &waypoint_dir, WAYPOINT_ID)?;
    let client_paths = issue(&ca, &client_dir, CLIENT_ID)?;
    let client = CertStore::load(client_paths, Vec::new()).map_err(|e| e.to_string())?;

    let job = Job {
        listen_port: 0,
        admin_port: 0,
        upstream: SocketAddr::new(env.dest_hbone.ip(), env.backend_port),
        proxy_protocol: false,
        routes: 1,
        policies: 0,
        tls: None,
        mesh_endpoints: true,
    };
    let via = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let flags: Vec<String> = [
        "--no-sandwich",
        "--hbone-listen",
        &via.to_string(),
        "--certs-dir",
        &waypoint_dir.display().to_string(),
        "--upstream",
        "auto",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _waypoint = setup
        .start_waypoint("zero-loss-certs", &waypoint_manifests(&job), &flags)
        .await?;
    let load = OpenLoad::new(plan.rate, plan.connections, &job.path())
        .start(hbone_dialer(client.clone(), via)?);
    tokio::time::sleep(plan.pause).await;

    let (mut applied, mut fresh_ok, mut problems) = (0, 0, Vec::new());
    for round in 1..=plan.rotations {
        let paths = issue(&ca, &waypoint_dir, WAYPOINT_ID)?;
        let leaf = WorkloadCerts::load(&paths)
            .map_err(|e| e.to_string())?
            .chain[0]
            .as_ref()
            .to_vec();
        issue(&ca, &client_dir, CLIENT_ID)?;
        if let Err(e) = client.reload() {
            problems.push(format!("rotation {round}: client reload: {e}"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = false;
        while Instant::now() < deadline {
            if presented_leaf(via, &client.current())
                .await
                .is_ok_and(|l| l == leaf)
            {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if seen {
            applied += 1;
        } else {
            problems.push(format!(
                "rotation {round}: new certificate not presented in 10 s"
            ));
        }
        match load::probe(&hbone_dialer(client.clone(), via)?, &job.path(), AUTHORITY).await {
            Ok(200) => fresh_ok += 1,
            other => problems.push(format!("rotation {round}: fresh client got {other:?}")),
        }
        tokio::time::sleep(plan.pause).await;
    }
    let tally = load.stop().await;
    Ok(CertOutcome {
        tally,
        applied,
        fresh_ok,
        problems,
    })
}

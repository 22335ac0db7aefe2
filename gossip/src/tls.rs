//! The cluster certificate: how nodes know each other on QUIC.
//!
//! Trust is one cluster CA. Every node holds a leaf certificate signed by
//! it (either issued at start from the CA key, which on Fly is a secret of
//! the app, or issued ahead of time), presents it as server *and* client,
//! and accepts a peer only if the peer's certificate chains to the CA —
//! mutual TLS, so a machine outside the cluster can neither serve nor ask
//! for cluster state. Replication will reuse these configs.

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;
use std::time::Duration;

/// The congestion window a node-to-node connection starts with (bytes).
const INITIAL_WINDOW: u64 = 256 * 1024;

/// The name every node certificate carries and every client asks for.
pub const NODE_NAME: &str = "anykv-node";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("PEM: {0}")]
    Pem(String),
    #[error("TLS verifier: {0}")]
    Verifier(String),
    #[error("QUIC crypto: {0}")]
    Quic(String),
}

/// A cluster CA (certificate + key) in PEM, as stored in secrets.
#[derive(Clone)]
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterCa(..)")
    }
}

impl ClusterCa {
    /// A new CA (tests, the demo, `anykv cluster keygen`).
    pub fn generate() -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let cert = Self::params()?.self_signed(&key)?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The CA's fixed parameters. Issuing rebuilds the issuer from these
    /// and the CA key (the subject and key are all a leaf's issuer fields
    /// need), which spares parsing X.509 at run time; it assumes the CA was
    /// made by [`ClusterCa::generate`].
    fn params() -> Result<CertificateParams, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "anykv cluster CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ok(params)
    }

    /// Issues a node certificate (the key never leaves the node).
    pub fn issue(&self, machine: &str) -> Result<NodeTls, TlsError> {
        let ca_key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::new(Self::params()?, ca_key);
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![NODE_NAME.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, machine);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer)?;
        NodeTls::from_pem(&self.cert_pem, &cert.pem(), &key.serialize_pem())
    }
}

/// What one node needs for QUIC: the CA to trust and its own identity.
#[derive(Debug, Clone)]
pub struct NodeTls {
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: Arc<PrivatePkcs8KeyDer<'static>>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl NodeTls {
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| TlsError::Pem(format!("CA certificate: {e}")))?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| TlsError::Pem(format!("node certificate: {e}")))?;
        let key = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| TlsError::Pem(format!("node key: {e}")))?;
        Ok(NodeTls {
            ca,
            cert,
            key: Arc::new(key),
        })
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    fn transport() -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        // Cross-region RTTs reach ~350 ms (cdg–syd): keep idle connections
        // alive well past that, and notice dead peers in seconds.
        t.keep_alive_interval(Some(Duration::from_secs(5)));
        if let Ok(idle) = quinn::IdleTimeout::try_from(Duration::from_secs(30)) {
            t.max_idle_timeout(Some(idle));
        }
        // One connection per pair of nodes carries every store stream (one
        // per database replicated between them), the controller's RPCs and
        // sync sessions: quinn's default of 100 open streams would let
        // many databases starve the controller.
        t.max_concurrent_bidi_streams(4096u32.into());
        // Cubic starts at ~14.7 KB in flight and grows only while the
        // sender has more to send than the window allows; traffic between
        // nodes is mostly small and app-limited, so the window stays there
        // until a burst (a provisioning's rows and versions offered to
        // every peer at once, a replica's first sync) exceeds it, and that
        // burst then waits a whole round trip for acknowledgements (to syd,
        // 257 ms). These connections join our own nodes over the
        // operator's private network: start with a window that a burst of
        // gossip rows fits in.
        let mut cubic = quinn::congestion::CubicConfig::default();
        cubic.initial_window(INITIAL_WINDOW);
        t.congestion_controller_factory(Arc::new(cubic));
        t
    }

    /// Server side: presents the node certificate, demands a client one.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key())?;
        tls.alpn_protocols = vec![b"anykv-sync/1".to_vec()];
        let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        cfg.transport_config(Arc::new(Self::transport()));
        Ok(cfg)
    }

    /// Client side: verifies the server against the CA, presents the node
    /// certificate.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(self.roots()?, provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(vec![self.cert.clone()], self.key())?;
        tls.alpn_protocols = vec![b"anykv-sync/1".to_vec()];
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
        cfg.transport_config(Arc::new(Self::transport()));
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_and_builds_configs() {
        let ca = ClusterCa::generate().unwrap();
        let node = ca.issue("m1").unwrap();
        node.server_config().unwrap();
        node.client_config().unwrap();
        assert!(NodeTls::from_pem("garbage", "x", "y").is_err());
    }

    /// A burst between nodes must not wait on a 14.7 KB window: both ends
    /// of a connection start with [`INITIAL_WINDOW`].
    #[tokio::test]
    async fn node_connections_start_with_a_wide_congestion_window() {
        let ca = ClusterCa::generate().unwrap();
        let (a, b) = (ca.issue("a").unwrap(), ca.issue("b").unwrap());
        let server =
            quinn::Endpoint::server(a.server_config().unwrap(), "127.0.0.1:0".parse().unwrap())
                .unwrap();
        let addr = server.local_addr().unwrap();
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client.set_default_client_config(b.client_config().unwrap());
        let accept = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            (conn.stats().path.cwnd, server)
        });
        let conn = client.connect(addr, NODE_NAME).unwrap().await.unwrap();
        let (server_cwnd, _server) = accept.await.unwrap();
        assert!(
            conn.stats().path.cwnd >= INITIAL_WINDOW,
            "client cwnd {}",
            conn.stats().path.cwnd
        );
        assert!(server_cwnd >= INITIAL_WINDOW, "server cwnd {server_cwnd}");
    }
}

//! TLS on both ports (`--tls-cert`, `--tls-key`), with rustls and its
//! `ring` provider (the one the upstream client already uses: no second
//! crypto library in the tree).
//!
//! The handshake runs inside the connection's handshake timeout: a client
//! must finish TLS *and* send its HTTP/2 preface (or HTTP/1 request head)
//! within `--handshake-timeout`. The protocol is negotiated with ALPN: the
//! gRPC port offers `h2` only, the HTTP port `h2` and `http/1.1` (hyper
//! then tells them apart by the preface, as on plain TCP). A client that
//! offers ALPN without a protocol the port speaks is refused in the
//! handshake; one that offers no ALPN at all is served (HTTP/1.1 clients
//! of old, gRPC clients that know the port speaks HTTP/2).

use std::{io, path::Path, sync::Arc};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use tokio_rustls::TlsAcceptor;

use super::Protocols;

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds no certificate.
    #[error("cannot read the TLS certificate chain {path}: {source}")]
    Certificate {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The key file could not be read or holds no private key.
    #[error("cannot read the TLS private key {path}: {source}")]
    Key {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls refused the pair (a key that does not match the certificate,
    /// an unsupported algorithm).
    #[error("the TLS certificate and key cannot be used: {0}")]
    Config(#[from] rustls::Error),
}

/// The TLS settings of a server: one certificate, each port's ALPN.
#[derive(Clone)]
pub(crate) struct Tls {
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the PEM certificate chain at `cert` (leaf first) and the PEM
    /// private key at `key` (PKCS#8, PKCS#1 or SEC1).
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .and_then(|certs| match certs.is_empty() {
                true => Err(rustls::pki_types::pem::Error::NoItemsFound),
                false => Ok(certs),
            })
            .map_err(|source| TlsError::Certificate {
                path: cert.display().to_string(),
                source,
            })?;
        let key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
            path: key.display().to_string(),
            source,
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// The acceptor of a port that speaks `protocols`.
    pub(crate) fn acceptor(&self, protocols: Protocols) -> TlsAcceptor {
        let mut config = (*self.config).clone();
        config.alpn_protocols = match protocols {
            Protocols::Http2 => vec![b"h2".to_vec()],
            Protocols::Http1AndHttp2 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        };
        TlsAcceptor::from(Arc::new(config))
    }
}

/// A connection's stream: plain TCP or TLS over it.
pub(crate) type MaybeTls = tokio_util::either::Either<
    tokio::net::TcpStream,
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
>;

/// Runs the server side of the handshake on `stream` when `acceptor` is
/// set.
pub(crate) async fn accept(
    stream: tokio::net::TcpStream,
    acceptor: Option<&TlsAcceptor>,
) -> io::Result<MaybeTls> {
    match acceptor {
        None => Ok(MaybeTls::Left(stream)),
        Some(acceptor) => acceptor.accept(stream).await.map(MaybeTls::Right),
    }
}

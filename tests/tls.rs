//! TLS on both ports (`--tls-cert`, `--tls-key`) with a self-signed
//! certificate generated at test time: tonic, reqwest, raw rustls (ALPN)
//! and the CLI as clients.

mod common;

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use agentstream::{config::ServeConfig, pb, server::Server};
use common::ask;
use tokio::io::AsyncReadExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// A self-signed certificate for `localhost` and 127.0.0.1, its key, and
/// the directory holding both as PEM files.
struct Credentials {
    dir: tempfile::TempDir,
    cert_pem: String,
}

impl Credentials {
    fn generate() -> Self {
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("self-signed certificate");
        let dir = tempfile::tempdir().expect("temp dir");
        let cert_pem = certified.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &cert_pem).expect("cert");
        std::fs::write(
            dir.path().join("key.pem"),
            certified.signing_key.serialize_pem(),
        )
        .expect("key");
        Self { dir, cert_pem }
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}

/// A server with TLS on both ports.
struct TlsServer {
    server: Server,
    credentials: Credentials,
    _data_dir: tempfile::TempDir,
}

impl TlsServer {
    async fn start(tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let credentials = Credentials::generate();
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = ServeConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            http_listen: "127.0.0.1:0".parse().expect("addr"),
            mock_token_delay: Duration::from_millis(1),
            data_dir: data_dir.path().to_path_buf(),
            tls_cert: Some(credentials.cert()),
            tls_key: Some(credentials.key()),
            ..ServeConfig::default()
        };
        tweak(&mut config);
        let server = Server::start(config).await.expect("server starts");
        Self {
            server,
            credentials,
            _data_dir: data_dir,
        }
    }

    fn http_addr(&self) -> SocketAddr {
        self.server.http_addr().expect("HTTP edge on")
    }

    /// A tonic channel over TLS to `addr`, trusting the test certificate.
    async fn channel(&self, addr: SocketAddr) -> Channel {
        Endpoint::from_shared(format!("https://{addr}"))
            .expect("endpoint")
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&self.credentials.cert_pem)),
            )
            .expect("tls config")
            .connect()
            .await
            .expect("TLS connection")
    }

    /// An HTTP client trusting the test certificate, with `localhost`
    /// resolved to the HTTP port (it may resolve to ::1 first; the server
    /// listens on IPv4).
    fn http(&self) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(self.credentials.cert_pem.as_bytes())
                    .expect("certificate"),
            )
            .resolve("localhost", self.http_addr())
            .build()
            .expect("client")
    }

    /// A raw TLS handshake with `alpn` offered; the protocol the server
    /// chose, or the handshake's error.
    async fn negotiate(
        &self,
        addr: SocketAddr,
        alpn: &[&[u8]],
    ) -> std::io::Result<Option<Vec<u8>>> {
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls::pki_types::CertificateDer::from(rcgen_der(&self.credentials.cert_pem));
        roots.add(der).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let stream = connector.connect(name, tcp).await?;
        Ok(stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
    }
}

/// The DER bytes of a PEM certificate.
fn rcgen_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM certificate")
        .to_vec()
}

#[tokio::test]
async fn grpc_streams_over_tls_on_both_ports() {
    let server = TlsServer::start(|_| {}).await;
    for addr in [server.server.local_addr(), server.http_addr()] {
        let mut chat = pb::chat_service_client::ChatServiceClient::new(server.channel(addr).await);
        let mut stream = chat
            .stream_chat(ask("over TLS"))
            .await
            .expect("call")
            .into_inner();
        let chunks = common::drain_ok(&mut stream).await;
        assert!(common::text_of(&chunks, 0).contains("over TLS"), "{addr}");
    }
}

#[tokio::test]
async fn http_clients_get_https_on_the_http_port() {
    let server = TlsServer::start(|_| {}).await;
    let client = server.http();
    let base = format!("https://localhost:{}", server.http_addr().port());
    let health = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("https");
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    assert_eq!(health.version(), reqwest::Version::HTTP_11);

    let response = client
        .post(format!("{base}/v1/chat/completions"))
        .json(&serde_json::json!({
            "model": "echo", "stream": true,
            "messages": [{"role": "user", "content": "SSE over TLS"}],
        }))
        .send()
        .await
        .expect("https");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body = response.text().await.expect("body");
    assert!(body.contains(r#""finish_reason":"stop""#), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = common::http_client()
        .get(format!("http://{}/healthz", server.http_addr()))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test]
async fn alpn_picks_h2_and_the_grpc_port_refuses_http1() {
    let server = TlsServer::start(|_| {}).await;
    let grpc = server.server.local_addr();
    let http = server.http_addr();
    assert_eq!(
        server.negotiate(grpc, &[b"h2"]).await.expect("h2"),
        Some(b"h2".to_vec())
    );
    assert!(
        server.negotiate(grpc, &[b"http/1.1"]).await.is_err(),
        "the gRPC port speaks HTTP/2 only"
    );
    assert_eq!(
        server
            .negotiate(http, &[b"h2", b"http/1.1"])
            .await
            .expect("both"),
        Some(b"h2".to_vec())
    );
    assert_eq!(
        server
            .negotiate(http, &[b"http/1.1"])
            .await
            .expect("http/1.1"),
        Some(b"http/1.1".to_vec())
    );
}

#[tokio::test]
async fn a_client_that_never_starts_tls_is_closed_after_the_handshake_timeout() {
    let server = TlsServer::start(|c| c.handshake_timeout = Duration::from_millis(200)).await;
    let mut silent = tokio::net::TcpStream::connect(server.server.local_addr())
        .await
        .expect("connects");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(common::PATIENCE, silent.read(&mut buf))
        .await
        .expect("closed by the server");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn unusable_certificates_stop_the_server_with_the_file_named() {
    let credentials = Credentials::generate();
    let data_dir = tempfile::tempdir().expect("temp dir");
    let base = ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        http_listen: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data_dir.path().to_path_buf(),
        ..ServeConfig::default()
    };
    let cases = [
        (Some(credentials.key()), Some(credentials.key()), "cert"),
        (Some(credentials.cert()), Some(credentials.cert()), "key"),
        (Some(credentials.cert()), None, "--tls-key"),
    ];
    for (cert, key, needle) in cases {
        let config = ServeConfig {
            tls_cert: cert,
            tls_key: key,
            ..base.clone()
        };
        let error = match Server::start(config).await {
            Ok(_) => panic!("started with {needle} unusable"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(needle), "{error}");
    }
}

#[tokio::test]
async fn the_cli_speaks_https_with_a_ca_and_an_api_key() {
    let keys = tempfile::tempdir().expect("temp dir");
    let keys_file = keys.path().join("keys");
    std::fs::write(&keys_file, "cli:sk-cli-5a0e7c2b9d14f386\n").expect("keys");
    let server = TlsServer::start(|c| c.api_keys_file = Some(keys_file)).await;
    let run = |key: Option<&'static str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agentstream"));
        command
            .args(["chat", "hello over https", "--server"])
            .arg(format!(
                "https://127.0.0.1:{}",
                server.server.local_addr().port()
            ))
            .arg("--tls-ca")
            .arg(server.credentials.cert())
            .env_remove("AGENTSTREAM_API_KEY");
        if let Some(key) = key {
            command.args(["--api-key", key]);
        }
        tokio::task::spawn_blocking(move || command.output().expect("runs"))
    };
    let served = run(Some("sk-cli-5a0e7c2b9d14f386")).await.expect("join");
    let stdout = String::from_utf8_lossy(&served.stdout);
    assert!(served.status.success(), "{served:?}");
    assert!(stdout.contains("hello over https"), "{stdout}");
    let refused = run(None).await.expect("join");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.to_lowercase().contains("unauthenticated"),
        "{stderr}"
    );
    // Without the CA the self-signed certificate is not trusted.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_agentstream"));
    command.args(["chat", "hi", "--server"]).arg(format!(
        "https://127.0.0.1:{}",
        server.server.local_addr().port()
    ));
    let untrusted = tokio::task::spawn_blocking(move || command.output().expect("runs"))
        .await
        .expect("join");
    assert!(!untrusted.status.success());
}

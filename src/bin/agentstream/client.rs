//! Where client commands connect, and the words for when they cannot.
//!
//! One convention for `--server` across the CLI and the example clients:
//! `HOST:PORT` or `http://HOST:PORT` is a plaintext server (a bare `HOST`
//! gets port 50051); `https://` asks for TLS, which this build refuses
//! with a clear message rather than silently talking plaintext.

use std::{error::Error as _, fmt, io, time::Duration};

use clap::Args;
use tonic::transport::{Channel, Endpoint};

use crate::CliError;

/// The port of `--server` when none is given.
const DEFAULT_PORT: u16 = 50051;

/// How long connecting may take before the command gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The flag every client command takes.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The server: HOST:PORT or http://HOST:PORT (a bare HOST means port
    /// 50051).
    #[arg(
        long,
        env = "AGENTSTREAM_SERVER",
        default_value = "127.0.0.1:50051",
        value_parser = ServerAddr::parse
    )]
    server: ServerAddr,
}

impl ClientArgs {
    /// The address connected to.
    pub fn server(&self) -> &ServerAddr {
        &self.server
    }

    /// Connects now, so that a server that is not there is reported before
    /// any work starts.
    pub async fn connect(&self) -> Result<Channel, CliError> {
        self.server
            .endpoint()
            .connect()
            .await
            .map_err(|error| CliError::Connect {
                server: self.server.to_string(),
                why: ConnectFailure::from_transport(&error),
            })
    }
}

/// A parsed `--server`: always an `http://` URI with a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAddr {
    uri: String,
}

impl ServerAddr {
    /// Accepts `HOST`, `HOST:PORT`, `[V6]:PORT` and `http://` URIs; refuses
    /// `https://` (no TLS in this build) and other schemes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().trim_end_matches('/');
        let uri = match text.split_once("://") {
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => text.to_owned(),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => {
                return Err(format!(
                    "this build of agentstream has no TLS support, so it cannot connect to \
                     https://{rest}; for a plaintext server use http://{rest} or {rest}"
                ));
            }
            Some((scheme, _)) => {
                return Err(format!(
                    "unsupported scheme `{scheme}://`; use HOST:PORT or http://HOST:PORT"
                ));
            }
            None if has_port(text) => format!("http://{text}"),
            None => format!("http://{text}:{DEFAULT_PORT}"),
        };
        Endpoint::from_shared(uri.clone()).map_err(|_| {
            format!("`{text}` is not an address; use HOST:PORT or http://HOST:PORT")
        })?;
        Ok(Self { uri })
    }

    fn endpoint(&self) -> Endpoint {
        // Checked by `parse`; an unchecked value cannot be built.
        Endpoint::from_shared(self.uri.clone())
            .unwrap_or_else(|_| Endpoint::from_static("http://127.0.0.1:50051"))
            .connect_timeout(CONNECT_TIMEOUT)
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

/// Whether `host_port` (no scheme) ends in a port: `h:1`, `[::1]:1`.
fn has_port(host_port: &str) -> bool {
    let after_host = match host_port.rfind(']') {
        Some(end) => &host_port[end + 1..],
        None if host_port.matches(':').count() > 1 => return false, // bare IPv6
        None => host_port,
    };
    after_host
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

/// Why connecting failed, in the user's terms.
#[derive(Debug)]
pub enum ConnectFailure {
    /// Nothing listens there.
    Refused,
    /// No answer within [`CONNECT_TIMEOUT`].
    TimedOut,
    /// Anything else, with the innermost cause.
    Other(String),
}

impl ConnectFailure {
    fn from_transport(error: &tonic::transport::Error) -> Self {
        let mut innermost = error.to_string();
        let mut cause = error.source();
        while let Some(error) = cause {
            if let Some(io) = error.downcast_ref::<io::Error>() {
                match io.kind() {
                    io::ErrorKind::ConnectionRefused => return Self::Refused,
                    io::ErrorKind::TimedOut => return Self::TimedOut,
                    _ => {}
                }
            }
            if error.to_string().contains("timed out") {
                return Self::TimedOut;
            }
            innermost = error.to_string();
            cause = error.source();
        }
        Self::Other(innermost)
    }
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused => {
                f.write_str("connection refused; is the server running? (agentstream serve)")
            }
            Self::TimedOut => write!(
                f,
                "no answer within {} s; is the server running, and is the address right?",
                CONNECT_TIMEOUT.as_secs()
            ),
            Self::Other(why) => f.write_str(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(text: &str) -> String {
        ServerAddr::parse(text).expect("accepted").uri
    }

    #[test]
    fn host_port_and_http_are_plaintext_addresses() {
        assert_eq!(uri("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(uri("localhost:7000"), "http://localhost:7000");
        assert_eq!(uri("http://localhost:7000/"), "http://localhost:7000");
        assert_eq!(uri("HTTP://localhost:7000"), "HTTP://localhost:7000");
        assert_eq!(uri("[::1]:7000"), "http://[::1]:7000");
        assert_eq!(uri("localhost"), "http://localhost:50051");
    }

    #[test]
    fn https_and_other_schemes_are_refused_with_the_way_out() {
        let https = ServerAddr::parse("https://example.com:443").expect_err("refused");
        assert!(https.contains("no TLS support"), "{https}");
        assert!(https.contains("http://example.com:443"), "{https}");
        let other = ServerAddr::parse("grpc://x:1").expect_err("refused");
        assert!(other.contains("unsupported scheme"), "{other}");
        assert!(ServerAddr::parse("local host:1").is_err());
    }
}

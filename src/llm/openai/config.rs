//! How an operator describes an upstream, and the checks made on it.
//!
//! One upstream is one compact spec, given with `--upstream` (repeatable) or
//! in `AGENTSTREAM_UPSTREAMS` (several specs separated by spaces):
//!
//! ```text
//! name=openai,url=https://api.openai.com/v1,key-env=OPENAI_API_KEY,models=gpt-4o-mini;gpt-4o
//! name=vllm,url=http://gpu-1:8000/v1,discover=true,first-token-timeout=2m
//! ```
//!
//! The spec is parsed when the command line is (so a typo is reported by
//! clap, naming the flag), but the API key is only read when the server
//! starts, and only ever held in an [`ApiKey`], whose `Debug` is redacted: a
//! configuration dump or a log line can never leak it.

use std::{fmt, path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use reqwest::Url;

/// Default time allowed to open the TCP (and TLS) connection.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time allowed from sending a request to its first streamed event:
/// a loaded GPU server may queue a request and then read a long prompt.
pub(crate) const DEFAULT_FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest silence between two streamed events.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default number of retries of a failed attempt before the first token.
pub(crate) const DEFAULT_RETRIES: u32 = 2;
/// Most retries an operator may ask for: more only delays a doomed call.
pub(crate) const MAX_RETRIES: u32 = 10;

/// The keys a spec understands, for error messages.
const KEYS: &str = "name, url, key-env, key-file, models, discover, connect-timeout, \
                    first-token-timeout, idle-timeout, retries";

/// One OpenAI-compatible upstream as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// Short name used in logs and error messages (`openai`, `vllm`).
    pub name: String,
    /// Base URL of the API, up to and including its version (`.../v1`).
    pub url: Url,
    /// Where the API key comes from.
    pub key: KeySource,
    /// Models served, as listed by the operator.
    pub models: Vec<String>,
    /// Whether to add the models the upstream lists at `GET {url}/models`.
    pub discover: bool,
    /// The upstream's timeouts.
    pub timeouts: Timeouts,
    /// Retries of a failed attempt before the first token (0 to 10).
    pub retries: u32,
}

/// Where an upstream's API key is read from at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// No key: local servers (vLLM, Ollama, llama.cpp) often need none.
    None,
    /// The named environment variable.
    Env(String),
    /// The file at this path (trailing whitespace is ignored), such as a
    /// mounted secret.
    File(PathBuf),
}

/// How long each phase of an upstream call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Opening the connection.
    pub connect: Duration,
    /// From sending the request to its first streamed event.
    pub first_token: Duration,
    /// Between two streamed events.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: DEFAULT_CONNECT_TIMEOUT,
            first_token: DEFAULT_FIRST_TOKEN_TIMEOUT,
            idle: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl UpstreamSpec {
    /// Parses a spec such as
    /// `name=openai,url=https://api.openai.com/v1,key-env=OPENAI_API_KEY,models=gpt-4o`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut name = None;
        let mut url = None;
        let mut key = KeySource::None;
        let mut models = Vec::new();
        let mut discover = None;
        let mut timeouts = Timeouts::default();
        let mut retries = DEFAULT_RETRIES;
        for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let (k, v) = field
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("`{field}` is not key=value (keys: {KEYS})"))?;
            match k {
                "name" => name = Some(parse_name(v)?),
                "url" => url = Some(parse_url(v)?),
                "key-env" | "key-file" if key != KeySource::None => {
                    return Err("give one of key-env and key-file, not both".into());
                }
                "key-env" if v.is_empty() => return Err("key-env is empty".into()),
                "key-env" => key = KeySource::Env(v.to_owned()),
                "key-file" if v.is_empty() => return Err("key-file is empty".into()),
                "key-file" => key = KeySource::File(PathBuf::from(v)),
                "models" => models.extend(parse_models(v)?),
                "discover" => discover = Some(parse_bool(k, v)?),
                "connect-timeout" => timeouts.connect = parse_timeout(k, v)?,
                "first-token-timeout" => timeouts.first_token = parse_timeout(k, v)?,
                "idle-timeout" => timeouts.idle = parse_timeout(k, v)?,
                "retries" => retries = parse_retries(v)?,
                other => return Err(format!("unknown key `{other}` (keys: {KEYS})")),
            }
        }
        let name = name.ok_or("`name=` is required, e.g. name=openai")?;
        let url = url.ok_or("`url=` is required, e.g. url=https://api.openai.com/v1")?;
        // Without an explicit list, the models must be discovered.
        let discover = discover.unwrap_or(models.is_empty());
        if models.is_empty() && !discover {
            return Err(format!(
                "upstream `{name}` serves no model: list them (models=a;b) or set discover=true"
            ));
        }
        Ok(Self {
            name,
            url,
            key,
            models,
            discover,
            timeouts,
            retries,
        })
    }

    /// The URL of an endpoint below the base URL, such as `chat/completions`.
    pub fn endpoint(&self, path: &str) -> Url {
        let mut url = self.url.clone();
        let base = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{base}/{path}"));
        url
    }
}

impl FromStr for UpstreamSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

fn parse_name(v: &str) -> Result<String, String> {
    let valid = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(v.to_owned())
    } else {
        Err(format!(
            "name `{v}` must be 1 to 64 letters, digits, `-`, `_` or `.`"
        ))
    }
}

fn parse_url(v: &str) -> Result<Url, String> {
    let url = Url::parse(v).map_err(|e| format!("url `{v}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("url `{v}` must be http:// or https://"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("url `{v}` must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "url `{v}` must not carry credentials; use key-env or key-file"
        ));
    }
    Ok(url)
}

fn parse_models(v: &str) -> Result<Vec<String>, String> {
    let models: Vec<String> = v
        .split(';')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect();
    if models.is_empty() {
        return Err("models is empty; separate several with `;`".into());
    }
    Ok(models)
}

fn parse_bool(k: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(format!("{k} must be true or false, not `{v}`")),
    }
}

fn parse_timeout(k: &str, v: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(v)
        .map_err(|e| format!("{k} `{v}`: {e} (examples: 500ms, 30s, 2m)"))?;
    if duration.is_zero() {
        return Err(format!("{k} must be more than 0"));
    }
    Ok(duration)
}

fn parse_retries(v: &str) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n <= MAX_RETRIES => Ok(n),
        _ => Err(format!("retries must be 0 to {MAX_RETRIES}, not `{v}`")),
    }
}

/// Why an API key could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The environment variable is not set (or not Unicode).
    #[error("it is read from ${var}")]
    Env {
        /// The variable.
        var: String,
        /// Why it could not be read.
        #[source]
        source: std::env::VarError,
    },
    /// The file could not be read.
    #[error("it is read from {}", path.display())]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },
    /// Only whitespace.
    #[error("it is empty")]
    Empty,
    /// A key with control characters would forge headers.
    #[error("it contains control characters")]
    ControlCharacters,
}

/// An API key. Its `Debug` prints nothing of it, it has no `Display`, and
/// [`ApiKey::scrub`] removes it from upstream text before that text is
/// logged or sent to a client.
#[derive(Clone)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Reads a key from `source`.
    pub fn load(source: &KeySource) -> Result<Option<Self>, KeyError> {
        let raw = match source {
            KeySource::None => return Ok(None),
            KeySource::Env(var) => std::env::var(var).map_err(|source| KeyError::Env {
                var: var.clone(),
                source,
            })?,
            KeySource::File(path) => {
                std::fs::read_to_string(path).map_err(|source| KeyError::File {
                    path: path.clone(),
                    source,
                })?
            }
        };
        let key = raw.trim();
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        if key.chars().any(|c| c.is_control()) {
            return Err(KeyError::ControlCharacters);
        }
        Ok(Some(Self(key.into())))
    }

    /// The secret itself, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced.
    pub fn scrub(&self, text: &str) -> String {
        text.replace(self.expose(), "[redacted]")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_spec_parses() {
        let spec = UpstreamSpec::parse(
            "name=openai, url=https://api.openai.com/v1, key-env=OPENAI_API_KEY, \
             models=gpt-4o-mini;gpt-4o, connect-timeout=2s, first-token-timeout=90s, \
             idle-timeout=15s, retries=1",
        )
        .expect("valid");
        assert_eq!(spec.name, "openai");
        assert_eq!(spec.key, KeySource::Env("OPENAI_API_KEY".into()));
        assert_eq!(spec.models, ["gpt-4o-mini", "gpt-4o"]);
        assert!(!spec.discover);
        assert_eq!(spec.timeouts.connect, Duration::from_secs(2));
        assert_eq!(spec.timeouts.first_token, Duration::from_secs(90));
        assert_eq!(spec.timeouts.idle, Duration::from_secs(15));
        assert_eq!(spec.retries, 1);
        assert_eq!(
            spec.endpoint("chat/completions").as_str(),
            "https://api.openai.com/v1/chat/completions"
        );
    }

    #[test]
    fn no_models_means_discovery_and_defaults_apply() {
        let spec = UpstreamSpec::parse("name=ollama,url=http://localhost:11434/v1/").expect("ok");
        assert!(spec.discover);
        assert_eq!(spec.key, KeySource::None);
        assert_eq!(spec.timeouts, Timeouts::default());
        assert_eq!(spec.retries, DEFAULT_RETRIES);
        assert_eq!(
            spec.endpoint("models").as_str(),
            "http://localhost:11434/v1/models"
        );
    }

    #[test]
    fn model_names_keep_colons_and_slashes() {
        let spec = UpstreamSpec::parse(
            "name=x,url=http://h/v1,models=llama3.1:8b;meta-llama/Llama-3.1-8B-Instruct",
        )
        .expect("ok");
        assert_eq!(
            spec.models,
            ["llama3.1:8b", "meta-llama/Llama-3.1-8B-Instruct"]
        );
    }

    #[test]
    fn mistakes_are_explained() {
        let cases = [
            ("url=http://h/v1,models=m", "`name=` is required"),
            ("name=x,models=m", "`url=` is required"),
            ("name=x,url=ftp://h,models=m", "http:// or https://"),
            (
                "name=x,url=http://u:p@h,models=m",
                "must not carry credentials",
            ),
            (
                "name=x,url=http://h,models=m,colour=red",
                "unknown key `colour`",
            ),
            ("name=x,url=http://h,discover=false", "serves no model"),
            (
                "name=x,url=http://h,models=m,idle-timeout=0s",
                "more than 0",
            ),
            (
                "name=x,url=http://h,models=m,retries=99",
                "retries must be 0 to 10",
            ),
            (
                "name=x,url=http://h,models=m,key-env=A,key-file=/k",
                "not both",
            ),
            ("name=a b,url=http://h,models=m", "letters, digits"),
            ("name=x,url=http://h,models", "not key=value"),
        ];
        for (spec, expected) in cases {
            let error = UpstreamSpec::parse(spec).expect_err(spec);
            assert!(error.contains(expected), "{spec}: {error}");
        }
    }

    #[test]
    fn keys_are_trimmed_redacted_and_scrubbed() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("key");
        std::fs::write(&path, "sk-secret-123\n").expect("write");
        let key = ApiKey::load(&KeySource::File(path))
            .expect("loads")
            .expect("some");
        assert_eq!(key.expose(), "sk-secret-123");
        assert!(!format!("{key:?}").contains("secret"));
        assert_eq!(key.scrub("bad key sk-secret-123!"), "bad key [redacted]!");
    }

    #[test]
    fn a_missing_key_is_a_clear_error() {
        let error = ApiKey::load(&KeySource::Env("AGENTSTREAM_TEST_SURELY_UNSET_KEY".into()))
            .expect_err("unset");
        assert!(matches!(error, KeyError::Env { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("$AGENTSTREAM_TEST_SURELY_UNSET_KEY"),
            "{error}"
        );
    }
}

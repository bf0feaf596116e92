//! TLS for both connections, with libpq's meaning of `sslmode` and `sslrootcert`.
//!
//! tokio-postgres knows `sslmode` only up to `require` and rejects `sslrootcert`, so
//! these options are taken out of the connection string here (URL query or key=value
//! form, else `PGSSLMODE`/`PGSSLROOTCERT`) and turn into a connector:
//! `disable` no TLS; `allow`/`prefer` (the default) TLS when the server offers it;
//! `require` TLS or fail; `verify-ca` verifies the chain; `verify-full` also the host
//! name. As in libpq, the root certificates come from `sslrootcert`, else
//! `~/.postgresql/root.crt`; when such a file exists, every mode that uses TLS verifies
//! the chain with it (`prefer` and `require` then behave as `verify-ca`), and
//! `verify-ca`/`verify-full` without one are refused. `sslrootcert=system` trusts the
//! system's roots (PostgreSQL 16's meaning). `channel_binding` is tokio-postgres's own,
//! with libpq's values (`disable`, `prefer`, `require`).
//!
//! Nothing here panics on any input, and no error repeats any part of the string: it
//! may hold a password.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use native_tls::{Certificate, TlsConnector};
use postgres_native_tls::{MakeTlsConnector, TlsStream};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

/// The `sslmode` values shadan accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it.
    Prefer,
    /// TLS or fail.
    Require,
    /// TLS with a verified certificate chain.
    VerifyCa,
    /// TLS with a verified chain and host name.
    VerifyFull,
}

impl TlsMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => TlsMode::Disable,
            "allow" | "prefer" => TlsMode::Prefer,
            "require" => TlsMode::Require,
            "verify-ca" => TlsMode::VerifyCa,
            "verify-full" => TlsMode::VerifyFull,
            _ => return Err(
                "unknown sslmode; use disable, allow, prefer, require, verify-ca or verify-full"
                    .into(),
            ),
        })
    }

    /// The mode tokio-postgres negotiates with (verification is the connector's job).
    pub fn negotiation(self) -> SslMode {
        match self {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Prefer => SslMode::Prefer,
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => SslMode::Require,
        }
    }
}

/// TLS settings of one endpoint.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    /// `sslmode`.
    pub mode: TlsMode,
    /// `sslrootcert`: PEM file with the CA certificate(s) to trust.
    pub root_cert: Option<PathBuf>,
}

/// Where the root certificates come from.
enum Roots {
    /// None: no verification possible.
    None,
    /// The system's trusted roots (`sslrootcert=system`).
    System,
    /// A PEM file.
    File(PathBuf),
}

impl TlsOptions {
    /// libpq's choice of root certificates: `sslrootcert`, else `~/.postgresql/root.crt`
    /// when it exists.
    fn roots(&self) -> Roots {
        match &self.root_cert {
            Some(p) if p.as_os_str() == "system" => Roots::System,
            Some(p) => Roots::File(p.clone()),
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
                .filter(|p| p.is_file())
                .map_or(Roots::None, Roots::File),
        }
    }
}

/// Takes `sslmode` and `sslrootcert` out of a connection string. Returns the rest (for
/// tokio-postgres) and the TLS options, with the `PG*` variables as fallback.
pub fn split_options(conn: &str) -> Result<(String, TlsOptions), String> {
    let mut mode = None;
    let mut root = None;
    let mut binding = None;
    let mut unsupported = None;
    let mut take = |key: &str, value: String| -> bool {
        match key {
            "sslmode" => mode = Some(value),
            "sslrootcert" => root = Some(value),
            // Kept for tokio-postgres, which knows it; noted so PGCHANNELBINDING is not
            // added over it.
            "channel_binding" => {
                binding = Some(value);
                return false;
            }
            "sslcrl" | "sslcrldir" | "sslcert" | "sslkey" | "sslpassword" => {
                unsupported = Some(key.to_string());
            }
            _ => return false,
        }
        true
    };
    let url = conn.starts_with("postgres://") || conn.starts_with("postgresql://");
    let mut rest = if url {
        // tokio-postgres takes the user and password up to the first '@' anywhere in the
        // string, and the options from the first '?' after it. A second '@', or a '/',
        // '?' or '#' before the '@', makes the two readings differ (an option such as
        // sslmode could be lost, or a piece of a password read as a host and printed):
        // such a URL is refused, and not repeated.
        let after_scheme = conn.split_once("://").map_or("", |(_, r)| r);
        if let Some((userinfo, rest)) = after_scheme.split_once('@') {
            if rest.contains('@') || userinfo.contains(['/', '?', '#']) {
                return Err(
                    "the URL's user name or password holds '@', '/', '?' or '#', or an option \
                     value holds '@'; percent-encode them (%40, %2F, %3F, %23)"
                        .into(),
                );
            }
        }
        match conn.split_once('?') {
            None => conn.to_string(),
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        !take(k, percent_decode(v))
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_string()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for (key, raw, value) in key_values(conn)? {
            if !take(&key, value) {
                kept.push(format!("{key}={raw}"));
            }
        }
        kept.join(" ")
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    // Client certificates and revocation lists are not implemented: refused rather than
    // ignored, since an ignored CRL would accept a revoked server certificate.
    let unsupported = unsupported.or_else(|| {
        ["PGSSLCRL", "PGSSLCRLDIR", "PGSSLCERT", "PGSSLKEY"]
            .into_iter()
            .find(|v| env(v).is_some())
            .map(String::from)
    });
    if let Some(option) = unsupported {
        return Err(format!(
            "{option} is not supported (no client certificates or revocation lists); remove it \
             and authenticate with a password or SCRAM"
        ));
    }
    if binding.is_none() {
        if let Some(b) = env("PGCHANNELBINDING") {
            if !matches!(b.as_str(), "disable" | "prefer" | "require") {
                return Err("unknown PGCHANNELBINDING; use disable, prefer or require".into());
            }
            rest = match (url, rest.contains('?')) {
                (true, true) => format!("{rest}&channel_binding={b}"),
                (true, false) => format!("{rest}?channel_binding={b}"),
                (false, _) => format!("{rest} channel_binding={b}"),
            };
        }
    }
    let mode = match mode.or_else(|| env("PGSSLMODE")) {
        Some(m) => TlsMode::parse(&m)?,
        None => TlsMode::Prefer,
    };
    let root_cert = root.or_else(|| env("PGSSLROOTCERT")).map(PathBuf::from);
    Ok((rest, TlsOptions { mode, root_cert }))
}

/// The connector for `options`, one per process for equal options (the source and target
/// usually share their TLS settings). What can be refused is refused here; the TLS
/// context itself is built at the first handshake ([`LazyTls`]).
pub fn connector(options: &TlsOptions) -> Result<LazyTls, String> {
    static BUILT: std::sync::Mutex<Vec<(String, LazyTls)>> = std::sync::Mutex::new(Vec::new());
    let key = format!("{options:?}");
    if let Some((_, c)) = BUILT
        .lock()
        .ok()
        .and_then(|b| b.iter().find(|(k, _)| *k == key).cloned())
    {
        return Ok(c);
    }
    let built = LazyTls(Arc::new(Lazy {
        settings: Settings::of(options)?,
        built: OnceLock::new(),
    }));
    if let Ok(mut b) = BUILT.lock() {
        b.push((key, built.clone()));
    }
    Ok(built)
}

/// What a connector is built from, checked before any connection is tried.
struct Settings {
    /// Whether the certificate chain is verified.
    verify_chain: bool,
    /// Whether the host name is verified.
    verify_host: bool,
    /// The roots of `sslrootcert` (or `~/.postgresql/root.crt`), instead of the system's.
    root: Option<Certificate>,
}

impl Settings {
    /// Checks `options`: verification needs roots, and a root file must hold a PEM
    /// certificate.
    fn of(options: &TlsOptions) -> Result<Self, String> {
        let roots = options.roots();
        let verify_chain =
            match (&roots, options.mode) {
                (_, TlsMode::Disable) => false,
                (Roots::None, TlsMode::VerifyCa | TlsMode::VerifyFull) => return Err(
                    "sslmode verify-ca and verify-full need root certificates: set sslrootcert \
                     (a PEM file, or `system`) or create ~/.postgresql/root.crt"
                        .into(),
                ),
                (Roots::None, _) => false,
                (Roots::System | Roots::File(_), _) => true,
            };
        let root = match &roots {
            Roots::File(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| format!("cannot read sslrootcert {}: {e}", path.display()))?;
                Some(Certificate::from_pem(&pem).map_err(|e| {
                    format!(
                        "sslrootcert {} is not a PEM certificate: {e}",
                        path.display()
                    )
                })?)
            }
            Roots::None | Roots::System => None,
        };
        Ok(Self {
            verify_chain,
            verify_host: options.mode == TlsMode::VerifyFull,
            root,
        })
    }

    /// Builds the TLS context (this loads the system's roots: tens of milliseconds).
    fn build(&self) -> Result<MakeTlsConnector, String> {
        let mut builder = TlsConnector::builder();
        if let Some(cert) = &self.root {
            builder
                .add_root_certificate(cert.clone())
                .disable_built_in_roots(true);
        }
        builder
            .danger_accept_invalid_certs(!self.verify_chain)
            .danger_accept_invalid_hostnames(!self.verify_host);
        let connector = builder
            .build()
            .map_err(|e| format!("cannot set up TLS: {e}"))?;
        Ok(MakeTlsConnector::new(connector))
    }
}

/// A TLS connector whose context is built at the first handshake and then shared: a run
/// whose servers take no TLS (`sslmode=prefer` against a server without it) never pays
/// for loading the system's roots.
#[derive(Clone)]
pub struct LazyTls(Arc<Lazy>);

/// The settings of a [`LazyTls`] and, once built, its connector.
struct Lazy {
    settings: Settings,
    built: OnceLock<Result<MakeTlsConnector, String>>,
}

/// The error of a TLS handshake.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S> MakeTlsConnect<S> for LazyTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type TlsConnect = LazyConnect;
    type Error = BoxError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<LazyConnect, BoxError> {
        Ok(LazyConnect {
            tls: self.clone(),
            domain: domain.to_owned(),
        })
    }
}

/// One connection's handshake by a [`LazyTls`].
pub struct LazyConnect {
    tls: LazyTls,
    domain: String,
}

impl<S> TlsConnect<S> for LazyConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = TlsStream<S>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream<S>, BoxError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let lazy = &self.tls.0;
            let mut made = lazy.built.get_or_init(|| lazy.settings.build()).clone()?;
            let connect = MakeTlsConnect::<S>::make_tls_connect(&mut made, &self.domain)?;
            Ok(connect.connect(stream).await?)
        })
    }
}

/// `key=value` pairs of a libpq connection string: (key, value as written, value).
fn key_values(conn: &str) -> Result<Vec<(String, String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = conn.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            // The word is not repeated: after a space in an unquoted password it is a
            // piece of the password.
            return Err(
                "a word without `=` in the key=value connection string (quote values that \
                 contain spaces with single quotes)"
                    .into(),
            );
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let (mut raw, mut value) = (String::new(), String::new());
        if chars.peek() == Some(&'\'') {
            raw.push(chars.next().unwrap_or('\''));
            loop {
                match chars.next() {
                    Some('\\') => {
                        raw.push('\\');
                        if let Some(c) = chars.next() {
                            raw.push(c);
                            value.push(c);
                        }
                    }
                    Some('\'') => {
                        raw.push('\'');
                        break;
                    }
                    Some(c) => {
                        raw.push(c);
                        value.push(c);
                    }
                    None => return Err("unterminated quote in the connection string".into()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                raw.push(c);
                value.push(c);
                chars.next();
            }
        }
        out.push((key, raw, value));
    }
}

/// Decodes `%XX` escapes byte by byte (never slicing the string, so any input is safe).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_options_are_taken_out_and_the_rest_kept() {
        let (rest, tls) =
            split_options("postgres://u:p@h:5/db?sslmode=verify-full&application_name=x&sslrootcert=%2Ftmp%2Fca.crt").unwrap();
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(tls.mode, TlsMode::VerifyFull);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/tmp/ca.crt")));
    }

    #[test]
    fn key_value_options_are_taken_out_and_quoting_survives() {
        let (rest, tls) = split_options(
            "host=h password='a b\\'c' sslmode=require sslrootcert='/x y/ca.pem' dbname=d",
        )
        .unwrap();
        assert_eq!(rest, "host=h password='a b\\'c' dbname=d");
        assert_eq!(tls.mode, TlsMode::Require);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/x y/ca.pem")));
        assert!(split_options("host=h sslmode=sometimes").is_err());
    }

    #[test]
    fn hostile_strings_neither_panic_nor_echo_a_value() {
        for conn in [
            "postgres://u@h/db?password=pw%E6%BC%A2x%漢字",
            "postgres://u@h/db?sslmode=%漢&sslrootcert=%",
            "postgres://u@h/db?x=%%%",
        ] {
            let _ = split_options(conn);
        }
        let err = split_options("host=h password=my secret").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
        for url in [
            "postgres://u:se@cretPW1@h/db",
            "postgres://h:5/db?user=alice&password=PWHEAD@PWTAIL",
            "postgres://alice:PWA/PWB@PWC@h/db",
            "postgres://u:p?w@h/db?sslmode=require",
        ] {
            let err = split_options(url).unwrap_err();
            assert!(
                !err.contains("PW") && !err.contains("cret") && !err.contains("p?w"),
                "{err}"
            );
        }
    }
}

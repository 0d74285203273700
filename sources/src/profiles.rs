//! Named profiles: source settings kept in a file instead of the environment.
//!
//! The file is TOML, at `$ROTA_PROFILES` or else
//! `$HOME/.config/rota/profiles.toml`; each table is a profile:
//!
//! ```toml
//! [minio]
//! s3.endpoint = "http://127.0.0.1:9000"
//! s3.region = "us-east-1"
//! s3.access_key_id = "…"
//! s3.secret_access_key = "…"
//!
//! [partner]
//! sftp.key = "/home/me/.ssh/partner_ed25519"
//! sftp.known_hosts = "/home/me/.ssh/known_hosts"
//! ftp.password = "…"
//! ftp.ca_file = "/etc/ssl/partner-ca.pem"
//! ```
//!
//! A setting a profile leaves out comes from the environment, as without a
//! profile. Keys are those of [`S3Settings`] under `s3.`, `key`,
//! `known_hosts`, `fingerprint` and `password` under `sftp.`, `ca_file` and
//! `password` under `ftp.`; others are refused, so a typo does not silently
//! fall back to other credentials. The file holds secrets: keep it readable
//! by its owner only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rota_core::SourceError;
use serde::Deserialize;

use crate::{S3Settings, SourceSettings};

/// One profile as the file writes it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    #[serde(default)]
    s3: S3Profile,
    #[serde(default)]
    sftp: SftpProfile,
    #[serde(default)]
    ftp: FtpProfile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SftpProfile {
    key: Option<PathBuf>,
    known_hosts: Option<PathBuf>,
    fingerprint: Option<String>,
    password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FtpProfile {
    ca_file: Option<PathBuf>,
    password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Profile {
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    skip_signature: Option<bool>,
}

/// Where the profiles file is: `$ROTA_PROFILES`, else
/// `$HOME/.config/rota/profiles.toml`.
#[must_use]
pub fn default_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ROTA_PROFILES") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| Path::new(&h).join(".config/rota/profiles.toml"))
}

fn invalid(path: &Path, reason: String) -> SourceError {
    SourceError::InvalidLocation {
        location: path.display().to_string(),
        reason,
    }
}

/// The settings of profile `name` in the file at `path`, over those of the
/// environment.
///
/// # Errors
/// When the file cannot be read or parsed (the message names the line, never
/// a value), or has no such profile.
pub fn load(name: &str, path: &Path) -> Result<SourceSettings, SourceError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        invalid(
            path,
            format!("cannot read the profiles file ({e}); set ROTA_PROFILES to its path"),
        )
    })?;
    let mut profiles: BTreeMap<String, Profile> = toml::from_str(&text).map_err(|e| {
        // The parser's message quotes the offending line, which may hold a
        // secret: keep only where it is and what is wrong.
        let at = e
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let what = e
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_owned();
        invalid(
            path,
            match at {
                Some(line) => format!("line {line}: {what}"),
                None => what,
            },
        )
    })?;
    let Some(profile) = profiles.remove(name) else {
        let known: Vec<&str> = profiles.keys().map(String::as_str).collect();
        return Err(invalid(
            path,
            format!(
                "no profile '{name}' (profiles there: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    let env = S3Settings::from_env();
    let p = profile.s3;
    let sftp_env = crate::sftp::SftpSettings::from_env();
    let sftp = profile.sftp;
    let ftp_env = crate::ftp::FtpSettings::from_env();
    let ftp = profile.ftp;
    Ok(SourceSettings {
        sftp: crate::sftp::SftpSettings {
            key: sftp.key.or(sftp_env.key),
            known_hosts: sftp.known_hosts.or(sftp_env.known_hosts),
            fingerprint: sftp.fingerprint.or(sftp_env.fingerprint),
            password: sftp.password.or(sftp_env.password),
        },
        ftp: crate::ftp::FtpSettings {
            ca_file: ftp.ca_file.or(ftp_env.ca_file),
            password: ftp.password.or(ftp_env.password),
        },
        s3: S3Settings {
            endpoint: p.endpoint.or(env.endpoint),
            region: p.region.or(env.region),
            access_key_id: p.access_key_id.or(env.access_key_id),
            secret_access_key: p.secret_access_key.or(env.secret_access_key),
            session_token: p.session_token.or(env.session_token),
            skip_signature: p.skip_signature.unwrap_or(env.skip_signature),
        },
        extra: crate::ExtraSources::default(),
        egress: crate::Egress::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_load_and_errors_say_where_without_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("profiles.toml");
        std::fs::write(
            &path,
            "[minio]\ns3.endpoint = \"http://127.0.0.1:9000\"\ns3.access_key_id = \"AK\"\n\
             s3.secret_access_key = \"very-secret\"\n\n[other]\ns3.region = \"eu-west-1\"\n",
        )
        .expect("write");
        let s = load("minio", &path).expect("load");
        assert_eq!(s.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.s3.secret_access_key.as_deref(), Some("very-secret"));
        assert!(
            !format!("{s:?}").contains("very-secret"),
            "Debug hides secrets"
        );

        std::fs::write(
            &path,
            "[partner]\nsftp.key = \"/k\"\nsftp.password = \"sftp-secret\"\n\
             ftp.password = \"ftp-secret\"\nftp.ca_file = \"/ca.pem\"\n",
        )
        .expect("write");
        let s = load("partner", &path).expect("load");
        assert_eq!(s.sftp.key.as_deref(), Some(Path::new("/k")));
        assert_eq!(s.sftp.password.as_deref(), Some("sftp-secret"));
        assert_eq!(s.ftp.password.as_deref(), Some("ftp-secret"));
        assert_eq!(s.ftp.ca_file.as_deref(), Some(Path::new("/ca.pem")));
        let shown = format!("{s:?}");
        assert!(!shown.contains("-secret"), "Debug hides secrets: {shown}");
        std::fs::write(
            &path,
            "[minio]\ns3.endpoint = \"x\"\n\n[other]\ns3.region = \"eu-west-1\"\n",
        )
        .expect("write");

        let err = load("nope", &path)
            .expect_err("unknown profile")
            .to_string();
        assert!(
            err.contains("no profile 'nope'") && err.contains("minio, other"),
            "{err}"
        );

        std::fs::write(&path, "[a]\ns3.secret_acces_key = \"leaky-value\"\n").expect("write");
        let err = load("a", &path).expect_err("typo").to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains("leaky-value"), "{err}");

        std::fs::write(&path, "[a]\ns3.region = \"unterminated\n").expect("write");
        let err = load("a", &path).expect_err("bad toml").to_string();
        assert!(
            err.contains("line 2") && !err.contains("unterminated"),
            "{err}"
        );
    }
}

//! Sizes and durations as people type them.

use std::time::Duration;

/// Parses a byte size: `1048576`, `256KiB`, `64MB`, `1GiB`, `512k`, `1TiB`.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (try 262144, 256KiB or 64MB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{s}' (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size '{s}' is too large"))
}

/// Parses a duration: `500ms`, `30s`, `2m`, `1h`; a bare number is seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (try 500ms, 30s or 2m)"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "d" => Duration::from_secs(n * 86_400),
        other => {
            return Err(format!(
                "unknown duration unit '{other}' in '{s}' (use ms, s, m, h, d)"
            ));
        }
    })
}

/// `key=value`.
pub(crate) fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("'{s}' is not key=value"))
}

/// Bytes for people: `151.8 MB`.
pub(crate) fn human_bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)] // display only
    let f = n as f64;
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", f / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", f / 1e6),
        _ => format!("{:.2} GB", f / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("256KiB"), Ok(262_144));
        assert_eq!(parse_size("64MB"), Ok(64_000_000));
        assert_eq!(parse_size("17"), Ok(17));
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_key_value("=x").is_err());
        assert_eq!(human_bytes(151_824_849), "151.8 MB");
    }
}

/// Which listed files to keep, and how to reach them: what `rota ingest`
/// and `rota ls` share.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct FilterArgs {
    /// A named profile of source settings (S3 endpoint and credentials, SFTP
    /// key and host trust, FTP password and CA) from the profiles file
    /// (`$ROTA_PROFILES`, else `~/.config/rota/profiles.toml`); without one,
    /// the environment (`AWS_*`, `ROTA_SFTP_*`, `ROTA_FTP_PASSWORD`, …).
    #[arg(long, env = "ROTA_PROFILE")]
    profile: Option<String>,
    /// Leave out files whose relative path matches this glob (`*` within a
    /// path segment, `**` across); repeatable.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Only files of at least this size (e.g. `1KiB`).
    #[arg(long, value_parser = parse_size)]
    min_size: Option<u64>,
    /// Only files of at most this size (e.g. `2GiB`).
    #[arg(long, value_parser = parse_size)]
    max_size: Option<u64>,
    /// Only files modified at or after this time: RFC 3339
    /// (`2026-11-01T00:00:00Z`) or a date (`2026-11-01`, midnight UTC).
    #[arg(long, value_parser = parse_time)]
    modified_since: Option<chrono::DateTime<chrono::Utc>>,
}

impl FilterArgs {
    /// The source settings: the profile's over the environment's.
    pub(crate) fn sources(&self) -> anyhow::Result<rota_sources::SourceSettings> {
        source_settings(self.profile.as_deref())
    }

    /// The filter these flags describe.
    pub(crate) fn filter(&self) -> rota_sources::EntryFilter {
        rota_sources::EntryFilter {
            min_size: self.min_size,
            max_size: self.max_size,
            modified_since: self.modified_since,
            exclude: self.exclude.clone(),
        }
    }
}

/// Source settings: the named profile's over the environment's, or the
/// environment's alone.
pub(crate) fn source_settings(
    profile: Option<&str>,
) -> anyhow::Result<rota_sources::SourceSettings> {
    let Some(name) = profile else {
        return Ok(rota_sources::SourceSettings::from_env());
    };
    let path = rota_sources::profiles::default_path().ok_or_else(|| {
        anyhow::anyhow!("--profile {name}: no profiles file (set ROTA_PROFILES or HOME)")
    })?;
    Ok(rota_sources::profiles::load(name, &path)?)
}

/// A time, as RFC 3339 or a date (midnight UTC).
pub(crate) fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("'{s}' is not a time: use 2026-11-01T00:00:00Z or 2026-11-01"))
}

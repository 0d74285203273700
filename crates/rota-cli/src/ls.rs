//! `rota ls`: what a location lists, as `rota ingest` would see it.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;

/// Arguments of `rota ls`.
#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// A file, a directory, a `file://` URL, an S3 prefix or object, a
    /// WebDAV, SFTP or FTP(S) directory, or an `http(s)://` URL, as `rota ingest`
    /// takes it.
    location: String,
    /// Descend into subdirectories.
    #[arg(short, long)]
    recursive: bool,
    /// Only files whose path relative to LOCATION matches this glob (`*`
    /// within a path segment, `**` across segments); a glob may also end
    /// LOCATION itself.
    #[arg(long)]
    glob: Option<String>,
    #[command(flatten)]
    filter: crate::units::FilterArgs,
    /// One JSON object per file (relative path, location, size, modified,
    /// etag) instead of columns.
    #[arg(long)]
    json: bool,
}

/// Lists the files `rota ingest` would read at a location, as they stream in.
pub(crate) async fn run(args: LsArgs) -> anyhow::Result<ExitCode> {
    let list = rota_sources::list_request(&args.location, args.recursive, args.glob.as_deref())?;
    let source = args.filter.sources()?.for_location(&list.location)?;
    let listing = source.list(&list).await?;
    let mut entries = args.filter.filter().apply(listing)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let (mut files, mut bytes) = (0u64, 0u64);
    while let Some(e) = entries.next_entry().await? {
        files += 1;
        bytes += e.size.unwrap_or(0);
        if args.json {
            serde_json::to_writer(&mut out, &e)?;
            writeln!(out)?;
        } else {
            let size = e.size.map_or_else(|| "-".to_owned(), |s| s.to_string());
            let modified = e.modified.map_or_else(
                || "-".to_owned(),
                |m| m.format("%Y-%m-%d %H:%M:%S").to_string(),
            );
            writeln!(out, "{size:>12}  {modified}  {}", e.relative)?;
        }
    }
    out.flush()?;
    if !args.json {
        eprintln!("{files} files, {bytes} bytes");
    }
    Ok(ExitCode::SUCCESS)
}

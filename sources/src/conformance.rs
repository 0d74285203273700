//! The source conformance suite: checks every source runs against the same
//! tree (`fixtures/tree/`), with the local disk as the truth.
//!
//! A source's tests serve a copy of the tree (upload it to a bucket, point a
//! server at it) and call these functions with the URL of the copy's root.
//! Each check panics with a message naming what differed.

use std::path::{Path, PathBuf};

use rota_core::SourceError;
use rota_core::source::{Entry, ListRequest, Source};

use crate::LocalSource;

/// A served copy of a tree.
pub struct Tree<'a> {
    /// The source under test.
    pub source: &'a dyn Source,
    /// The URL of the copy's root, ending in `/`.
    pub root: String,
    /// The tree on local disk.
    pub local: PathBuf,
}

impl Tree<'_> {
    /// The URL of `relative` in the served copy, encoded as its scheme needs.
    #[must_use]
    pub fn url_of(&self, relative: &str) -> String {
        // Server URLs are read as the URL standard reads them, so `#`, `?`
        // and `%` in a name are percent-encoded; S3 keys are taken as given.
        let encode = ["http", "webdav", "ftp", "sftp"]
            .iter()
            .any(|scheme| self.root.starts_with(scheme));
        let parts: Vec<String> = relative
            .split('/')
            .map(|p| {
                if encode {
                    p.bytes()
                        .map(|b| {
                            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                                (b as char).to_string()
                            } else {
                                format!("%{b:02X}")
                            }
                        })
                        .collect()
                } else {
                    p.to_owned()
                }
            })
            .collect();
        format!("{}{}", self.root, parts.join("/"))
    }
}

/// Every entry of a listing.
///
/// # Errors
/// The first error of the listing.
pub async fn list_all(source: &dyn Source, req: &ListRequest) -> Result<Vec<Entry>, SourceError> {
    let mut stream = source.list(req).await?;
    let mut out = Vec::new();
    while let Some(e) = stream.next_entry().await? {
        out.push(e);
    }
    Ok(out)
}

/// Every entry listed at `location`, without a glob.
///
/// # Errors
/// The first error of the listing.
pub async fn list_at(
    source: &dyn Source,
    location: &str,
    recursive: bool,
) -> Result<Vec<Entry>, SourceError> {
    let req = ListRequest {
        location: location.to_owned(),
        recursive,
        glob: None,
    };
    list_all(source, &req).await
}

/// Every byte of `entry` (or of `range` of it), read through `source`.
///
/// # Errors
/// The first error of the read.
pub async fn read_all(
    source: &dyn Source,
    entry: &Entry,
    range: Option<std::ops::Range<u64>>,
) -> Result<Vec<u8>, SourceError> {
    let mut stream = source.open(entry, range).await?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next_chunk().await? {
        assert!(!chunk.is_empty(), "{}: an empty chunk", entry.location);
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Relative paths and sizes, sorted.
fn shape(entries: &[Entry]) -> Vec<(String, Option<u64>)> {
    let mut v: Vec<_> = entries
        .iter()
        .map(|e| (e.relative.clone(), e.size))
        .collect();
    v.sort();
    v
}

async fn local_listing(local: &Path, recursive: bool, glob: Option<&str>) -> Vec<Entry> {
    let req = ListRequest {
        location: local.to_string_lossy().into_owned(),
        recursive,
        glob: glob.map(str::to_owned),
    };
    list_all(&LocalSource::default(), &req)
        .await
        .expect("list the local tree")
}

/// Recursive, non-recursive and globbed listings name the same files with
/// the same sizes as the local tree, each with a location that opens.
pub async fn listings_match_local(tree: &Tree<'_>) {
    for (recursive, glob) in [
        (true, None),
        (false, None),
        (true, Some("**/*.csv")),
        (true, Some("sub/**")),
        (false, Some("*.csv")),
    ] {
        let want = local_listing(&tree.local, recursive, glob).await;
        let req = ListRequest {
            location: tree.root.clone(),
            recursive,
            glob: glob.map(str::to_owned),
        };
        let got = list_all(tree.source, &req).await.unwrap_or_else(|e| {
            panic!(
                "list {} (recursive {recursive}, glob {glob:?}): {e}",
                tree.root
            )
        });
        assert_eq!(
            shape(&got),
            shape(&want),
            "listing of {} (recursive {recursive}, glob {glob:?})",
            tree.root
        );
        for e in &got {
            assert!(e.modified.is_some(), "{}: no modification time", e.location);
        }
    }
}

/// A listing of a subdirectory without the trailing slash finds the same
/// files as with it; a file's own location lists that file alone.
pub async fn prefixes_and_single_files(tree: &Tree<'_>) {
    let with = list_at(tree.source, &format!("{}sub/", tree.root), true)
        .await
        .expect("list sub/");
    let without = list_at(tree.source, &format!("{}sub", tree.root), true)
        .await
        .expect("list sub");
    assert_eq!(shape(&with), shape(&without), "sub/ and sub list alike");
    assert!(!with.is_empty());
    let one = list_at(tree.source, &tree.url_of("sub/b.ndjson"), false)
        .await
        .expect("list one file");
    let size = std::fs::metadata(tree.local.join("sub/b.ndjson"))
        .expect("local file")
        .len();
    assert_eq!(shape(&one), vec![("b.ndjson".to_owned(), Some(size))]);
}

/// Every file of the tree (odd names and empty files included) reads back
/// byte for byte, whole and by ranges, by stream and by random access.
pub async fn reads_are_byte_equal(tree: &Tree<'_>, files: &[&str]) {
    for relative in files {
        let want = std::fs::read(tree.local.join(relative)).expect("local file");
        let entries = list_at(tree.source, &tree.url_of(relative), false)
            .await
            .unwrap_or_else(|e| panic!("list {relative}: {e}"));
        let [entry] = entries.as_slice() else {
            panic!("{relative}: listed as {} entries", entries.len());
        };
        assert_eq!(entry.size, Some(want.len() as u64), "{relative}: size");
        let got = read_all(tree.source, entry, None)
            .await
            .unwrap_or_else(|e| panic!("read {relative}: {e}"));
        assert!(
            got == want,
            "{relative}: bytes differ ({} vs {} bytes)",
            got.len(),
            want.len()
        );
        let n = want.len() as u64;
        for range in [0..n.min(1), n / 3..n / 2, n.saturating_sub(10)..n] {
            if range.is_empty() {
                continue;
            }
            let got = read_all(tree.source, entry, Some(range.clone()))
                .await
                .unwrap_or_else(|e| panic!("read {relative} {range:?}: {e}"));
            let (a, b) = (range.start as usize, range.end as usize);
            assert!(got == want[a..b], "{relative} {range:?}: bytes differ");
        }
        if let Some(at) = tree
            .source
            .random_access(entry)
            .await
            .unwrap_or_else(|e| panic!("random access to {relative}: {e}"))
        {
            assert_eq!(at.size(), n, "{relative}: random access size");
            let (from, len) = (n / 4, (n / 2) as usize);
            // The read blocks: run it where blocking is allowed.
            let got = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0; len];
                at.read_exact_at(from, &mut buf).map(|()| buf)
            })
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("read_exact_at {relative}: {e}"));
            assert!(
                got == want[from as usize..from as usize + len],
                "{relative}: random access bytes differ"
            );
        }
    }
}

/// A missing file and a missing directory are typed not-found errors
/// naming the location.
pub async fn missing_is_not_found(tree: &Tree<'_>, directories: bool) {
    let mut missing = vec![tree.url_of("no-such-file.csv")];
    if directories {
        missing.push(format!("{}no-such-dir/", tree.root));
    }
    for location in missing {
        let result = list_at(tree.source, &location, true).await;
        match result {
            Err(SourceError::NotFound { location: l }) => {
                assert!(l.contains("no-such"), "{l}");
            }
            // A directory that is a key prefix with nothing under it may
            // list as empty: nothing to ingest, which ingest reports.
            Ok(v) if v.is_empty() && location.ends_with('/') => {}
            other => panic!("{location}: expected not found, got {other:?}"),
        }
    }
}

/// Every check, for a source that lists directories: listings, prefixes,
/// byte-equal reads of every file of the tree, typed not-found errors.
pub async fn all(tree: &Tree<'_>) {
    listings_match_local(tree).await;
    prefixes_and_single_files(tree).await;
    reads_are_byte_equal(tree, TREE_FILES).await;
    missing_is_not_found(tree, true).await;
}

/// The files of `fixtures/tree/` every source serves, relative to its root.
pub const TREE_FILES: &[&str] = &[
    "a.csv",
    "empty.csv",
    "odd names/100%.csv",
    "odd names/hash#1.csv",
    "odd names/with space.csv",
    "odd names/ünïcødé.csv",
    "sub/b.ndjson",
    "sub/data.parquet",
    "sub/deeper/c.csv",
];

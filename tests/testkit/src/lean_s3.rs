//! A lean S3 backend for benchmarks: the s3s protocol layer (HTTP, SigV4,
//! XML) over a directory, with only what reading needs — `HeadObject`,
//! ranged `GetObject` in 1 MiB blocks, and `ListObjectsV2` by prefix in key
//! order — and ETags made from each file's size and modification time.
//!
//! s3s-fs, the server the tests use, hashes a whole object with MD5 on every
//! `GET` and `HEAD` of a file it did not receive itself, reads in 4 KiB
//! blocks and walks the whole bucket for every page of a listing: on a
//! 2-core machine its own CPU would be what a benchmark measures.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use s3s::dto::{
    ETag, ETagCondition, GetObjectInput, GetObjectOutput, HeadObjectInput, HeadObjectOutput,
    ListObjectsV2Input, ListObjectsV2Output, Object, StreamingBlob, Timestamp,
};
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

/// Bytes per block read from a file and sent.
const BLOCK: usize = 1 << 20;

/// Buckets are the directories of `root`; keys are paths below them.
#[derive(Debug)]
pub struct LeanFs {
    root: PathBuf,
}

impl LeanFs {
    /// Serves the directories of `root` as buckets.
    #[must_use]
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    fn bucket(&self, bucket: &str) -> S3Result<PathBuf> {
        if bucket.contains('/') || bucket.starts_with('.') {
            return Err(s3_error!(InvalidBucketName));
        }
        let path = self.root.join(bucket);
        if !path.is_dir() {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(path)
    }

    fn object(&self, bucket: &str, key: &str) -> S3Result<(PathBuf, std::fs::Metadata)> {
        let root = self.bucket(bucket)?;
        if key.split('/').any(|p| p == ".." || p == ".") {
            return Err(s3_error!(InvalidArgument));
        }
        let path = root.join(key);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok((path, m)),
            _ => Err(s3_error!(NoSuchKey)),
        }
    }
}

/// An ETag for a file: its modification time and size.
fn etag_of(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{mtime:x}-{:x}", meta.len())
}

fn modified(meta: &std::fs::Metadata) -> Option<Timestamp> {
    meta.modified().ok().map(Timestamp::from)
}

/// Every file under `dir`, as keys relative to `root`, in key order,
/// starting after `after` and with `prefix`, at most `limit`.
fn walk(
    root: &Path,
    dir: &Path,
    prefix: &str,
    after: &str,
    limit: usize,
    out: &mut Vec<Object>,
) -> std::io::Result<()> {
    let mut names: Vec<(String, bool)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let dir = e.file_type().ok()?.is_dir();
            let name = e.file_name().into_string().ok()?;
            // A directory's keys all start with "name/": sort it by that.
            Some((if dir { format!("{name}/") } else { name }, dir))
        })
        .collect();
    names.sort();
    let base = dir
        .strip_prefix(root)
        .ok()
        .and_then(|p| p.to_str())
        .map(|p| {
            if p.is_empty() {
                String::new()
            } else {
                format!("{p}/")
            }
        })
        .unwrap_or_default();
    for (name, is_dir) in names {
        if out.len() >= limit {
            return Ok(());
        }
        let key = format!("{base}{name}");
        // Skip what cannot hold a key with the prefix, or only keys at or
        // before the resume point.
        let overlaps = key.starts_with(prefix) || (is_dir && prefix.starts_with(&key));
        if !overlaps {
            continue;
        }
        if is_dir {
            if key.as_str() < after && !after.starts_with(&key) {
                continue;
            }
            walk(
                root,
                &dir.join(name.trim_end_matches('/')),
                prefix,
                after,
                limit,
                out,
            )?;
        } else if key.as_str() > after {
            let meta = std::fs::metadata(dir.join(&name))?;
            out.push(Object {
                key: Some(key),
                size: i64::try_from(meta.len()).ok(),
                last_modified: modified(&meta),
                e_tag: Some(ETag::Strong(etag_of(&meta))),
                ..Object::default()
            });
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl S3 for LeanFs {
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let (_, meta) = self.object(&req.input.bucket, &req.input.key)?;
        Ok(S3Response::new(HeadObjectOutput {
            content_length: i64::try_from(meta.len()).ok(),
            last_modified: modified(&meta),
            e_tag: Some(ETag::Strong(etag_of(&meta))),
            ..HeadObjectOutput::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let (path, meta) = self.object(&input.bucket, &input.key)?;
        let etag = etag_of(&meta);
        if let Some(ETagCondition::ETag(want)) = &input.if_match
            && want.value() != etag
        {
            return Err(s3_error!(PreconditionFailed));
        }
        let len = meta.len();
        let range = match &input.range {
            Some(r) => r.check(len).map_err(|_| s3_error!(InvalidRange))?,
            None => 0..len,
        };
        let content_range = input.range.is_some().then(|| {
            format!(
                "bytes {}-{}/{len}",
                range.start,
                range.end.saturating_sub(1)
            )
        });
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
        let (start, end) = (range.start, range.end);
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Seek, SeekFrom};
            let send = |file: &mut std::fs::File, mut at: u64| -> std::io::Result<()> {
                file.seek(SeekFrom::Start(at))?;
                while at < end {
                    let want = usize::try_from(end - at).unwrap_or(BLOCK).min(BLOCK);
                    let mut buf = vec![0; want];
                    file.read_exact(&mut buf)?;
                    at += want as u64;
                    if tx.blocking_send(Ok(buf.into())).is_err() {
                        break;
                    }
                }
                Ok(())
            };
            let result = std::fs::File::open(&path).and_then(|mut f| send(&mut f, start));
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(S3Response::new(GetObjectOutput {
            body: Some(StreamingBlob::wrap(body)),
            content_length: i64::try_from(end - start).ok(),
            content_range,
            last_modified: modified(&meta),
            e_tag: Some(ETag::Strong(etag)),
            ..GetObjectOutput::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        if input.delimiter.is_some() {
            return Err(s3_error!(
                NotImplemented,
                "this benchmark server lists without a delimiter only"
            ));
        }
        let root = self.bucket(&input.bucket)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let after = input
            .continuation_token
            .clone()
            .or_else(|| input.start_after.clone())
            .unwrap_or_default();
        let max = usize::try_from(input.max_keys.unwrap_or(1000).clamp(1, 1000)).unwrap_or(1000);
        let mut objects = Vec::new();
        let listed = {
            let (root, prefix, after) = (root.clone(), prefix.clone(), after.clone());
            tokio::task::spawn_blocking(move || {
                walk(&root, &root, &prefix, &after, max + 1, &mut objects).map(|()| objects)
            })
            .await
        };
        let mut objects = listed
            .map_err(|e| s3_error!(InternalError, "{e}"))?
            .map_err(|e| s3_error!(InternalError, "{e}"))?;
        let truncated = objects.len() > max;
        objects.truncate(max);
        let next = truncated
            .then(|| objects.last().and_then(|o| o.key.clone()))
            .flatten();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: input.prefix,
            max_keys: i32::try_from(max).ok(),
            key_count: i32::try_from(objects.len()).ok(),
            continuation_token: input.continuation_token,
            is_truncated: Some(truncated),
            next_continuation_token: next,
            contents: Some(objects),
            start_after: input.start_after,
            ..ListObjectsV2Output::default()
        }))
    }
}

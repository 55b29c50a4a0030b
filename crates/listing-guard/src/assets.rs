//! Labelled copies of labelled images, in an object store (`label_assets.store`): a local
//! directory, or S3 and S3-compatible stores through `object_store`.
//!
//! For each label event the pipeline writes the original with the implicit label
//! ([`lg_labeler::stamp`], same pixels, other metadata kept) and, with `label_assets.visible`, a
//! copy with the visible label ([`lg_labeler::visible`]). Keys are deterministic, so a redelivered
//! record overwrites the same objects:
//! `<prefix>/<marketplace>/<listing_id>/<image_id>/<sha256[..16]>.label.<ext>` and
//! `....visible.<ext>`. Each path part is percent-encoded by `object_store`, so ids cannot
//! escape the prefix. A failure (an unsupported format, the store refusing) is recorded in the
//! label event's `assets.error`; the label event is still produced.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use lg_events::{LabelAssets, LabelEvent};
use lg_labeler::visible::{self, Corner};
use object_store::path::{Path as ObjectPath, PathPart};
use object_store::{ObjectStore, PutPayload};

use serde::Deserialize;

/// Where labelled copies of images go.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LabelAssetSettings {
    /// Empty: off; a directory (path or `file://` URL); or `s3://bucket/prefix`.
    pub store: String,
    /// Also write a copy with the visible label drawn in.
    pub visible: bool,
    /// Corner of the visible label.
    pub corner: String,
}

/// The longest a label's files may take to write before the label event goes out without
/// them (`assets.error` says so).
pub const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A parsed `label_assets.store`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A local directory (created if missing).
    Dir(PathBuf),
    /// An S3 bucket and key prefix.
    S3 {
        /// Bucket.
        bucket: String,
        /// Key prefix, without slashes at either end; may be empty.
        prefix: String,
    },
}

impl StoreUrl {
    /// Parses a directory path, a `file://` URL or an `s3://bucket/prefix` URL.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(format!("{s:?} names no bucket"));
            }
            return Ok(Self::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if s.starts_with("file://") {
            let u = url::Url::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
            let p = u
                .to_file_path()
                .map_err(|()| format!("{s:?} is not a local file URL"))?;
            return Ok(Self::Dir(p));
        }
        if s.contains("://") {
            return Err(format!(
                "{s:?}: expected a directory, a file:// URL or an s3:// URL"
            ));
        }
        Ok(Self::Dir(PathBuf::from(s)))
    }
}

/// The open store and what to write into it.
#[derive(Debug)]
pub struct AssetStore {
    store: Arc<dyn ObjectStore>,
    /// The same store when it is a local directory: file URLs come from its own key-to-path
    /// mapping (which percent-encodes differently from URLs).
    local: Option<Arc<object_store::local::LocalFileSystem>>,
    /// URL of the store's root, to which object keys are appended (S3).
    root_url: String,
    prefix: Vec<String>,
    visible: bool,
    corner: Corner,
}

impl AssetStore {
    /// Opens the configured store; `None` when `label_assets.store` is empty.
    pub fn open(s: &LabelAssetSettings) -> anyhow::Result<Option<Arc<Self>>> {
        if s.store.is_empty() {
            return Ok(None);
        }
        let corner = s
            .corner
            .parse::<Corner>()
            .map_err(|e| anyhow::anyhow!("label_assets.corner: {e}"))?;
        let url =
            StoreUrl::parse(&s.store).map_err(|e| anyhow::anyhow!("label_assets.store: {e}"))?;
        let mut local = None;
        let (store, root_url, prefix): (Arc<dyn ObjectStore>, String, Vec<String>) = match url {
            StoreUrl::Dir(dir) => {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("label_assets.store: creating {}", dir.display()))?;
                let dir = dir
                    .canonicalize()
                    .with_context(|| format!("label_assets.store: {}", dir.display()))?;
                let fs = Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(&dir)
                        .context("label_assets.store")?,
                );
                let root = url::Url::from_directory_path(&dir)
                    .map_err(|()| anyhow::anyhow!("label_assets.store: {}", dir.display()))?;
                local = Some(Arc::clone(&fs));
                (fs, root.to_string(), Vec::new())
            }
            StoreUrl::S3 { bucket, prefix } => {
                let s3 = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(&bucket)
                    .build()
                    .context("label_assets.store: S3 (AWS_* environment)")?;
                let prefix = prefix
                    .split('/')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect();
                (Arc::new(s3), format!("s3://{bucket}/"), prefix)
            }
        };
        Ok(Some(Arc::new(Self {
            store,
            local,
            root_url,
            prefix,
            visible: s.visible,
            corner,
        })))
    }

    fn key(&self, label: &LabelEvent, file: &str) -> ObjectPath {
        let parts = self
            .prefix
            .iter()
            .map(String::as_str)
            .chain([
                label.marketplace.as_str(),
                label.listing_id.as_str(),
                label.image_id.as_str(),
                file,
            ])
            .map(PathPart::from);
        ObjectPath::from_iter(parts)
    }

    /// Writes the labelled files of `original`, the image `label` is about.
    pub async fn write(&self, label: &LabelEvent, original: Bytes) -> LabelAssets {
        let implicit = label.implicit_label.clone();
        let text = visible::text_for(&label.visible_label.zh, &label.visible_label.en);
        let (want_visible, corner) = (self.visible, self.corner);
        // Decoding and encoding the visible copy is CPU work: off the async workers.
        let made = tokio::task::spawn_blocking(move || {
            let stamped = lg_labeler::stamp::stamp(&original, &implicit);
            // The copy carries the label the original now has, or ours where the original
            // could not be stamped (its metadata is not carried into the copy anyway).
            let label = stamped.as_ref().map_or(&implicit, |s| &s.label);
            let copy = want_visible.then(|| visible::label_copy(&original, &text, corner, label));
            (stamped, copy, ext_of(&original))
        })
        .await;
        let (stamped, copy, ext) = match made {
            Ok(m) => m,
            Err(e) => return failed(format!("labelling task failed: {e}")),
        };
        let stem = label
            .content_sha256
            .as_deref()
            .map_or("unhashed", |s| &s[..s.len().min(16)]);
        let mut out = LabelAssets {
            implicit: None,
            visible: None,
            error: None,
        };
        let mut errors = Vec::new();
        match stamped {
            Ok(s) => match self
                .put(label, &format!("{stem}.label.{ext}"), s.bytes)
                .await
            {
                Ok(url) => out.implicit = Some(url),
                Err(e) => errors.push(format!("implicit: {e}")),
            },
            Err(e) => errors.push(format!("implicit: {e}")),
        }
        match copy {
            Some(Ok(c)) => {
                let file = format!("{stem}.visible.{}", c.extension);
                match self.put(label, &file, c.bytes).await {
                    Ok(url) => out.visible = Some(url),
                    Err(e) => errors.push(format!("visible: {e}")),
                }
            }
            Some(Err(e)) => errors.push(format!("visible: {e}")),
            None => {}
        }
        if !errors.is_empty() {
            out.error = Some(errors.join("; "));
        }
        crate::metrics::METRICS.label_asset(out.error.is_none());
        out
    }

    async fn put(&self, label: &LabelEvent, file: &str, bytes: Vec<u8>) -> Result<String, String> {
        let key = self.key(label, file);
        self.store
            .put(&key, PutPayload::from(bytes))
            .await
            .map_err(|e| e.to_string())?;
        match &self.local {
            Some(fs) => {
                let path = fs.path_to_filesystem(&key).map_err(|e| e.to_string())?;
                url::Url::from_file_path(&path)
                    .map(String::from)
                    .map_err(|()| format!("{} has no file URL", path.display()))
            }
            None => Ok(format!("{}{}", self.root_url, key)),
        }
    }
}

/// Assets that could not be made at all.
pub fn failed(error: String) -> LabelAssets {
    crate::metrics::METRICS.label_asset(false);
    LabelAssets {
        implicit: None,
        visible: None,
        error: Some(error),
    }
}

fn ext_of(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\x89PNG") {
        "png"
    } else if bytes.starts_with(&[0xFF, 0xD8]) {
        "jpg"
    } else {
        "bin"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Odd ids stay inside the store, and the URL in the label event names the file written.
    #[tokio::test]
    async fn file_urls_name_the_written_files_whatever_the_ids() {
        let dir = std::env::temp_dir().join(format!("lg-assets-unit-{}", std::process::id()));
        let store = AssetStore::open(&LabelAssetSettings {
            store: dir.display().to_string(),
            visible: true,
            corner: "top-left".into(),
        })
        .unwrap()
        .unwrap();
        let img = crate::fixtures::Fixture::CleanJpeg.bytes(1);
        let mut label: LabelEvent = serde_json::from_value(serde_json::json!({
            "schema_version": 1, "label_id": "l", "decision_id": "d", "event_id": "e",
            "listing_id": "a%b #?/..", "marketplace": "taobao", "image_id": "..",
            "content_sha256": lg_events::sha256_hex(&img),
            "visible_label": {"zh": "AI生成", "en": ""},
            "basis": "detected",
            "implicit_label": lg_events::Tc260Aigc::default(),
            "policy_version": "p"
        }))
        .unwrap();
        label.implicit_label.content_propagator = "taobao".into();
        let assets = store.write(&label, Bytes::from(img)).await;
        assert_eq!(assets.error, None);
        let root = dir.canonicalize().unwrap();
        for u in [assets.implicit.unwrap(), assets.visible.unwrap()] {
            let path = url::Url::parse(&u).unwrap().to_file_path().unwrap();
            assert!(path.is_file(), "{u} -> {}", path.display());
            assert!(path.starts_with(&root), "{}", path.display());
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn store_urls_parse() {
        assert_eq!(
            StoreUrl::parse("s3://bucket/a/b/"),
            Ok(StoreUrl::S3 {
                bucket: "bucket".into(),
                prefix: "a/b".into()
            })
        );
        assert_eq!(
            StoreUrl::parse("file:///var/lib/x"),
            Ok(StoreUrl::Dir("/var/lib/x".into()))
        );
        assert_eq!(
            StoreUrl::parse("out/dir"),
            Ok(StoreUrl::Dir("out/dir".into()))
        );
        assert!(StoreUrl::parse("s3:///x").is_err());
        assert!(StoreUrl::parse("gs://b/x").is_err());
    }
}

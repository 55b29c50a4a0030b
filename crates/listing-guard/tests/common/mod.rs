//! Shared by the CLI tests.

use std::path::{Path, PathBuf};

/// `../shared/corpus`, if present. Absent with `CI=true` is a failure, not a skip.
pub(crate) fn corpus_dir() -> Option<PathBuf> {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    if d.join("MANIFEST.tsv").exists() {
        return Some(d);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but the shared corpus is missing at {}",
        d.display()
    );
    eprintln!("skipping: shared corpus not found at {}", d.display());
    None
}

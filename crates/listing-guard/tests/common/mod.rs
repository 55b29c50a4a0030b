//! Shared by the CLI tests.

use std::path::PathBuf;

/// `../shared/corpus`, if present. Absent with `CI=true` is a failure, not a skip.
pub(crate) fn corpus_dir() -> Option<PathBuf> {
    listing_guard::fixtures::shared_corpus()
}

//! `--exclude` patterns: a pattern with a `/` matches the whole absolute
//! path, one without matches the entry's name anywhere (like restic).

use crate::error::{IngestError, Result};
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::path::Path;

/// A compiled set of exclude patterns, checked for every entry the
/// backup walk (and the counting scan) meets. An excluded directory is not
/// entered, so everything below it is left out too.
#[derive(Clone)]
pub struct Excludes {
    by_name: GlobSet,
    by_path: GlobSet,
    empty: bool,
}

impl Excludes {
    /// Compiles `patterns` (globs; an empty list excludes nothing). In a
    /// pattern with a `/`, `*` does not cross a `/` and a trailing `/` is
    /// ignored. An invalid glob is `IngestError::BadPattern`.
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let bad = |e: globset::Error| IngestError::BadPattern { pattern: p.clone(), reason: e.kind().to_string() };
            if p.contains('/') {
                let g = globset::GlobBuilder::new(p.trim_end_matches('/')).literal_separator(true).build().map_err(bad)?;
                paths.add(g);
            } else {
                names.add(Glob::new(p).map_err(bad)?);
            }
        }
        let build = |b: GlobSetBuilder| b.build().map_err(|e| IngestError::BadPattern { pattern: patterns.join(" "), reason: e.to_string() });
        Ok(Excludes { by_name: build(names)?, by_path: build(paths)?, empty: patterns.is_empty() })
    }

    /// Whether the entry at `path` is left out: its last component matches
    /// a pattern without `/`, or the whole path matches one with `/`.
    /// `path` is the absolute path the walk built (source + names), so
    /// path patterns should be absolute too.
    pub fn excluded(&self, path: &Path) -> bool {
        if self.empty {
            return false;
        }
        if let Some(name) = path.file_name() {
            if self.by_name.is_match(name) {
                return true;
            }
        }
        self.by_path.is_match(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_and_path_patterns() {
        let e = Excludes::new(&["*.tmp".into(), "/data/cache/*".into()]).unwrap();
        assert!(e.excluded(Path::new("/x/y/a.tmp")));
        assert!(!e.excluded(Path::new("/x/y/a.txt")));
        assert!(e.excluded(Path::new("/data/cache/blob")));
        assert!(!e.excluded(Path::new("/data/cache/sub/blob")));
        assert!(Excludes::new(&["a[".into()]).is_err());
    }
}

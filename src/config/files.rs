//! Files a rule file names (certificates, keys, CA bundles, the fleet's
//! password file): read with the rule files, so compiling is pure and `check` sees exactly what `run`
//! would load. Their content is part of the config hash (SPEC 7), and the
//! watcher watches them.

use super::Source;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The content of every referenced file, by resolved path; `Err` holds why
/// it could not be read.
#[derive(Debug, Default, Clone)]
pub struct Files {
    content: BTreeMap<PathBuf, Result<Arc<[u8]>, String>>,
}

impl Files {
    /// Reads every file `sources` name, in load order.
    pub fn read(sources: &[Source]) -> Files {
        Files::read_paths(referenced(sources))
    }

    /// Reads the files at `paths`.
    pub fn read_paths(paths: impl IntoIterator<Item = PathBuf>) -> Files {
        let mut content = BTreeMap::new();
        for path in paths {
            let bytes = std::fs::read(&path)
                .map(Arc::from)
                .map_err(|e| e.to_string());
            content.insert(path, bytes);
        }
        Files { content }
    }

    /// A file's content, or why it could not be read.
    pub fn get(&self, path: &Path) -> Result<&[u8], String> {
        match self.content.get(path) {
            Some(Ok(bytes)) => Ok(bytes),
            Some(Err(e)) => Err(e.clone()),
            None => Err("not read with the config".into()),
        }
    }

    /// The paths, for the watcher.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.content.keys().map(PathBuf::as_path)
    }

    /// Feeds each file's path and content (or a marker when it could not be
    /// read) into the config hash.
    pub fn hash_into(&self, hasher: &mut impl sha2::Digest) {
        for (path, bytes) in &self.content {
            hasher.update(path.display().to_string().as_bytes());
            hasher.update([0]);
            match bytes {
                Ok(b) => hasher.update(b),
                Err(_) => hasher.update(b"\xffunreadable"),
            }
            hasher.update([0]);
        }
    }
}

/// Certificate, key, CA and password files named by parsed rule files,
/// resolved against the file naming them.
fn referenced(sources: &[Source]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for src in sources {
        for l in &src.doc.listen {
            if let Some(t) = &l.value.tls {
                for c in &t.value.certificates {
                    files.push(src.resolve(&c.value.cert.value));
                    files.push(src.resolve(&c.value.key.value));
                }
            }
        }
        for (_, u) in &src.doc.upstreams.0 {
            if let Some(ca) = u.value.tls.as_ref().and_then(|t| t.value.ca.as_ref()) {
                files.push(src.resolve(&ca.value));
            }
        }
        if let Some(p) = src
            .doc
            .fleet
            .as_ref()
            .and_then(|f| f.value.password_file.as_ref())
        {
            files.push(src.resolve(&p.value));
        }
    }
    files
}

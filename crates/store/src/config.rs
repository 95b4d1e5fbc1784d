//! `config.json` at the top of a datastore: its format version and the
//! parameters every writer must agree on (chunker, pack size).

use crate::error::{Result, StoreError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The config file's name in the datastore directory.
pub const CONFIG_FILE: &str = "config.json";
/// The on-disk format this code reads and writes (docs/format.md).
pub const FORMAT_VERSION: u32 = 1;

/// A datastore's `config.json`: its format, identity and write parameters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DatastoreConfig {
    /// On-disk format version ([`FORMAT_VERSION`] when created).
    pub format_version: u32,
    /// Random id, so two datastores are never confused.
    pub id: String,
    /// When `datastore init` made it.
    pub created: chrono::DateTime<chrono::Utc>,
    /// Files up to this size are stored whole as one blob.
    pub small_file_max: u64,
    /// FastCDC parameters for larger files (bytes).
    pub chunk_min: u32,
    /// FastCDC average chunk size.
    pub chunk_avg: u32,
    /// FastCDC maximum chunk size.
    pub chunk_max: u32,
    /// A pack is sealed once it holds this many bytes.
    pub pack_target: u64,
    /// How new blobs are compressed. Absent in datastores made before it
    /// existed: those compress with zstd.
    #[serde(default)]
    pub compression: Compression,
    /// zstd level for new blobs (with `compression` zstd).
    pub zstd_level: i32,
    /// Refuse everything that removes data (forget, gc): protects the
    /// backups from a compromised or careless client.
    #[serde(default)]
    pub append_only: bool,
    /// Optional format features this datastore uses; a reader refuses a
    /// datastore naming one it does not know (`FEATURES`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// Present (with feature "encryption") when data is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<crate::crypto::EncryptionConfig>,
}

/// Optional features this code knows.
pub const FEATURE_ENCRYPTION: &str = "encryption";
/// Records may be LZ4-compressed (encoding 2). Listed from the first time
/// `compression` is lz4 and never removed: the records stay.
pub const FEATURE_LZ4: &str = "lz4";
pub const FEATURES: &[&str] = &[FEATURE_ENCRYPTION, FEATURE_LZ4];

/// A datastore's `compression` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Store blobs as they are.
    None,
    /// LZ4: the fastest to write and to read back; stores about 10-15 %
    /// more than zstd level 1 on typical file-server data.
    Lz4,
    /// zstd at `zstd_level`.
    #[default]
    Zstd,
    /// Each blob with LZ4 while the datastore's disk keeps up with the
    /// backup, with zstd at `zstd_level` while it falls behind: the CPU
    /// and the disk both stay busy, whichever of them is the slower.
    Auto,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            "auto" => Ok(Compression::Auto),
            other => Err(format!("unknown compression '{other}' (use auto, lz4, zstd or none)")),
        }
    }
}

/// The name `FromStr` takes.
impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Auto => "auto",
        })
    }
}

impl DatastoreConfig {
    /// The defaults `datastore init` uses.
    pub fn new() -> Self {
        let mut c = DatastoreConfig {
            format_version: FORMAT_VERSION,
            id: crate::id::PackId::random().to_hex(),
            created: chrono::Utc::now(),
            small_file_max: 1 << 20,
            chunk_min: 512 << 10,
            chunk_avg: 1 << 20,
            chunk_max: 8 << 20,
            pack_target: 64 << 20,
            compression: Compression::Auto,
            zstd_level: 1,
            append_only: false,
            features: Vec::new(),
            encryption: None,
        };
        c.list_needed_features();
        c
    }

    /// Reads and checks `config.json` in `root`.
    pub fn load(root: &Path) -> Result<Self> {
        let path = root.join(CONFIG_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StoreError::NotADatastore { path: root.to_path_buf() }),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Err(StoreError::NotADatastore { path: root.to_path_buf() }),
            Err(e) => return Err(StoreError::io("read", path, e)),
        };
        // Read the version first so a future format is refused with a clear
        // message rather than a field error.
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version = serde_json::from_slice(&bytes).map_err(|e| StoreError::BadConfig { path: path.clone(), reason: e.to_string() })?;
        if v.format_version != FORMAT_VERSION {
            return Err(StoreError::UnsupportedVersion { path: root.to_path_buf(), found: v.format_version, supported: FORMAT_VERSION });
        }
        // Features next: an unknown one means this code would misread the
        // datastore (e.g. take sealed bytes for plain ones).
        #[derive(Deserialize)]
        struct Features {
            #[serde(default)]
            features: Vec<String>,
        }
        let f: Features = serde_json::from_slice(&bytes).map_err(|e| StoreError::BadConfig { path: path.clone(), reason: e.to_string() })?;
        if let Some(unknown) = f.features.iter().find(|f| !FEATURES.contains(&f.as_str())) {
            return Err(StoreError::UnsupportedFeature { path: root.to_path_buf(), feature: unknown.clone() });
        }
        let cfg: DatastoreConfig = serde_json::from_slice(&bytes).map_err(|e| StoreError::BadConfig { path: path.clone(), reason: e.to_string() })?;
        if cfg.chunk_min == 0 || cfg.chunk_min > cfg.chunk_avg || cfg.chunk_avg > cfg.chunk_max || cfg.pack_target == 0 {
            return Err(StoreError::BadConfig { path, reason: "chunker sizes or pack size out of range".into() });
        }
        if matches!(cfg.compression, Compression::Lz4 | Compression::Auto) && !cfg.features.iter().any(|f| f == FEATURE_LZ4) {
            return Err(StoreError::BadConfig { path, reason: "compression may use lz4 but feature \"lz4\" is not listed".into() });
        }
        let flagged = cfg.features.iter().any(|f| f == FEATURE_ENCRYPTION);
        match &cfg.encryption {
            Some(enc) if !flagged => {
                let _ = enc;
                return Err(StoreError::BadConfig { path, reason: "has an encryption section but does not list feature \"encryption\"".into() });
            }
            None if flagged => {
                return Err(StoreError::BadConfig { path, reason: "lists feature \"encryption\" but has no encryption section".into() });
            }
            Some(enc) if enc.cipher != crate::crypto::CIPHER => {
                return Err(StoreError::UnsupportedFeature { path: root.to_path_buf(), feature: format!("cipher {}", enc.cipher) });
            }
            Some(enc) if enc.slots.is_empty() => {
                return Err(StoreError::BadConfig { path, reason: "encrypted, but no key slots".into() });
            }
            _ => {}
        }
        Ok(cfg)
    }

    /// Blobs are sealed with a key (`--encrypt` at init).
    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// Sets `compression` (and the zstd level, for zstd), listing the
    /// features the records it writes need.
    pub fn set_compression(&mut self, compression: Compression, zstd_level: Option<i32>) -> std::result::Result<(), String> {
        if let Some(l) = zstd_level {
            let range = zstd::compression_level_range();
            if !range.contains(&l) {
                return Err(format!("zstd level {l} out of range ({} to {})", range.start(), range.end()));
            }
            self.zstd_level = l;
        }
        self.compression = compression;
        self.list_needed_features();
        Ok(())
    }

    /// Lists the features the current settings write records for. Never
    /// removes one: records written under earlier settings stay.
    fn list_needed_features(&mut self) {
        if matches!(self.compression, Compression::Lz4 | Compression::Auto) && !self.features.iter().any(|f| f == FEATURE_LZ4) {
            self.features.push(FEATURE_LZ4.into());
        }
    }

    /// The config of a datastore about to be created: features listed for
    /// exactly its settings (`new` lists those of the default).
    pub fn for_new_datastore(mut self) -> Self {
        self.features.retain(|f| f != FEATURE_LZ4);
        self.list_needed_features();
        self
    }

    /// Writes `config.json` in `root` atomically.
    pub fn save(&self, root: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("config serializes");
        crate::fsutil::write_atomic(&root.join(CONFIG_FILE), &bytes)
    }
}

impl Default for DatastoreConfig {
    fn default() -> Self {
        Self::new()
    }
}

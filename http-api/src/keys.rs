//! API keys and what each may do.
//!
//! A key is a bearer secret; its scope says which bots it reaches (or every bot, `*`, which
//! also opens the raw Gateway API: uids and groups there are not scoped by bot, so only a key
//! for every bot may touch them) and whether it may write. Keys come from `[api] keys`, from
//! `SWITCHBOARD_API_KEYS` (a JSON list of the same objects) and from the keys file that
//! `switchboard api-key` manages. Only a SHA-256 of each key is held in memory; a presented key
//! is hashed and compared with every known hash in constant time, so how long a refusal takes
//! says nothing about any key.

use crate::config::{Config, KeyConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;

/// Shortest key accepted from the config: anything shorter could be guessed.
pub const MIN_KEY_LEN: usize = 24;
/// The prefix of keys `switchboard api-key new` makes: `sbk_<id>_<secret>`.
pub const PREFIX: &str = "sbk_";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bots {
    All,
    Only(BTreeSet<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub bots: Bots,
    pub write: bool,
}

/// Why a scope refuses: the caller is told which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The key does not reach this bot (or the raw Gateway API needs a key for every bot).
    Bot,
    /// A read-only key asked to write.
    ReadOnly,
}

impl Scope {
    /// May this scope act on bot `bid` (`None`: the raw Gateway API), writing if `write`?
    pub fn allows(&self, bid: Option<&str>, write: bool) -> Result<(), Refusal> {
        let reaches = match (&self.bots, bid) {
            (Bots::All, _) => true,
            (Bots::Only(set), Some(b)) => set.contains(b),
            (Bots::Only(_), None) => false,
        };
        if !reaches {
            return Err(Refusal::Bot);
        }
        if write && !self.write {
            return Err(Refusal::ReadOnly);
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Key {
    /// How logs and `api-key list` name it; never the secret.
    pub name: String,
    hash: [u8; 32],
    pub scope: Scope,
    pub rate_limit: Option<f64>,
    pub rate_burst: Option<u32>,
}

/// Every key this API accepts.
#[derive(Debug, Default, Clone)]
pub struct Keyring {
    keys: Vec<Key>,
}

pub fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn key_of(c: &KeyConfig, default_name: String) -> Result<Key, String> {
    let name = if c.name.is_empty() { default_name } else { c.name.clone() };
    let hash = match (c.key.is_empty(), c.sha256.is_empty()) {
        (false, true) if c.key.len() < MIN_KEY_LEN => {
            return Err(format!("API key {name:?} is shorter than {MIN_KEY_LEN} characters: use `switchboard api-key new`"))
        }
        (false, true) => sha256(&c.key),
        (true, false) => {
            let b = hex::decode(c.sha256.trim()).map_err(|_| format!("API key {name:?}: sha256 is not hex"))?;
            b.try_into().map_err(|_| format!("API key {name:?}: sha256 is not 32 bytes"))?
        }
        _ => return Err(format!("API key {name:?}: give exactly one of key and sha256")),
    };
    if c.bots.is_empty() {
        return Err(format!("API key {name:?}: bots is empty (list bot ids, or [\"*\"] for every bot)"));
    }
    let bots = if c.bots.iter().any(|b| b == "*") { Bots::All } else { Bots::Only(c.bots.iter().cloned().collect()) };
    if let Some(r) = c.rate_limit {
        if !(r >= 0.0 && r.is_finite()) {
            return Err(format!("API key {name:?}: rate_limit must be a number ≥ 0"));
        }
    }
    Ok(Key { name, hash, scope: Scope { bots, write: c.write }, rate_limit: c.rate_limit, rate_burst: c.rate_burst })
}

impl Keyring {
    /// The keys of the config, the environment and the keys file (revoked ones left out).
    pub fn load(config: &Config, env: Option<&str>, file: &Path) -> Result<Keyring, String> {
        let mut keys = Vec::new();
        for (i, c) in config.keys.iter().enumerate() {
            keys.push(key_of(c, format!("config#{i}"))?);
        }
        if let Some(json) = env.filter(|s| !s.trim().is_empty()) {
            let list: Vec<KeyConfig> =
                serde_json::from_str(json).map_err(|e| format!("SWITCHBOARD_API_KEYS: a JSON list of {{\"key\",\"bots\",\"write\"}}: {e}"))?;
            for (i, c) in list.iter().enumerate() {
                keys.push(key_of(c, format!("env#{i}"))?);
            }
        }
        for k in KeysFile::read(file)?.keys.into_iter().filter(|k| !k.revoked) {
            // Named by id too: ids are unique, names need not be (and limits go by name).
            let name = if k.config.name.is_empty() { k.id.clone() } else { format!("{} ({})", k.config.name, k.id) };
            keys.push(key_of(&KeyConfig { name, ..k.config }, String::new())?);
        }
        Ok(Keyring { keys })
    }

    /// The key `presented` is, if any. Every known hash is compared, each in constant time.
    pub fn check(&self, presented: &str) -> Option<&Key> {
        let h = sha256(presented);
        let mut found = None;
        for k in &self.keys {
            if bool::from(k.hash.ct_eq(&h)) && found.is_none() {
                found = Some(k);
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A key made by `switchboard api-key new`, as the keys file holds it: the hash, never the key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredKey {
    /// Public: what `list` shows and `revoke` takes; also inside the key (`sbk_<id>_…`).
    pub id: String,
    #[serde(flatten)]
    pub config: KeyConfig,
    /// Unix seconds.
    pub created: u64,
    #[serde(default)]
    pub revoked: bool,
}

/// The keys file: a JSON list, readable by its owner only.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct KeysFile {
    pub keys: Vec<StoredKey>,
}

impl KeysFile {
    /// The file's keys; none when it does not exist.
    pub fn read(path: &Path) -> Result<KeysFile, String> {
        match std::fs::read_to_string(path) {
            Ok(s) => serde_json::from_str(&s).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(KeysFile::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes the file whole (to a temporary file renamed over it, mode 0600), so a reader
    /// never sees half of it.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        let json = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(json.as_bytes()).and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Makes a key for `bots`, records its hash and returns the key (shown once, never kept).
    pub fn new_key(&mut self, name: &str, bots: Vec<String>, write: bool) -> Result<(String, &StoredKey), String> {
        if bots.is_empty() {
            return Err("name at least one bot (--bot 1), or every bot (--bot '*')".into());
        }
        let mut b = [0u8; 6 + 32];
        getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
        let id = hex::encode(&b[..6]);
        let key = format!("{PREFIX}{id}_{}", hex::encode(&b[6..]));
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let config = KeyConfig { name: name.to_string(), sha256: hex::encode(sha256(&key)), bots, write, ..Default::default() };
        self.keys.push(StoredKey { id, config, created, revoked: false });
        let stored = self.keys.last().ok_or("no key")?;
        Ok((key, stored))
    }

    /// Marks key `id` revoked; false if there is none.
    pub fn revoke(&mut self, id: &str) -> bool {
        let id = id.strip_prefix(PREFIX).map(|rest| rest.split('_').next().unwrap_or(rest)).unwrap_or(id);
        match self.keys.iter_mut().find(|k| k.id == id) {
            Some(k) => {
                k.revoked = true;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(key: &str, bots: &[&str], write: bool) -> KeyConfig {
        KeyConfig { key: key.into(), bots: bots.iter().map(|s| s.to_string()).collect(), write, ..Default::default() }
    }

    #[test]
    fn a_scope_reaches_its_bots_only_and_the_gateway_api_needs_every_bot() {
        let one = key_of(&cfg("k".repeat(30).as_str(), &["1"], false), "a".into()).unwrap().scope;
        assert_eq!(one.allows(Some("1"), false), Ok(()));
        assert_eq!(one.allows(Some("1"), true), Err(Refusal::ReadOnly));
        assert_eq!(one.allows(Some("2"), false), Err(Refusal::Bot));
        assert_eq!(one.allows(None, false), Err(Refusal::Bot));
        let all = key_of(&cfg("k".repeat(30).as_str(), &["*"], true), "b".into()).unwrap().scope;
        assert_eq!(all.allows(None, true), Ok(()));
    }

    #[test]
    fn short_keys_and_empty_scopes_are_refused() {
        assert!(key_of(&cfg("short", &["1"], true), "a".into()).is_err());
        assert!(key_of(&cfg(&"k".repeat(30), &[], true), "a".into()).is_err());
    }

    #[test]
    fn the_keys_file_holds_hashes_and_revocation_takes() {
        let dir = std::env::temp_dir().join(format!("sbk-test-{}", std::process::id()));
        let path = dir.join("api-keys.json");
        let mut f = KeysFile::default();
        let (key, stored) = f.new_key("crm", vec!["1".into()], true).unwrap();
        let name = format!("crm ({})", stored.id);
        f.write(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&key[PREFIX.len() + 13..]), "the secret is not written down");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let ring = Keyring::load(&Config::default(), None, &path).unwrap();
        assert_eq!(ring.check(&key).map(|k| k.name.as_str()), Some(name.as_str()));
        assert!(ring.check("sbk_nothing").is_none());
        let mut f = KeysFile::read(&path).unwrap();
        assert!(f.revoke(&key));
        f.write(&path).unwrap();
        assert!(Keyring::load(&Config::default(), None, &path).unwrap().check(&key).is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! OpenBao for the csi host tests: the dev-server helper of `testkit::peers`, set up
//! as the user guide does (transit at `transit/`, one key, a token that may only encrypt and
//! decrypt with it).
#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::path::Path;

use testkit::peers;

pub use testkit::peers::require;

/// A running dev server with `key` and a policy token.
pub struct Bao {
    pub server: peers::bao::Bao,
    pub url: String,
    /// A token with only encrypt/decrypt on the key.
    pub token: String,
}

impl Bao {
    /// Starts a server and sets up transit with `key`; `None`: skipped (not installed).
    pub fn start(key: &str) -> Option<Bao> {
        let server = peers::bao::Bao::start(false)?;
        server.setup_transit(key);
        let token = server.policy_token(key, "");
        Some(Bao {
            url: server.url.clone(),
            server,
            token,
        })
    }

    /// Writes the token into `dir/token`, as Kubernetes mounts the Secret.
    pub fn write_secret_dir(&self, dir: &Path) {
        std::fs::write(dir.join("token"), format!("{}\n", self.token)).unwrap();
    }

    /// The secrets as a NodeStage request carries them.
    pub fn secrets(&self) -> std::collections::HashMap<String, String> {
        [("token".to_owned(), self.token.clone())].into()
    }
}

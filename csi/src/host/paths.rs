//! Which paths a node request may name: the staging and target paths (and the volume paths of
//! NodeGetVolumeStats and NodeExpandVolume) lie under kubelet's directory (`serve
//! --kubelet-dir`, default `/var/lib/kubelet`), so that a request can never make the driver
//! mount over, unmount or remove anything else on the node.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// kubelet's root directory, where it keeps every staging and publish path.
pub const DEFAULT_KUBELET_DIR: &str = "/var/lib/kubelet";

/// The directories node requests' paths must lie in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathRules {
    roots: Vec<PathBuf>,
}

impl Default for PathRules {
    fn default() -> Self {
        PathRules::new(vec![PathBuf::from(DEFAULT_KUBELET_DIR)])
    }
}

impl PathRules {
    /// Paths must lie under one of `roots` (absolute directories).
    pub fn new(roots: Vec<PathBuf>) -> Self {
        PathRules { roots }
    }

    /// `path` (the request's `field`) if it is absolute, has no `.` or `..` component, lies
    /// strictly under one of the roots, and still does after symbolic links are resolved (as
    /// far as the path exists). Anything else is INVALID_ARGUMENT naming the field.
    pub fn check(&self, field: &str, path: &str) -> Result<PathBuf> {
        let p = Path::new(path);
        let refuse = |why: &str| {
            Error::invalid(format!(
                "{field} {path:?} {why}; node paths must lie under {}",
                self.roots_text()
            ))
        };
        if !p.is_absolute() {
            return Err(refuse("is not absolute"));
        }
        // On the string: `Path::components` drops an inner `.`.
        if path.split('/').any(|c| c == "." || c == "..") {
            return Err(refuse("has a . or .. component"));
        }
        let Some(root) = self
            .roots
            .iter()
            .find(|r| p.starts_with(r) && p != r.as_path())
        else {
            return Err(refuse("is outside kubelet's directory"));
        };
        // A symbolic link on the way must not lead out: the part of the path that exists,
        // resolved, is still under the (resolved) root.
        let real_root = root.canonicalize().unwrap_or_else(|_| root.clone());
        let mut existing = p;
        loop {
            match existing.canonicalize() {
                Ok(real) => {
                    if !real.starts_with(&real_root) || real == real_root {
                        return Err(refuse(&format!(
                            "resolves to {}, outside kubelet's directory",
                            real.display()
                        )));
                    }
                    break;
                }
                Err(_) => match existing.parent() {
                    Some(parent) if parent.starts_with(root) && parent != root.as_path() => {
                        existing = parent;
                    }
                    _ => break,
                },
            }
        }
        Ok(p.to_path_buf())
    }

    /// Like [`PathRules::check`] for a path that must name a published volume
    /// (NodeGetVolumeStats, NodeExpandVolume): one outside kubelet's directory names none of
    /// ours, NOT_FOUND (the code the CSI sanity suite expects for a path that holds no volume).
    pub fn locate(&self, field: &str, path: &str) -> Result<PathBuf> {
        self.check(field, path)
            .map_err(|e| Error::not_found(format!("no volume there: {}", e.message())))
    }

    fn roots_text(&self) -> String {
        self.roots
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    #[test]
    fn only_paths_strictly_under_a_root_pass() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("kubelet");
        std::fs::create_dir_all(root.join("plugins/kubernetes.io/csi")).unwrap();
        let rules = PathRules::new(vec![root.clone()]);
        let inside = root.join("plugins/kubernetes.io/csi/pv/abc/globalmount");
        let s = inside.to_str().unwrap();
        assert_eq!(rules.check("staging_target_path", s).unwrap(), inside);
        for (bad, why) in [
            ("relative/path", "not absolute"),
            ("/etc", "outside"),
            ("/", "outside"),
            (root.to_str().unwrap(), "outside"),
            (&format!("{}/../etc", root.display()), ". or .."),
            (&format!("{}/./x", root.display()), ". or .."),
            (&format!("{}lets/x", root.display()), "outside"),
        ] {
            let e = rules.check("target_path", bad).unwrap_err();
            assert_eq!(e.kind(), Kind::InvalidArgument, "{bad}");
            assert!(e.message().contains("target_path"), "{e}");
            assert!(e.message().contains(why), "{bad}: {e}");
            let e = rules.locate("volume_path", bad).unwrap_err();
            assert_eq!(e.kind(), Kind::NotFound, "{bad}");
        }
    }

    #[test]
    fn a_symlink_that_leads_out_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("kubelet");
        let outside = dir.path().join("etc");
        std::fs::create_dir_all(root.join("pods")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("pods/escape")).unwrap();
        std::os::unix::fs::symlink(root.join("pods"), root.join("inside")).unwrap();
        let rules = PathRules::new(vec![root.clone()]);
        for p in [
            root.join("pods/escape"),
            root.join("pods/escape/not-yet/here"),
        ] {
            let e = rules.check("target_path", p.to_str().unwrap()).unwrap_err();
            assert!(e.message().contains("resolves to"), "{}: {e}", p.display());
        }
        // A link that stays inside is fine, and so is a path that does not exist yet.
        rules
            .check("target_path", root.join("inside/x").to_str().unwrap())
            .unwrap();
        rules
            .check("target_path", root.join("pods/new/mount").to_str().unwrap())
            .unwrap();
    }
}

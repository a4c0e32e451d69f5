//! The key stores against the contract every store keeps (`testkit::keystore::contract`): the
//! dir store on a temporary directory, the kube store against the in-process fake API server
//! (`testkit::kube_apiserver`), with the Secret's layout and the faults a real API server shows.
#![allow(clippy::unwrap_used, missing_docs)]

mod keystore {
    mod dir;
    mod kube;
}

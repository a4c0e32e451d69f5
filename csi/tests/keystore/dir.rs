//! The dir store keeps the contract (its own behaviour: `csi/src/keystore/tests.rs`).

use csi::keystore::DirStore;
use testkit::keystore::contract;

#[tokio::test]
async fn dir_store_keeps_the_contract() {
    let tmp = tempfile::tempdir().unwrap();
    let store = DirStore::open(tmp.path().join("keys")).unwrap();
    contract(&store).await;
}

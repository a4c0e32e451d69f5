#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The whole life of a volume through the driver's gRPC socket, on a real kernel: create, stage,
//! publish, write, unpublish, unstage, stage again, read back, expand (controller and node),
//! stats, delete — for ext4, xfs and raw block volumes, encrypted and unencrypted side by side.
//! Encrypted volumes use a real OpenBao (Transit) started in the test.

use std::collections::HashMap;

use testkit::plugin::*;

#[test]
fn vm_life_encrypted_ext4() {
    require_privileged!();
    let (bao, token) = bao();
    let mut rig = Rig::new();
    life(
        &mut rig,
        &LocalFiles,
        "pvc-enc-ext4",
        &transit_params(&bao.url),
        &token_secrets(&token),
        false,
        "ext4",
    );
}

#[test]
fn vm_life_encrypted_xfs() {
    require_privileged!();
    let (bao, token) = bao();
    let mut rig = Rig::new();
    life(
        &mut rig,
        &LocalFiles,
        "pvc-enc-xfs",
        &transit_params(&bao.url),
        &token_secrets(&token),
        false,
        "xfs",
    );
}

#[test]
fn vm_life_encrypted_block() {
    require_privileged!();
    let (bao, token) = bao();
    let mut rig = Rig::new();
    life(
        &mut rig,
        &LocalFiles,
        "pvc-enc-block",
        &transit_params(&bao.url),
        &token_secrets(&token),
        true,
        "",
    );
}

#[test]
fn vm_life_plain_side_by_side() {
    require_privileged!();
    let mut rig = Rig::new();
    life(
        &mut rig,
        &LocalFiles,
        "pvc-plain-ext4",
        &plain_params(),
        &HashMap::new(),
        false,
        "ext4",
    );
    life(
        &mut rig,
        &LocalFiles,
        "pvc-plain-xfs",
        &plain_params(),
        &HashMap::new(),
        false,
        "xfs",
    );
    life(
        &mut rig,
        &LocalFiles,
        "pvc-plain-block",
        &plain_params(),
        &HashMap::new(),
        true,
        "",
    );
}

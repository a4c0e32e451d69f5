//! Links librbd and librados (Debian 12: `librbd-dev`, `librados-dev`; they ship no pkg-config
//! files, so the libraries are named directly).

fn main() {
    println!("cargo:rustc-link-lib=dylib=rbd");
    println!("cargo:rustc-link-lib=dylib=rados");
    println!("cargo:rerun-if-changed=build.rs");
}

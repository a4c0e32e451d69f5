//! Compiles `proto/csi.proto` (our own transcription of the CSI specification's message
//! definitions) into Rust with protox (a pure-Rust protobuf compiler: no system `protoc`) and
//! tonic's code generator.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    let fds = protox::compile(["proto/csi.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

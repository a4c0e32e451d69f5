//! The CSI driver `onmetal-csi-driver`: gRPC services on top of `luks2`, `dm` and `kms`.
#![forbid(unsafe_code)]

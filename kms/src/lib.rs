//! Wrapping and unwrapping of data encryption keys with a user's KMS (OpenBao/Vault Transit, KMIP).
//! Never depends on `luks2`, `dm` or device-mapper.
#![forbid(unsafe_code)]

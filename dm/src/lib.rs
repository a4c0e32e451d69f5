//! Activation of LUKS2 volumes through device-mapper ioctls (dm-crypt), with the volume key in the
//! kernel keyring. Depends on `luks2`; never on `kms` or `csi`.

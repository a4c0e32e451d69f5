//! The device-mapper verbs of `luks2`: `open`, `close`, `resize`, `status` (the `dm` crate's part
//! of the command). Exit codes as for the other verbs; `close` of a mapping in use, `open` of an
//! existing name or of a device that is mapped or mounted already give 5 (busy), an unknown
//! mapping 4, a volume the cryptsetup activation policy refuses (null cipher, ECB) 1.

use std::path::PathBuf;

use clap::Args;
use dm::{
    ActivateOptions, ActivationPolicy, CryptFlags, CryptVolume, DeviceMapper, DmName, TableKey,
};
use luks2::Luks2Device;

use super::{CliError, open_device, read_key_file};

/// `open`: unlock a LUKS2 device and activate it as `/dev/mapper/NAME`.
#[derive(Args, Debug)]
pub(crate) struct OpenArgs {
    /// Key file with the passphrase (`-` for stdin).
    #[arg(long)]
    key_file: String,
    /// Create a read-only mapping.
    #[arg(long)]
    readonly: bool,
    /// Pass discards (TRIM) to the device.
    #[arg(long)]
    allow_discards: bool,
    /// Decrypt reads synchronously (dm-crypt no_read_workqueue).
    #[arg(long = "perf-no_read_workqueue")]
    perf_no_read_workqueue: bool,
    /// Encrypt writes synchronously (dm-crypt no_write_workqueue).
    #[arg(long = "perf-no_write_workqueue")]
    perf_no_write_workqueue: bool,
    /// The LUKS2 block device.
    device: PathBuf,
    /// The mapping name.
    name: String,
}

/// A verb that takes only a mapping name.
#[derive(Args, Debug)]
pub(crate) struct NameArgs {
    /// The mapping name (`/dev/mapper/NAME`).
    name: String,
}

fn name(s: &str) -> Result<DmName, CliError> {
    DmName::new(s).map_err(|e| CliError::Usage(e.to_string()))
}

fn mapper() -> Result<DeviceMapper, CliError> {
    DeviceMapper::new().map_err(CliError::Dm)
}

/// `luks2 open`.
pub(crate) fn open(a: OpenArgs) -> Result<(), CliError> {
    let name = name(&a.name)?;
    let pass = read_key_file(&a.key_file)?;
    // One handle for everything: the header is read from it and the mapping is made of the
    // device it has open (no second lookup of the path).
    let dev = Luks2Device::open(open_device(&a.device, false)?)?;
    let volume = CryptVolume::from_luks2(dev.header(), &ActivationPolicy::cryptsetup())
        .map_err(CliError::Dm)?;
    let (_, key) = dev.unlock(&pass, None)?;
    drop(pass);
    let options = ActivateOptions {
        read_only: a.readonly,
        flags: CryptFlags {
            allow_discards: a.allow_discards,
            no_read_workqueue: a.perf_no_read_workqueue,
            no_write_workqueue: a.perf_no_write_workqueue,
            ..Default::default()
        },
    };
    mapper()?
        .activate(&name, dev.device(), &volume, key.as_bytes(), &options)
        .map_err(CliError::Dm)?;
    Ok(())
}

/// `luks2 close`.
pub(crate) fn close(a: NameArgs) -> Result<(), CliError> {
    let name = name(&a.name)?;
    mapper()?.deactivate(&name).map_err(CliError::Dm)
}

/// `luks2 resize`: to the backing device's current size, with the key from the kernel keyring.
pub(crate) fn resize(a: NameArgs) -> Result<(), CliError> {
    let name = name(&a.name)?;
    mapper()?.resize(&name).map_err(CliError::Dm)?;
    Ok(())
}

/// `luks2 status`: cryptsetup's layout; exit 4 when the mapping is not active.
pub(crate) fn status(a: NameArgs) -> Result<(), CliError> {
    let name = name(&a.name)?;
    let path = dm::mapper_path(&name);
    let Some(st) = mapper()?.status(&name).map_err(CliError::Dm)? else {
        println!("{} is inactive.", path.display());
        return Err(CliError::Dm(dm::Error::NotFound(name.to_string())));
    };
    let in_use = if st.open_count > 0 {
        " and is in use"
    } else {
        ""
    };
    let luks2 = st
        .dm_uuid
        .as_deref()
        .is_some_and(|u| u.starts_with(dm::DM_UUID_PREFIX));
    println!("{} is active{in_use}.", path.display());
    println!("  type:    {}", if luks2 { "LUKS2" } else { "n/a" });
    println!("  cipher:  {}", st.crypt.cipher);
    match &st.crypt.key {
        TableKey::Keyring(k) => {
            println!("  keysize: {} bits", k.key_size * 8);
            println!("  key location: keyring");
        }
        TableKey::Inline => println!("  key location: dm-crypt"),
    }
    match &st.backing_path {
        Some(p) => println!("  device:  {}", p.display()),
        None => println!("  device:  {}", st.crypt.device),
    }
    println!("  sector size:  {}", st.crypt.sector_size.bytes());
    println!("  offset:  {} sectors", st.crypt.offset.0);
    println!("  size:    {} sectors", st.size.0);
    println!(
        "  mode:    {}",
        if st.read_only {
            "readonly"
        } else {
            "read/write"
        }
    );
    let f = st.crypt.flags;
    let flags: Vec<&str> = [
        (f.allow_discards, "discards"),
        (f.same_cpu_crypt, "same_cpu_crypt"),
        (f.submit_from_crypt_cpus, "submit_from_crypt_cpus"),
        (f.no_read_workqueue, "no_read_workqueue"),
        (f.no_write_workqueue, "no_write_workqueue"),
    ]
    .into_iter()
    .filter_map(|(on, n)| on.then_some(n))
    .collect();
    if !flags.is_empty() {
        println!("  flags:   {}", flags.join(" "));
    }
    Ok(())
}

/// The exit code of a `dm` error (cryptsetup's: 1 parameters, 2 permission/key, 4 no such
/// device, 5 busy or exists).
pub(crate) fn exit_code(e: &dm::Error) -> u8 {
    use dm::Error as E;
    match e {
        E::InvalidName { .. }
        | E::InvalidSegment { .. }
        | E::InvalidKeyLength(_)
        | E::Refused { .. } => 1,
        E::KeyUnavailable(_) => 2,
        E::NotFound(_) | E::NotBlockDevice(_) | E::NotCrypt { .. } | E::DeviceTooSmall { .. } => 4,
        E::AlreadyExists(_) | E::Busy(_) | E::DeviceInUse(_) => 5,
        E::DeviceChanged { .. } => 4,
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => 2,
        _ => 1,
    }
}

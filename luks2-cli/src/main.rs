//! `luks2`: manage LUKS2 volumes without cryptsetup, with cryptsetup's option names and exit
//! codes (0 ok, 1 wrong parameters, 2 no permission or bad passphrase, 3 out of memory,
//! 4 wrong device, 5 busy).
//!
//! Keys are only ever read from files (`--key-file F`, `-` for stdin), never from arguments.
//! The verbs here need no device-mapper; `open`/`close`/`resize`/`status` (`mapping.rs`) go
//! through the dm crate.

mod dump;
mod mapping;

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use luks2::crypto::HashAlgorithm;
use luks2::crypto::calibrate::{DEFAULT_ITER_TIME_MS, PbkdfOptions};
use luks2::crypto::kdf::KdfKind;
use luks2::format::{self, FormatOptions};
use luks2::keyslot::NewKeyslot;
use luks2::metadata::{KeyslotId, TokenId};
use luks2::{Luks2Device, Passphrase};
use zeroize::Zeroizing;

/// Largest key file accepted (cryptsetup's default `--keyfile-size` limit, 8 MiB).
const MAX_KEY_FILE: u64 = 8 * 1024 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "luks2",
    version,
    about = "LUKS2 volume management, compatible with cryptsetup 2.6"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The verbs. Keep one variant (and one match arm in [`run`]) per verb.
#[derive(Subcommand, Debug)]
enum Command {
    /// Format a device as LUKS2 (luksFormat).
    Format(FormatArgs),
    /// Print the header (luksDump).
    Dump(DumpArgs),
    /// Print the volume key as lowercase hex on one line.
    VolumeKey(UnlockArgs),
    /// Check a passphrase (open --test-passphrase).
    TestPassphrase(UnlockArgs),
    /// Add a keyslot (luksAddKey).
    AddKey(AddKeyArgs),
    /// Change a passphrase, keeping the keyslot number (luksChangeKey).
    ChangeKey(ChangeKeyArgs),
    /// Remove the keyslot a passphrase opens (luksRemoveKey).
    RemoveKey(RemoveKeyArgs),
    /// Destroy a keyslot by number (luksKillSlot).
    KillSlot(KillSlotArgs),
    /// Token management.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Save the header area to a file (luksHeaderBackup).
    HeaderBackup(BackupArgs),
    /// Restore the header area from a backup (luksHeaderRestore).
    HeaderRestore(BackupArgs),
    /// Rewrite a damaged header copy from the valid one.
    Repair(DeviceArgs),
    /// Destroy all keyslots and wipe the keyslots area (luksErase).
    Erase(DeviceArgs),
    /// Unlock a device and activate it as /dev/mapper/NAME (open).
    Open(mapping::OpenArgs),
    /// Remove a mapping and drop its key from the kernel keyring (close).
    Close(mapping::NameArgs),
    /// Grow a mapping to its device's current size, without the key (resize).
    Resize(mapping::NameArgs),
    /// Show a mapping (status).
    Status(mapping::NameArgs),
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Import a token from a JSON file (token import).
    Add(TokenAddArgs),
    /// Remove a token.
    Remove(TokenIdArgs),
    /// Print a token's JSON (token export).
    Export(TokenIdArgs),
}

#[derive(Args, Debug)]
struct DeviceArgs {
    /// The LUKS2 device or image file.
    device: PathBuf,
}

#[derive(Args, Debug, Clone)]
struct PbkdfArgs {
    /// PBKDF: pbkdf2, argon2i or argon2id.
    #[arg(long)]
    pbkdf: Option<String>,
    /// Hash for PBKDF2, the AF splitter and the digest.
    #[arg(long)]
    hash: Option<String>,
    /// Skip the benchmark and use this iteration (time) cost.
    #[arg(long)]
    pbkdf_force_iterations: Option<u32>,
    /// PBKDF target time in milliseconds.
    #[arg(long)]
    iter_time: Option<u32>,
    /// Argon2 memory cost ceiling in KiB.
    #[arg(long)]
    pbkdf_memory: Option<u32>,
    /// Argon2 parallel cost ceiling.
    #[arg(long)]
    pbkdf_parallel: Option<u32>,
}

impl PbkdfArgs {
    fn options(&self) -> Result<PbkdfOptions, CliError> {
        let hash = HashAlgorithm::from_name(self.hash.as_deref().unwrap_or("sha256"))?;
        let kind = KdfKind::from_name(self.pbkdf.as_deref().unwrap_or("argon2id"), hash)?;
        Ok(PbkdfOptions {
            kind,
            hash,
            iter_time_ms: self.iter_time.unwrap_or(DEFAULT_ITER_TIME_MS),
            max_memory_kib: self.pbkdf_memory,
            parallel: self.pbkdf_parallel,
            force_iterations: self.pbkdf_force_iterations,
        })
    }
}

#[derive(Args, Debug)]
struct FormatArgs {
    /// Key file (`-` for stdin).
    #[arg(long)]
    key_file: String,
    /// Cipher specification.
    #[arg(long, default_value = format::DEFAULT_CIPHER)]
    cipher: String,
    /// Volume key size in bits.
    #[arg(long, default_value_t = 512)]
    key_size: u32,
    /// Encryption sector size (512 or 4096); chosen from the device if absent.
    #[arg(long)]
    sector_size: Option<u32>,
    #[command(flatten)]
    pbkdf: PbkdfArgs,
    /// Label.
    #[arg(long)]
    label: Option<String>,
    /// Subsystem.
    #[arg(long)]
    subsystem: Option<String>,
    /// UUID.
    #[arg(long)]
    uuid: Option<String>,
    /// Size of one header copy in bytes (16384 .. 4194304).
    #[arg(long)]
    luks2_metadata_size: Option<u64>,
    /// Keyslots area size in bytes.
    #[arg(long)]
    luks2_keyslots_size: Option<u64>,
    /// Data offset in 512-byte sectors.
    #[arg(long)]
    offset: Option<u64>,
    /// Keyslot for the passphrase.
    #[arg(long)]
    key_slot: Option<u32>,
    /// The device.
    device: PathBuf,
}

#[derive(Args, Debug)]
struct DumpArgs {
    /// Print the raw JSON metadata instead.
    #[arg(long)]
    json: bool,
    /// The device.
    device: PathBuf,
}

#[derive(Args, Debug)]
struct UnlockArgs {
    /// Key file (`-` for stdin).
    #[arg(long)]
    key_file: String,
    /// Only try this keyslot.
    #[arg(long)]
    key_slot: Option<u32>,
    /// The device.
    device: PathBuf,
}

#[derive(Args, Debug)]
struct AddKeyArgs {
    /// Key file with an existing passphrase (`-` for stdin).
    #[arg(long)]
    key_file: String,
    /// Key file with the new passphrase.
    #[arg(long)]
    new_key_file: String,
    /// Keyslot for the new passphrase.
    #[arg(long)]
    key_slot: Option<u32>,
    #[command(flatten)]
    pbkdf: PbkdfArgs,
    /// The device.
    device: PathBuf,
}

#[derive(Args, Debug)]
struct ChangeKeyArgs {
    /// Key file with the current passphrase (`-` for stdin).
    #[arg(long)]
    key_file: String,
    /// Key file with the new passphrase.
    #[arg(long)]
    new_key_file: String,
    /// The keyslot to change (default: the one the passphrase opens).
    #[arg(long)]
    key_slot: Option<u32>,
    #[command(flatten)]
    pbkdf: PbkdfArgs,
    /// The device.
    device: PathBuf,
}

#[derive(Args, Debug)]
struct RemoveKeyArgs {
    /// Key file with the passphrase to remove (`-` for stdin).
    #[arg(long)]
    key_file: String,
    /// The device.
    device: PathBuf,
}

#[derive(Args, Debug)]
struct KillSlotArgs {
    /// Keyslot number.
    slot: u32,
    /// The device.
    device: PathBuf,
}

#[derive(Args, Debug)]
struct TokenAddArgs {
    /// JSON file with the token (`-` for stdin).
    #[arg(long)]
    json_file: String,
    /// Also assign the token to this keyslot.
    #[arg(long)]
    key_slot: Option<u32>,
    /// Token number (default: the lowest free one).
    #[arg(long)]
    token_id: Option<u32>,
    /// The device.
    device: PathBuf,
}

#[derive(Args, Debug)]
struct TokenIdArgs {
    /// Token number.
    id: u32,
    /// The device.
    device: PathBuf,
}

#[derive(Args, Debug)]
struct BackupArgs {
    /// The backup file.
    #[arg(long)]
    header_backup_file: PathBuf,
    /// The device.
    device: PathBuf,
}

/// A failure with its exit code, printed as one line.
#[derive(Debug)]
enum CliError {
    /// Wrong parameters (exit 1).
    Usage(String),
    /// The device cannot be opened (exit 4).
    Device(PathBuf, std::io::Error),
    /// From the library: exit code by kind.
    Luks(luks2::Error),
    /// From device-mapper: exit code by variant.
    Dm(dm::Error),
}

impl From<luks2::Error> for CliError {
    fn from(e: luks2::Error) -> Self {
        CliError::Luks(e)
    }
}

impl CliError {
    fn exit_code(&self) -> u8 {
        let code = match self {
            CliError::Usage(_) => 1,
            CliError::Device(_, e) if e.kind() == std::io::ErrorKind::PermissionDenied => 2,
            CliError::Device(..) => 4,
            CliError::Luks(e) => e.kind().exit_code(),
            CliError::Dm(e) => mapping::exit_code(e).into(),
        };
        u8::try_from(code).unwrap_or(1)
    }

    fn message(&self) -> String {
        match self {
            CliError::Usage(m) => m.clone(),
            CliError::Device(p, e) => format!(
                "device {} does not exist or access denied: {e}",
                p.display()
            ),
            CliError::Dm(e) => {
                let mut m = e.to_string();
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    m.push_str(": ");
                    m.push_str(&s.to_string());
                    src = s.source();
                }
                m
            }
            CliError::Luks(e) => {
                let mut m = e.to_string();
                let mut src = std::error::Error::source(e);
                while let Some(s) = src {
                    m.push_str(": ");
                    m.push_str(&s.to_string());
                    src = s.source();
                }
                m
            }
        }
    }
}

fn open_device(path: &Path, write: bool) -> Result<File, CliError> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|e| CliError::Device(path.to_owned(), e))
}

/// Reads a whole key file (`-`: stdin) into zeroizing memory.
fn read_key_file(name: &str) -> Result<Passphrase, CliError> {
    let res = if name == "-" {
        // A duplicate of fd 0 read directly: std's stdin would keep the key in its own buffer.
        use std::os::fd::AsFd;
        std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .and_then(|fd| read_secret(File::from(fd), MAX_KEY_FILE))
    } else {
        File::open(name).and_then(|f| read_secret(f, MAX_KEY_FILE))
    };
    let buf = res.map_err(|e| CliError::Usage(format!("failed to read key file {name}: {e}")))?;
    if buf.len() as u64 > MAX_KEY_FILE {
        return Err(CliError::Usage(format!(
            "key file {name} is larger than {MAX_KEY_FILE} bytes"
        )));
    }
    Ok(Passphrase::from_zeroizing(buf))
}

/// Reads up to `max + 1` bytes of a secret from `r` (one more than allowed, so that the caller
/// sees a file that is too large) into a single zeroizing buffer sized up front: it never grows,
/// so no copy of the secret is left in a freed reallocation. The result is copied into an
/// exact-size zeroizing buffer and the large one is wiped.
fn read_secret(mut r: impl Read, max: u64) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let cap = usize::try_from(max)
        .map_err(std::io::Error::other)?
        .saturating_add(1);
    let mut buf = Zeroizing::new(vec![0u8; cap]);
    let mut len = 0;
    while let Some(dst) = buf.get_mut(len..).filter(|d| !d.is_empty()) {
        match r.read(dst) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Zeroizing::new(buf.get(..len).unwrap_or_default().to_vec()))
}

fn read_text_file(name: &str) -> Result<String, CliError> {
    let mut s = String::new();
    let res = if name == "-" {
        std::io::stdin()
            .lock()
            .take(4 * 1024 * 1024)
            .read_to_string(&mut s)
    } else {
        File::open(name).and_then(|f| f.take(4 * 1024 * 1024).read_to_string(&mut s))
    };
    res.map_err(|e| CliError::Usage(format!("failed to read {name}: {e}")))?;
    Ok(s)
}

fn slot(n: Option<u32>) -> Option<KeyslotId> {
    n.map(KeyslotId::new)
}

fn run(cmd: Command) -> Result<(), CliError> {
    match cmd {
        Command::Format(a) => {
            let pass = read_key_file(&a.key_file)?;
            if a.key_size == 0 || a.key_size % 8 != 0 {
                return Err(CliError::Usage(format!("invalid key size {}", a.key_size)));
            }
            let opts = FormatOptions {
                cipher: a.cipher,
                key_size: usize::try_from(a.key_size / 8)
                    .map_err(|_| CliError::Usage("key size".into()))?,
                sector_size: a.sector_size,
                optimal_sector_size: format::optimal_sector_size(&a.device),
                pbkdf: a.pbkdf.options()?,
                label: a.label.unwrap_or_default(),
                subsystem: a.subsystem.unwrap_or_default(),
                uuid: a.uuid,
                metadata_size: a.luks2_metadata_size,
                keyslots_size: a.luks2_keyslots_size,
                data_offset_sectors: a.offset,
                keyslot: slot(a.key_slot),
                force: false,
            };
            let dev = open_device(&a.device, true)?;
            Luks2Device::format(dev, &pass, &opts)?;
        }
        Command::Dump(a) => {
            let dev = Luks2Device::open(open_device(&a.device, false)?)?;
            if a.json {
                println!("{}", dev.header().metadata.to_json());
            } else {
                print!("{}", dump::render(dev.header()));
            }
        }
        Command::VolumeKey(a) => {
            let pass = read_key_file(&a.key_file)?;
            let dev = Luks2Device::open(open_device(&a.device, false)?)?;
            let (_, vk) = dev.unlock(&pass, slot(a.key_slot))?;
            let hex = Zeroizing::new(hex_lower(vk.as_bytes()));
            println!("{}", hex.as_str());
        }
        Command::TestPassphrase(a) => {
            let pass = read_key_file(&a.key_file)?;
            let dev = Luks2Device::open(open_device(&a.device, false)?)?;
            dev.unlock(&pass, slot(a.key_slot))?;
        }
        Command::AddKey(a) => {
            let pass = read_key_file(&a.key_file)?;
            let new = read_key_file(&a.new_key_file)?;
            let mut dev = Luks2Device::open(open_device(&a.device, true)?)?;
            let params = NewKeyslot {
                id: slot(a.key_slot),
                pbkdf: a.pbkdf.options()?,
                priority: None,
            };
            dev.add_key(&pass, &new, &params)?;
        }
        Command::ChangeKey(a) => {
            let pass = read_key_file(&a.key_file)?;
            let new = read_key_file(&a.new_key_file)?;
            let mut dev = Luks2Device::open(open_device(&a.device, true)?)?;
            dev.change_key(&pass, &new, slot(a.key_slot), &a.pbkdf.options()?)?;
        }
        Command::RemoveKey(a) => {
            let pass = read_key_file(&a.key_file)?;
            let mut dev = Luks2Device::open(open_device(&a.device, true)?)?;
            dev.remove_key(&pass)?;
        }
        Command::KillSlot(a) => {
            let mut dev = Luks2Device::open(open_device(&a.device, true)?)?;
            dev.kill_slot(KeyslotId::new(a.slot))?;
        }
        Command::Token(TokenCommand::Add(a)) => {
            let json = read_text_file(&a.json_file)?;
            let mut dev = Luks2Device::open(open_device(&a.device, true)?)?;
            let id = dev.add_token(&json, a.token_id.map(TokenId::new), slot(a.key_slot))?;
            println!("{id}");
        }
        Command::Token(TokenCommand::Remove(a)) => {
            let mut dev = Luks2Device::open(open_device(&a.device, true)?)?;
            dev.remove_token(TokenId::new(a.id))?;
        }
        Command::Token(TokenCommand::Export(a)) => {
            let dev = Luks2Device::open(open_device(&a.device, false)?)?;
            println!("{}", dev.export_token(TokenId::new(a.id))?);
        }
        Command::HeaderBackup(a) => {
            let dev = Luks2Device::open(open_device(&a.device, false)?)?;
            dev.header_backup(&a.header_backup_file)?;
        }
        Command::HeaderRestore(a) => {
            let mut dev = open_device(&a.device, true)?;
            luks2::device::header_restore(&mut dev, &a.header_backup_file)?;
        }
        Command::Repair(a) => {
            let mut dev = open_device(&a.device, true)?;
            luks2::device::repair(&mut dev)?;
        }
        Command::Erase(a) => {
            let mut dev = Luks2Device::open(open_device(&a.device, true)?)?;
            dev.erase()?;
        }
        Command::Open(a) => mapping::open(a)?,
        Command::Close(a) => mapping::close(a)?,
        Command::Resize(a) => mapping::resize(a)?,
        Command::Status(a) => mapping::status(a)?,
    }
    Ok(())
}

fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind as K;
            if matches!(
                e.kind(),
                K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return if e.kind() == K::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                };
            }
            let text = e.render().to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("luks2: {}", line.trim_start_matches("error: "));
            return ExitCode::from(1);
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("luks2: {}", e.message());
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A reader that hands out its data a few bytes at a time and records where each `read`
    /// was asked to write.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        targets: Vec<(usize, usize)>,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let rest = self.data.get(self.pos..).unwrap_or_default();
            let n = rest.len().min(buf.len()).min(7);
            buf[..n].copy_from_slice(&rest[..n]);
            self.pos += n;
            self.targets.push((buf.as_ptr() as usize, n));
            Ok(n)
        }
    }

    /// Every read lands in one buffer, one after the other: the key never moves to a grown
    /// allocation (which would leave the old, unwiped one behind).
    #[test]
    fn key_file_is_read_into_one_buffer_that_never_grows() {
        let data: Vec<u8> = (0..100_000u32).map(|i| i.to_le_bytes()[0] ^ 0x5a).collect();
        let mut r = Trickle {
            data: data.clone(),
            pos: 0,
            targets: Vec::new(),
        };
        let got = read_secret(&mut r, MAX_KEY_FILE).unwrap();
        assert_eq!(&got[..], &data[..]);
        let mut expected = r.targets[0].0;
        for (k, &(at, n)) in r.targets.iter().enumerate() {
            assert_eq!(at, expected, "read {k} went to another buffer");
            expected += n;
        }
    }

    #[test]
    fn key_file_limit() {
        let exact = read_secret(&[1u8; 64][..], 64).unwrap();
        assert_eq!(exact.len(), 64);
        // One byte more than allowed is read, so the caller can refuse the file.
        let over = read_secret(&[1u8; 100][..], 64).unwrap();
        assert_eq!(over.len(), 65);
        assert!(read_secret(&[][..], 64).unwrap().is_empty());
    }
}

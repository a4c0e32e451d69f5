//! Compares our `luks2` command with `cryptsetup` on the same machine, in the same run.
//!
//! Each case runs both tools alternately (ours first on even rounds, cryptsetup first on odd
//! ones), several rounds, and reports the median wall time and the median peak resident memory
//! (`/usr/bin/time`'s maximum RSS) of each, with the ratio ours / cryptsetup (lower is better).
//!
//! Cases:
//! - unlock (`luks2 test-passphrase` against `cryptsetup open --test-passphrase`) of one header
//!   made by cryptsetup: PBKDF2-SHA256 with 1,000,000 iterations; Argon2id 1 GiB, t=4, 4 lanes;
//!   Argon2id 1 GiB, t=4, 1 lane;
//! - format (`luks2 format` against `cryptsetup luksFormat`): PBKDF2 with 1000 iterations;
//!   Argon2id with fixed costs (256 MiB, t=4, 2 lanes).
//!
//! cryptsetup caps the Argon2 lanes at the number of online CPUs when it creates a keyslot. To
//! make the 4-lane header on a machine with fewer CPUs, its `luksFormat` runs in a private mount
//! namespace where `/sys/devices/system/cpu/online` reads `0-3` (needs root and `unshare`); the
//! timed runs all see the real CPUs.
//!
//! Usage: `compare [--quick] [--runs N] [--only SUBSTRING] [--luks2 PATH] [--cryptsetup PATH]
//! [--dir DIR]`. `scripts/bench-compare` builds everything and runs it.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

const PASSPHRASE: &str = "correct horse battery staple";
const IMAGE_SIZE: u64 = 17 * 1024 * 1024;
const GNU_TIME: &str = "/usr/bin/time";

/// One measured run: wall time and peak RSS in KiB.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: Duration,
    max_rss_kib: u64,
}

/// Medians of one tool in one case.
#[derive(Debug, Clone, Copy)]
struct Summary {
    wall: Duration,
    max_rss_kib: u64,
}

#[derive(Debug)]
struct Options {
    runs: usize,
    only: Vec<String>,
    luks2: PathBuf,
    cryptsetup: PathBuf,
    dir: Option<PathBuf>,
}

fn usage() -> &'static str {
    "usage: compare [--quick] [--runs N] [--only SUBSTRING]... [--luks2 PATH] [--cryptsetup PATH] [--dir DIR]"
}

fn parse_args() -> Result<Options> {
    let exe = std::env::current_exe().context("locating the compare binary")?;
    let mut opts = Options {
        runs: 5,
        only: Vec::new(),
        luks2: exe.with_file_name("luks2"),
        cryptsetup: PathBuf::from("cryptsetup"),
        dir: None,
    };
    let mut args = std::env::args_os().skip(1);
    let value = |args: &mut dyn Iterator<Item = OsString>, name: &str| {
        args.next()
            .with_context(|| format!("{name} needs a value\n{}", usage()))
    };
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--quick") => opts.runs = 3,
            Some("--runs") => {
                let v = value(&mut args, "--runs")?;
                opts.runs = v
                    .to_str()
                    .and_then(|s| s.parse().ok())
                    .filter(|&n: &usize| n >= 1)
                    .context("--runs takes a positive number")?;
            }
            Some("--only") => opts.only.push(
                value(&mut args, "--only")?
                    .into_string()
                    .map_err(|_| anyhow::anyhow!("--only takes text"))?,
            ),
            Some("--luks2") => opts.luks2 = value(&mut args, "--luks2")?.into(),
            Some("--cryptsetup") => opts.cryptsetup = value(&mut args, "--cryptsetup")?.into(),
            Some("--dir") => opts.dir = Some(value(&mut args, "--dir")?.into()),
            Some("-h" | "--help") => {
                println!("{}", usage());
                std::process::exit(0);
            }
            _ => bail!("unknown argument {arg:?}\n{}", usage()),
        }
    }
    Ok(opts)
}

/// Runs `program args` under GNU time; fails unless it exits 0.
fn measure(program: &Path, args: &[&str], dir: &Path) -> Result<Sample> {
    let rss_file = dir.join("time.out");
    let start = Instant::now();
    let out = Command::new(GNU_TIME)
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {GNU_TIME} {}", program.display()))?;
    let wall = start.elapsed();
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = std::fs::read_to_string(&rss_file).context("reading GNU time's output")?;
    let max_rss_kib = text
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .with_context(|| format!("no RSS in GNU time's output {text:?}"))?;
    Ok(Sample { wall, max_rss_kib })
}

fn median_by<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort_unstable();
    // Callers never pass an empty vector (runs >= 1); the middle element exists.
    v[v.len() / 2]
}

fn summarize(samples: &[Sample]) -> Summary {
    Summary {
        wall: median_by(samples.iter().map(|s| s.wall).collect()),
        max_rss_kib: median_by(samples.iter().map(|s| s.max_rss_kib).collect()),
    }
}

/// A fresh sparse image file of [`IMAGE_SIZE`] bytes.
fn fresh_image(path: &Path) -> Result<()> {
    let _ = std::fs::remove_file(path);
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.set_len(IMAGE_SIZE).context("sizing the image")?;
    Ok(())
}

fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `cryptsetup luksFormat` for the unlock cases; with more lanes than online CPUs, inside a
/// mount namespace that shows `lanes` CPUs online (see the module doc).
fn cryptsetup_format(
    opts: &Options,
    img: &Path,
    key: &Path,
    extra: &[&str],
    lanes: usize,
) -> Result<()> {
    fresh_image(img)?;
    let mut args: Vec<String> = [
        "luksFormat",
        "--type",
        "luks2",
        "--batch-mode",
        "--key-file",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.push(key.display().to_string());
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args.push(img.display().to_string());
    let out = if lanes > online_cpus() {
        let fake = img.with_extension("cpus-online");
        std::fs::write(&fake, format!("0-{}\n", lanes - 1)).context("writing the fake CPU list")?;
        let mut script = format!(
            "mount --bind '{}' /sys/devices/system/cpu/online && exec '{}'",
            fake.display(),
            opts.cryptsetup.display()
        );
        for a in &args {
            let _ = write!(script, " '{a}'");
        }
        Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .output()
            .context("running cryptsetup under unshare (needs root and util-linux)")?
    } else {
        Command::new(&opts.cryptsetup)
            .args(&args)
            .output()
            .context("running cryptsetup")?
    };
    ensure!(
        out.status.success(),
        "cryptsetup luksFormat {} failed: {}",
        extra.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// What `cryptsetup luksDump` says about keyslot 0's KDF, for the record.
fn keyslot_kdf(opts: &Options, img: &Path) -> Result<String> {
    let out = Command::new(&opts.cryptsetup)
        .arg("luksDump")
        .arg(img)
        .output()
        .context("running cryptsetup luksDump")?;
    ensure!(out.status.success(), "cryptsetup luksDump failed");
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            ["PBKDF:", "Iterations:", "Time cost:", "Memory:", "Threads:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    Ok(fields.join(", "))
}

/// A row of the result table.
struct Row {
    name: String,
    detail: String,
    ours: Summary,
    theirs: Summary,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs `ours` and `theirs` alternately `runs` times; `before` prepares each run (e.g. a fresh
/// image for a format).
fn alternate(
    opts: &Options,
    dir: &Path,
    ours: (&Path, &[&str]),
    theirs: (&Path, &[&str]),
    before: &dyn Fn() -> Result<()>,
) -> Result<(Summary, Summary)> {
    let mut o = Vec::new();
    let mut t = Vec::new();
    for round in 0..opts.runs {
        if round % 2 == 0 {
            before()?;
            o.push(measure(ours.0, ours.1, dir)?);
            before()?;
            t.push(measure(theirs.0, theirs.1, dir)?);
        } else {
            before()?;
            t.push(measure(theirs.0, theirs.1, dir)?);
            before()?;
            o.push(measure(ours.0, ours.1, dir)?);
        }
        eprint!(".");
    }
    eprintln!();
    Ok((summarize(&o), summarize(&t)))
}

fn selected(opts: &Options, name: &str) -> bool {
    opts.only.is_empty() || opts.only.iter().any(|s| name.contains(s.as_str()))
}

fn run(opts: &Options, dir: &Path) -> Result<Vec<Row>> {
    let key = dir.join("passphrase");
    std::fs::write(&key, PASSPHRASE).context("writing the key file")?;
    let key_s = key.display().to_string();
    let img = dir.join("image");
    let img_s = img.display().to_string();
    let mut rows = Vec::new();

    let unlock_cases: [(&str, &[&str], usize); 3] = [
        (
            "unlock pbkdf2-sha256 1,000,000 iterations",
            &[
                "--pbkdf",
                "pbkdf2",
                "--hash",
                "sha256",
                "--pbkdf-force-iterations",
                "1000000",
            ],
            1,
        ),
        (
            "unlock argon2id 1 GiB t=4 4 lanes",
            &[
                "--pbkdf",
                "argon2id",
                "--pbkdf-memory",
                "1048576",
                "--pbkdf-parallel",
                "4",
                "--pbkdf-force-iterations",
                "4",
            ],
            4,
        ),
        (
            "unlock argon2id 1 GiB t=4 1 lane",
            &[
                "--pbkdf",
                "argon2id",
                "--pbkdf-memory",
                "1048576",
                "--pbkdf-parallel",
                "1",
                "--pbkdf-force-iterations",
                "4",
            ],
            1,
        ),
    ];
    for (name, extra, lanes) in unlock_cases {
        if !selected(opts, name) {
            continue;
        }
        eprint!("{name}: making the header with cryptsetup ");
        cryptsetup_format(opts, &img, &key, extra, lanes)?;
        let detail = keyslot_kdf(opts, &img)?;
        let ours_args = ["test-passphrase", "--key-file", &key_s, &img_s];
        let theirs_args = ["open", "--test-passphrase", "--key-file", &key_s, &img_s];
        let (ours, theirs) = alternate(
            opts,
            dir,
            (&opts.luks2, &ours_args),
            (&opts.cryptsetup, &theirs_args),
            &|| Ok(()),
        )?;
        rows.push(Row {
            name: name.to_owned(),
            detail,
            ours,
            theirs,
        });
    }

    let format_cases: [(&str, &[&str]); 2] = [
        (
            "format pbkdf2-sha256 1000 iterations",
            &[
                "--pbkdf",
                "pbkdf2",
                "--hash",
                "sha256",
                "--pbkdf-force-iterations",
                "1000",
            ],
        ),
        (
            "format argon2id 256 MiB t=4 2 lanes",
            &[
                "--pbkdf",
                "argon2id",
                "--pbkdf-memory",
                "262144",
                "--pbkdf-parallel",
                "2",
                "--pbkdf-force-iterations",
                "4",
            ],
        ),
    ];
    for (name, extra) in format_cases {
        if !selected(opts, name) {
            continue;
        }
        eprint!("{name} ");
        let mut ours_args = vec!["format", "--key-file", &key_s];
        ours_args.extend_from_slice(extra);
        ours_args.push(&img_s);
        let mut theirs_args = vec![
            "luksFormat",
            "--type",
            "luks2",
            "--batch-mode",
            "--key-file",
            &key_s,
        ];
        theirs_args.extend_from_slice(extra);
        theirs_args.push(&img_s);
        let (ours, theirs) = alternate(
            opts,
            dir,
            (&opts.luks2, &ours_args),
            (&opts.cryptsetup, &theirs_args),
            &|| fresh_image(&img),
        )?;
        // The KDF of the last image formatted (by either tool: the settings are the same).
        let detail = keyslot_kdf(opts, &img)?;
        rows.push(Row {
            name: name.to_owned(),
            detail,
            ours,
            theirs,
        });
    }
    Ok(rows)
}

fn tool_version(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

fn print_table(opts: &Options, rows: &[Row]) {
    println!(
        "machine: {} online CPUs, {}; cryptsetup: {}; luks2: {}; {} alternated runs per tool, medians",
        online_cpus(),
        cpu_model(),
        tool_version(&opts.cryptsetup),
        tool_version(&opts.luks2),
        opts.runs
    );
    println!();
    println!(
        "| case | ours (s) | cryptsetup (s) | time ratio | ours peak RSS (MiB) | cryptsetup peak RSS (MiB) | memory ratio |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let (o, t) = (r.ours.wall.as_secs_f64(), r.theirs.wall.as_secs_f64());
        let (om, tm) = (mib(r.ours.max_rss_kib), mib(r.theirs.max_rss_kib));
        println!(
            "| {} | {o:.3} | {t:.3} | {:.2} | {om:.1} | {tm:.1} | {:.2} |",
            r.name,
            ratio(o, t),
            ratio(om, tm)
        );
    }
    println!();
    for r in rows {
        println!(
            "- {}: keyslot 0 as cryptsetup luksDump shows it: {}",
            r.name, r.detail
        );
    }
}

fn main() -> Result<()> {
    let opts = parse_args()?;
    ensure!(
        Path::new(GNU_TIME).exists(),
        "{GNU_TIME} (GNU time, Debian package `time`) is needed to measure peak memory"
    );
    ensure!(
        opts.luks2.exists(),
        "our luks2 command is not at {} (build it with `cargo build --release -p luks2-cli --bin luks2`, or pass --luks2)",
        opts.luks2.display()
    );
    let dir = opts.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("luks2-compare-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = run(&opts, &dir);
    if opts.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let rows = result?;
    print_table(&opts, &rows);
    Ok(())
}

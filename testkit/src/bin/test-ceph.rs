//! `test-ceph`: the tests' throwaway single-node Ceph cluster ([`testkit::ceph`]: one monitor
//! and one OSD on memstore, on 127.0.0.1, pool `rbd`, user `client.csi`) for scripts: the quick
//! start's `--backend rbd` and the stage benchmark. Prints `CEPH_CONF=`, `CEPH_ADMIN_CONF=`,
//! `CEPH_ID=` and `CEPH_POOL=` lines once the pool is ready, then runs until its standard input
//! closes; the cluster and its directory go with it (also when the script is killed: the
//! harness's reaper sees this process end).
//!
//!     test-ceph [--mgr]      # --mgr: with the manager (pool statistics, GetCapacity)

use std::io::{Read as _, Write as _};

use testkit::ceph::{CLIENT_ID, CephCluster, POOL};

fn main() {
    let mgr = std::env::args().skip(1).any(|a| a == "--mgr");
    let cluster = match CephCluster::start_with(mgr) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("test-ceph: {e}");
            std::process::exit(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "CEPH_CONF={}\nCEPH_ADMIN_CONF={}\nCEPH_ID={CLIENT_ID}\nCEPH_POOL={POOL}",
        cluster.conf().display(),
        cluster.admin_conf().display()
    );
    let _ = out.flush();
    drop(out);
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(cluster);
}

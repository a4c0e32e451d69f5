//! [`StageRig`]: a driver made of the fakes, a dir key store, and the requests of a NodeStage.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use csi::Result;
use csi::backend::Backend;
use csi::capability::Access;
use csi::driver::{Driver, Mode, NoHooks, StageHooks, StagePoint};
use csi::host::fs::FsType;
use csi::keystore::{DirStore, KeyStore, Stored};
use csi::params::{Encryption, VolumeParams};
use csi::volume_id::VolumeId;

use super::{FailAt, Failure, FakeKms, FakeMapper, FileBackend, RecordingMounter};

/// The size of a rig volume: the 16 MiB LUKS2 header area and room for data.
pub(crate) const VOLUME_SIZE: u64 = 64 << 20;

/// The fakes, the store and a driver over them (in a temporary directory).
#[derive(Debug)]
pub struct StageRig {
    /// Volumes as sparse files.
    pub backend: Arc<FileBackend>,
    /// Device-mapper.
    pub mapper: Arc<FakeMapper>,
    /// mkfs and mounts.
    pub mounter: Arc<RecordingMounter>,
    /// The KMS.
    pub kms: Arc<FakeKms>,
    /// The real dir key store.
    pub store: Arc<DirStore>,
    /// The driver over them (no hooks).
    pub driver: Arc<Driver>,
    dir: tempfile::TempDir,
}

impl Default for StageRig {
    fn default() -> Self {
        Self::new()
    }
}

impl StageRig {
    /// A rig in a new temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FileBackend::new(dir.path().join("volumes")));
        let mapper = Arc::new(FakeMapper::new(dir.path().join("mapper")));
        let mounter = Arc::new(RecordingMounter::new());
        let kms = Arc::new(FakeKms::new());
        let store = Arc::new(DirStore::open(dir.path().join("keys")).unwrap());
        let driver = build(
            dir.path(),
            &backend,
            &store,
            &mounter,
            &mapper,
            &kms,
            Arc::new(NoHooks),
        );
        StageRig {
            backend,
            mapper,
            mounter,
            kms,
            store,
            driver,
            dir,
        }
    }

    /// A driver over the rig's parts with `hooks`.
    pub fn driver_with(&self, hooks: Arc<dyn StageHooks>) -> Arc<Driver> {
        build(
            self.dir.path(),
            &self.backend,
            &self.store,
            &self.mounter,
            &self.mapper,
            &self.kms,
            hooks,
        )
    }

    /// Creates volume `name` ([`VOLUME_SIZE`], blank).
    pub async fn create(&self, name: &str) -> VolumeId {
        let id = VolumeId::parse(name).unwrap();
        self.backend
            .create(&id, VOLUME_SIZE, &Default::default())
            .await
            .unwrap();
        id
    }

    /// The staging path of `id`.
    pub fn staging(&self, id: &VolumeId) -> PathBuf {
        self.dir.path().join("staging").join(id.as_str())
    }

    /// The volume context of an encrypted volume (Transit).
    pub fn encryption() -> Encryption {
        let context = HashMap::from([
            ("encryptionEnabled".to_owned(), "true".to_owned()),
            ("encryptionKMSType".to_owned(), "transit".to_owned()),
            (
                "encryptionKMSEndpoint".to_owned(),
                "https://127.0.0.1:8200".to_owned(),
            ),
            ("encryptionKMSKeyID".to_owned(), "pvc-kek".to_owned()),
        ]);
        VolumeParams::parse(&context).unwrap().encryption.unwrap()
    }

    /// The node-stage secrets with a Transit token.
    pub fn secrets() -> HashMap<String, String> {
        HashMap::from([("token".to_owned(), "s.fake-token".to_owned())])
    }

    /// A filesystem access of `fs`.
    pub fn mount(fs: FsType) -> Access {
        Access::Mount {
            fs,
            flags: Vec::new(),
        }
    }

    /// NodeStage of encrypted volume `id` (ext4) with the rig's driver.
    pub async fn stage(&self, id: &VolumeId) -> Result<()> {
        self.stage_as(
            &self.driver,
            id,
            &Self::mount(FsType::Ext4),
            &Self::secrets(),
        )
        .await
    }

    /// NodeStage of encrypted volume `id` with `driver`, `access` and `secrets`.
    pub async fn stage_as(
        &self,
        driver: &Driver,
        id: &VolumeId,
        access: &Access,
        secrets: &HashMap<String, String>,
    ) -> Result<()> {
        let enc = Self::encryption();
        csi::node::stage(driver, id, &self.staging(id), access, Some(&enc), secrets).await
    }

    /// NodeStage of encrypted volume `id` that crashes at `point`: returns whether it died
    /// there (a panic through the stage: nothing is rolled back).
    pub async fn stage_crashing_at(&self, id: &VolumeId, point: StagePoint) -> bool {
        let driver = self.driver_with(Arc::new(FailAt {
            point,
            how: Failure::Crash,
        }));
        let (id, staging) = (id.clone(), self.staging(id));
        let res = tokio::spawn(async move {
            let enc = Self::encryption();
            let access = Self::mount(FsType::Ext4);
            csi::node::stage(
                &driver,
                &id,
                &staging,
                &access,
                Some(&enc),
                &Self::secrets(),
            )
            .await
        })
        .await;
        matches!(res, Err(e) if e.is_panic())
    }

    /// NodeUnstage of `id`.
    pub async fn unstage(&self, id: &VolumeId) -> Result<()> {
        csi::node::unstage(&self.driver, id, &self.staging(id)).await
    }

    /// The stored record of `id`.
    pub async fn record(&self, id: &VolumeId) -> Option<Stored> {
        self.store.get(id).await.unwrap()
    }

    /// The image file of `id`.
    pub fn image(&self, id: &VolumeId) -> PathBuf {
        self.backend.image(id)
    }
}

/// The rig's directory stands for kubelet's: the node requests' paths lie in it.
fn build(
    dir: &std::path::Path,
    backend: &Arc<FileBackend>,
    store: &Arc<DirStore>,
    mounter: &Arc<RecordingMounter>,
    mapper: &Arc<FakeMapper>,
    kms: &Arc<FakeKms>,
    hooks: Arc<dyn StageHooks>,
) -> Arc<Driver> {
    Arc::new(
        Driver::new(
            "csi.onmetal.de",
            "node-1",
            Mode::All,
            Arc::clone(backend) as Arc<dyn Backend>,
            Arc::clone(store) as Arc<dyn KeyStore>,
            Arc::clone(mounter) as _,
        )
        .with_mapper(Arc::clone(mapper) as _)
        .with_keys(Arc::clone(kms) as _)
        .with_hooks(hooks)
        .with_paths(csi::host::paths::PathRules::new(vec![dir.to_path_buf()])),
    )
}

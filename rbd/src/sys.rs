//! The only module of this crate with `unsafe` code: hand-written declarations of the librados
//! and librbd C functions we call (Ceph 16, `/usr/include/rados/librados.h`,
//! `/usr/include/rbd/librbd.h`), the owned handles around them, and the two key management
//! system calls (`add_key`, `keyctl`) that hand a cephx key to the kernel.
//!
//! The libraries are linked by `build.rs`. Every function here is a thin, typed wrapper: strings go in as `&CStr`, buffers are sized and
//! grown on `-ERANGE` here, everything librados/librbd allocates is released here, and results
//! come back as `Result<_, Errno>` (a positive errno). Meaning (which operation, which error kind)
//! is added by the callers. Handles own what they point to and keep their parent alive (an image
//! keeps its I/O context, an I/O context its cluster connection), so no handle can outlive the
//! one it was made from. All calls block.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::Arc;

/// A positive errno value.
pub(crate) type Errno = i32;

// The struct layouts are complete copies of the C ones, including fields we never read.
#[allow(non_camel_case_types, dead_code)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};

    pub(super) type rados_t = *mut c_void;
    pub(super) type rados_ioctx_t = *mut c_void;
    pub(super) type rbd_image_t = *mut c_void;
    pub(super) type rbd_image_options_t = *mut c_void;

    /// `struct rados_pool_stat_t`.
    #[repr(C)]
    #[derive(Default)]
    pub(super) struct rados_pool_stat_t {
        pub(super) num_bytes: u64,
        pub(super) num_kb: u64,
        pub(super) num_objects: u64,
        pub(super) num_object_clones: u64,
        pub(super) num_object_copies: u64,
        pub(super) num_objects_missing_on_primary: u64,
        pub(super) num_objects_unfound: u64,
        pub(super) num_objects_degraded: u64,
        pub(super) num_rd: u64,
        pub(super) num_rd_kb: u64,
        pub(super) num_wr: u64,
        pub(super) num_wr_kb: u64,
        pub(super) num_user_bytes: u64,
        pub(super) compressed_bytes_orig: u64,
        pub(super) compressed_bytes: u64,
        pub(super) compressed_bytes_alloc: u64,
    }

    /// `struct rados_cluster_stat_t`.
    #[repr(C)]
    #[derive(Default)]
    pub(super) struct rados_cluster_stat_t {
        pub(super) kb: u64,
        pub(super) kb_used: u64,
        pub(super) kb_avail: u64,
        pub(super) num_objects: u64,
    }

    /// `rbd_image_spec_t`.
    #[repr(C)]
    pub(super) struct rbd_image_spec_t {
        pub(super) id: *mut c_char,
        pub(super) name: *mut c_char,
    }

    /// `rbd_image_info_t` (`RBD_MAX_BLOCK_NAME_SIZE` 24, `RBD_MAX_IMAGE_NAME_SIZE` 96).
    #[repr(C)]
    pub(super) struct rbd_image_info_t {
        pub(super) size: u64,
        pub(super) obj_size: u64,
        pub(super) num_objs: u64,
        pub(super) order: c_int,
        pub(super) block_name_prefix: [c_char; 24],
        pub(super) parent_pool: i64,
        pub(super) parent_name: [c_char; 96],
    }

    /// `rbd_image_watcher_t`.
    #[repr(C)]
    pub(super) struct rbd_image_watcher_t {
        pub(super) addr: *mut c_char,
        pub(super) id: i64,
        pub(super) cookie: u64,
    }

    /// `rbd_lock_mode_t` (a C enum: `int`).
    pub(super) type rbd_lock_mode_t = c_int;
    pub(super) const RBD_LOCK_MODE_EXCLUSIVE: rbd_lock_mode_t = 0;

    pub(super) const RBD_IMAGE_OPTION_FORMAT: c_int = 0;
    pub(super) const RBD_IMAGE_OPTION_FEATURES: c_int = 1;
    pub(super) const RBD_IMAGE_OPTION_ORDER: c_int = 2;

    unsafe extern "C" {
        pub(super) fn rados_create2(
            pcluster: *mut rados_t,
            clustername: *const c_char,
            name: *const c_char,
            flags: u64,
        ) -> c_int;
        pub(super) fn rados_conf_read_file(cluster: rados_t, path: *const c_char) -> c_int;
        pub(super) fn rados_conf_set(
            cluster: rados_t,
            option: *const c_char,
            value: *const c_char,
        ) -> c_int;
        pub(super) fn rados_connect(cluster: rados_t) -> c_int;
        pub(super) fn rados_shutdown(cluster: rados_t);
        pub(super) fn rados_get_instance_id(cluster: rados_t) -> u64;
        pub(super) fn rados_pool_lookup(cluster: rados_t, pool_name: *const c_char) -> i64;
        pub(super) fn rados_cluster_stat(
            cluster: rados_t,
            result: *mut rados_cluster_stat_t,
        ) -> c_int;
        pub(super) fn rados_blocklist_add(
            cluster: rados_t,
            client_address: *mut c_char,
            expire_seconds: u32,
        ) -> c_int;
        pub(super) fn rados_mon_command(
            cluster: rados_t,
            cmd: *mut *const c_char,
            cmdlen: usize,
            inbuf: *const c_char,
            inbuflen: usize,
            outbuf: *mut *mut c_char,
            outbuflen: *mut usize,
            outs: *mut *mut c_char,
            outslen: *mut usize,
        ) -> c_int;
        pub(super) fn rados_buffer_free(buf: *mut c_char);
        pub(super) fn rados_ioctx_create(
            cluster: rados_t,
            pool_name: *const c_char,
            ioctx: *mut rados_ioctx_t,
        ) -> c_int;
        pub(super) fn rados_ioctx_destroy(io: rados_ioctx_t);
        pub(super) fn rados_ioctx_pool_stat(
            io: rados_ioctx_t,
            stats: *mut rados_pool_stat_t,
        ) -> c_int;
        pub(super) fn rados_list_lockers(
            io: rados_ioctx_t,
            o: *const c_char,
            name: *const c_char,
            exclusive: *mut c_int,
            tag: *mut c_char,
            tag_len: *mut usize,
            clients: *mut c_char,
            clients_len: *mut usize,
            cookies: *mut c_char,
            cookies_len: *mut usize,
            addrs: *mut c_char,
            addrs_len: *mut usize,
        ) -> isize;
    }

    unsafe extern "C" {
        pub(super) fn rbd_image_options_create(opts: *mut rbd_image_options_t);
        pub(super) fn rbd_image_options_destroy(opts: rbd_image_options_t);
        pub(super) fn rbd_image_options_set_uint64(
            opts: rbd_image_options_t,
            optname: c_int,
            optval: u64,
        ) -> c_int;
        pub(super) fn rbd_create4(
            io: rados_ioctx_t,
            name: *const c_char,
            size: u64,
            opts: rbd_image_options_t,
        ) -> c_int;
        pub(super) fn rbd_pool_init(io: rados_ioctx_t, force: bool) -> c_int;
        pub(super) fn rbd_remove(io: rados_ioctx_t, name: *const c_char) -> c_int;
        pub(super) fn rbd_list2(
            io: rados_ioctx_t,
            images: *mut rbd_image_spec_t,
            max_images: *mut usize,
        ) -> c_int;
        pub(super) fn rbd_image_spec_list_cleanup(images: *mut rbd_image_spec_t, num: usize);
        pub(super) fn rbd_open(
            io: rados_ioctx_t,
            name: *const c_char,
            image: *mut rbd_image_t,
            snap_name: *const c_char,
        ) -> c_int;
        pub(super) fn rbd_open_read_only(
            io: rados_ioctx_t,
            name: *const c_char,
            image: *mut rbd_image_t,
            snap_name: *const c_char,
        ) -> c_int;
        pub(super) fn rbd_close(image: rbd_image_t) -> c_int;
        pub(super) fn rbd_stat(
            image: rbd_image_t,
            info: *mut rbd_image_info_t,
            infosize: usize,
        ) -> c_int;
        pub(super) fn rbd_get_features(image: rbd_image_t, features: *mut u64) -> c_int;
        pub(super) fn rbd_get_id(image: rbd_image_t, id: *mut c_char, id_len: usize) -> c_int;
        pub(super) fn rbd_resize2(
            image: rbd_image_t,
            size: u64,
            allow_shrink: bool,
            cb: *mut c_void,
            cbdata: *mut c_void,
        ) -> c_int;
        pub(super) fn rbd_metadata_get(
            image: rbd_image_t,
            key: *const c_char,
            value: *mut c_char,
            val_len: *mut usize,
        ) -> c_int;
        pub(super) fn rbd_metadata_set(
            image: rbd_image_t,
            key: *const c_char,
            value: *const c_char,
        ) -> c_int;
        pub(super) fn rbd_metadata_remove(image: rbd_image_t, key: *const c_char) -> c_int;
        pub(super) fn rbd_metadata_list(
            image: rbd_image_t,
            start: *const c_char,
            max: u64,
            keys: *mut c_char,
            key_len: *mut usize,
            values: *mut c_char,
            vals_len: *mut usize,
        ) -> c_int;
        pub(super) fn rbd_watchers_list(
            image: rbd_image_t,
            watchers: *mut rbd_image_watcher_t,
            max_watchers: *mut usize,
        ) -> c_int;
        pub(super) fn rbd_watchers_list_cleanup(watchers: *mut rbd_image_watcher_t, num: usize);
        pub(super) fn rbd_lock_get_owners(
            image: rbd_image_t,
            lock_mode: *mut rbd_lock_mode_t,
            lock_owners: *mut *mut c_char,
            max_lock_owners: *mut usize,
        ) -> c_int;
        pub(super) fn rbd_lock_get_owners_cleanup(lock_owners: *mut *mut c_char, count: usize);
        pub(super) fn rbd_lock_break(
            image: rbd_image_t,
            lock_mode: rbd_lock_mode_t,
            lock_owner: *const c_char,
        ) -> c_int;
        pub(super) fn rbd_break_lock(
            image: rbd_image_t,
            client: *const c_char,
            cookie: *const c_char,
        ) -> c_int;
    }
}

/// A librados/librbd return value: negative is `-errno`.
fn check(r: c_int) -> Result<c_int, Errno> {
    if r < 0 { Err(-r) } else { Ok(r) }
}

/// How often a call that reports `-ERANGE` with the needed size is retried with a bigger buffer
/// (the needed size can grow between calls when someone else changes the image).
const RANGE_RETRIES: usize = 8;

/// Splits a buffer of NUL-terminated strings (librbd's list format) into owned strings.
fn split_nul(buf: &[u8]) -> Vec<String> {
    buf.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Copies a C string librados/librbd returned (NULL as empty).
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
unsafe fn owned(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// A cluster handle (`rados_t`), shut down on drop.
#[derive(Debug)]
pub(crate) struct RadosHandle(ffi::rados_t);

// SAFETY: librados cluster handles may be used from any thread and concurrently (librados is
// thread-safe; the handle is an opaque pointer to an internally locked `RadosClient`).
unsafe impl Send for RadosHandle {}
// SAFETY: see `Send`: every operation we call on a shared handle is internally synchronised.
unsafe impl Sync for RadosHandle {}

/// Pool usage (`rados_ioctx_pool_stat`), the fields we use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawPoolStat {
    pub(crate) bytes: u64,
    pub(crate) objects: u64,
}

/// Cluster usage (`rados_cluster_stat`) in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawClusterStat {
    pub(crate) kb: u64,
    pub(crate) kb_used: u64,
    pub(crate) kb_avail: u64,
}

impl RadosHandle {
    /// `rados_create2(&h, "ceph", name, 0)`: a handle for the entity `name` (`client.csi`).
    pub(crate) fn create(name: &CStr) -> Result<Self, Errno> {
        let mut h: ffi::rados_t = ptr::null_mut();
        // SAFETY: `h` is a valid out pointer; both strings are NUL-terminated and outlive the
        // call (librados copies them).
        let r = unsafe { ffi::rados_create2(&mut h, c"ceph".as_ptr(), name.as_ptr(), 0) };
        check(r)?;
        Ok(Self(h))
    }

    /// `rados_conf_read_file`.
    pub(crate) fn conf_read_file(&self, path: &CStr) -> Result<(), Errno> {
        // SAFETY: the handle is valid (owned by self); `path` is NUL-terminated and outlives the
        // call.
        check(unsafe { ffi::rados_conf_read_file(self.0, path.as_ptr()) }).map(drop)
    }

    /// `rados_conf_set`.
    pub(crate) fn conf_set(&self, option: &CStr, value: &CStr) -> Result<(), Errno> {
        // SAFETY: valid handle; both strings NUL-terminated and outlive the call (copied).
        check(unsafe { ffi::rados_conf_set(self.0, option.as_ptr(), value.as_ptr()) }).map(drop)
    }

    /// `rados_connect` (blocks up to `client_mount_timeout`).
    pub(crate) fn connect(&self) -> Result<(), Errno> {
        // SAFETY: valid, not yet connected handle (the caller connects once).
        check(unsafe { ffi::rados_connect(self.0) }).map(drop)
    }

    /// `rados_get_instance_id`: this connection's global id (`client.<id>` in watchers/locks).
    pub(crate) fn instance_id(&self) -> u64 {
        // SAFETY: valid, connected handle; the call only reads it.
        unsafe { ffi::rados_get_instance_id(self.0) }
    }

    /// `rados_pool_lookup`: the pool id.
    pub(crate) fn pool_lookup(&self, pool: &CStr) -> Result<i64, Errno> {
        // SAFETY: valid handle; `pool` NUL-terminated and outlives the call.
        let r = unsafe { ffi::rados_pool_lookup(self.0, pool.as_ptr()) };
        if r < 0 {
            return Err(i32::try_from(-r).unwrap_or(libc::EIO));
        }
        Ok(r)
    }

    /// `rados_cluster_stat`.
    pub(crate) fn cluster_stat(&self) -> Result<RawClusterStat, Errno> {
        let mut s = ffi::rados_cluster_stat_t::default();
        // SAFETY: valid handle; `s` is a writable struct of the declared layout.
        check(unsafe { ffi::rados_cluster_stat(self.0, &mut s) })?;
        Ok(RawClusterStat {
            kb: s.kb,
            kb_used: s.kb_used,
            kb_avail: s.kb_avail,
        })
    }

    /// `rados_blocklist_add(addr, expire_seconds)` (0: the cluster's default expiry).
    pub(crate) fn blocklist_add(&self, addr: &CStr, expire_seconds: u32) -> Result<(), Errno> {
        // The C signature takes `char *`, but librados only reads the string: pass a copy so that
        // no pointer to our `&CStr` is ever handed out as mutable.
        let mut copy = addr.to_bytes_with_nul().to_vec();
        // SAFETY: valid handle; `copy` is a NUL-terminated buffer that outlives the call.
        let r = unsafe {
            ffi::rados_blocklist_add(self.0, copy.as_mut_ptr().cast::<c_char>(), expire_seconds)
        };
        check(r).map(drop)
    }

    /// `rados_mon_command` with one JSON command and an input buffer (may be empty): the
    /// output buffer and the monitor's status string, or the errno and that status string.
    pub(crate) fn mon_command(
        &self,
        cmd: &CStr,
        input: &[u8],
    ) -> Result<(Vec<u8>, String), (Errno, String)> {
        let mut cmds = [cmd.as_ptr()];
        let mut out: *mut c_char = ptr::null_mut();
        let mut out_len: usize = 0;
        let mut outs: *mut c_char = ptr::null_mut();
        let mut outs_len: usize = 0;
        // SAFETY: valid handle; `cmds` is an array of one NUL-terminated string that outlives
        // the call; `input` is a live slice of `input.len()` bytes (librados copies it and does
        // not keep the pointer; an empty slice's dangling pointer is never read with length 0);
        // the four out pointers are valid and receive buffers librados allocates, released
        // below with rados_buffer_free.
        let r = unsafe {
            ffi::rados_mon_command(
                self.0,
                cmds.as_mut_ptr(),
                1,
                input.as_ptr().cast::<c_char>(),
                input.len(),
                &mut out,
                &mut out_len,
                &mut outs,
                &mut outs_len,
            )
        };
        let take = |p: *mut c_char, len: usize| -> Vec<u8> {
            if p.is_null() {
                return Vec::new();
            }
            // SAFETY: librados returned a buffer of `len` bytes at `p`; it is read once here and
            // freed right after, with the allocator's own function.
            let v = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) }.to_vec();
            // SAFETY: `p` came from librados and is freed exactly once.
            unsafe { ffi::rados_buffer_free(p) };
            v
        };
        let out = take(out, out_len);
        let status = String::from_utf8_lossy(&take(outs, outs_len)).into_owned();
        match check(r) {
            Ok(_) => Ok((out, status)),
            Err(e) => Err((e, status)),
        }
    }

    /// `rados_ioctx_create`: an I/O context for `pool`, keeping this connection alive.
    pub(crate) fn ioctx(self: &Arc<Self>, pool: &CStr) -> Result<IoCtxHandle, Errno> {
        let mut io: ffi::rados_ioctx_t = ptr::null_mut();
        // SAFETY: valid, connected handle; `pool` NUL-terminated; `io` a valid out pointer.
        check(unsafe { ffi::rados_ioctx_create(self.0, pool.as_ptr(), &mut io) })?;
        Ok(IoCtxHandle {
            raw: io,
            _cluster: Arc::clone(self),
        })
    }
}

impl Drop for RadosHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from rados_create2 and is shut down exactly once; every I/O
        // context made from it holds an Arc to this handle, so none is left.
        unsafe { ffi::rados_shutdown(self.0) }
    }
}

/// An I/O context for one pool (`rados_ioctx_t`), destroyed on drop.
#[derive(Debug)]
pub(crate) struct IoCtxHandle {
    raw: ffi::rados_ioctx_t,
    _cluster: Arc<RadosHandle>,
}

// SAFETY: librados I/O contexts may be used from several threads for operations (we never change
// an I/O context's state — snapshot context, namespace, locator — after creating it).
unsafe impl Send for IoCtxHandle {}
// SAFETY: see `Send`.
unsafe impl Sync for IoCtxHandle {}

impl IoCtxHandle {
    /// `rados_list_lockers`: the holders of lock `name` on object `oid`, as the object has them
    /// now (a missing object or lock: none).
    pub(crate) fn list_lockers(&self, oid: &CStr, name: &CStr) -> Result<RawLockers, Errno> {
        let mut lens = [256usize; 4];
        for _ in 0..RANGE_RETRIES {
            let mut bufs: [Vec<u8>; 4] = lens.map(|l| vec![0u8; l]);
            let mut got = lens;
            let mut exclusive: c_int = 0;
            let [tag, clients, cookies, addrs] = &mut bufs;
            let [tl, cl, kl, al] = &mut got;
            // SAFETY: valid I/O context; `oid` and `name` NUL-terminated and outlive the call;
            // each buffer is writable for the length passed with it; on -ERANGE librados stores
            // the needed lengths and writes nothing.
            let r = unsafe {
                ffi::rados_list_lockers(
                    self.raw,
                    oid.as_ptr(),
                    name.as_ptr(),
                    &mut exclusive,
                    tag.as_mut_ptr().cast::<c_char>(),
                    tl,
                    clients.as_mut_ptr().cast::<c_char>(),
                    cl,
                    cookies.as_mut_ptr().cast::<c_char>(),
                    kl,
                    addrs.as_mut_ptr().cast::<c_char>(),
                    al,
                )
            };
            if r == -(libc::ERANGE as isize) {
                for (l, g) in lens.iter_mut().zip(got) {
                    *l = g.max(*l * 2);
                }
                continue;
            }
            if r == -(libc::ENOENT as isize) {
                return Ok(RawLockers {
                    exclusive: false,
                    tag: String::new(),
                    lockers: Vec::new(),
                });
            }
            if r < 0 {
                return Err(i32::try_from(-r).unwrap_or(libc::EIO));
            }
            for (b, g) in bufs.iter_mut().zip(got) {
                b.truncate(g);
            }
            let [tag, clients, cookies, addrs] = &bufs;
            let clients = split_nul(clients);
            let cookies = split_nul(cookies);
            let addrs = split_nul(addrs);
            let lockers = clients
                .into_iter()
                .zip(cookies)
                .zip(addrs)
                .map(|((client, cookie), addr)| RawLocker {
                    client,
                    cookie,
                    addr,
                })
                .collect();
            return Ok(RawLockers {
                exclusive: exclusive != 0,
                tag: split_nul(tag).into_iter().next().unwrap_or_default(),
                lockers,
            });
        }
        Err(libc::ERANGE)
    }

    /// `rados_ioctx_pool_stat`.
    pub(crate) fn pool_stat(&self) -> Result<RawPoolStat, Errno> {
        let mut s = ffi::rados_pool_stat_t::default();
        // SAFETY: valid I/O context; `s` is writable and has the declared layout.
        check(unsafe { ffi::rados_ioctx_pool_stat(self.raw, &mut s) })?;
        Ok(RawPoolStat {
            bytes: s.num_bytes,
            objects: s.num_objects,
        })
    }

    /// `rbd_create4` with format 2, the given feature bits and order.
    pub(crate) fn create_image(
        &self,
        name: &CStr,
        size: u64,
        features: u64,
        order: u64,
    ) -> Result<(), Errno> {
        let mut opts: ffi::rbd_image_options_t = ptr::null_mut();
        // SAFETY: `opts` is a valid out pointer; destroyed below on every path.
        unsafe { ffi::rbd_image_options_create(&mut opts) };
        let set = |name: c_int, value: u64| {
            // SAFETY: `opts` is a live options object (destroyed only after these calls).
            check(unsafe { ffi::rbd_image_options_set_uint64(opts, name, value) }).map(drop)
        };
        let r = set(ffi::RBD_IMAGE_OPTION_FORMAT, 2)
            .and_then(|()| set(ffi::RBD_IMAGE_OPTION_FEATURES, features))
            .and_then(|()| set(ffi::RBD_IMAGE_OPTION_ORDER, order))
            .and_then(|()| {
                // SAFETY: valid I/O context; `name` NUL-terminated; `opts` live.
                check(unsafe { ffi::rbd_create4(self.raw, name.as_ptr(), size, opts) }).map(drop)
            });
        // SAFETY: `opts` was created above and is destroyed exactly once.
        unsafe { ffi::rbd_image_options_destroy(opts) };
        r
    }

    /// `rbd_pool_init` (not forced: a pool in use by another application is refused).
    pub(crate) fn pool_init(&self) -> Result<(), Errno> {
        // SAFETY: valid I/O context; no pointers.
        check(unsafe { ffi::rbd_pool_init(self.raw, false) }).map(drop)
    }

    /// `rbd_remove`.
    pub(crate) fn remove_image(&self, name: &CStr) -> Result<(), Errno> {
        // SAFETY: valid I/O context; `name` NUL-terminated and outlives the call.
        check(unsafe { ffi::rbd_remove(self.raw, name.as_ptr()) }).map(drop)
    }

    /// `rbd_list2`: the names of the pool's images.
    pub(crate) fn list_images(&self) -> Result<Vec<String>, Errno> {
        let mut cap: usize = 64;
        for _ in 0..RANGE_RETRIES {
            let mut specs: Vec<ffi::rbd_image_spec_t> = Vec::with_capacity(cap);
            let mut n = cap;
            // SAFETY: `specs` has room for `n` entries; librbd writes at most `n` (or returns
            // -ERANGE with the needed count in `n`, writing nothing).
            let r = unsafe { ffi::rbd_list2(self.raw, specs.as_mut_ptr(), &mut n) };
            match check(r) {
                Ok(_) => {
                    let n = n.min(cap);
                    // SAFETY: librbd initialised the first `n` entries.
                    unsafe { specs.set_len(n) };
                    let names = specs
                        .iter()
                        // SAFETY: each name is a NUL-terminated string librbd allocated, valid
                        // until the cleanup below.
                        .map(|s| unsafe { owned(s.name) })
                        .collect();
                    // SAFETY: frees the strings of exactly the `n` entries librbd filled in.
                    unsafe { ffi::rbd_image_spec_list_cleanup(specs.as_mut_ptr(), n) };
                    return Ok(names);
                }
                Err(libc::ERANGE) => cap = n.max(cap * 2),
                Err(e) => return Err(e),
            }
        }
        Err(libc::ERANGE)
    }

    /// `rbd_open` (read-write, with a header watch) or `rbd_open_read_only` (no watch): an image
    /// handle keeping this I/O context alive.
    pub(crate) fn open_image(
        self: &Arc<Self>,
        name: &CStr,
        read_only: bool,
    ) -> Result<ImageHandle, Errno> {
        let mut img: ffi::rbd_image_t = ptr::null_mut();
        // SAFETY: valid I/O context; `name` NUL-terminated; `img` a valid out pointer; NULL
        // snapshot name means the image head.
        let r = unsafe {
            if read_only {
                ffi::rbd_open_read_only(self.raw, name.as_ptr(), &mut img, ptr::null())
            } else {
                ffi::rbd_open(self.raw, name.as_ptr(), &mut img, ptr::null())
            }
        };
        check(r)?;
        Ok(ImageHandle {
            raw: img,
            _io: Arc::clone(self),
        })
    }
}

impl Drop for IoCtxHandle {
    fn drop(&mut self) {
        // SAFETY: created by rados_ioctx_create, destroyed exactly once; every image opened from
        // it holds an Arc to this context, so none is open.
        unsafe { ffi::rados_ioctx_destroy(self.raw) }
    }
}

/// What `rbd_stat` reports, the fields we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RawImageInfo {
    pub(crate) size: u64,
    pub(crate) obj_size: u64,
    pub(crate) order: i32,
}

/// One watcher of an image header (`rbd_image_watcher_t`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawWatcher {
    pub(crate) addr: String,
    pub(crate) id: i64,
    pub(crate) cookie: u64,
}

/// One holder of a lock (`rados_list_lockers`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawLocker {
    pub(crate) client: String,
    pub(crate) cookie: String,
    pub(crate) addr: String,
}

/// What `rados_list_lockers` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RawLockers {
    pub(crate) exclusive: bool,
    pub(crate) tag: String,
    pub(crate) lockers: Vec<RawLocker>,
}

/// An open image (`rbd_image_t`), closed on drop.
#[derive(Debug)]
pub(crate) struct ImageHandle {
    raw: ffi::rbd_image_t,
    _io: Arc<IoCtxHandle>,
}

// SAFETY: an image handle may be moved to and used from another thread (librbd serialises access
// to its ImageCtx internally); we do not share it between threads (`!Sync`).
unsafe impl Send for ImageHandle {}

impl ImageHandle {
    /// `rbd_stat`.
    pub(crate) fn stat(&self) -> Result<RawImageInfo, Errno> {
        let mut info = std::mem::MaybeUninit::<ffi::rbd_image_info_t>::zeroed();
        // SAFETY: valid image; `info` is writable memory of the struct's size, which is passed.
        check(unsafe {
            ffi::rbd_stat(
                self.raw,
                info.as_mut_ptr(),
                std::mem::size_of::<ffi::rbd_image_info_t>(),
            )
        })?;
        // SAFETY: zero-initialised (valid for this plain-data struct) and filled by librbd.
        let info = unsafe { info.assume_init() };
        Ok(RawImageInfo {
            size: info.size,
            obj_size: info.obj_size,
            order: info.order,
        })
    }

    /// `rbd_get_features`.
    pub(crate) fn features(&self) -> Result<u64, Errno> {
        let mut f: u64 = 0;
        // SAFETY: valid image; `f` a valid out pointer.
        check(unsafe { ffi::rbd_get_features(self.raw, &mut f) })?;
        Ok(f)
    }

    /// `rbd_get_id`: the image's unique id.
    pub(crate) fn id(&self) -> Result<String, Errno> {
        let mut buf = vec![0u8; 64];
        for _ in 0..RANGE_RETRIES {
            // SAFETY: valid image; `buf` is writable for `buf.len()` bytes, which is passed.
            let r =
                unsafe { ffi::rbd_get_id(self.raw, buf.as_mut_ptr().cast::<c_char>(), buf.len()) };
            match check(r) {
                Ok(_) => return Ok(split_nul(&buf).into_iter().next().unwrap_or_default()),
                Err(libc::ERANGE) => buf.resize(buf.len() * 2, 0),
                Err(e) => return Err(e),
            }
        }
        Err(libc::ERANGE)
    }

    /// `rbd_resize2(size, allow_shrink = false)`.
    pub(crate) fn grow(&self, size: u64) -> Result<(), Errno> {
        // SAFETY: valid image; no progress callback (NULL, NULL).
        check(unsafe { ffi::rbd_resize2(self.raw, size, false, ptr::null_mut(), ptr::null_mut()) })
            .map(drop)
    }

    /// `rbd_metadata_get`.
    pub(crate) fn metadata_get(&self, key: &CStr) -> Result<String, Errno> {
        let mut buf = vec![0u8; 256];
        for _ in 0..RANGE_RETRIES {
            let mut len = buf.len();
            // SAFETY: valid image; `key` NUL-terminated; `buf` writable for `len` bytes; on
            // -ERANGE librbd stores the needed length in `len` and writes nothing.
            let r = unsafe {
                ffi::rbd_metadata_get(
                    self.raw,
                    key.as_ptr(),
                    buf.as_mut_ptr().cast::<c_char>(),
                    &mut len,
                )
            };
            match check(r) {
                Ok(_) => {
                    let end = len.min(buf.len());
                    let v = buf.get(..end).unwrap_or_default();
                    let v = v.split(|&b| b == 0).next().unwrap_or_default();
                    return Ok(String::from_utf8_lossy(v).into_owned());
                }
                Err(libc::ERANGE) => buf.resize(len.max(buf.len() * 2), 0),
                Err(e) => return Err(e),
            }
        }
        Err(libc::ERANGE)
    }

    /// `rbd_metadata_set`.
    pub(crate) fn metadata_set(&self, key: &CStr, value: &CStr) -> Result<(), Errno> {
        // SAFETY: valid image; both strings NUL-terminated and outlive the call.
        check(unsafe { ffi::rbd_metadata_set(self.raw, key.as_ptr(), value.as_ptr()) }).map(drop)
    }

    /// `rbd_metadata_remove`.
    pub(crate) fn metadata_remove(&self, key: &CStr) -> Result<(), Errno> {
        // SAFETY: valid image; `key` NUL-terminated and outlives the call.
        check(unsafe { ffi::rbd_metadata_remove(self.raw, key.as_ptr()) }).map(drop)
    }

    /// `rbd_metadata_list`: every key and value (no limit).
    pub(crate) fn metadata_list(&self) -> Result<Vec<(String, String)>, Errno> {
        let (mut klen, mut vlen) = (1024usize, 4096usize);
        for _ in 0..RANGE_RETRIES {
            let mut keys = vec![0u8; klen];
            let mut vals = vec![0u8; vlen];
            let (mut kl, mut vl) = (klen, vlen);
            // SAFETY: valid image; empty start key; `keys`/`vals` writable for `kl`/`vl` bytes;
            // on -ERANGE librbd stores the needed sizes and writes nothing.
            let r = unsafe {
                ffi::rbd_metadata_list(
                    self.raw,
                    c"".as_ptr(),
                    0,
                    keys.as_mut_ptr().cast::<c_char>(),
                    &mut kl,
                    vals.as_mut_ptr().cast::<c_char>(),
                    &mut vl,
                )
            };
            match check(r) {
                Ok(_) => {
                    keys.truncate(kl.min(klen));
                    vals.truncate(vl.min(vlen));
                    // Values may be empty strings, so split values without dropping empties.
                    let ks = split_nul(&keys);
                    let vs: Vec<String> = vals
                        .split(|&b| b == 0)
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect();
                    return Ok(ks.into_iter().zip(vs).collect());
                }
                Err(libc::ERANGE) => {
                    klen = kl.max(klen * 2);
                    vlen = vl.max(vlen * 2);
                }
                Err(e) => return Err(e),
            }
        }
        Err(libc::ERANGE)
    }

    /// `rbd_watchers_list`.
    pub(crate) fn watchers(&self) -> Result<Vec<RawWatcher>, Errno> {
        let mut cap: usize = 16;
        for _ in 0..RANGE_RETRIES {
            let mut ws: Vec<ffi::rbd_image_watcher_t> = Vec::with_capacity(cap);
            let mut n = cap;
            // SAFETY: `ws` has room for `n` entries; librbd fills at most `n` (or returns
            // -ERANGE with the needed count, filling nothing).
            let r = unsafe { ffi::rbd_watchers_list(self.raw, ws.as_mut_ptr(), &mut n) };
            match check(r) {
                Ok(_) => {
                    let n = n.min(cap);
                    // SAFETY: librbd initialised the first `n` entries.
                    unsafe { ws.set_len(n) };
                    let out = ws
                        .iter()
                        .map(|w| RawWatcher {
                            // SAFETY: librbd allocated a NUL-terminated address string, valid
                            // until the cleanup below.
                            addr: unsafe { owned(w.addr) },
                            id: w.id,
                            cookie: w.cookie,
                        })
                        .collect();
                    // SAFETY: frees exactly the `n` entries librbd filled in.
                    unsafe { ffi::rbd_watchers_list_cleanup(ws.as_mut_ptr(), n) };
                    return Ok(out);
                }
                Err(libc::ERANGE) => cap = n.max(cap * 2),
                Err(e) => return Err(e),
            }
        }
        Err(libc::ERANGE)
    }

    /// `rbd_lock_get_owners`: the owners of the exclusive-lock feature's lock, and whether the
    /// mode is exclusive. No owner: an empty list.
    pub(crate) fn lock_owners(&self) -> Result<(bool, Vec<String>), Errno> {
        let mut cap: usize = 8;
        for _ in 0..RANGE_RETRIES {
            let mut owners: Vec<*mut c_char> = vec![ptr::null_mut(); cap];
            let mut n = cap;
            let mut mode: ffi::rbd_lock_mode_t = ffi::RBD_LOCK_MODE_EXCLUSIVE;
            // SAFETY: `owners` holds `n` writable pointer slots; librbd fills at most `n` with
            // strings it allocates (or returns -ERANGE with the needed count).
            let r = unsafe {
                ffi::rbd_lock_get_owners(self.raw, &mut mode, owners.as_mut_ptr(), &mut n)
            };
            match check(r) {
                Ok(_) => {
                    let n = n.min(cap);
                    let list = owners
                        .iter()
                        .take(n)
                        // SAFETY: each of the first `n` slots is NULL or a NUL-terminated string
                        // allocated by librbd, valid until the cleanup below.
                        .map(|&p| unsafe { owned(p) })
                        .collect();
                    // SAFETY: frees exactly the `n` strings librbd stored.
                    unsafe { ffi::rbd_lock_get_owners_cleanup(owners.as_mut_ptr(), n) };
                    return Ok((mode == ffi::RBD_LOCK_MODE_EXCLUSIVE, list));
                }
                Err(libc::ENOENT) => return Ok((true, Vec::new())),
                Err(libc::ERANGE) => cap = n.max(cap * 2),
                Err(e) => return Err(e),
            }
        }
        Err(libc::ERANGE)
    }

    /// `rbd_lock_break(RBD_LOCK_MODE_EXCLUSIVE, owner)`.
    pub(crate) fn lock_break(&self, owner: &CStr) -> Result<(), Errno> {
        // SAFETY: valid image; `owner` NUL-terminated and outlives the call.
        check(unsafe {
            ffi::rbd_lock_break(self.raw, ffi::RBD_LOCK_MODE_EXCLUSIVE, owner.as_ptr())
        })
        .map(drop)
    }

    /// The holders of the image's `rbd_lock`, read from its header object now
    /// (`rados_list_lockers` on `rbd_header.<id>`). Not `rbd_list_lockers`: that answers from
    /// the handle's cached header, which a read-only handle (no watch, so never told of a
    /// change) keeps from the time it was opened.
    pub(crate) fn lockers(&self) -> Result<RawLockers, Errno> {
        let oid = std::ffi::CString::new(format!("rbd_header.{}", self.id()?))
            .map_err(|_| libc::EINVAL)?;
        self._io.list_lockers(&oid, c"rbd_lock")
    }

    /// `rbd_break_lock(client, cookie)`.
    pub(crate) fn break_lock(&self, client: &CStr, cookie: &CStr) -> Result<(), Errno> {
        // SAFETY: valid image; both strings NUL-terminated and outlive the call.
        check(unsafe { ffi::rbd_break_lock(self.raw, client.as_ptr(), cookie.as_ptr()) }).map(drop)
    }
}

impl Drop for ImageHandle {
    fn drop(&mut self) {
        // SAFETY: opened by rbd_open / rbd_open_read_only, closed exactly once. A close error
        // cannot be reported from drop; librbd releases the handle either way.
        let _ = unsafe { ffi::rbd_close(self.raw) };
    }
}

/// A key serial number or one of the special `KEY_SPEC_*` ids.
pub(crate) type KeySerial = i32;

/// The calling thread's keyring (created on first use), which the kernel searches when this
/// thread writes to `/sys/bus/rbd/add_single_major`.
pub(crate) const KEY_SPEC_THREAD_KEYRING: KeySerial = -1;

const KEYCTL_INVALIDATE: libc::c_long = 21;

/// `add_key(type, description, payload, keyring)`: the new key's serial. The payload goes by
/// pointer and length; it is never formatted.
pub(crate) fn add_key(
    key_type: &CStr,
    description: &CStr,
    payload: &[u8],
    keyring: KeySerial,
) -> std::io::Result<KeySerial> {
    // SAFETY: both strings are NUL-terminated and outlive the call; `payload` is a readable
    // slice passed with its exact length; the kernel copies the payload and keeps no pointer.
    let r = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            key_type.as_ptr(),
            description.as_ptr(),
            payload.as_ptr().cast::<c_void>(),
            payload.len(),
            libc::c_long::from(keyring),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    KeySerial::try_from(r).map_err(|_| std::io::Error::other("key serial out of range"))
}

/// `keyctl(KEYCTL_INVALIDATE, key)`: the key is unlinked everywhere and destroyed.
pub(crate) fn invalidate_key(key: KeySerial) -> std::io::Result<()> {
    // SAFETY: KEYCTL_INVALIDATE takes only an integer serial and touches no caller memory.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_INVALIDATE, libc::c_long::from(key)) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_nul_drops_the_empty_tail() {
        assert_eq!(
            split_nul(b"a\0bc\0\0\0"),
            vec!["a".to_owned(), "bc".to_owned()]
        );
        assert!(split_nul(b"").is_empty());
    }

    #[test]
    fn image_info_has_the_c_layout() {
        // 3 x u64, int, char[24] (ends at 52), padding to 56, int64_t, char[96].
        assert_eq!(std::mem::size_of::<ffi::rbd_image_info_t>(), 56 + 8 + 96);
        assert_eq!(std::mem::size_of::<ffi::rados_pool_stat_t>(), 16 * 8);
        assert_eq!(std::mem::size_of::<ffi::rbd_image_watcher_t>(), 24);
    }
}

//! Whether QEMU, run by libvirt as an unprivileged user, can open /dev/kvm.
//!
//! arktos-node runs as root and could always open the device; QEMU cannot
//! when it is `root:root 0600` (a host where udev never ran). libvirt then
//! fails the guest ("Could not access KVM kernel module: Permission denied")
//! and re-probes QEMU on every call, so the answer must be QEMU's, not ours.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::domain::Accel;

/// Debian's build of libvirt runs QEMU as this user and group unless
/// `qemu.conf` says otherwise.
const DEFAULT_USER: &str = "libvirt-qemu";
const DEFAULT_GROUP: &str = "kvm";

/// Who QEMU runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QemuIdentity {
    pub user: String,
    pub uid: u32,
    /// Primary group (libvirt's `group`) and the user's other groups.
    pub gids: Vec<u32>,
}

/// The `user`/`group` settings of a libvirt `qemu.conf` (unset: `None`).
fn conf_value(conf: &str, key: &str) -> Option<String> {
    conf.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
}

/// A user or group by name in passwd/group text, or `+N` (libvirt's
/// numeric form): its id, and for groups the members.
fn lookup(table: &str, name: &str) -> Option<(u32, Vec<String>)> {
    if let Some(n) = name.strip_prefix('+') {
        return n.parse().ok().map(|id| (id, Vec::new()));
    }
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 4 && fields[0] == name).then(|| {
            let members = fields[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            (fields[2].parse().unwrap_or(u32::MAX), members)
        })
    })
}

/// QEMU's identity from the texts of `qemu.conf`, `/etc/passwd` and
/// `/etc/group`; `None` when the user does not exist.
pub fn qemu_identity(conf: &str, passwd: &str, group: &str) -> Option<QemuIdentity> {
    let user = conf_value(conf, "user").unwrap_or_else(|| DEFAULT_USER.into());
    let group_name = conf_value(conf, "group").unwrap_or_else(|| DEFAULT_GROUP.into());
    let (uid, _) = lookup(passwd, &user)?;
    let mut gids: Vec<u32> = lookup(group, &group_name)
        .map(|(g, _)| g)
        .into_iter()
        .collect();
    gids.extend(group.lines().filter_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() >= 4 && fields[3].split(',').any(|m| m == user))
            .then(|| fields[2].parse::<u32>().ok())
            .flatten()
    }));
    Some(QemuIdentity { user, uid, gids })
}

/// Whether `who` may read and write a file of this owner, group and mode;
/// the reason when not.
pub fn may_read_write(who: &QemuIdentity, uid: u32, gid: u32, mode: u32) -> Result<(), String> {
    let granted = if who.uid == 0 {
        true
    } else if who.uid == uid {
        mode & 0o600 == 0o600
    } else if who.gids.contains(&gid) {
        mode & 0o060 == 0o060
    } else {
        mode & 0o006 == 0o006
    };
    if granted {
        Ok(())
    } else {
        Err(format!(
            "QEMU runs as {} (uid {}, groups {:?}) and may not open a device owned by {uid}:{gid} with mode {:o}; make it root:kvm 0660 as udev's rule does",
            who.user,
            who.uid,
            who.gids,
            mode & 0o7777
        ))
    }
}

/// Whether QEMU as libvirt runs it can open `device`; the reason when not.
pub fn qemu_may_use(device: &Path, qemu_conf: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(device).map_err(|e| format!("{}: {e}", device.display()))?;
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let conf = std::fs::read_to_string(qemu_conf).unwrap_or_default();
    let who = qemu_identity(&conf, &read("/etc/passwd"), &read("/etc/group")).ok_or_else(|| {
        format!(
            "the QEMU user of {} does not exist on this host",
            qemu_conf.display()
        )
    })?;
    may_read_write(&who, meta.uid(), meta.gid(), meta.mode())
}

/// The accelerator to try: KVM when QEMU can open /dev/kvm, TCG otherwise
/// (with the reason logged). Nested KVM often opens and even starts QEMU,
/// then fails inside the guest ("KVM internal error", "failed to set
/// MSR"), which no quick probe without a guest shows; so the runtime proves
/// KVM with the first real guest (see `VmRuntime::prove_kvm`).
pub fn kvm_candidate() -> Accel {
    match qemu_may_use(Path::new("/dev/kvm"), Path::new("/etc/libvirt/qemu.conf")) {
        Ok(()) => Accel::Kvm,
        Err(reason) => {
            tracing::info!(%reason, "KVM is not usable by QEMU: VMs run under QEMU TCG");
            Accel::Tcg
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nlibvirt-qemu:x:64055:108:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nkvm:x:104:libvirt-qemu\nlibvirt-qemu:x:108:\n";

    fn debian() -> QemuIdentity {
        qemu_identity("", PASSWD, GROUP).expect("the Debian user")
    }

    #[test]
    fn debian_defaults_run_qemu_as_libvirt_qemu_in_kvm() {
        let who = debian();
        assert_eq!(who.uid, 64055);
        assert!(who.gids.contains(&104), "{who:?}");
    }

    #[test]
    fn qemu_conf_settings_win_and_comments_do_not() {
        let conf = "#user = \"nobody\"\nuser = \"+0\"\ngroup = \"root\"\n";
        let who = qemu_identity(conf, PASSWD, GROUP).expect("root by number");
        assert_eq!((who.uid, who.gids.first().copied()), (0, Some(0)));
        assert!(qemu_identity("user = \"ghost\"", PASSWD, GROUP).is_none());
    }

    #[test]
    fn a_fresh_hosts_root_only_device_is_refused_with_the_fix() {
        let err = may_read_write(&debian(), 0, 0, 0o20600).unwrap_err();
        assert!(err.contains("root:kvm 0660"), "{err}");
        assert!(may_read_write(&debian(), 0, 104, 0o20660).is_ok());
        assert!(may_read_write(&debian(), 0, 104, 0o20600).is_err());
        assert!(may_read_write(&debian(), 0, 0, 0o20666).is_ok());
        assert!(may_read_write(&debian(), 64055, 0, 0o20600).is_ok());
    }
}

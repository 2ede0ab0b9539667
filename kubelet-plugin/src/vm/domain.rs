//! The libvirt domain of a VM container, as XML.

use std::path::PathBuf;

use super::shape::VmShape;

/// Namespace of our element in a domain's `<metadata>`.
pub const METADATA_NS: &str = "https://arktos.io/xmlns/vm/v1";
/// Every domain arktos-node defines is named with this prefix.
pub const DOMAIN_PREFIX: &str = "arktos-";

/// How QEMU runs guests here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// QEMU's software emulation, for hosts without (nested) KVM.
    Tcg,
}

impl Accel {
    pub fn domain_type(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "qemu",
        }
    }
}

/// Everything a VM container's domain is made of.
#[derive(Clone, Debug)]
pub struct DomainSpec {
    pub container_id: String,
    pub sandbox_id: String,
    pub accel: Accel,
    pub shape: VmShape,
    /// qcow2 overlay on the cached base image.
    pub disk: PathBuf,
    /// NoCloud seed (iso9660, label cidata).
    pub seed: PathBuf,
    /// Tap device the guest's NIC uses, and the pod interface's MAC.
    pub tap: String,
    pub mac: String,
    /// Raw serial console output, turned into the CRI log by the tailer.
    pub console: PathBuf,
}

pub fn domain_name(container_id: &str) -> String {
    format!("{DOMAIN_PREFIX}{container_id}")
}

impl DomainSpec {
    pub fn to_xml(&self) -> String {
        let s = &self.shape;
        let cpu = match self.accel {
            Accel::Kvm => "<cpu mode='host-passthrough'/>",
            // TCG's default model; hot-plugged vCPUs need no host features.
            Accel::Tcg => "",
        };
        format!(
            "<domain type='{dtype}'>
  <name>{name}</name>
  <metadata>
    <arktos:vm xmlns:arktos='{METADATA_NS}' container='{cid}' sandbox='{sid}'/>
  </metadata>
  <memory unit='MiB'>{max_mem}</memory>
  <currentMemory unit='MiB'>{mem}</currentMemory>
  <vcpu placement='static' current='{vcpus}'>{max_vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  {cpu}
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{seed}'/>
      <target dev='vdb' bus='virtio'/>
      <readonly/>
    </disk>
    <interface type='ethernet'>
      <mac address='{mac}'/>
      <target dev='{tap}' managed='no'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'>
      <source path='{console}' append='on'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='{console}' append='on'/>
      <target type='serial' port='0'/>
    </console>
    <memballoon model='virtio'>
      <stats period='5'/>
    </memballoon>
  </devices>
</domain>
",
            dtype = self.accel.domain_type(),
            name = domain_name(&self.container_id),
            cid = xml_escape(&self.container_id),
            sid = xml_escape(&self.sandbox_id),
            max_mem = s.max_memory_mib,
            mem = s.memory_mib,
            vcpus = s.vcpus,
            max_vcpus = s.max_vcpus,
            disk = xml_escape(&self.disk.to_string_lossy()),
            seed = xml_escape(&self.seed.to_string_lossy()),
            mac = xml_escape(&self.mac),
            tap = xml_escape(&self.tap),
            console = xml_escape(&self.console.to_string_lossy()),
        )
    }
}

pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(accel: Accel) -> DomainSpec {
        DomainSpec {
            container_id: "c0ffee".into(),
            sandbox_id: "5a7d".into(),
            accel,
            shape: VmShape {
                vcpus: 1,
                max_vcpus: 4,
                memory_mib: 256,
                max_memory_mib: 1024,
            },
            disk: "/var/lib/arktos-node/vms/c0ffee/disk.qcow2".into(),
            seed: "/var/lib/arktos-node/vms/c0ffee/seed.iso".into(),
            tap: "akc0ffee".into(),
            mac: "02:00:00:00:00:01".into(),
            console: "/var/lib/arktos-node/vms/c0ffee/console.raw".into(),
        }
    }

    #[test]
    fn domain_has_growth_room_and_the_pod_nic() {
        let xml = spec(Accel::Tcg).to_xml();
        assert!(xml.starts_with("<domain type='qemu'>"));
        assert!(xml.contains("<name>arktos-c0ffee</name>"));
        assert!(xml.contains("<vcpu placement='static' current='1'>4</vcpu>"));
        assert!(xml.contains("<memory unit='MiB'>1024</memory>"));
        assert!(xml.contains("<currentMemory unit='MiB'>256</currentMemory>"));
        assert!(xml.contains("<target dev='akc0ffee' managed='no'/>"));
        assert!(xml.contains("<mac address='02:00:00:00:00:01'/>"));
        assert!(!xml.contains("host-passthrough"));
        assert!(spec(Accel::Kvm).to_xml().contains("host-passthrough"));
    }

    #[test]
    fn values_are_escaped() {
        assert_eq!(xml_escape("a'<b>&\""), "a&apos;&lt;b&gt;&amp;&quot;");
    }
}

//! The XML libvirt is given (domains, volumes, a storage pool) and the fleet's tags, kept
//! in the domain's `<metadata>` so a crash leaves VMs the next plan can list and adopt.

use std::collections::BTreeMap;

/// Namespace of the fleet's element in a domain's `<metadata>`.
pub const METADATA_NS: &str = "http://fleet-cli.invalid/libvirt/tags/1";

/// Tag holding the image a VM was created from (also part of the spec hash).
pub const IMAGE_TAG: &str = "fleet-libvirt:image";
/// Tag holding the instance type a VM was created with.
pub const TYPE_TAG: &str = "fleet-libvirt:type";
/// Tag holding when the VM was created (RFC 3339).
pub const CREATED_TAG: &str = "fleet-libvirt:created";

/// `text` escaped for an XML attribute or text node.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            c => out.push(c),
        }
    }
    out
}

fn unescape(text: &str) -> String {
    text.replace("&#10;", "\n")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The `<metadata>` element with `tags`.
pub fn metadata(tags: &BTreeMap<String, String>) -> String {
    let mut out = format!("<fleet:tags xmlns:fleet=\"{METADATA_NS}\">");
    for (k, v) in tags {
        out.push_str(&format!(
            "<fleet:tag key=\"{}\" value=\"{}\"/>",
            escape(k),
            escape(v)
        ));
    }
    out.push_str("</fleet:tags>");
    out
}

/// The tags in the fleet's metadata element as libvirt returns it (it may rename the
/// prefix and reorder whitespace, not attributes' values).
pub fn parse_tags(xml: &str) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    for element in xml.split('<').skip(1) {
        let Some(body) = element.split('>').next() else {
            continue;
        };
        let name = body.split_whitespace().next().unwrap_or("");
        if !(name == "tag" || name.ends_with(":tag")) {
            continue;
        }
        if let (Some(k), Some(v)) = (attribute(body, "key"), attribute(body, "value")) {
            tags.insert(k, v);
        }
    }
    tags
}

fn attribute(body: &str, name: &str) -> Option<String> {
    for quote in ['"', '\''] {
        let start = format!(" {name}={quote}");
        if let Some(i) = body.find(&start) {
            let rest = &body[i + start.len()..];
            return rest.find(quote).map(|end| unescape(&rest[..end]));
        }
    }
    None
}

/// What one domain is made of.
pub struct DomainXml<'a> {
    /// `qemu` (software emulation) or `kvm`.
    pub domain_type: &'a str,
    /// Domain name (the instance name).
    pub name: &'a str,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Storage pool holding the disk and seed volumes.
    pub pool: &'a str,
    /// The qcow2 overlay volume.
    pub disk: &'a str,
    /// The NoCloud seed volume, if any.
    pub seed: Option<&'a str>,
    /// Direct kernel boot: kernel, initrd and command line on the libvirt host.
    pub kernel: Option<(&'a str, &'a str, &'a str)>,
    /// `<interface>` element.
    pub interface: String,
    /// Console log file on the libvirt host.
    pub console_log: String,
    /// The fleet's tags.
    pub tags: &'a BTreeMap<String, String>,
}

impl DomainXml<'_> {
    /// The domain XML.
    pub fn render(&self) -> String {
        let os = match self.kernel {
            Some((kernel, initrd, cmdline)) => format!(
                "<kernel>{}</kernel><initrd>{}</initrd><cmdline>{}</cmdline>",
                escape(kernel),
                escape(initrd),
                escape(cmdline)
            ),
            None => "<boot dev='hd'/>".into(),
        };
        let seed = self.seed.map_or(String::new(), |s| {
            format!(
                "<disk type='volume' device='disk'><driver name='qemu' type='raw'/>\
                 <source pool='{}' volume='{}'/><target dev='vdb' bus='virtio'/><readonly/></disk>",
                escape(self.pool),
                escape(s)
            )
        });
        format!(
            "<domain type='{dtype}'>\
             <name>{name}</name>\
             <metadata>{metadata}</metadata>\
             <memory unit='MiB'>{mem}</memory>\
             <vcpu>{vcpus}</vcpu>\
             <os><type arch='x86_64'>hvm</type>{os}</os>\
             <features><acpi/></features>\
             <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>\
             <devices>\
             <disk type='volume' device='disk'><driver name='qemu' type='qcow2'/>\
             <source pool='{pool}' volume='{disk}'/><target dev='vda' bus='virtio'/></disk>\
             {seed}\
             {interface}\
             <serial type='pty'><log file='{log}' append='on'/><target port='0'/></serial>\
             <console type='pty'><target type='serial' port='0'/></console>\
             <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>\
             <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>\
             </devices></domain>",
            dtype = escape(self.domain_type),
            name = escape(self.name),
            metadata = metadata(self.tags),
            mem = self.memory_mib,
            vcpus = self.vcpus,
            pool = escape(self.pool),
            disk = escape(self.disk),
            interface = self.interface,
            log = escape(&self.console_log),
        )
    }
}

/// A qcow2 overlay of `backing` (a qcow2 file on the libvirt host).
pub fn overlay_volume(name: &str, capacity_gib: u64, backing: &str) -> String {
    format!(
        "<volume><name>{}</name><capacity unit='GiB'>{capacity_gib}</capacity>\
         <target><format type='qcow2'/></target>\
         <backingStore><path>{}</path><format type='qcow2'/></backingStore></volume>",
        escape(name),
        escape(backing)
    )
}

/// A raw volume of `bytes`.
pub fn raw_volume(name: &str, bytes: u64) -> String {
    format!(
        "<volume><name>{}</name><capacity unit='bytes'>{bytes}</capacity>\
         <target><format type='raw'/></target></volume>",
        escape(name)
    )
}

/// A directory storage pool at `path`.
pub fn dir_pool(name: &str, path: &str) -> String {
    format!(
        "<pool type='dir'><name>{}</name><target><path>{}</path></target></pool>",
        escape(name),
        escape(path)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_through_the_metadata_element_with_any_value() {
        let tags = BTreeMap::from([
            ("fleet:stack".to_string(), "ci".to_string()),
            ("fleet:name".to_string(), "a\"<b>&'c\nd".to_string()),
        ]);
        assert_eq!(parse_tags(&metadata(&tags)), tags);
        // As libvirt hands it back: its own prefix, single quotes.
        let back = "<tags xmlns=\"http://fleet-cli.invalid/libvirt/tags/1\">\n  <tag key='fleet:stack' value='ci'/>\n</tags>";
        assert_eq!(parse_tags(back)["fleet:stack"], "ci");
    }

    #[test]
    fn domain_xml_escapes_names_and_boots_the_kernel_when_given() {
        let tags = BTreeMap::new();
        let xml = DomainXml {
            domain_type: "qemu",
            name: "ci-0001",
            vcpus: 2,
            memory_mib: 2048,
            pool: "fleet",
            disk: "ci-0001.qcow2",
            seed: Some("ci-0001-cidata.img"),
            kernel: Some((
                "/img/vmlinuz",
                "/img/initrd.img",
                "root=/dev/vda console=ttyS0",
            )),
            interface: "<interface type='user'><model type='virtio'/></interface>".into(),
            console_log: "/var/log/libvirt/qemu/ci-0001-console.log".into(),
            tags: &tags,
        }
        .render();
        assert!(xml.starts_with("<domain type='qemu'><name>ci-0001</name>"));
        assert!(xml.contains("<kernel>/img/vmlinuz</kernel>"));
        assert!(xml.contains("volume='ci-0001-cidata.img'/><target dev='vdb'"));
        assert!(!xml.contains("<boot dev"));
    }
}

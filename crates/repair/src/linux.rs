//! The Linux repair steps (see the crate docs). Text edits are pure
//! functions, tested on their own; the session only reads and writes.

use crate::{run_step, Guestfish, Outcome, RepairPlan, RepairReport, StepResult};
use std::collections::BTreeMap;

pub(crate) fn repair(g: &Guestfish, root: &str, plan: &RepairPlan, report: &mut RepairReport) -> Result<(), (String, String)> {
    let mut step = |name: &str, f: &mut dyn FnMut() -> StepResult| run_step(report, name, f);
    let e = |e: crate::GfError| e.to_string();
    step("mount", &mut || mount(g, root).map_err(e))?;
    let uuids = step_uuids(g).map_err(|m| ("mount".to_string(), m))?;
    step("fstab", &mut || fstab(g, &uuids))?;
    step("bootloader", &mut || bootloader(g, &uuids))?;
    step("network", &mut || network(g, plan))?;
    step("guest-tools", &mut || guest_tools(g, plan).map_err(e))?;
    step("initramfs", &mut || initramfs(g, plan))?;
    Ok(())
}

fn mount(g: &Guestfish, root: &str) -> Result<(Outcome, Vec<String>), crate::GfError> {
    // "MOUNTPOINT: DEVICE" lines; shorter mount points first.
    let mut mps: Vec<(String, String)> = g.lines(&["inspect-get-mountpoints", root])?.iter().filter_map(|l| l.split_once(": ").map(|(m, d)| (m.to_string(), d.to_string()))).collect();
    mps.sort_by_key(|(m, _)| m.len());
    let mut details = Vec::new();
    for (mp, dev) in &mps {
        g.run(&["mount", dev, mp])?;
        details.push(format!("{dev} on {mp}"));
    }
    Ok((Outcome::Unchanged, details))
}

/// Kernel device name (as the guest named it on its old controller,
/// `sda1`) -> file system UUID. libguestfs names the disks `sda`, `sdb`
/// ... in the order they were added, which is the VM's disk order, so
/// `hda1`, `vda1`, `xvda1` and `sda1` all mean the appliance's `sda1`.
fn step_uuids(g: &Guestfish) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    for l in g.lines(&["list-filesystems"]).map_err(|e| e.to_string())? {
        let Some((dev, fs)) = l.split_once(": ") else { continue };
        if fs == "unknown" {
            continue;
        }
        let uuid = g.run(&["vfs-uuid", dev]).map_err(|e| e.to_string())?.trim().to_string();
        if let Some(name) = dev.strip_prefix("/dev/sd") {
            if !uuid.is_empty() {
                m.insert(name.to_string(), uuid);
            }
        }
    }
    Ok(m)
}

/// `/dev/sda1`, `/dev/hdb2`, `/dev/vda`, `/dev/xvdc1` -> `a1`, `b2`, `a`,
/// `c1` (the appliance-neutral part), or None for other names.
fn kernel_disk_name(dev: &str) -> Option<&str> {
    let rest = dev.strip_prefix("/dev/")?;
    let rest = ["xvd", "sd", "hd", "vd"].iter().find_map(|p| rest.strip_prefix(p))?;
    let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    (letters > 0 && rest[letters..].bytes().all(|b| b.is_ascii_digit())).then_some(rest)
}

/// Rewrites fstab lines whose device is a kernel disk name to `UUID=`.
/// Returns the new text and what changed; a kernel name without a known
/// UUID is an error (the guest would not find it either).
pub(crate) fn rewrite_fstab(text: &str, uuids: &BTreeMap<String, String>) -> Result<(String, Vec<String>), String> {
    let mut out = String::new();
    let mut changes = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        let dev = t.split_whitespace().next().unwrap_or("");
        match (t.starts_with('#'), kernel_disk_name(dev)) {
            (false, Some(n)) => {
                let uuid = uuids.get(n).ok_or_else(|| format!("/etc/fstab names {dev}, but no file system with a UUID is there"))?;
                let new = line.replacen(dev, &format!("UUID={uuid}"), 1);
                changes.push(format!("/etc/fstab: {dev} -> UUID={uuid}"));
                out.push_str(&new);
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    Ok((out, changes))
}

/// `root=` and `resume=` by kernel name -> `UUID=` in a boot loader or
/// kernel command-line file.
pub(crate) fn rewrite_cmdline(text: &str, file: &str, uuids: &BTreeMap<String, String>) -> Result<(String, Vec<String>), String> {
    let mut out = String::with_capacity(text.len());
    let mut changes = Vec::new();
    let mut rest = text;
    while let Some(i) = ["root=/dev/", "resume=/dev/"].iter().filter_map(|k| rest.find(k).map(|i| (i, *k))).min() {
        let (at, key) = i;
        let start = at + key.len() - "/dev/".len();
        let end = rest[start..].find(|c: char| c.is_whitespace() || c == '"' || c == '\'').map(|e| start + e).unwrap_or(rest.len());
        let dev = &rest[start..end];
        // Not a word of its own (e.g. `myroot=`): leave it.
        let own_word = at == 0 || rest[..at].ends_with(|c: char| c.is_whitespace() || c == '"' || c == '\'');
        out.push_str(&rest[..start]);
        match (own_word, kernel_disk_name(dev)) {
            (true, Some(n)) => {
                let uuid = uuids.get(n).ok_or_else(|| format!("{file}: {key}{} names a device with no file system UUID", &dev[5..]))?;
                out.push_str(&format!("UUID={uuid}"));
                changes.push(format!("{file}: {}{dev} -> UUID={uuid}", &key[..key.len() - 5]));
            }
            _ => out.push_str(dev),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    Ok((out, changes))
}

fn fstab(g: &Guestfish, uuids: &BTreeMap<String, String>) -> StepResult {
    let e = |e: crate::GfError| e.to_string();
    let Some(text) = g.read("/etc/fstab").map_err(e)? else {
        return Ok((Outcome::Unchanged, vec!["no /etc/fstab".into()]));
    };
    let (new, changes) = rewrite_fstab(&text, uuids)?;
    if changes.is_empty() {
        return Ok((Outcome::Unchanged, vec!["/etc/fstab names no device by kernel name".into()]));
    }
    g.write("/etc/fstab.lifeboat-orig", &text).map_err(e)?;
    g.write("/etc/fstab", &new).map_err(e)?;
    Ok((Outcome::Changed, changes))
}

fn bootloader(g: &Guestfish, uuids: &BTreeMap<String, String>) -> StepResult {
    let e = |e: crate::GfError| e.to_string();
    let mut files: Vec<String> = [
        "/boot/extlinux/extlinux.conf",
        "/boot/extlinux.conf",
        "/extlinux.conf",
        "/boot/syslinux/syslinux.cfg",
        "/syslinux.cfg",
        "/boot/grub/grub.cfg",
        "/boot/grub2/grub.cfg",
        "/boot/grub/menu.lst",
        "/etc/default/grub",
        "/etc/kernel/cmdline",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    files.extend(g.glob("/boot/loader/entries/*.conf").map_err(e)?);
    let mut changes = Vec::new();
    let mut seen = Vec::new();
    for f in &files {
        let Some(text) = g.read(f).map_err(e)? else { continue };
        seen.push(f.clone());
        let (mut new, c) = rewrite_cmdline(&text, f, uuids)?;
        if f == "/etc/default/grub" && new.lines().any(|l| l.trim() == "GRUB_DISABLE_LINUX_UUID=true") {
            // grub-mkconfig would write root=/dev/... again.
            new = new.replace("GRUB_DISABLE_LINUX_UUID=true", "#GRUB_DISABLE_LINUX_UUID=true (lifeboat: the kernel finds its root by UUID)");
            changes.push(format!("{f}: GRUB_DISABLE_LINUX_UUID=true commented out"));
        } else if c.is_empty() {
            continue;
        }
        changes.extend(c);
        g.write(f, &new).map_err(e)?;
    }
    if seen.is_empty() {
        return Err("found no boot loader configuration (extlinux, syslinux, GRUB, BLS) to check".into());
    }
    if changes.is_empty() {
        return Ok((Outcome::Unchanged, vec![format!("{}: root already by UUID or label", seen.join(", "))]));
    }
    Ok((Outcome::Changed, changes))
}

/// Files that may name a NIC by MAC or carry its addresses.
const NET_FILES: &[&str] = &[
    "/etc/udev/rules.d/70-persistent-net.rules",
    "/etc/network/interfaces",
    "/etc/network/interfaces.d/*",
    "/etc/netplan/*.yaml",
    "/etc/systemd/network/*.link",
    "/etc/systemd/network/*.network",
    "/etc/NetworkManager/system-connections/*",
    "/etc/sysconfig/network-scripts/ifcfg-*",
    "/etc/sysconfig/network/ifcfg-*",
];

/// Every spelling of `old` (either case, `:` or `-`) -> `new`.
pub(crate) fn replace_mac(text: &str, old: &str, new: &str) -> (String, usize) {
    let mut out = text.to_string();
    let mut n = 0;
    for (from, to) in [(old.to_ascii_lowercase(), new.to_ascii_lowercase()), (old.to_ascii_uppercase(), new.to_ascii_uppercase())] {
        for sep in [":", "-"] {
            let f = from.replace(':', sep);
            let t = to.replace(':', sep);
            n += out.matches(&f).count();
            out = out.replace(&f, &t);
        }
    }
    (out, n)
}

/// ifupdown: `iface X inet static` stanzas become `inet dhcp`, their
/// address lines go.
pub(crate) fn ifupdown_to_dhcp(text: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut changes = Vec::new();
    let mut in_static = false;
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        if w.first() == Some(&"iface") {
            in_static = w.len() >= 4 && w[2] == "inet" && w[3] == "static";
            if in_static {
                out.push_str(&line.replacen("static", "dhcp", 1));
                out.push('\n');
                changes.push(format!("interface {}: static -> dhcp", w[1]));
                continue;
            }
        } else if in_static && matches!(w.first(), Some(&("address" | "netmask" | "gateway" | "broadcast" | "network"))) {
            continue;
        } else if matches!(w.first(), Some(&("auto" | "allow-hotplug" | "mapping" | "source" | "source-directory"))) {
            in_static = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    (out, changes)
}

/// Interface names a configuration brings up (ifupdown's `iface`,
/// ifcfg's `DEVICE=`, networkd's `Name=`, NM's `interface-name=`).
fn configured_names(text: &str) -> Vec<String> {
    let mut v = Vec::new();
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        let name = match w.as_slice() {
            ["iface", n, ..] => Some(*n),
            _ => ["DEVICE=", "Name=", "interface-name="].iter().find_map(|k| l.trim().strip_prefix(k)).map(|s| s.trim_matches('"')),
        };
        if let Some(n) = name {
            if n != "lo" && !n.is_empty() && !v.iter().any(|x: &String| x == n) {
                v.push(n.to_string());
            }
        }
    }
    v
}

fn network(g: &Guestfish, plan: &RepairPlan) -> StepResult {
    let e = |e: crate::GfError| e.to_string();
    let mut files = Vec::new();
    for p in NET_FILES {
        if p.contains('*') {
            files.extend(g.glob(p).map_err(e)?);
        } else if g.is_file(p).map_err(e)? {
            files.push(p.to_string());
        }
    }
    let mut changes = Vec::new();
    let mut names = Vec::new();
    for f in &files {
        if !g.is_file(f).map_err(e)? {
            continue;
        }
        let Some(text) = g.read(f).map_err(e)? else { continue };
        let mut new = text.clone();
        for (old, mac) in &plan.macs {
            let (t, n) = replace_mac(&new, old, mac);
            if n > 0 {
                changes.push(format!("{f}: MAC {old} -> {mac} ({n}x)"));
            }
            new = t;
        }
        if plan.dhcp {
            if f.starts_with("/etc/network/interfaces") {
                let (t, c) = ifupdown_to_dhcp(&new);
                changes.extend(c.into_iter().map(|c| format!("{f}: {c}")));
                new = t;
            } else if f.contains("ifcfg-") && new.contains("BOOTPROTO=") {
                let t = new
                    .lines()
                    .filter(|l| !["IPADDR", "PREFIX", "NETMASK", "GATEWAY"].iter().any(|k| l.trim_start().starts_with(k)))
                    .map(|l| if l.trim_start().starts_with("BOOTPROTO=") { "BOOTPROTO=dhcp" } else { l })
                    .collect::<Vec<_>>()
                    .join("\n")
                    + "\n";
                if t != new {
                    changes.push(format!("{f}: BOOTPROTO=dhcp"));
                    new = t;
                }
            } else if f.ends_with(".network") && (new.contains("Address=") || new.contains("Gateway=")) {
                let t = new.lines().filter(|l| !l.trim_start().starts_with("Address=") && !l.trim_start().starts_with("Gateway=")).collect::<Vec<_>>().join("\n") + "\nDHCP=yes\n";
                changes.push(format!("{f}: DHCP=yes"));
                new = t;
            } else if f.contains("NetworkManager") && new.contains("method=manual") {
                changes.push(format!("{f}: ipv4 method=auto"));
                new = new.replace("method=manual", "method=auto");
            } else if f.starts_with("/etc/netplan") && new.contains("addresses") {
                return Err(format!("{f}: switching netplan's static addresses to DHCP is not supported; restore with network=keep and edit it"));
            }
        }
        for n in configured_names(&new) {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        if new != text {
            g.write(f, &new).map_err(e)?;
        }
    }
    // Names: ethN stay ethN with net.ifnames=0; a predictable name
    // (ens3, enp0s3) depends on the new slot, so a single NIC keeps its
    // configured name through a .link file matching its new MAC.
    let cmdline_has_ifnames0 = ["/boot/extlinux/extlinux.conf", "/boot/grub/grub.cfg", "/etc/default/grub", "/boot/syslinux/syslinux.cfg"]
        .iter()
        .any(|f| g.read(f).ok().flatten().is_some_and(|t| t.contains("net.ifnames=0")));
    let wants_pin = |n: &str| !(n.starts_with("eth") && cmdline_has_ifnames0);
    match (plan.nics.as_slice(), names.as_slice()) {
        ([mac], [name]) if wants_pin(name) => {
            let link = format!("/etc/systemd/network/10-lifeboat-{name}.link");
            if g.is_true(&["is-dir", "/etc/systemd"]).map_err(e)? {
                g.run(&["mkdir-p", "/etc/systemd/network"]).map_err(e)?;
                g.write(&link, &format!("# Written by lifeboat: the NIC keeps the name its configuration uses.\n[Match]\nMACAddress={mac}\n\n[Link]\nName={name}\n")).map_err(e)?;
                changes.push(format!("{link}: interface {name} pinned to MAC {mac}"));
            }
        }
        (nics, names) if names.iter().any(|n| wants_pin(n)) && nics.len() > 1 => {
            changes.push(format!("note: interfaces {} are configured by name and the VM has {} NICs; check their names after the first boot", names.join(", "), nics.len()));
        }
        _ => {}
    }
    if changes.iter().all(|c| c.starts_with("note:")) {
        let mut d = vec![format!(
            "checked {}; interfaces configured: {}",
            if files.is_empty() { "no network configuration files".to_string() } else { files.join(", ") },
            if names.is_empty() { "none".into() } else { names.join(", ") }
        )];
        d.extend(changes);
        return Ok((Outcome::Unchanged, d));
    }
    Ok((Outcome::Changed, changes))
}

fn guest_tools(g: &Guestfish, plan: &RepairPlan) -> Result<(Outcome, Vec<String>), crate::GfError> {
    let mut changes = Vec::new();
    for unit in &plan.disable {
        let mut links = g.glob(&format!("/etc/systemd/system/*.wants/{unit}.service"))?;
        links.extend(g.glob(&format!("/etc/rc[2345].d/S[0-9][0-9]{unit}"))?);
        for l in links {
            g.run(&["rm", &l])?;
            changes.push(format!("{unit}: removed {l}"));
        }
    }
    if changes.is_empty() {
        return Ok((Outcome::Unchanged, vec![format!("none of {} is enabled", plan.disable.join(", "))]));
    }
    Ok((Outcome::Changed, changes))
}

fn initramfs(g: &Guestfish, plan: &RepairPlan) -> StepResult {
    let e = |e: crate::GfError| e.to_string();
    if plan.drivers.is_empty() {
        return Ok((Outcome::Unchanged, vec!["the target needs no drivers".into()]));
    }
    let moddir = if g.is_true(&["is-dir", "/lib/modules"]).map_err(e)? { "/lib/modules" } else { "/usr/lib/modules" };
    let kernels: Vec<String> = g.lines(&["ls", moddir]).map_err(e)?.into_iter().filter(|k| g.is_file(&format!("{moddir}/{k}/modules.dep")).unwrap_or(false)).collect();
    if kernels.is_empty() {
        return Err(format!("no kernel with modules under {moddir}"));
    }
    // Every kernel must have every driver, as a module or built in.
    let mut modules: Vec<&str> = Vec::new();
    for k in &kernels {
        let dep = g.read(&format!("{moddir}/{k}/modules.dep")).map_err(e)?.unwrap_or_default();
        let builtin = g.read(&format!("{moddir}/{k}/modules.builtin")).map_err(e)?.unwrap_or_default();
        for d in &plan.drivers {
            let file = |t: &str| {
                t.lines().any(|l| {
                    l.split(':')
                        .next()
                        .is_some_and(|p| p.rsplit('/').next().is_some_and(|f| f.split('.').next() == Some(d.as_str()) || f.split('.').next().map(|x| x.replace('-', "_")) == Some(d.clone())))
                })
            };
            if file(&builtin) {
                continue;
            }
            if !file(&dep) {
                return Err(format!("kernel {k} has no driver {d} (neither a module nor built in): install a kernel with it before moving the guest to {}", plan.platform));
            }
            if !modules.contains(&d.as_str()) {
                modules.push(d);
            }
        }
    }
    let mut changes = Vec::new();
    if g.is_file("/etc/initramfs-tools/modules").map_err(e)? {
        let f = "/etc/initramfs-tools/modules";
        let text = g.read(f).map_err(e)?.unwrap_or_default();
        let have: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| !w.starts_with('#')).collect();
        let add: Vec<&str> = modules.iter().copied().filter(|m| !have.contains(m)).collect();
        if !add.is_empty() {
            let new = format!("{text}{}# added by lifeboat for {}\n{}\n", if text.ends_with('\n') || text.is_empty() { "" } else { "\n" }, plan.platform, add.join("\n"));
            g.write(f, &new).map_err(e)?;
            changes.push(format!("{f}: added {}", add.join(", ")));
        }
        let out = g.run(&["sh", "update-initramfs -u -k all 2>&1"]).map_err(|x| format!("update-initramfs in the guest: {x}"))?;
        changes.push(format!("update-initramfs -u -k all: {}", out.lines().filter(|l| l.contains("Generating")).collect::<Vec<_>>().join("; ")));
    } else if g.is_true(&["is-dir", "/etc/dracut.conf.d"]).map_err(e)? {
        let f = format!("/etc/dracut.conf.d/90-lifeboat-{}.conf", plan.platform);
        g.write(&f, &format!("# added by lifeboat for {}\nadd_drivers+=\" {} \"\n", plan.platform, modules.join(" "))).map_err(e)?;
        changes.push(format!("{f}: add_drivers {}", modules.join(", ")));
        g.run(&["sh", "dracut -f --regenerate-all 2>&1"]).map_err(|x| format!("dracut in the guest: {x}"))?;
        changes.push("dracut -f --regenerate-all".into());
    } else {
        return Err("neither initramfs-tools nor dracut found: cannot put the drivers into the initramfs".into());
    }
    // Check the result: each kernel's initramfs holds each module.
    for k in &kernels {
        let img = [format!("/boot/initrd.img-{k}"), format!("/boot/initramfs-{k}.img")].into_iter().find(|p| g.is_file(p).unwrap_or(false));
        let Some(img) = img else { return Err(format!("no initramfs for kernel {k} after the rebuild")) };
        let list = g.run(&["sh", &format!("(lsinitramfs {img} 2>/dev/null || lsinitrd {img} 2>/dev/null) | grep -o '[^/]*\\.ko[^/]*$' | sort -u")]).map_err(e)?;
        let inside: Vec<String> = list.lines().map(|l| l.split(".ko").next().unwrap_or("").replace('-', "_")).collect();
        let missing: Vec<&str> = modules.iter().copied().filter(|m| !inside.iter().any(|i| i == m)).collect();
        if !missing.is_empty() {
            return Err(format!("{img} was rebuilt but lacks {}", missing.join(", ")));
        }
        changes.push(format!("{img}: holds {}", modules.join(", ")));
    }
    Ok((Outcome::Changed, changes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuids() -> BTreeMap<String, String> {
        BTreeMap::from([("a1".to_string(), "1111-aaaa".to_string()), ("a2".to_string(), "2222-bbbb".to_string())])
    }

    #[test]
    fn fstab_kernel_names_become_uuids() {
        let t = "# /etc/fstab\n/dev/sda1 / ext4 errors=remount-ro 0 1\n/dev/hda2 none swap sw 0 0\nUUID=x /data ext4 defaults 0 2\nproc /proc proc defaults 0 0\n#/dev/sda9 /old ext4 defaults 0 0\n";
        let (new, c) = rewrite_fstab(t, &uuids()).unwrap();
        assert_eq!(new, "# /etc/fstab\nUUID=1111-aaaa / ext4 errors=remount-ro 0 1\nUUID=2222-bbbb none swap sw 0 0\nUUID=x /data ext4 defaults 0 2\nproc /proc proc defaults 0 0\n#/dev/sda9 /old ext4 defaults 0 0\n");
        assert_eq!(c.len(), 2);
        let e = rewrite_fstab("/dev/vdb1 /srv ext4 defaults 0 2\n", &uuids()).unwrap_err();
        assert!(e.contains("/dev/vdb1"), "{e}");
        assert_eq!(rewrite_fstab("/dev/mapper/vg-root / ext4 defaults 0 1\n", &uuids()).unwrap().1.len(), 0);
    }

    #[test]
    fn boot_entries_root_and_resume_become_uuids() {
        let t = "LABEL debian\n  APPEND root=/dev/sda1 ro resume=/dev/sda2 console=ttyS0 myroot=/dev/sda1\n";
        let (new, c) = rewrite_cmdline(t, "extlinux.conf", &uuids()).unwrap();
        assert_eq!(new, "LABEL debian\n  APPEND root=UUID=1111-aaaa ro resume=UUID=2222-bbbb console=ttyS0 myroot=/dev/sda1\n");
        assert_eq!(c.len(), 2);
        let g = "GRUB_CMDLINE_LINUX=\"root=/dev/vda1 quiet\"\n";
        assert_eq!(rewrite_cmdline(g, "grub", &uuids()).unwrap().0, "GRUB_CMDLINE_LINUX=\"root=UUID=1111-aaaa quiet\"\n");
        assert!(rewrite_cmdline("linux /vmlinuz root=/dev/sdc3\n", "grub.cfg", &uuids()).is_err());
        let same = "APPEND root=UUID=abc ro\n";
        assert_eq!(rewrite_cmdline(same, "x", &uuids()).unwrap(), (same.to_string(), vec![]));
    }

    #[test]
    fn macs_are_replaced_in_every_spelling() {
        let t = "SUBSYSTEM==\"net\", ATTR{address}==\"52:54:00:ab:34:56\", NAME=\"eth0\"\nHWADDR=52-54-00-AB-34-56\nMACAddress=52:54:00:AB:34:56\nmac=52:54:00:ab:34:57\n";
        let (new, n) = replace_mac(t, "52:54:00:ab:34:56", "52:54:00:0c:cd:ef");
        assert_eq!(n, 3);
        assert!(new.contains("==\"52:54:00:0c:cd:ef\"") && new.contains("HWADDR=52-54-00-0C-CD-EF") && new.contains("MACAddress=52:54:00:0C:CD:EF"), "{new}");
        assert!(new.contains("mac=52:54:00:ab:34:57"), "another NIC's MAC stays");
    }

    #[test]
    fn ifupdown_static_becomes_dhcp_and_names_are_found() {
        let t =
            "auto lo\niface lo inet loopback\n\nauto ens3\niface ens3 inet static\n    address 10.0.2.15/24\n    gateway 10.0.2.2\n    dns-nameservers 1.1.1.1\n\nauto ens4\niface ens4 inet dhcp\n";
        let (new, c) = ifupdown_to_dhcp(t);
        assert_eq!(new, "auto lo\niface lo inet loopback\n\nauto ens3\niface ens3 inet dhcp\n    dns-nameservers 1.1.1.1\n\nauto ens4\niface ens4 inet dhcp\n");
        assert_eq!(c, vec!["interface ens3: static -> dhcp".to_string()]);
        assert_eq!(configured_names(t), vec!["ens3".to_string(), "ens4".to_string()]);
        assert_eq!(configured_names("DEVICE=eth1\nBOOTPROTO=static\n"), vec!["eth1".to_string()]);
    }

    #[test]
    fn link_files_follow_the_new_mac_and_name_their_interface() {
        // A guest that names its NIC by MAC (tests/guest/build.sh's
        // debian-ide): the network step reads its .link files...
        assert!(NET_FILES.contains(&"/etc/systemd/network/*.link"));
        let link = "# The NIC of the old platform, named by its MAC.\n[Match]\nMACAddress=52:54:00:0e:10:00\n\n[Link]\nName=lan0\n";
        // ... moves the match to the new MAC, and keeps the name it gives.
        let (new, n) = replace_mac(link, "52:54:00:0e:10:00", "52:54:00:ab:cd:ef");
        assert_eq!((n, new.as_str()), (1, "# The NIC of the old platform, named by its MAC.\n[Match]\nMACAddress=52:54:00:ab:cd:ef\n\n[Link]\nName=lan0\n"));
        assert_eq!(configured_names(&new), vec!["lan0".to_string()]);
    }

    #[test]
    fn kernel_disk_names() {
        assert_eq!(kernel_disk_name("/dev/sda1"), Some("a1"));
        assert_eq!(kernel_disk_name("/dev/xvdb"), Some("b"));
        assert_eq!(kernel_disk_name("/dev/hdc12"), Some("c12"));
        assert_eq!(kernel_disk_name("/dev/sr0"), None);
        assert_eq!(kernel_disk_name("/dev/mapper/x"), None);
        assert_eq!(kernel_disk_name("/dev/vda1p"), None);
    }
}

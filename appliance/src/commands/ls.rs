use crate::commands::open_datastore;
use crate::DatastoreArg;
use lifeboat_ingest::attrs;
use lifeboat_store::{Node, NodeKind, Tree};

#[derive(clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub ds: DatastoreArg,
    /// Snapshot id (or a unique prefix) or "latest"
    pub snapshot: String,
    /// Directory inside the snapshot (default: its root)
    #[arg(default_value = "/")]
    pub dir: String,
    /// List everything below DIR, not just its entries
    #[arg(long, short = 'r')]
    pub recursive: bool,
    /// Print as JSON lines
    #[arg(long)]
    pub json: bool,
    /// Also show mtimes to the nanosecond, inode flags (chattr letters),
    /// ACLs and other extended attributes, one per line below the entry
    #[arg(long, short = 'l')]
    pub long: bool,
}

#[derive(Clone, Copy)]
enum Format {
    Plain,
    Long,
    Json,
}

pub fn run(a: LsArgs) -> anyhow::Result<u8> {
    let ds = open_datastore(&a.ds)?;
    let (_, snap) = ds.resolve_snapshot(&a.snapshot)?;
    let mut tree = ds.load_tree(&snap.tree)?;
    let format = match (a.json, a.long) {
        (true, _) => Format::Json,
        (false, true) => Format::Long,
        (false, false) => Format::Plain,
    };
    let mut prefix = String::new();
    for comp in a.dir.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let node = tree.find(comp.as_bytes()).ok_or_else(|| anyhow::anyhow!("'{}' is not in snapshot {}", a.dir, a.snapshot))?;
        match (node.kind, node.subtree) {
            (NodeKind::Dir, Some(id)) => {
                prefix.push('/');
                prefix.push_str(comp);
                tree = ds.load_tree(&id)?;
            }
            _ => {
                print_node(&prefix, node, format);
                return Ok(0);
            }
        }
    }
    list(&ds, &tree, &prefix, a.recursive, format)?;
    Ok(0)
}

fn list(ds: &lifeboat_store::Datastore, tree: &Tree, prefix: &str, recursive: bool, format: Format) -> anyhow::Result<()> {
    for n in &tree.nodes {
        print_node(prefix, n, format);
        if recursive {
            if let (NodeKind::Dir, Some(id)) = (n.kind, n.subtree) {
                list(ds, &ds.load_tree(&id)?, &format!("{prefix}/{}", n.name_lossy()), true, format)?;
            }
        }
    }
    Ok(())
}

/// An xattr value for people: text when it is printable UTF-8 (a
/// trailing NUL, as SELinux labels have, dropped), else hex.
fn value_text(v: &[u8]) -> Option<String> {
    let v = v.strip_suffix(b"\0").unwrap_or(v);
    std::str::from_utf8(v).ok().filter(|s| !s.chars().any(|c| c.is_control())).map(str::to_string)
}

fn hex(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

fn print_node(prefix: &str, n: &Node, format: Format) {
    let path = format!("{prefix}/{}", n.name_lossy());
    let mtime = chrono::DateTime::from_timestamp(n.mtime_ns.div_euclid(1_000_000_000), 0).unwrap_or_default();
    let xattrs: &[(Vec<u8>, Vec<u8>)] = n.ext.as_ref().map_or(&[], |e| &e.xattrs);
    let flags = n.ext.as_ref().map_or(0, |e| e.flags);
    let acl = |name: &[u8]| xattrs.iter().find(|(k, _)| k == name).and_then(|(_, v)| attrs::acl_text(v));
    if let Format::Json = format {
        let xattrs: Vec<_> = xattrs.iter().map(|(k, v)| serde_json::json!({"name": String::from_utf8_lossy(k), "value": value_text(v), "hex": hex(v)})).collect();
        let v = serde_json::json!({
            "path": path, "type": format!("{:?}", n.kind).to_lowercase(), "mode": n.mode & 0o7777,
            "size": n.size, "mtime": mtime, "mtime_ns": n.mtime_ns, "uid": n.uid, "gid": n.gid,
            "link_target": n.link_target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
            "nlink": n.nlink, "rdev": n.rdev,
            "flags": attrs::flag_letters(flags), "flags_raw": flags,
            "acl_access": acl(b"system.posix_acl_access"), "acl_default": acl(b"system.posix_acl_default"),
            "xattrs": xattrs,
        });
        println!("{v}");
        return;
    }
    let t = match n.kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::Socket => 's',
        NodeKind::File => '-',
    };
    let mut perms = String::new();
    for shift in [6, 3, 0] {
        let b = (n.mode >> shift) & 7;
        perms.push(if b & 4 != 0 { 'r' } else { '-' });
        perms.push(if b & 2 != 0 { 'w' } else { '-' });
        perms.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    let link = n.link_target.as_ref().map(|t| format!(" -> {}", String::from_utf8_lossy(t))).unwrap_or_default();
    println!("{t}{perms} {:>5} {:>5} {:>12} {} {path}{link}", n.uid, n.gid, n.size, mtime.format("%Y-%m-%d %H:%M:%S"));
    if let Format::Long = format {
        println!("    mtime: {}.{:09} ({} ns)", mtime.format("%Y-%m-%d %H:%M:%S"), n.mtime_ns.rem_euclid(1_000_000_000), n.mtime_ns);
        if flags != 0 {
            println!("    flags: {}", attrs::flag_letters(flags));
        }
        for (k, v) in xattrs {
            let k = String::from_utf8_lossy(k);
            match (k.as_ref(), attrs::acl_text(v)) {
                ("system.posix_acl_access", Some(t)) => println!("    acl: {t}"),
                ("system.posix_acl_default", Some(t)) => println!("    default acl: {t}"),
                _ => match value_text(v) {
                    Some(t) => println!("    xattr {k}=\"{t}\""),
                    None => println!("    xattr {k}=0x{}", hex(v)),
                },
            }
        }
    }
}

use crate::commands::open_datastore;
use crate::DatastoreArg;
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
}

pub fn run(a: LsArgs) -> anyhow::Result<u8> {
    let ds = open_datastore(&a.ds)?;
    let (_, snap) = ds.resolve_snapshot(&a.snapshot)?;
    let mut tree = ds.load_tree(&snap.tree)?;
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
                print_node(&prefix, node, a.json);
                return Ok(0);
            }
        }
    }
    list(&ds, &tree, &prefix, a.recursive, a.json)?;
    Ok(0)
}

fn list(ds: &lifeboat_store::Datastore, tree: &Tree, prefix: &str, recursive: bool, json: bool) -> anyhow::Result<()> {
    for n in &tree.nodes {
        print_node(prefix, n, json);
        if recursive {
            if let (NodeKind::Dir, Some(id)) = (n.kind, n.subtree) {
                list(ds, &ds.load_tree(&id)?, &format!("{prefix}/{}", n.name_lossy()), true, json)?;
            }
        }
    }
    Ok(())
}

fn print_node(prefix: &str, n: &Node, json: bool) {
    let path = format!("{prefix}/{}", n.name_lossy());
    let mtime = chrono::DateTime::from_timestamp(n.mtime_ns.div_euclid(1_000_000_000), 0).unwrap_or_default();
    if json {
        let v = serde_json::json!({
            "path": path, "type": format!("{:?}", n.kind).to_lowercase(), "mode": n.mode & 0o7777,
            "size": n.size, "mtime": mtime, "uid": n.uid, "gid": n.gid,
            "link_target": n.link_target.as_ref().map(|t| String::from_utf8_lossy(t).into_owned()),
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
}

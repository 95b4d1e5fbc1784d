use crate::commands::open_datastore;
use crate::DatastoreArg;
use lifeboat_store::BlobId;
use lifeboat_store::{group_by_source, KeepPolicy};

#[derive(clap::Args)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub ds: DatastoreArg,
    /// Snapshots to remove by id (instead of, or besides, keep rules)
    #[arg(value_name = "SNAPSHOT")]
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// ... of each of the last N days
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// ... of each of the last N ISO weeks
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// ... of each of the last N months
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// ... of each of the last N years
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
    /// Apply the rules only to snapshots with this tag (others are kept)
    #[arg(long = "tag", value_name = "T")]
    pub tags: Vec<String>,
    /// Show what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Run gc afterwards to reclaim the space
    #[arg(long)]
    pub gc: bool,
    /// Print the decisions as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ForgetArgs) -> anyhow::Result<u8> {
    let ds = open_datastore(&a.ds)?;
    let policy = KeepPolicy { last: a.keep_last, hourly: a.keep_hourly, daily: a.keep_daily, weekly: a.keep_weekly, monthly: a.keep_monthly, yearly: a.keep_yearly };
    if policy.is_empty() && a.snapshots.is_empty() {
        anyhow::bail!("no keep rule and no snapshot given, so nothing would be kept: give --keep-last/--keep-daily/... or snapshot ids");
    }
    if ds.config().append_only && !a.dry_run {
        return Err(lifeboat_store::StoreError::AppendOnly { path: ds.root().to_path_buf(), op: "forget" }.into());
    }
    let mut remove: Vec<BlobId> = Vec::new();
    for q in &a.snapshots {
        remove.push(ds.resolve_snapshot(q)?.0);
    }
    let all = ds.snapshots()?;
    let mut groups_json = Vec::new();
    if !policy.is_empty() {
        let considered: Vec<_> = all.iter().filter(|(_, s)| a.tags.iter().all(|t| s.tags.contains(t))).cloned().collect();
        for ((host, paths), group) in group_by_source(&considered) {
            let decisions = policy.apply(&group, &chrono::Local);
            if !a.json {
                println!("{host} {}:", paths.join(" "));
                for d in &decisions {
                    let what = if d.keep { format!("keep    {}", d.reasons.join(",")) } else { "remove".to_string() };
                    println!("  {} {}  {what}", d.id.short(), d.time.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S %Z"));
                }
            }
            remove.extend(decisions.iter().filter(|d| !d.keep).map(|d| d.id));
            groups_json.push(serde_json::json!({ "host": host, "paths": paths, "decisions": decisions }));
        }
    }
    remove.sort();
    remove.dedup();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "groups": groups_json,
                "remove": remove.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
                "dry_run": a.dry_run,
            }))?
        );
    }
    if a.dry_run {
        if !a.json {
            println!("would remove {} of {} snapshots (dry run)", remove.len(), all.len());
        }
        return Ok(0);
    }
    lifeboat_store::forget_snapshots(&ds, &remove)?;
    if !a.json {
        println!("removed {} of {} snapshots; run `lifeboat gc` to reclaim their space", remove.len(), all.len());
    }
    if a.gc {
        let rep = lifeboat_store::gc(&ds, &Default::default(), &|e| crate::commands::gc::show_event(&e, a.json))?;
        if !a.json {
            crate::commands::gc::print_report(&rep);
        }
    }
    Ok(0)
}

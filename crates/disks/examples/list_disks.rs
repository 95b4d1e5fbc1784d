//! Prints what the console would show: `cargo run --example list_disks [DISK...]`.
fn main() {
    let only = std::env::args().skip(1).map(Into::into).collect();
    let opts = lifeboat_disks::ListOptions { only, system_paths: vec![], search_datastores: true };
    match lifeboat_disks::list_disks(&opts) {
        Ok(disks) => {
            for d in disks {
                println!("{:#?}", d);
            }
        }
        Err(e) => eprintln!("error: {e}"),
    }
}

//! Migrate-back job: an instant-restored VM's disks move onto local
//! images in a directory under `restore_roots` while the guest runs
//! (`InstantVm::migrate_back`: QEMU mirrors each NBD disk into its image
//! and pivots). Afterwards the VM runs on those images, is released from
//! the datastore and is registered as an ordinary VM under its name.

use super::vm_restore::{in_dir, remove_in};
use super::{JobFailure, JobHandle, JobOutput, JobResult};
use crate::connector::VmRegistry;
use lifeboat_api_types::VmSource;
use lifeboat_state::confine::{open_beneath, Confinement, Grant, Open, PathUse};
use lifeboat_state::VmEntry;
use std::path::Path;

pub fn run(reg: &VmRegistry, name: &str, target: &str, format: &str, confine: &Confinement, grant: Grant, h: &JobHandle) -> JobResult {
    if format != "raw" && format != "qcow2" {
        return Err(JobFailure::Invalid(format!("format {format:?}: use qcow2 or raw")));
    }
    let place = confine.check(target, PathUse::RestoreTarget, grant)?;
    let dir = open_beneath(&place, Open::CreateDir)?;
    let instant = reg.instant();
    let mut vm = instant.take_for_migration(name).map_err(JobFailure::Refused)?;
    h.set_phase("migrating disks");
    // QEMU creates and opens the images through our descriptor of the
    // directory: the path cannot lead out of the root.
    let image = |id: &str| {
        let file = format!("{id}.{format}");
        remove_in(&dir, &file);
        in_dir(&dir, &file)
    };
    let log = |line: &str| h.log(line);
    match vm.migrate_back(&image, format, &log) {
        Ok(made) => {
            let qmp = vm.qmp.display().to_string();
            let files: Vec<String> = made.iter().filter_map(|p| p.file_name()).map(|f| Path::new(target).join(f).display().to_string()).collect();
            let pid = instant.end_migration(name, vm, true);
            let entry = VmEntry { name: name.to_string(), source: VmSource::Qmp { qmp: qmp.clone(), agent: None }, registered: chrono::Utc::now() };
            let registered = reg.add(entry).map_err(|e| JobFailure::Failed(format!("the VM runs on {} now, but registering it failed: {e}", files.join(", "))));
            h.log(&format!("VM {name} runs on local images now ({}); its exports are closed", files.join(", ")));
            registered?;
            Ok(JobOutput::new(&super::outcome::VmMigrateBackJobOutcome { vm: name.to_string(), files, pid, qmp }, vec![]))
        }
        Err(e) => {
            instant.end_migration(name, vm, false);
            Err(JobFailure::Failed(format!("migrating VM {name} back: {e:#}; it still runs from the backup")))
        }
    }
}

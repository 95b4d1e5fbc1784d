//! The Buildroot BR2_EXTERNAL tree, linted without Buildroot (which these
//! machines cannot fetch): buildroot/lint.sh checks the Kconfig with
//! kconfiglib, the package .mk under make with stubbed infrastructure,
//! the defconfig, GRUB scripts, genimage.cfg and the overlay.

mod common;

#[test]
fn buildroot_tree_passes_its_lint() {
    let script = common::workspace().join("buildroot/lint.sh");
    let out = std::process::Command::new("bash").arg(&script).output().expect("run buildroot/lint.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "buildroot/lint.sh failed:\n{text}");
    for check in ["Config.in parses", "BR2_PACKAGE_LIFEBOAT selectable", "lifeboat.mk", "genimage.cfg builds disk.img", "all checks passed"] {
        assert!(text.contains(check), "lint did not report {check:?}:\n{text}");
    }
}

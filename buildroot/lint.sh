#!/usr/bin/env bash
# Checks the BR2_EXTERNAL tree without Buildroot itself (which cannot be
# fetched on the build machines): Kconfig syntax and semantics with
# kconfiglib, the package .mk under make with stubbed infrastructure (its
# variables, and its systemd install hook run into a scratch target), the
# defconfig, GRUB scripts (grub-script-check), genimage.cfg (genimage run on
# stand-in images), the post-build script and the overlay's unit links.
# Prints what it checked; exits non-zero on the first problem.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
export BR2_EXTERNAL_LIFEBOAT_PATH=$HERE
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
ok() { echo "lint: ok: $*"; }
die() { echo "lint: FAIL: $*" >&2; exit 1; }

# --- external.desc
grep -Eq '^name: [A-Za-z0-9_]+$' "$HERE/external.desc" || die "external.desc: no valid 'name:' line"
[[ $(sed -n 's/^name: //p' "$HERE/external.desc") == LIFEBOAT ]] || die "external.desc: name must be LIFEBOAT (BR2_EXTERNAL_LIFEBOAT_PATH)"
ok "external.desc"

# --- Kconfig
python3 - "$HERE" "$WORK" <<'PY'
import os, re, sys
import kconfiglib
here, work = sys.argv[1], sys.argv[2]
ours = "BR2_PACKAGE_LIFEBOAT"
top = os.path.join(work, "Kconfig")
with open(top, "w") as f:
    f.write('mainmenu "lint"\nsource "$BR2_EXTERNAL_LIFEBOAT_PATH/Config.in"\n')
# Pass 1: syntax, and the Buildroot symbols the tree refers to.
k = kconfiglib.Kconfig(top, warn_to_stderr=False)
undefined = sorted(s.name for s in k.unique_defined_syms + list(k.syms.values()) if not s.nodes and s.name.startswith("BR2_"))
undefined = sorted(set(undefined))
defined = sorted(s.name for s in k.unique_defined_syms)
if defined != [ours]:
    sys.exit(f"lint: FAIL: Config.in defines {defined}, expected [{ours}]")
bad = [w for w in k.warnings if "undefined" not in w]
if bad:
    sys.exit("lint: FAIL: kconfiglib warnings:\n" + "\n".join(bad))
print(f"lint: ok: Config.in parses; Buildroot symbols it relies on: {' '.join(undefined)}")
# Pass 2: stand-ins for those (bool, y), then the package must be
# selectable and pull in what it selects.
with open(top, "w") as f:
    f.write('mainmenu "lint"\n')
    for s in undefined:
        f.write(f'config {s}\n\tbool "{s}"\n\tdefault y\n')
    f.write('source "$BR2_EXTERNAL_LIFEBOAT_PATH/Config.in"\n')
k = kconfiglib.Kconfig(top, warn_to_stderr=False)
if k.warnings:
    sys.exit("lint: FAIL: kconfiglib warnings with stand-ins:\n" + "\n".join(k.warnings))
sym = k.syms[ours]
if not sym.visibility:
    sys.exit(f"lint: FAIL: {ours} is not visible with every dependency set")
sym.set_value(2)
if sym.tri_value != 2:
    sys.exit(f"lint: FAIL: {ours} cannot be set")
selected = sorted({s.name for s, _ in sym.selects})
# Pass 3: the defconfig sets the package and everything it selects.
defconfig = open(os.path.join(here, "configs/lifeboat_defconfig")).read()
setting = dict(re.findall(r"^(BR2_\w+)=(.*)$", defconfig, re.M))
for line in defconfig.splitlines():
    if line and not line.startswith("#") and not re.match(r"^BR2_\w+=(y|\".*\"|-?\d+|0x[0-9a-fA-F]+)$", line):
        sys.exit(f"lint: FAIL: lifeboat_defconfig: malformed line: {line}")
if setting.get(ours) != "y":
    sys.exit(f"lint: FAIL: lifeboat_defconfig does not set {ours}=y")
missing = [s for s in selected if setting.get(s) != "y"]
if missing:
    sys.exit(f"lint: FAIL: lifeboat_defconfig lacks what {ours} selects: {' '.join(missing)}")
for s in undefined:
    if s.startswith("BR2_INIT_SYSTEMD") and setting.get(s) != "y":
        sys.exit(f"lint: FAIL: lifeboat_defconfig must set {s}=y (the package depends on it)")
for path in re.findall(r"\$\(BR2_EXTERNAL_LIFEBOAT_PATH\)/([^\" ]+)", defconfig):
    if not os.path.exists(os.path.join(here, path)):
        sys.exit(f"lint: FAIL: lifeboat_defconfig names a missing file: {path}")
print(f"lint: ok: {ours} selectable; selects {' '.join(selected)}; lifeboat_defconfig sets them and its files exist")
PY

# --- the package .mk under make, with the infrastructure stubbed
VERSION=$(awk -F'"' '/^\[workspace.package\]/{p=1} p && /^version/{print $2; exit}' "$REPO/Cargo.toml")
cat > "$WORK/harness.mk" <<EOF
BR2_EXTERNAL_LIFEBOAT_PATH := $HERE
STAGING_DIR := /nonexistent/staging
HOST_DIR := /nonexistent/host
TARGET_DIR := $WORK/target
INSTALL := install
PKG_COMMON_CARGO_ENV := CARGO_HOME=/nonexistent/cargo-home
# cargo-package stand-in: records that the .mk evaluated it.
cargo-package = \$(eval LIFEBOAT_EVALUATED := yes)
include \$(BR2_EXTERNAL_LIFEBOAT_PATH)/external.mk
# Buildroot runs the hooks with \$(@D) the package's build directory: the
# targets below are named inside the source tree to get the same.
.PHONY: check $REPO/install-systemd $REPO/vendor
check:
	test "\$(LIFEBOAT_EVALUATED)" = yes
	test "\$(LIFEBOAT_VERSION)" = "$VERSION"
	test -f "\$(LIFEBOAT_SITE)/Cargo.toml" -a -f "\$(LIFEBOAT_SITE)/Cargo.lock"
	test -f "\$(LIFEBOAT_SITE)/\$(LIFEBOAT_SUBDIR)/Cargo.toml"
	grep -q '^name = "lifeboat"' "\$(LIFEBOAT_SITE)/\$(LIFEBOAT_SUBDIR)/Cargo.toml"
	test "\$(LIFEBOAT_SITE_METHOD)" = local
	test -n "\$(filter LIFEBOAT_VENDOR_LOCAL,\$(LIFEBOAT_POST_RSYNC_HOOKS))"
$REPO/install-systemd:
	\$(LIFEBOAT_INSTALL_INIT_SYSTEMD)
$REPO/vendor:
	\$(LIFEBOAT_VENDOR_LOCAL)
EOF
make -s --warn-undefined-variables -f "$WORK/harness.mk" -n check "$REPO/install-systemd" "$REPO/vendor" > /dev/null 2> "$WORK/make.err" || { cat "$WORK/make.err" >&2; die "make -n on the package .mk"; }
if grep -v "undefined variable '\(MAKECMDGOALS\|LIFEBOAT_EVALUATED\|LIFEBOAT_POST_RSYNC_HOOKS\)'" "$WORK/make.err" | grep -q .; then
  cat "$WORK/make.err" >&2; die "make warnings on the package .mk"
fi
make -s -f "$WORK/harness.mk" check || die "package .mk variables"
make -s -f "$WORK/harness.mk" "$REPO/install-systemd" || die "LIFEBOAT_INSTALL_INIT_SYSTEMD"
for u in lifeboat.service lifeboat-console@.service; do
  [[ -s $WORK/target/usr/lib/systemd/system/$u ]] || die "the install hook did not install $u"
done
ok "lifeboat.mk: variables, make -n of every hook, systemd install hook into a scratch target"

# --- the overlay's unit links point at installed units
overlay=$HERE/board/lifeboat/rootfs-overlay
while IFS= read -r link; do
  target=$(readlink "$link")
  case $target in
    /dev/null) ;;
    /usr/lib/systemd/system/*) [[ -f $WORK/target$target ]] || die "$link -> $target: not installed by the package" ;;
    *) die "$link -> $target: unexpected link" ;;
  esac
done < <(find "$overlay" -type l)
ok "rootfs-overlay links"

# --- GRUB scripts, post-build script
if command -v grub-script-check >/dev/null; then
  grub-script-check "$overlay/boot/grub/grub.cfg" || die "grub.cfg"
  grub-script-check "$HERE/board/lifeboat/grub-builtin.cfg" || die "grub-builtin.cfg"
  ok "grub-script-check"
else
  echo "lint: skipped: grub-script-check (grub-common) not installed"
fi
sh -n "$HERE/board/lifeboat/post-build.sh"
mkdir -p "$WORK/pb/usr/bin" && install -m 0755 /bin/true "$WORK/pb/usr/bin/lifeboat"
sh "$HERE/board/lifeboat/post-build.sh" "$WORK/pb" && [[ -d $WORK/pb/var/lib/lifeboat && -f $WORK/pb/etc/machine-id ]] || die "post-build.sh"
ok "post-build.sh"

# --- genimage.cfg on stand-in images
if command -v genimage >/dev/null; then
  in=$WORK/gi-in; mkdir -p "$in" "$WORK/gi-root" "$WORK/gi-out"
  head -c 512 /dev/zero > "$in/boot.img"
  head -c 32768 /dev/zero > "$in/grub.img"
  truncate -s 64M "$in/rootfs.ext2" && mke2fs -q -F -t ext4 "$in/rootfs.ext2"
  genimage --config "$HERE/board/lifeboat/genimage.cfg" --inputpath "$in" --outputpath "$WORK/gi-out" \
    --rootpath "$WORK/gi-root" --tmppath "$WORK/gi-tmp" > "$WORK/genimage.log" 2>&1 || { cat "$WORK/genimage.log" >&2; die "genimage"; }
  sfdisk -d "$WORK/gi-out/disk.img" > "$WORK/pt" 2>/dev/null
  grep -q 'label-id: 0x1feb0a70' "$WORK/pt" || die "disk.img: disk signature is not 0x1feb0a70 (grub.cfg's PARTUUID)"
  grep -q 'disk.img1 : start=        2048' "$WORK/pt" || die "disk.img: root partition does not start at 1 MiB"
  ok "genimage.cfg builds disk.img (MBR 0x1feb0a70, root at 1 MiB)"
else
  echo "lint: skipped: genimage not installed"
fi
echo "lint: all checks passed"

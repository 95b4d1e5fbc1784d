################################################################################
#
# lifeboat
#
################################################################################

# The version of the workspace (Cargo.toml [workspace.package]); lint.sh
# checks that they agree.
LIFEBOAT_VERSION = 0.1.0
# Built from this source tree (the directory above buildroot/). For a
# release build point SITE at a tarball or git tag instead: then Buildroot's
# cargo download post-process vendors the crates and the hook below is not
# used.
LIFEBOAT_SITE = $(BR2_EXTERNAL_LIFEBOAT_PATH)/..
LIFEBOAT_SITE_METHOD = local
LIFEBOAT_LICENSE = AGPL-3.0-or-later
# The binary crate inside the workspace: cargo build/install run there,
# Cargo.lock is the workspace's.
LIFEBOAT_SUBDIR = appliance
LIFEBOAT_DEPENDENCIES = host-clang rocksdb util-linux zstd lz4

# rocksdb from Buildroot (librocksdb-sys links it instead of compiling
# its bundled copy); bindgen (librocksdb-sys, libblkid-rs) uses host
# libclang against the staging headers. Exported variables win over the
# workspace's .cargo/config.toml [env], which names the Debian paths.
LIFEBOAT_CARGO_ENV = \
	ROCKSDB_LIB_DIR=$(STAGING_DIR)/usr/lib \
	ROCKSDB_INCLUDE_DIR=$(STAGING_DIR)/usr/include \
	LIBCLANG_PATH=$(HOST_DIR)/lib \
	BINDGEN_EXTRA_CLANG_ARGS="--sysroot=$(STAGING_DIR)" \
	PKG_CONFIG_ALLOW_CROSS=1

LIFEBOAT_CARGO_BUILD_OPTS = --bin lifeboat

# A local site is rsynced, not downloaded, so the cargo download
# post-process never vendors its crates: do it here (needs the network at
# build time, like `cargo fetch`).
ifeq ($(LIFEBOAT_SITE_METHOD),local)
define LIFEBOAT_VENDOR_LOCAL
	cd $(@D) && $(PKG_COMMON_CARGO_ENV) cargo vendor --locked --versioned-dirs VENDOR > $(@D)/.cargo-vendor.toml
	mkdir -p $(@D)/.cargo
	cat $(@D)/.cargo-vendor.toml >> $(@D)/.cargo/config.toml
endef
LIFEBOAT_POST_RSYNC_HOOKS += LIFEBOAT_VENDOR_LOCAL
endif

define LIFEBOAT_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/image-build/rootfs/etc/systemd/system/lifeboat-console@.service \
		$(TARGET_DIR)/usr/lib/systemd/system/lifeboat-console@.service
	if [ -f $(@D)/systemd/lifeboat.service ]; then \
		$(INSTALL) -D -m 0644 $(@D)/systemd/lifeboat.service $(TARGET_DIR)/usr/lib/systemd/system/lifeboat.service; \
	else \
		$(INSTALL) -D -m 0644 $(@D)/image-build/units/lifeboat.service.placeholder \
			$(TARGET_DIR)/usr/lib/systemd/system/lifeboat.service; \
	fi
endef

$(eval $(cargo-package))

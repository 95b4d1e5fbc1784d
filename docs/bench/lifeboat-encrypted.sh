# Lifeboat with an encrypted datastore, for the shared benchmark:
#   PATH=$CARGO_TARGET_DIR/release:$PATH ../shared/bench/run.sh \
#     --ours docs/bench/lifeboat-encrypted.sh --only restic,lifeboat ...
# The passphrase comes from the environment (argon2id runs once per command).
BIN=lifeboat
export LIFEBOAT_PASSWORD=bench
VERSION='lifeboat --version'
INIT='lifeboat datastore init --encrypt {repo}'
BACKUP='lifeboat backup --datastore {repo} --tag {snap} .'
RESTORE='lifeboat restore --datastore {repo} latest {dst}'

# Shared by the hack/ entry points: installs what is missing, idempotently,
# and keeps every build cache outside the clone so warm runs are fast.
# shellcheck shell=bash
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export ARKTOS_HOME=${ARKTOS_HOME:-$HOME/.cache/arktos}
# One target dir per clone: cargo names units alike in every clone of the
# same workspace, so clones sharing a target dir overwrite each other's
# binaries.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ARKTOS_HOME/target/$(printf %s "$ROOT" | sha256sum | cut -c1-12)}
# Go fetches a newer toolchain through the module proxy when go.mod asks
# for one the installed Go is older than.
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
export GOFLAGS=${GOFLAGS:--mod=readonly}

# Build and runtime needs of the workspace: protoc for the CRI protos,
# libvirt headers for the virt crate; the local cluster's real node:
# libvirt/QEMU, containerd and runc, the CNI plugins, iproute2, genisoimage
# (cloud-init seeds), skopeo (pushes the test images), and what the guest
# and image builders use (hack/guest/build, hack/images/build).
DEBIAN_PACKAGES=(protobuf-compiler libvirt-dev pkg-config gcc libc6-dev git ca-certificates curl
  libvirt-daemon-system qemu-system-x86 qemu-utils containerd runc containernetworking-plugins
  iproute2 genisoimage skopeo busybox-static syslinux syslinux-common mtools dosfstools cpio)

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_debian_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_toolchains() {
  # Go 1.21+ fetches the exact toolchain go.mod asks for by itself.
  command -v go >/dev/null 2>&1 \
    || die "no Go toolchain: install Go 1.21 or newer (https://go.dev/dl), then run this again"
  command -v cargo >/dev/null 2>&1 \
    || die "no Rust toolchain: install one with rustup (https://rustup.rs), then run this again"
}

# libvirt runs QEMU as libvirt-qemu:kvm. Where udev never ran (a brand-new
# VM or container), /dev/kvm is root:root 0600: QEMU cannot open it and
# libvirt re-probes QEMU on every call (a `virsh define` took 40 s). udev's
# rule makes it root:kvm 0660; do the same. Whether KVM then really runs
# guests (nested KVM often does not) arktos-node finds out by itself.
ensure_kvm_device() {
  [ -c /dev/kvm ] || return 0
  getent group kvm >/dev/null || as_root groupadd --system kvm
  local was
  was=$(stat -c '%U:%G %a' /dev/kvm)
  if [ "$(stat -c %G /dev/kvm)" != kvm ] || [ $(( 0$(stat -c %a /dev/kvm) & 060 )) -ne $(( 060 )) ]; then
    as_root chgrp kvm /dev/kvm
    as_root chmod g+rw /dev/kvm
    say "/dev/kvm was $was; made it $(stat -c '%U:%G %a' /dev/kvm) as udev's rule does, so QEMU (libvirt-qemu:kvm) can open it"
  fi
}

# The kubelet of the real node evicts pods when the disk runs low (below
# 10% or 10 GiB or so), and a full disk fails builds in odd places: say so
# before anything starts rather than after a test times out.
check_free_disk() {
  local free_kib
  free_kib=$(df -Pk "$ARKTOS_HOME" | awk 'NR==2 {print $4}')
  if [ "${free_kib:-0}" -lt $((20 * 1024 * 1024)) ]; then
    say "WARNING: only $((free_kib / 1024 / 1024)) GiB free under $ARKTOS_HOME; builds need about 15 GiB and the real node's kubelet evicts pods when the disk is nearly full (old cargo target dirs under $ARKTOS_HOME/target can go)"
  fi
}

ensure_all() {
  ensure_debian_packages "${DEBIAN_PACKAGES[@]}"
  ensure_kvm_device
  ensure_toolchains
  mkdir -p "$ARKTOS_HOME"
  check_free_disk
  cd "$ROOT"
}

# Builds the launcher and every binary of the workspace.
build_workspace() {
  say "building the workspace (cargo; target dir $CARGO_TARGET_DIR)"
  cargo build --workspace --bins --locked
}

launcher() {
  "$CARGO_TARGET_DIR/debug/arktos-local" "$@"
}

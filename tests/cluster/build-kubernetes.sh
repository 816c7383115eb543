#!/usr/bin/env bash
# Builds Kubernetes v1.20.2 (server + kubectl) from Debian bookworm's source
# package and a pause image, into $TB_CACHE/k8s-v1.20.2/:
#   bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy,kubectl}
#   pause-image.tar   (docker-archive, tag $TB_PAUSE_IMAGE)
#
# Does nothing when the cache is complete. A cold build takes several minutes
# on 2 cores; it runs niced so it does not starve other work.
#
# Recipe (see the project's local-kubernetes-cluster reference):
#   - source: `apt-get source --download-only kubernetes=<version>` through a
#     private deb-src sources list (the system's apt sources are not touched);
#     only the orig tarball is used (it holds the full tree with vendor/).
#   - REQUIRED patch: vendored github.com/modern-go/reflect2 v1.0.1 is unsafe
#     with Go >= 1.18 (the apiserver dies after minutes with
#     "fatal error: fault ... aeshashbody"). Its .go/.s files are replaced by
#     Debian's golang-github-modern-go-reflect2-dev (1.0.2).
#   - build with the Kubernetes Makefile (plain `go build` fails under Go 1.19).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib.sh"

REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
K8S_TARGETS=("${TB_K8S_BINARIES[@]}")

if k8s_cache_complete; then
  log "Kubernetes $TB_K8S_VERSION already built in $TB_K8S_DIR"
  exit 0
fi

"$HERE/install-deps.sh"

mkdir -p "$TB_CACHE"
# One build at a time (two cluster-up runs started together share the cache).
exec 9>"$TB_CACHE/.build-kubernetes.lock"
flock 9
if k8s_cache_complete; then
  log "Kubernetes $TB_K8S_VERSION was built by a concurrent run"
  exit 0
fi

# Left over by an interrupted earlier run.
rm -rf "$TB_CACHE"/build.*
work=$(mktemp -d "$TB_CACHE/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
started=$SECONDS

# debian_mirror PATTERN DEFAULT: first mirror URI in the system's apt
# sources whose path ends in PATTERN (e.g. /debian), else DEFAULT.
debian_mirror() {
  local uri
  uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
    grep -v '^\s*#' | grep -oE "https?://[^ ]+$1/?( |$)" | head -n1 | tr -d ' ' || true)
  echo "${uri:-$2}"
}

# --- 1. Fetch the source package through a private apt configuration ----------
fetch_source() {
  local apt=$work/apt mirror security
  mirror=$(debian_mirror /debian http://deb.debian.org/debian)
  security=$(debian_mirror /debian-security http://deb.debian.org/debian-security)
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources.list.d" "$work/src"
  cat >"$apt/sources.list" <<EOF
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/} bookworm main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/} bookworm-updates main
deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${security%/} bookworm-security main
EOF
  local opts=(
    -o "Dir::Etc::SourceList=$apt/sources.list"
    -o "Dir::Etc::SourceParts=$apt/sources.list.d"
    -o "Dir::State::Lists=$apt/lists"
    -o "Dir::Cache=$apt/cache"
    -o APT::Sandbox::User=root
  )
  log "fetching source package kubernetes=$TB_K8S_DEB_VERSION"
  apt-get "${opts[@]}" -q update >"$work/apt-update.log" 2>&1 || {
    cat "$work/apt-update.log" >&2
    die "apt-get update (private deb-src list) failed"
  }
  (cd "$work/src" && apt-get "${opts[@]}" -q source --download-only "kubernetes=$TB_K8S_DEB_VERSION") >&2
  local orig
  orig=$(ls "$work"/src/kubernetes_*.orig.tar.*)
  tar -xf "$orig" -C "$work/src"
  rm -f "$work"/src/kubernetes_*
  SRC=$(dirname "$(ls "$work"/src/*/build/pause/linux/pause.c)")
  SRC=${SRC%/build/pause/linux}
}

# --- 2. Patch vendored reflect2 with Debian's 1.0.2 -----------------------------
patch_reflect2() {
  local dst=$SRC/vendor/github.com/modern-go/reflect2
  [[ -d $dst && -d $REFLECT2_SRC ]] || die "reflect2 sources missing ($dst, $REFLECT2_SRC)"
  log "replacing vendored reflect2 with $REFLECT2_SRC"
  rm -f "$dst"/*.go "$dst"/*.s
  find "$REFLECT2_SRC" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' \
    -exec cp {} "$dst/" \;
}

# --- 3. Build the Go binaries ----------------------------------------------------
build_binaries() {
  local what=() t missing=0
  for t in "${K8S_TARGETS[@]}"; do [[ -s $TB_K8S_BIN/$t ]] || missing=1; done
  if ((missing == 0)); then
    log "binaries already in $TB_K8S_BIN"
    return
  fi
  for t in "${K8S_TARGETS[@]}"; do what+=("cmd/$t"); done
  log "building ${K8S_TARGETS[*]} (several minutes)"
  (
    cd "$SRC"
    rm -rf _output # a failed earlier attempt leaves broken generator binaries
    mkdir -p .go/src/k8s.io
    ln -sfn ../../.. .go/src/k8s.io/kubernetes
    env GOPATH="$SRC/.go" GOCACHE="$work/gocache" GOPROXY=off HOME="$work/home" CGO_ENABLED=0 \
      nice -n 10 make WHAT="${what[*]}"
  ) >"$work/build.log" 2>&1 || {
    tail -n 60 "$work/build.log" >&2
    die "Kubernetes build failed"
  }
  mkdir -p "$TB_K8S_BIN"
  for t in "${K8S_TARGETS[@]}"; do
    install -m 0755 "$SRC/_output/bin/$t" "$TB_K8S_BIN/.$t.tmp"
    mv -f "$TB_K8S_BIN/.$t.tmp" "$TB_K8S_BIN/$t"
  done
  log "binaries installed in $TB_K8S_BIN ($((SECONDS - started))s so far)"
}

# --- 4. Pause image ------------------------------------------------------------------
build_pause() {
  [[ -s $TB_PAUSE_TAR ]] && return
  log "building pause image $TB_PAUSE_IMAGE"
  gcc -Os -Wall -Werror -static -DVERSION="v$TB_PAUSE_VERSION-debian" \
    -o "$work/pause" "$SRC/build/pause/linux/pause.c"
  python3 "$HERE/build-image.py" --tag "$TB_PAUSE_IMAGE" --binary "$work/pause:/pause" \
    --entrypoint '["/pause"]' --user 65535:65535 -o "$TB_PAUSE_TAR.tmp"
  mv -f "$TB_PAUSE_TAR.tmp" "$TB_PAUSE_TAR"
}

fetch_source
patch_reflect2
build_binaries
build_pause
"$TB_K8S_BIN/kubectl" version --client --short >&2 2>/dev/null || true
log "Kubernetes $TB_K8S_VERSION built in $((SECONDS - started))s"

#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries that the tests and the local
# cluster run, from the Go module proxy, at the versions pinned in
# hack/controlplane/go.mod. Release downloads are not used: every binary is
# compiled here.
#
# Usage: hack/build-control-plane.sh [binary ...]
#   With no arguments it builds all of them. Binaries already in the cache
#   are skipped, so a warm run costs nothing.
#
# The cache lives outside the repository, keyed by Kubernetes version, so
# every clone on the machine shares it:
#   ${K8S_ASSETS:-${XDG_DATA_HOME:-$HOME/.local/share}/friend-deletion-operator/k8s/<version>}
# Set K8S_ASSETS to use another folder.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
module="$root/hack/controlplane"

k8s_version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$module/go.mod")
if [[ -z "$k8s_version" ]]; then
	echo "error: no k8s.io/kubernetes version in $module/go.mod" >&2
	exit 1
fi
k8s_minor=$(echo "$k8s_version" | cut -d. -f2)
assets=${K8S_ASSETS:-${XDG_DATA_HOME:-$HOME/.local/share}/friend-deletion-operator/k8s/$k8s_version}

# name|Go package. Order matters only for speed: the first build compiles most
# of what the later ones share.
all=(
	"kube-apiserver|k8s.io/kubernetes/cmd/kube-apiserver"
	"etcd|go.etcd.io/etcd/server/v3"
	"kube-controller-manager|k8s.io/kubernetes/cmd/kube-controller-manager"
	"kube-scheduler|k8s.io/kubernetes/cmd/kube-scheduler"
	"kwok|sigs.k8s.io/kwok/cmd/kwok"
	"kubectl|k8s.io/kubernetes/cmd/kubectl"
)

wanted=("$@")
selected=()
for entry in "${all[@]}"; do
	name=${entry%%|*}
	if [[ ${#wanted[@]} -eq 0 ]] || [[ " ${wanted[*]} " == *" $name "* ]]; then
		selected+=("$entry")
	fi
done
if [[ ${#selected[@]} -eq 0 ]]; then
	echo "error: unknown binary in: $*; known: kube-apiserver etcd kube-controller-manager kube-scheduler kwok kubectl" >&2
	exit 2
fi

# Without these the binaries report v0.0.0-master+$Format:%H$, which breaks
# version checks in Helm and kubectl.
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$k8s_minor -X k8s.io/component-base/version.gitTreeState=clean"

mkdir -p "$assets"
total=${#selected[@]}
step=0
start_all=$(date +%s)
for entry in "${selected[@]}"; do
	step=$((step + 1))
	name=${entry%%|*}
	pkg=${entry#*|}
	if [[ -x "$assets/$name" ]]; then
		echo "[$step/$total] $name: cached in $assets"
		continue
	fi
	hint=""
	[[ $name == kube-apiserver ]] && hint=" (about 10 minutes cold on 2 cores; the others reuse most of its work)"
	echo "[$step/$total] $name: building $pkg$hint ..."
	start=$(date +%s)
	(cd "$module" && go build -trimpath -ldflags "$ldflags" -o "$assets/.$name.tmp" "$pkg")
	mv "$assets/.$name.tmp" "$assets/$name"
	echo "[$step/$total] $name: built in $(($(date +%s) - start))s"
done
echo "control plane $k8s_version ready in $assets ($(($(date +%s) - start_all))s)"

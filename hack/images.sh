#!/usr/bin/env bash
# Build Berth's test images from Debian's busybox-static and our static pause binary, as OCI
# layouts under hack/build/, and push them to the local registries (hack/registry.sh start).
# Layers are made with GNU tar from staging trees with fixed owners and mtimes, so digests
# are reproducible. Writes hack/build/images.env with the pushed manifest digests.
#
#   berth/busybox:latest        OCI manifest, gzip layer (busybox + applet hard links, users)
#   berth/busybox:docker        the same as a Docker schema 2 manifest
#   berth/busybox:zstd          the same with a zstd layer
#   berth/busybox:uncompressed  the same with an uncompressed layer
#   berth/pause:latest          /pause, USER 65535:65535
#   berth/layered:latest        3 layers: hard link, symlink, owned file; file and opaque whiteouts; USER 1000:1000
#   berth/multiarch:latest      image index: linux/amd64 and linux/arm64 (/platform says which)
#   127.0.0.1:5001/berth/busybox:latest   on the htpasswd registry
set -euo pipefail
cd "$(dirname "$0")"
REG=${BERTH_TEST_REGISTRY:-127.0.0.1:5000}
AUTH_REG=${BERTH_TEST_AUTH_REGISTRY:-127.0.0.1:5001}
B=$PWD/build
L=$B/oci
BUSYBOX=${BUSYBOX:-/bin/busybox}
export SOURCE_DATE_EPOCH=0

rm -rf "$B"; mkdir -p "$B/trees" "$B/layers"
log() { echo "images.sh: $*" >&2; }

# A reproducible uncompressed tar of a staging tree.
mktar() { # dir out.tar
  tar --sort=name --mtime=@0 --numeric-owner --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      -C "$1" -cf "$2" .
}

# ---- trees
gcc -static -Os -s -o "$B/pause" pause.c

base=$B/trees/base
mkdir -p "$base"/{bin,dev,etc,proc,root,sys,tmp,usr/bin,var/www}
chmod 1777 "$base/tmp"; chmod 700 "$base/root"
install -m 0755 "$BUSYBOX" "$base/bin/busybox"
for a in $("$BUSYBOX" --list); do [ "$a" = busybox ] || ln "$base/bin/busybox" "$base/bin/$a"; done
cat > "$base/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
berth:x:1000:1000:berth:/home/berth:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$base/etc/group" <<'G'
root:x:0:
berth:x:1000:
staff:x:50:berth
nogroup:x:65534:
G
chown -R 0:0 "$base"

pause=$B/trees/pause
mkdir -p "$pause"; install -m 0755 "$B/pause" "$pause/pause"

l2=$B/trees/layer2
mkdir -p "$l2/data/sub" "$l2/opaque"
printf 'a\n' > "$l2/data/a"; printf 'b\n' > "$l2/data/b"; printf 'c\n' > "$l2/data/sub/c"
ln "$l2/data/b" "$l2/data/hard"; ln -s b "$l2/data/link"
printf 'o1\n' > "$l2/opaque/old1"; printf 'o2\n' > "$l2/opaque/old2"
printf 'owned\n' > "$l2/data/owned"
chown -R 0:0 "$l2"; chown 1000:1000 "$l2/data/owned"; chmod 0640 "$l2/data/owned"

# layer 3 written by hand: whiteout entries are files named .wh.* in the tar
l3=$B/trees/layer3
mkdir -p "$l3/data" "$l3/opaque"
: > "$l3/data/.wh.a"; : > "$l3/opaque/.wh..wh..opq"; printf 'new\n' > "$l3/opaque/new"
chown -R 0:0 "$l3"

for arch in amd64 arm64; do
  p=$B/trees/platform-$arch; mkdir -p "$p"; echo "$arch" > "$p/platform"; chown -R 0:0 "$p"
done

for t in base pause layer2 layer3 platform-amd64 platform-arm64; do
  find "$B/trees/$t" -exec touch -h -d @0 {} +
  mktar "$B/trees/$t" "$B/layers/$t.tar"
done

# ---- OCI layout
umoci init --layout "$L"
image() { # tag arch user cmd-or-entrypoint layers...
  local tag=$1 arch=$2 user=$3 run=$4; shift 4
  umoci new --image "$L:$tag"
  for l in "$@"; do umoci raw add-layer --history.created 1970-01-01T00:00:00Z --history.created_by "berth hack/images.sh" --image "$L:$tag" "$B/layers/$l.tar"; done
  local args=(--no-history --image "$L:$tag" --architecture "$arch" --os linux
              --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
              --created 1970-01-01T00:00:00Z)
  [ -n "$user" ] && args+=(--config.user "$user")
  case "$run" in
    entrypoint:*) args+=(--config.entrypoint "${run#entrypoint:}") ;;
    *) args+=(--config.cmd "$run") ;;
  esac
  umoci config "${args[@]}"
}
image busybox amd64 "" sh base
image pause amd64 65535:65535 entrypoint:/pause pause
image layered amd64 1000:1000 sh base layer2 layer3
image multi-amd64 amd64 "" sh base platform-amd64
image multi-arm64 arm64 "" sh base platform-arm64

# the index: both platform manifests, stored as a blob and tagged "multiarch"
desc() { jq -c --arg t "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$t) | del(.annotations)' "$L/index.json"; }
index=$(jq -cn --argjson a "$(desc multi-amd64)" --argjson b "$(desc multi-arm64)" \
  '{schemaVersion:2, mediaType:"application/vnd.oci.image.index.v1+json",
    manifests:[$a + {platform:{architecture:"amd64",os:"linux"}}, $b + {platform:{architecture:"arm64",os:"linux",variant:"v8"}}]}')
printf '%s' "$index" > "$B/index.json"
idx_digest=$(sha256sum "$B/index.json" | cut -d' ' -f1)
cp "$B/index.json" "$L/blobs/sha256/$idx_digest"
jq --arg d "sha256:$idx_digest" --argjson s "$(stat -c %s "$B/index.json")" \
  '.manifests += [{mediaType:"application/vnd.oci.image.index.v1+json", digest:$d, size:$s, annotations:{"org.opencontainers.image.ref.name":"multiarch"}}]' \
  "$L/index.json" > "$B/index.new" && mv "$B/index.new" "$L/index.json"

# ---- push
push() { # src-tag dest [skopeo flags...]
  local src=$1 dest=$2; shift 2
  skopeo copy -q --dest-tls-verify=false "$@" "oci:$L:$src" "docker://$dest"
}
digest_of() { # ref [creds]
  local extra=(); [ -n "${2:-}" ] && extra=(--creds "$2")
  skopeo inspect --raw --tls-verify=false "${extra[@]}" "docker://$1" | sha256sum | cut -d' ' -f1
}
push busybox "$REG/berth/busybox:latest"
push busybox "$REG/berth/busybox:docker" --format v2s2
push pause "$REG/berth/pause:latest"
push layered "$REG/berth/layered:latest"
push multiarch "$REG/berth/multiarch:latest" --all
push busybox "$AUTH_REG/berth/busybox:latest" --dest-creds berth:berth-secret

# uncompressed and zstd layers: skopeo keeps the source's gzip for registries, so push the
# blobs and manifests ourselves over the distribution API
upload() { # repo file -> digest
  local d loc
  d=sha256:$(sha256sum "$2" | cut -d' ' -f1)
  loc=$(curl -fsS -X POST -D - -o /dev/null "http://$REG/v2/$1/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case "$loc" in http*) ;; *) loc="http://$REG$loc" ;; esac
  case "$loc" in *\?*) loc="$loc&digest=$d" ;; *) loc="$loc?digest=$d" ;; esac
  curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$2" "$loc" -o /dev/null
  echo "$d"
}
busybox_manifest=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="busybox") | .digest' "$L/index.json")
config_blob=$L/blobs/sha256/$(jq -r '.config.digest' "$L/blobs/sha256/${busybox_manifest#sha256:}" | cut -d: -f2)
zstd -q -19 -f -o "$B/layers/base.tar.zst" "$B/layers/base.tar"
push_one_layer() { # tag layer-file media-type
  local c l
  c=$(upload berth/busybox "$config_blob")
  l=$(upload berth/busybox "$2")
  jq -cn --arg c "$c" --argjson cs "$(stat -c %s "$config_blob")" --arg l "$l" --argjson ls "$(stat -c %s "$2")" --arg mt "$3" \
    '{schemaVersion:2, mediaType:"application/vnd.oci.image.manifest.v1+json",
      config:{mediaType:"application/vnd.oci.image.config.v1+json", digest:$c, size:$cs},
      layers:[{mediaType:$mt, digest:$l, size:$ls}]}' > "$B/manifest-$1.json"
  curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @"$B/manifest-$1.json" \
    "http://$REG/v2/berth/busybox/manifests/$1" -o /dev/null
}
push_one_layer uncompressed "$B/layers/base.tar" application/vnd.oci.image.layer.v1.tar
push_one_layer zstd "$B/layers/base.tar.zst" application/vnd.oci.image.layer.v1.tar+zstd

# ---- check what the registry serves, and record digests
mt() { skopeo inspect --raw --tls-verify=false "docker://$1" | jq -r "$2"; }
[ "$(mt "$REG/berth/busybox:zstd" '.layers[0].mediaType')" = application/vnd.oci.image.layer.v1.tar+zstd ] || { log "zstd layer missing"; exit 1; }
[ "$(mt "$REG/berth/busybox:docker" '.mediaType')" = application/vnd.docker.distribution.manifest.v2+json ] || { log "v2s2 missing"; exit 1; }
[ "$(mt "$REG/berth/busybox:uncompressed" '.layers[0].mediaType')" = application/vnd.oci.image.layer.v1.tar ] || { log "uncompressed missing"; exit 1; }
[ "$(mt "$REG/berth/multiarch:latest" '.manifests | length')" = 2 ] || { log "index missing"; exit 1; }
cat > "$B/images.env" <<ENV
BUSYBOX_DIGEST=sha256:$(digest_of "$REG/berth/busybox:latest")
BUSYBOX_DOCKER_DIGEST=sha256:$(digest_of "$REG/berth/busybox:docker")
BUSYBOX_ZSTD_DIGEST=sha256:$(digest_of "$REG/berth/busybox:zstd")
PAUSE_DIGEST=sha256:$(digest_of "$REG/berth/pause:latest")
LAYERED_DIGEST=sha256:$(digest_of "$REG/berth/layered:latest")
MULTIARCH_DIGEST=sha256:$(digest_of "$REG/berth/multiarch:latest")
ENV
log "pushed test images to $REG and $AUTH_REG"
cat "$B/images.env"

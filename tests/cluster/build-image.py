#!/usr/bin/env python3
"""Build a minimal container image as a docker-archive tar, without Docker.

The archive holds manifest.json ([{Config, RepoTags, Layers}]), the image
config JSON and one uncompressed layer tar. `ctr images import` (and
`docker load`) accept it; pods then use the tag with imagePullPolicy: Never.

The layer contains:
  * every --binary (ELF) plus all shared libraries `ldd` reports for it and the
    program loader, stored as REGULAR files at their library paths (symlinks
    are dereferenced: the loader path is a symlink on Debian and a dangling
    link gives "exec ...: no such file or directory");
  * every --file SRC:DEST;
  * /etc/passwd and /etc/group with root and a `nonroot` user/group 65532,
    /etc/nsswitch.conf, /tmp (mode 1777) and the host's CA bundle at
    /etc/ssl/certs/ca-certificates.crt.

Output is deterministic: fixed mtimes/owners, sorted entries and sorted JSON,
so identical inputs give the identical image id (sha256 of the config).

Example:
  build-image.py --tag tradingbot-bot:dev \\
      --binary target/release/bot:/usr/local/bin/bot \\
      --entrypoint '["/usr/local/bin/bot"]' -o /tmp/bot.tar
"""

import argparse
import hashlib
import io
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import tempfile

# Fixed timestamp for every tar entry and the image config (1970-01-01).
EPOCH = 0
CREATED = "1970-01-01T00:00:00Z"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
NONROOT_UID = 65532

PASSWD = (
    "root:x:0:0:root:/root:/sbin/nologin\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
    f"nonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin\n"
)
GROUP = (
    "root:x:0:\n"
    "nogroup:x:65534:\n"
    f"nonroot:x:{NONROOT_UID}:\n"
)
NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n"


def fail(msg):
    print(f"build-image.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def split_src_dest(spec, default_dir=None):
    """'SRC:DEST' -> (SRC, DEST); 'SRC' -> (SRC, default_dir/basename)."""
    if ":" in spec:
        src, dest = spec.split(":", 1)
    elif default_dir is not None:
        src, dest = spec, os.path.join(default_dir, os.path.basename(spec))
    else:
        fail(f"expected SRC:DEST, got {spec!r}")
    if not dest.startswith("/"):
        fail(f"destination must be absolute: {dest!r}")
    if not os.path.isfile(src):
        fail(f"no such file: {src}")
    return src, os.path.normpath(dest)


def shared_libraries(binary):
    """Absolute paths of the shared objects (and loader) `ldd` lists."""
    proc = subprocess.run(["ldd", binary], capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        if "not a dynamic executable" in out or "statically linked" in out:
            return []
        fail(f"ldd {binary} failed: {out.strip()}")
    libs = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if "statically linked" in line:
            return []
        if "=> not found" in line:
            fail(f"{binary}: missing library: {line}")
        # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)"
        m = re.match(r"\S+\s+=>\s+(/\S+)\s+\(0x[0-9a-f]+\)", line)
        if m:
            libs.append(m.group(1))
            continue
        # "/lib64/ld-linux-x86-64.so.2 (0x...)"  (the loader)
        m = re.match(r"(/\S+)\s+\(0x[0-9a-f]+\)", line)
        if m:
            libs.append(m.group(1))
        # "linux-vdso.so.1 (0x...)" has no path: provided by the kernel.
    return libs


class Layer:
    """Collects files for one layer and writes a deterministic tar."""

    def __init__(self):
        self.entries = {}  # path (no leading /) -> (kind, payload, mode)

    def add_dir(self, path, mode=0o755):
        path = path.strip("/")
        if not path:
            return
        parent = os.path.dirname(path)
        if parent:
            self.add_dir(parent)
        kind = self.entries.get(path, ("dir",))[0]
        if kind != "dir":
            fail(f"/{path} is both a file and a directory")
        # An explicit mode (e.g. /tmp 1777) wins over an implicit parent.
        if path not in self.entries or mode != 0o755:
            self.entries[path] = ("dir", None, mode)

    def add_file(self, path, source=None, data=None, mode=0o644):
        path = path.strip("/")
        self.add_dir(os.path.dirname(path))
        if path in self.entries and self.entries[path][0] == "dir":
            fail(f"/{path} is both a file and a directory")
        if source is not None:
            # Dereference symlinks: the image gets the real content.
            with open(os.path.realpath(source), "rb") as f:
                data = f.read()
        self.entries[path] = ("file", data, mode)

    def write(self, fileobj):
        with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(self.entries):
                kind, data, mode = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mtime = EPOCH
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode = mode
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))


def parse_entrypoint(value):
    if value.lstrip().startswith("["):
        try:
            ep = json.loads(value)
        except json.JSONDecodeError as e:
            fail(f"--entrypoint is not valid JSON: {e}")
        if not ep or not all(isinstance(x, str) for x in ep):
            fail("--entrypoint must be a non-empty JSON list of strings")
        return ep
    return [value]


def oci_arch():
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def add_bytes(tar, name, data):
    info = tarfile.TarInfo(name)
    info.mtime = EPOCH
    info.mode = 0o644
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tag", required=True, action="append",
                    help="image name NAME:TAG (repeatable)")
    ap.add_argument("--binary", action="append", default=[], metavar="PATH[:DEST]",
                    help="ELF binary to add with its shared libraries "
                         "(DEST defaults to /usr/local/bin/<name>)")
    ap.add_argument("--file", action="append", default=[], metavar="SRC:DEST",
                    help="extra file to add (mode kept executable if SRC is)")
    ap.add_argument("--entrypoint",
                    help="JSON list, or a single path (default: first --binary)")
    ap.add_argument("--cmd", help="JSON list of default arguments")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--user", default=f"{NONROOT_UID}:{NONROOT_UID}",
                    help="image user (default 65532:65532, the nonroot user)")
    ap.add_argument("--workdir", default="/")
    ap.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("-o", "--output", required=True, help="output .tar path")
    args = ap.parse_args()

    for tag in args.tag:
        if ":" not in tag.rsplit("/", 1)[-1]:
            fail(f"--tag must be NAME:TAG, got {tag!r}")

    layer = Layer()
    binaries = [split_src_dest(b, "/usr/local/bin") for b in args.binary]
    for src, dest in binaries:
        layer.add_file(dest, source=src, mode=0o755)
        for lib in shared_libraries(src):
            layer.add_file(lib, source=lib, mode=0o755)
    for spec in args.file:
        src, dest = split_src_dest(spec)
        mode = 0o755 if os.access(src, os.X_OK) else 0o644
        layer.add_file(dest, source=src, mode=mode)

    layer.add_file("/etc/passwd", data=PASSWD.encode())
    layer.add_file("/etc/group", data=GROUP.encode())
    layer.add_file("/etc/nsswitch.conf", data=NSSWITCH.encode())
    if not os.path.isfile(CA_BUNDLE):
        fail(f"{CA_BUNDLE} missing on the host (install ca-certificates)")
    layer.add_file(CA_BUNDLE, source=CA_BUNDLE)
    layer.add_dir("/tmp", mode=0o1777)
    layer.add_dir("/home/nonroot", mode=0o755)

    if args.entrypoint:
        entrypoint = parse_entrypoint(args.entrypoint)
    elif binaries:
        entrypoint = [binaries[0][1]]
    else:
        fail("--entrypoint is required when no --binary is given")

    env = ["PATH=/usr/local/bin:/usr/bin:/bin",
           f"SSL_CERT_FILE={CA_BUNDLE}"]
    for kv in args.env:
        if "=" not in kv:
            fail(f"--env expects KEY=VALUE, got {kv!r}")
        key = kv.split("=", 1)[0]
        env = [e for e in env if e.split("=", 1)[0] != key] + [kv]

    out_dir = os.path.dirname(os.path.abspath(args.output))
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".build-image.") as tmp:
        layer_path = os.path.join(tmp, "layer.tar")
        with open(layer_path, "wb") as f:
            layer.write(f)
        layer_digest = sha256_file(layer_path)

        config = {
            "architecture": oci_arch(),
            "os": "linux",
            "created": CREATED,
            "config": {
                "Entrypoint": entrypoint,
                "Env": env,
                "User": args.user,
                "WorkingDir": args.workdir,
            },
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
            "history": [{"created": CREATED, "created_by": "tests/cluster/build-image.py"}],
        }
        if args.cmd:
            cmd = json.loads(args.cmd)
            if not isinstance(cmd, list):
                fail("--cmd must be a JSON list")
            config["config"]["Cmd"] = cmd
        if args.label:
            config["config"]["Labels"] = dict(kv.split("=", 1) for kv in args.label)
        config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
        image_id = hashlib.sha256(config_bytes).hexdigest()

        manifest = [{
            "Config": f"{image_id}.json",
            "RepoTags": args.tag,
            "Layers": [f"{layer_digest}/layer.tar"],
        }]
        manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()

        tmp_out = os.path.join(tmp, "image.tar")
        with tarfile.open(tmp_out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(layer_digest)
            info.type = tarfile.DIRTYPE
            info.mtime = EPOCH
            info.mode = 0o755
            tar.addfile(info)
            info = tarfile.TarInfo(f"{layer_digest}/layer.tar")
            info.mtime = EPOCH
            info.mode = 0o644
            info.size = os.path.getsize(layer_path)
            with open(layer_path, "rb") as f:
                tar.addfile(info, f)
            add_bytes(tar, f"{image_id}.json", config_bytes)
            add_bytes(tar, "manifest.json", manifest_bytes)
        os.replace(tmp_out, args.output)

    print(f"{args.output}: {', '.join(args.tag)} sha256:{image_id}", file=sys.stderr)


if __name__ == "__main__":
    main()

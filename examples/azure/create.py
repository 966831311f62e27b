#!/usr/bin/env python3
"""fleet-cli command provider, `create`: reads one instance request (JSON) on stdin, creates
the Azure VM with `az vm create`, prints the created instance (JSON). Creating a name that
exists prints the existing VM. Falls back along instance_types when a size is unavailable.
Untested against Azure; see docs/providers/command.md."""
import json
import os
import sys
import tempfile

from fleet_az import IMAGE_TAG, az, az_try, group, instance

CAPACITY = ("SkuNotAvailable", "AllocationFailed", "ZonalAllocationFailed", "QuotaExceeded")

req = json.load(sys.stdin)
name = req["name"]

vm, _ = az_try("vm", "show", "-d", "-g", group(), "-n", name)
if vm is not None:
    print(json.dumps(instance(vm)))
    sys.exit(0)

tags = dict(req["tags"], **req["labels"])
tags[IMAGE_TAG] = req["image"]
args = [
    "vm", "create", "-g", group(), "-n", name,
    "--image", req["image"],
    "--admin-username", os.environ.get("AZURE_ADMIN_USER", "runner"),
    "--os-disk-delete-option", "Delete",
    "--nic-delete-option", "Delete",
    # No public IP: runners reach GitLab through the subnet's outbound access (a NAT
    # gateway). Drop this line to give each VM a public IP.
    "--public-ip-address", "",
    "--tags", *[f"{k}={v}" for k, v in tags.items()],
]
if os.environ.get("AZURE_LOCATION"):
    args += ["--location", os.environ["AZURE_LOCATION"]]
if os.environ.get("AZURE_SSH_PUBLIC_KEY"):
    args += ["--ssh-key-values", os.environ["AZURE_SSH_PUBLIC_KEY"]]
else:
    args += ["--generate-ssh-keys"]

# The user data holds the runner token: a private temp file, removed right after.
with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
    if req.get("user_data"):
        os.chmod(f.name, 0o600)
        f.write(req["user_data"])
        f.flush()
        args += ["--custom-data", f.name]
    err = ""
    for size in req["instance_types"]:
        _, err = az_try(*args, "--size", size)
        if not err:
            break
        if not any(c in err for c in CAPACITY):
            break
        print(f"{size} unavailable, trying the next size", file=sys.stderr)
    if err:
        print(err.strip(), file=sys.stderr)
        sys.exit(1)

print(json.dumps(instance(az("vm", "show", "-d", "-g", group(), "-n", name))))

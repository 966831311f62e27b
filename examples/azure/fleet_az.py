"""Shared helpers of the Azure example scripts for fleet-cli's command provider
(docs/providers/command.md): running the az CLI, and turning an Azure VM into the
contract's instance JSON. Untested against Azure; adapt freely."""
import json
import os
import subprocess
import sys

# Exit status for "failed, may pass": fleet-cli retries on its next run.
EX_TEMPFAIL = 75

# Azure reports the image and size in its own shape; the contract wants them as the stack
# wrote them, or fleet-cli would see every VM as out of date. create.py keeps them in tags.
IMAGE_TAG = "fleet-image"

RETRYABLE = ("TooManyRequests", "RetryableError", "InternalServerError", "ServiceUnavailable")


def group():
    return os.environ["AZURE_RESOURCE_GROUP"]


def az_try(*args):
    """Runs `az ARGS --output json`; returns (parsed output, "") or (None, stderr)."""
    try:
        p = subprocess.run(["az", *args, "--output", "json"], capture_output=True, text=True)
    except FileNotFoundError:
        print("the az CLI is not installed (or not on PATH); install it and run `az login`", file=sys.stderr)
        sys.exit(1)
    if p.returncode != 0:
        return None, p.stderr
    return (json.loads(p.stdout) if p.stdout.strip() else None), ""


def az(*args):
    """Like az_try, but exits on an error: 75 (may pass) for throttling and 5xx, else 1."""
    out, err = az_try(*args)
    if err:
        print(err.strip(), file=sys.stderr)
        sys.exit(EX_TEMPFAIL if any(r in err for r in RETRYABLE) else 1)
    return out


def state(vm):
    provisioning = (vm.get("provisioningState") or "").lower()
    power = (vm.get("powerState") or "").lower()
    if provisioning == "creating":
        return "booting"
    if provisioning == "deleting":
        return "terminating"
    return {
        "vm running": "running",
        "vm starting": "starting",
        "vm stopping": "stopping",
        "vm deallocating": "stopping",
        "vm stopped": "stopped",
        "vm deallocated": "stopped",
    }.get(power, "unknown")


def instance(vm):
    """An Azure VM (from `az vm show -d` or `az vm list -d`) as the contract's instance."""
    tags = vm.get("tags") or {}
    ips = (vm.get("privateIps") or "").split(",")
    return {
        "id": vm["id"],
        "name": vm["name"],
        "image": tags.get(IMAGE_TAG, ""),
        "instance_type": vm.get("hardwareProfile", {}).get("vmSize", ""),
        "state": state(vm),
        "address": ips[0] or None,
        "launched_at": vm.get("timeCreated"),
        "tags": {k: v for k, v in tags.items() if k != IMAGE_TAG},
    }

#!/usr/bin/env python3
"""fleet-cli command provider, `delete`: deletes the VMs whose ids it gets as arguments,
with their disks and NICs (created with delete options). A VM already gone counts as
deleted. Untested against Azure; see docs/providers/command.md."""
import sys

from fleet_az import EX_TEMPFAIL, RETRYABLE, az_try

failed = False
for vm_id in sys.argv[1:]:
    _, err = az_try("vm", "delete", "--ids", vm_id, "--yes")
    if err and "ResourceNotFound" not in err and "was not found" not in err:
        print(f"{vm_id}: {err.strip()}", file=sys.stderr)
        failed = True
        if any(r in err for r in RETRYABLE):
            sys.exit(EX_TEMPFAIL)
sys.exit(1 if failed else 0)

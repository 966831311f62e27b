#!/usr/bin/env python3
"""fleet-cli command provider, `list`: prints the VMs of the stack $FLEET_STACK (by its
`fleet:stack` tag) in the resource group as a JSON array of instances. Without
$FLEET_STACK (`state import`), prints every VM of the group. Untested against Azure; see
docs/providers/command.md."""
import json
import os

from fleet_az import az, group, instance

stack = os.environ.get("FLEET_STACK", "")
vms = az("vm", "list", "-d", "-g", group()) or []
print(json.dumps([
    instance(vm) for vm in vms
    if not stack or (vm.get("tags") or {}).get("fleet:stack") == stack
]))

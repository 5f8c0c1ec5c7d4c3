# The conductor's built-in authorization policy (ABAC, deny by default).
#
# input.actor:    {id, roles, teams, tenant, scopes}
# input.action:   "runs.list", "runs.read", "session.read", ...
# input.resource: {kind, tenant, and where known id, service, environment}
#
# Replace it with `policy = "path/to/dir"` in the conductor's configuration; the
# decision is data.maestro.authz.allow, and anything but `true` denies.
package maestro.authz

import rego.v1

default allow := false

reads := {"runs.list", "runs.read", "session.read", "audit.read", "deployments.read", "flags.read", "flags.evaluate", "releases.read"}

writes := {"runs.create", "runs.report"}

readers := {"viewer", "developer", "operator", "admin"}

writers := {"developer", "operator", "admin"}

# Conductor-wide figures (runs, jobs, cache, request latencies), deploying and steering
# canaries, cutting and promoting releases (each with a reason, audited): operators and admins.
operations := {"metrics.read", "deployments.create", "deployments.control", "flags.kill", "releases.create", "releases.promote"}

operators := {"operator", "admin"}

# A tenant's API tokens: its admins (creating and revoking are audited, with a reason).
administration := {"tokens.list", "tokens.create", "tokens.revoke"}

admins := {"admin"}

same_tenant if input.resource.tenant == input.actor.tenant

allow if {
	input.action in reads
	some role in input.actor.roles
	role in readers
	same_tenant
}

allow if {
	input.action in writes
	some role in input.actor.roles
	role in writers
	same_tenant
}

allow if {
	input.action in operations
	some role in input.actor.roles
	role in operators
	same_tenant
}

allow if {
	input.action in administration
	some role in input.actor.roles
	role in admins
	same_tenant
}

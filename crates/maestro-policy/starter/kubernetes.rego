# Maestro starter bundle: Kubernetes manifests (one document per input).
package kubernetes

import rego.v1

workload_kinds := {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

pod_spec := input.spec.template.spec if input.kind in workload_kinds

pod_spec := input.spec.jobTemplate.spec.template.spec if input.kind == "CronJob"

pod_spec := input.spec if input.kind == "Pod"

containers contains c if {
	some c in pod_spec.containers
}

containers contains c if {
	some c in pod_spec.initContainers
}

name := sprintf("%s/%s", [input.kind, input.metadata.name])

deny_latest_tag contains msg if {
	some c in containers
	image_uses_latest(c.image)
	msg := sprintf("%s: container \"%s\" image \"%s\" has no pinned tag", [name, c.name, c.image])
}

image_uses_latest(image) if endswith(image, ":latest")

image_uses_latest(image) if {
	not contains(image, "@")
	last := regex.split("/", image)[count(regex.split("/", image)) - 1]
	not contains(last, ":")
}

deny_missing_limits contains msg if {
	some c in pod_spec.containers
	some resource in ["cpu", "memory"]
	not c.resources.limits[resource]
	msg := sprintf("%s: container \"%s\" has no %s limit", [name, c.name, resource])
}

deny_privileged contains msg if {
	some c in containers
	c.securityContext.privileged == true
	msg := sprintf("%s: container \"%s\" is privileged", [name, c.name])
}

deny_privileged contains msg if {
	some c in containers
	c.securityContext.allowPrivilegeEscalation == true
	msg := sprintf("%s: container \"%s\" allows privilege escalation", [name, c.name])
}

deny_privileged contains msg if {
	pod_spec.hostPID == true
	msg := sprintf("%s: shares the host's PID namespace", [name])
}

deny_plaintext_secret contains msg if {
	input.kind == "Secret"
	msg := sprintf("Secret/%s: plaintext Secret objects are not allowed; commit a SealedSecret instead", [input.metadata.name])
}

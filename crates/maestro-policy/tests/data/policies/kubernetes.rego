# Kubernetes manifests, one document per input.
package kubernetes

import rego.v1

containers contains c if {
	input.kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}
	some c in input.spec.template.spec.containers
}

containers contains c if {
	input.kind == "Pod"
	some c in input.spec.containers
}

deny contains msg if {
	some c in containers
	c.securityContext.privileged
	msg := sprintf("%s/%s: container \"%s\" is privileged", [input.kind, input.metadata.name, c.name])
}

deny contains msg if {
	some c in containers
	endswith(c.image, ":latest")
	msg := sprintf("%s/%s: container \"%s\" uses a `latest` image tag", [input.kind, input.metadata.name, c.name])
}

violation contains msg if {
	input.kind == "Secret"
	msg := sprintf("Secret/%s: plaintext Secret objects are not allowed; use a SealedSecret", [input.metadata.name])
}

warn contains msg if {
	some c in containers
	not c.resources.limits
	msg := sprintf("%s/%s: container \"%s\" has no resource limits", [input.kind, input.metadata.name, c.name])
}

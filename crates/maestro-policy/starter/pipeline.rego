# Maestro starter bundle: the pipeline itself (`maestro policy eval --pipeline`).
package pipeline

import rego.v1

# A service tagged `critical` (or any tag in data.maestro.required_gates) runs jobs in
# each of the gates its tags require.
deny_missing_gate contains msg if {
	some tag in input.tags
	some gate in object.get(data.maestro.required_gates, tag, [])
	not gate in input.gates
	msg := sprintf("%s: tagged %s, but no job runs in the %s gate", [input.name, tag, gate])
}

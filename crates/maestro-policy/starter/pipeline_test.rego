package pipeline

import rego.v1

pipeline(tags, gates) := {"kind": "MaestroPipeline", "name": "checkout", "tags": tags, "gates": gates, "jobs": []}

test_critical_without_e2e_smoke_denied if {
	msgs := deny_missing_gate with input as pipeline(["critical"], ["unit", "sca", "sbom"])
	msgs == {"checkout: tagged critical, but no job runs in the e2e-smoke gate"}
}

test_critical_with_every_required_gate_allowed if {
	count(deny_missing_gate) == 0 with input as pipeline(["critical"], ["unit", "e2e-smoke", "sca", "sbom"])
}

test_untagged_pipeline_allowed if {
	count(deny_missing_gate) == 0 with input as pipeline([], [])
}

test_unknown_tag_requires_nothing if {
	count(deny_missing_gate) == 0 with input as pipeline(["internal"], ["unit"])
}

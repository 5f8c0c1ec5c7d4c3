package licenses

import rego.v1

bom(licenses) := {"bomFormat": "CycloneDX", "components": [{"purl": "pkg:npm/x@1.0.0", "licenses": licenses}]}

allow := {"maestro": {"allowed_licenses": ["MIT", "Apache-2.0"]}}

test_allowed_id_passes if {
	count(deny_license) == 0 with input as bom([{"license": {"id": "MIT"}}]) with data.maestro as allow.maestro
}

test_other_id_denied if {
	count(deny_license) == 1 with input as bom([{"license": {"id": "GPL-3.0-only"}}]) with data.maestro as allow.maestro
}

test_or_needs_one_allowed if {
	count(deny_license) == 0 with input as bom([{"expression": "GPL-3.0-only OR MIT"}]) with data.maestro as allow.maestro
}

test_and_needs_all_allowed if {
	count(deny_license) == 1 with input as bom([{"expression": "MIT AND GPL-3.0-only"}]) with data.maestro as allow.maestro
	count(deny_license) == 0 with input as bom([{"expression": "MIT AND Apache-2.0"}]) with data.maestro as allow.maestro
}

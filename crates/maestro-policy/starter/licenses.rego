# Maestro starter bundle: licenses in a CycloneDX SBOM (`maestro sbom`). Handles single
# identifiers and flat `A OR B` / `A AND B` expressions; `maestro licenses` evaluates
# full SPDX expressions.
package licenses

import rego.v1

allowed := {l | some l in data.maestro.allowed_licenses}

expressions(c) := {l.license.id | some l in c.licenses; l.license.id} | {l.expression | some l in c.licenses; l.expression}

ok(expr) if expr in allowed

ok(expr) if {
	contains(expr, " OR ")
	not contains(expr, " AND ")
	some alt in split(expr, " OR ")
	trim(alt, "() ") in allowed
}

ok(expr) if {
	contains(expr, " AND ")
	not contains(expr, " OR ")
	every part in split(expr, " AND ") {
		trim(part, "() ") in allowed
	}
}

deny_license contains msg if {
	input.bomFormat == "CycloneDX"
	some c in input.components
	some expr in expressions(c)
	not ok(expr)
	msg := sprintf("%s: license \"%s\" is not allowed", [c.purl, expr])
}
